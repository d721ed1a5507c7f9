"""The benchmark is not a test: this checks that it runs end to end at a tiny size, that its
floor program does the XLA trainer's products and updates, and how it states the target."""

import itertools
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from benchmarks.floor import make_floor_train, target
from benchmarks.run import FIXED_COST
from benchmarks.run import target as run_target
from prtm_jax.experiment import CPU_COMPILER_OPTIONS
from prtm_jax.train import TrainSpec, make_train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_and_plot(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)]
    cmd += ["--variants", "plain,xla,lanes,floor"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x NumPy" in proc.stdout
    result = json.loads((tmp_path / "results.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names[0].startswith("numpy loop") and names[-1] == "numpy loop, again at the end"
    assert result["yardstick_ms"] == {
        "start": result["rows"][0]["ms_per_model"],
        "end": result["rows"][-1]["ms_per_model"],
    }
    assert "the same loop took" in proc.stdout
    assert any(n.startswith("scikit-learn") for n in names)
    jax_rows = [r for r in result["rows"] if r["name"].startswith("prtm_jax")]
    assert [(r["variant"], r["seeds"]) for r in jax_rows] == [
        ("plain", 1),
        ("plain", 4),
        ("xla", 1),
        ("xla", 4),
        ("lanes", 1),
        ("lanes", 4),
        ("floor", 1),
        ("floor", 4),
    ]
    # plain, xla and lanes end to end, and the shipped (lanes) command for one epoch.
    assert sum(n.startswith("prtm2 end to end") for n in names) == 4
    e2e = next(r for r in result["rows"] if r["name"] == "prtm2 end to end lanes, 4")
    assert e2e["raw"]["train_impl"] == {"weight": "lanes", "bias": "lanes"}
    t = result["target"]
    assert t["command_ms_per_model"] == e2e["ms_per_model"]
    # --quick runs the shipped command twice; the lower of the two counts (the lower middle).
    assert len(e2e["raw"]["runs_s"]) == 2
    # Each run right after its own NumPy yardstick run.
    assert len(e2e["raw"]["numpy_paired_ms"]) == 2 and len(t["x_numpy_paired"]) == 2
    assert "each run against the NumPy loop timed just before it" in proc.stdout
    assert e2e["raw"]["process_wall_s"] == min(e2e["raw"]["runs_s"])
    assert t["x_numpy_end"] == pytest.approx(result["yardstick_ms"]["end"] / e2e["ms_per_model"])
    assert "`prtm experiment=prtm2 seeds=4` as shipped" in proc.stdout
    assert result["lanes_build_s"] > 0 and "lanes kernel's C build took" in proc.stdout
    # What else ran meanwhile: the worker's own CPU apart, others' share in cores.
    assert len(t["command_runs_others_cores"]) == 2 and "other processes used" in proc.stdout
    for r in result["rows"]:
        assert r["ms_per_model"] > 0 and r["peak_rss_mib"] > 0
        assert r["raw"]["cpu_s"] > 0 and r["raw"]["others_cores"] > -0.1
        partial = r["name"] == FIXED_COST or r["name"].startswith("memory")
        assert (r["x_numpy"] is None) if partial else (r["x_numpy"] > 0), r["name"]
    assert all(r["compile_s"] > 0 for r in jax_rows)
    assert (tmp_path / "time_per_model.png").stat().st_size > 0


def _linear_sgd_float64(ws, x_ND, t_BC, lr, epochs, batch):
    """The floor's updates in float64 NumPy: a linear net fitting t_BC by least squares."""
    ws = [np.array(w, np.float64) for w in ws]
    n = len(x_ND)
    for _ in range(epochs):
        for i in range(-(-n // batch)):
            start = min(i * batch, n - batch)
            acts = [np.asarray(x_ND[start : start + batch], np.float64)]
            for w in ws:
                acts.append(acts[-1] @ w)
            g = acts.pop() - np.asarray(t_BC, np.float64)
            grads = []
            for layer in reversed(range(len(ws))):
                grads.append(acts[layer].T @ g)
                g = g @ ws[layer].T
            ws = [w - lr * gw for w, gw in zip(ws, reversed(grads), strict=True)]
    return ws


def test_floor_runs_the_sgd_updates_of_a_linear_net_against_float64():
    sizes, n, batch, epochs, lr = (6, 16, 8, 5), 70, 32, 3, 0.01  # a partial last batch
    key = jax.random.key(3)
    x = jax.random.normal(jax.random.key(4), (n, sizes[0]))
    out = make_floor_train(sizes, epochs, batch)(key, x, None, lr)
    # The start weights, drawn as the floor draws them.
    start = make_floor_train(sizes, 0, batch)(key, x, None, lr).weights
    t = target(key, batch, sizes[-1])
    want = _linear_sgd_float64(start, np.asarray(x), np.asarray(t), lr, epochs, batch)
    assert [w.shape for w in out.weights] == [(6, 16), (16, 8), (8, 5)]
    for got, ref, w0 in zip(out.weights, want, start, strict=True):
        assert not np.allclose(ref, w0)  # the updates moved every weight
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-6)


def _dots(fn, *args):
    """(result shape, lhs and rhs contracting dims) of each dot XLA compiles for fn, sorted."""
    hlo = jax.jit(fn, compiler_options=CPU_COMPILER_OPTIONS).lower(*args).compile().as_text()
    pattern = (
        r"= (f32\[[\d,]*\]).* dot\(.*lhs_contracting_dims=\{(\d)\}.*rhs_contracting_dims=\{(\d)\}"
    )
    return sorted(re.search(pattern, ln).groups() for ln in hlo.splitlines() if " dot(" in ln)


def test_floor_runs_the_same_matrix_products_as_the_trainer():
    # The floor is a floor of the trainer only if it does the trainer's products, as the
    # trainer lays them out (mlp.dense), on the same vmapped shapes.
    sizes, epochs, batch = (10, 64, 32, 10), 2, 32
    keys = jax.random.split(jax.random.key(0), 2)
    x = jnp.zeros((2, 100, sizes[0]))
    y = jnp.zeros((2, 100), jnp.int32)
    spec = TrainSpec(sizes=(0, *sizes[1:]), epochs=epochs, batch_size=batch, impl="xla")
    train = make_train(spec)
    floor = make_floor_train(sizes, epochs, batch)
    trainer_dots = _dots(jax.vmap(lambda k, a, b: train(k, a, b, 0.1)), keys, x, y)
    floor_dots = _dots(jax.vmap(lambda k, a, b: floor(k, a, b, 0.1)), keys, x, y)
    assert len(trainer_dots) == 8  # 3 forward, 3 weight gradients, 2 input gradients
    assert floor_dots == trainer_dots


def test_target_compares_the_shipped_command_with_both_ends_of_the_yardstick():
    def row(name, ms, runs_s, paired):
        raw = {
            "runs_s": runs_s,
            "numpy_paired_ms": paired,
            "runs_others_cores": [0.5] * len(paired),
        }
        return {"name": name, "ms_per_model": ms, "models": 512, "raw": raw}

    rows = [
        row("prtm2 end to end xla, 256", 70.0, [35.84], []),
        row("prtm2 end to end lanes, 256", 40.0, [20.48, 25.6, 19.456], [600.0, 500.0, 760.0]),
    ]
    t = run_target(rows, 256, numpy_ms=(600.0, 450.0))
    assert t["command_ms_per_model"] == 40.0
    assert t["command_runs_ms_per_model"] == pytest.approx([40.0, 50.0, 38.0])
    assert t["x_numpy_paired"] == pytest.approx([15.0, 10.0, 20.0])
    assert t["x_numpy_paired_median"] == pytest.approx(15.0)
    assert t["x_numpy_paired_mean"] == pytest.approx(15.0)
    ref = sps.bootstrap(
        (np.asarray(t["x_numpy_paired"]),),
        np.mean,
        n_resamples=10_000,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert t["x_numpy_paired_ci95"] == pytest.approx([ref.low, ref.high], rel=1e-12)
    assert t["command_runs_others_cores"] == [0.5, 0.5, 0.5]
    assert t["x_numpy"] == 15.0 and t["x_numpy_end"] == 450.0 / 40.0
    assert t["target_ms_per_model"] == 40.0 and t["target_ms_per_model_end"] == 30.0
    assert run_target(rows, 64, numpy_ms=(600.0, 450.0)) is None  # no end-to-end row at 64


def test_the_lanes_variant_is_cpu_only_and_not_a_default_elsewhere():
    from benchmarks.run import parse_args, variant_settings

    assert parse_args([]).variants == "plain,xla,lanes"
    gpu = parse_args(["--device", "gpu"])
    assert gpu.variants == "plain,xla"  # `--device gpu` alone runs
    with pytest.raises(SystemExit, match="lanes is a CPU kernel"):
        variant_settings("lanes", gpu)
    assert variant_settings("lanes", parse_args([]))["impl"] == "lanes"


def test_median_run_is_the_middle_run_and_keeps_every_wall_time():
    from benchmarks.run import _median_run

    walls, others = [3.0, 1.0, 2.0, 9.0], [0.0, 0.5, None, 1.25]
    runs = [
        {"process_wall_s": w, "others_cores": o, "id": i}
        for i, (w, o) in enumerate(zip(walls, others, strict=True))
    ]
    got = _median_run(runs)
    assert got["id"] == 2 and got["run_s"] == 2.0  # lower middle of an even count
    assert got["runs_s"] == walls and got["runs_others_cores"] == others  # in run order
    assert _median_run([runs[0], runs[1], runs[3]])["id"] == 0  # 3.0 of 1.0, 3.0, 9.0


def test_kernel_harness_trains_what_float64_sgd_trains_and_reports_a_sane_fraction(tmp_path):
    # benchmarks.kernel times the shipped lanes.c alone; its lane 0, retrained from the same
    # start in float64 NumPy, must land on the same parameters, and the FLOP rates it divides
    # must be of one core (the count includes ~8 % FLOPs the kernel skips, so a ratio well
    # above 1.08 would mean miscounted FLOPs).
    from benchmarks.baselines import numpy_sgd
    from benchmarks.kernel import build, run
    from benchmarks.run import SIZES
    from prtm_jax import native

    if reason := native.available():
        pytest.skip(reason)
    res = run(build(tmp_path / "h"), epochs=2, repeats=1, dump=tmp_path / "dump")
    assert 0.05 < res["fraction_of_fma"] < 1.2, res
    raw = (tmp_path / "dump").read_bytes()
    x = np.frombuffer(raw, np.float32, 2000 * 10).reshape(2000, 10)
    y = np.frombuffer(raw, np.int32, 2000, offset=x.nbytes)
    vals = np.frombuffer(raw, np.float32, offset=x.nbytes + y.nbytes)
    params, at = [], 0
    for a, b in itertools.pairwise(SIZES):
        params.append((vals[at : at + a * b].reshape(a, b), vals[at + a * b : at + a * b + b]))
        at += a * b + b
    trained = vals[at:]
    assert trained.size == at
    want = numpy_sgd(params, x, y, lr=0.005, epochs=2, batch_size=32)
    got = np.concatenate([np.concatenate([w.ravel(), b]) for w, b in want])
    np.testing.assert_allclose(trained, got, rtol=1e-4, atol=1e-5)
    assert not np.allclose(trained, vals[:at], rtol=1e-3)  # it did train


def test_kernel_benchmark_refuses_a_nonpositive_count():
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.kernel", "--rounds", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("error: --rounds must be >= 1, got 0")


proc_stat = pytest.mark.skipif(not Path("/proc/stat").exists(), reason="Linux /proc only")


@proc_stat
def test_cpu_seconds_busy_idle_and_steal_add_up_to_the_uptime_of_every_cpu():
    # /proc/uptime's second field, the idle time summed over CPUs, is the kernel's own count of
    # what cpu_seconds leaves out; busy + idle + steal is the time every CPU has been up.
    from benchmarks.run import cpu_seconds

    busy, steal = cpu_seconds()
    uptime, idle = map(float, Path("/proc/uptime").read_text().split())
    n_cpus = len(re.findall(r"^cpu\d+ ", Path("/proc/stat").read_text(), re.M))
    assert (busy + idle + steal) / (uptime * n_cpus) == pytest.approx(1.0, abs=0.02)


@proc_stat
def test_cpu_seconds_busy_counts_this_process_spinning():
    from benchmarks.run import cpu_seconds

    busy0, p0 = cpu_seconds()[0], time.process_time()
    while time.process_time() - p0 < 0.3:
        pass
    spun = time.process_time() - p0
    assert cpu_seconds()[0] - busy0 >= spun - 0.05  # ticks of 10 ms, on each CPU


def test_spawn_counts_what_others_used_as_machine_busy_time_less_the_workers_own(monkeypatch):
    # 3 s of wall time in which the machine's CPUs were busy for 7.5 s and the worker used
    # 6 s: others used 1.5 s, half a core; the hypervisor took 0.25 s.
    from benchmarks import run

    stat = iter([(100.0, 2.0), (107.5, 2.25)])
    own = iter([10.0, 16.0])
    clock = iter([50.0, 53.0])
    done = subprocess.CompletedProcess([], 0, stdout='RESULT {"run_s": 1.0}\n', stderr="")
    monkeypatch.setattr(run, "cpu_seconds", lambda: next(stat))
    monkeypatch.setattr(run, "_children_cpu", lambda: next(own))
    monkeypatch.setattr(run.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(run.subprocess, "run", lambda *a, **k: done)
    res = run._spawn(sys.executable, {"kind": "data"}, {})
    assert res["process_wall_s"] == 3.0 and res["cpu_s"] == 6.0 and res["run_s"] == 1.0
    assert res["others_cores"] == pytest.approx(0.5) and res["steal_s"] == pytest.approx(0.25)
