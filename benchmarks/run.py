"""prtm_jax's vmapped trainer against the seed's NumPy loop, scikit-learn and PyTorch.

One command times everything on one machine, on the reference workload (the seed's: MLP
10 -> 64 -> 32 -> 10, ReLU, 2,000 rows, batches of 32 in order, 100 epochs = 6,300 SGD steps):

    python -m benchmarks.run                     # seeds 1,16,256,1024 on CPU
    python -m benchmarks.run --quick             # 2 epochs, tiny sizes: a smoke test
    python -m benchmarks.run --device gpu --seeds 256,1024,4096

Each measurement runs in its own subprocess, so its compile time, run time and peak memory are
its own. Prints a table (ms per model, models/s, GFLOP/s, ratio to the NumPy loop, compile
time, peak memory) and writes results.json and time_per_model.png to --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

SIZES = (10, 64, 32, 10)
N_TRAIN = 2000
BATCH = 32
LR = 0.005
ROOT = Path(__file__).resolve().parents[1]


def flop_per_model(epochs: int) -> float:
    """Matmul FLOPs of one training run: forward, plus twice that for the backward pass."""
    steps = epochs * -(-N_TRAIN // BATCH)
    forward = 2 * BATCH * sum(a * b for a, b in itertools.pairwise(SIZES))
    return 3.0 * forward * steps


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _repeat(fn, min_total_s: float = 10.0, max_runs: int = 3) -> list[float]:
    """Wall times of fn(): at least one run, more while the total stays under min_total_s."""
    times: list[float] = []
    while not times or (len(times) < max_runs and sum(times) < min_total_s):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


# --- workers: each runs in its own process and returns one JSON-able dict ----------------------


def _start_jax(device: str, cpu_devices: int):
    if device == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    if device == "cpu":
        jax.config.update("jax_num_cpu_devices", cpu_devices)
    return jax


def _reference_data(jax, n_seeds: int):
    """View 1 (the Weight model's input) of the prtm2 experiment's first n_seeds replicates."""
    import numpy as np

    from prtm_jax.config import Config
    from prtm_jax.data import DataShape, make_two_view
    from prtm_jax.experiment import DATA_PURPOSE, hparams, seed_keys

    cfg = Config()
    hp, d = hparams(cfg), cfg.data
    shape = DataShape(N_TRAIN, d.n_test, d.n_classes, d.n_features)
    keys = seed_keys(cfg.root_seed, np.arange(n_seeds))

    def one(k):
        data = make_two_view(jax.random.fold_in(k, DATA_PURPOSE), hp.data, shape)
        return data.x1_train, data.y_train

    x_SND, y_SN = jax.jit(jax.vmap(one))(keys)
    return keys, x_SND, y_SN


def worker_data(a: dict) -> dict:
    import numpy as np

    jax = _start_jax("cpu", 1)
    _, x, y = _reference_data(jax, a["seeds"])
    np.savez(a["path"], x=np.asarray(x), y=np.asarray(y))
    return {}


def worker_jax(a: dict) -> dict:
    """prtm_jax's trainer over `seeds` seeds, each with its own data replicate.

    plain: the XLA trainer in one jit(vmap) over all seeds on one device, XLA's default
    optimisation level, weight gradients as jax.grad lays them out (`fast=False`).
    xla: the XLA trainer as `run_seeds` runs it: blocks of `chunk` seeds per device over every
    device (on CPU one per core, `experiment.per_device`), the runner's fast-compile option,
    mlp.dense's NN weight gradients (`fast=True`).
    lanes: the same, with the lanes kernel training (what `run_seeds` runs by default on CPU).
    floor: benchmarks.floor's products-and-updates program instead of the XLA trainer, run as
    `xla` runs the trainer.
    """
    import numpy as np

    jax = _start_jax(a["device"], a["cpu_devices"])
    from benchmarks.floor import make_floor_train
    from prtm_jax import experiment, mlp
    from prtm_jax.train import TrainSpec, make_train

    mlp.NN_WEIGHT_GRADS_ON_CPU = a["fast"]

    keys, x, y = _reference_data(jax, a["seeds"])
    if a.get("floor"):
        train = make_floor_train(SIZES, a["epochs"], BATCH)
    else:
        spec = TrainSpec(sizes=(0, *SIZES[1:]), epochs=a["epochs"], batch_size=BATCH)
        train = make_train(spec._replace(impl=a["impl"]))
    options = experiment.CPU_COMPILER_OPTIONS if a["fast"] else None
    chunk = min(a["chunk"] or a["seeds"], -(-a["seeds"] // jax.device_count()))
    n_dev = experiment.block_devices(a["seeds"], chunk)
    fn = experiment.per_device(
        jax.vmap(lambda k, xs, ys: train(k, xs, ys, LR)), n_dev, compiler_options=options
    )
    sample = next(experiment.iter_blocks((keys, x, y), chunk))
    t = time.perf_counter()
    compiled = fn.lower(*sample).compile()
    compile_s = time.perf_counter() - t
    out = {}

    def run():
        out["fit"] = experiment.run_in_blocks(compiled, (keys, x, y), chunk)

    times = _repeat(run)
    stats = jax.devices()[0].memory_stats() or {}
    return {
        "compile_s": compile_s,
        "run_s": median(times),
        "runs_s": times,
        "devices": n_dev,
        "chunk": chunk,
        "device_kind": jax.devices()[0].device_kind,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
        "final_loss": float(np.mean(out["fit"].loss_E[:, -1])) if not a.get("floor") else None,
    }


def _load(path: str, n: int):
    import numpy as np

    data = np.load(path)
    return data["x"][:n], data["y"][:n]


def worker_numpy(a: dict) -> dict:
    import numpy as np

    from benchmarks.baselines import numpy_sgd, seed_init

    x, y = _load(a["path"], a["models"])
    times = []
    for i in range(a["models"]):
        params = seed_init(np.random.default_rng(i), SIZES)
        t = time.perf_counter()
        numpy_sgd(params, x[i], y[i], lr=LR, epochs=a["epochs"], batch_size=BATCH)
        times.append(time.perf_counter() - t)
    return {"run_s": sum(times), "per_model_s": median(times), "runs_s": times}


def worker_sklearn(a: dict) -> dict:
    from benchmarks.baselines import sklearn_fit

    x, y = _load(a["path"], a["models"])

    def fit(i: int, epochs: int):
        kw = {"hidden": SIZES[1:-1], "lr": LR, "batch_size": BATCH, "seed": i}
        return sklearn_fit(x[i], y[i], epochs=epochs, **kw)

    fit(0, 1)  # the first fit pays ~1 s of one-time set-up
    times = []
    for i in range(a["models"]):
        t = time.perf_counter()
        fit(i, a["epochs"])
        times.append(time.perf_counter() - t)
    return {"run_s": sum(times), "per_model_s": median(times), "runs_s": times}


def worker_torch_eager(a: dict) -> dict:
    import torch

    from benchmarks.torch_baselines import eager_fit

    torch.set_num_threads(a["threads"])
    x, y = _load(a["path"], 1)
    eager_fit(x[0], y[0], sizes=SIZES, lr=LR, epochs=1, batch=BATCH)  # one-time set-up
    t = time.perf_counter()
    eager_fit(x[0], y[0], sizes=SIZES, lr=LR, epochs=a["epochs"], batch=BATCH)
    run_s = time.perf_counter() - t
    return {"run_s": run_s, "per_model_s": run_s}


def worker_torch_vmap(a: dict) -> dict:
    import torch

    from benchmarks.torch_baselines import vmap_fit

    torch.set_num_threads(a["threads"])
    x, y = _load(a["path"], a["seeds"])
    vmap_fit(x, y, sizes=SIZES, lr=LR, epochs=1, batch=BATCH)  # one-time set-up
    t = time.perf_counter()
    vmap_fit(x, y, sizes=SIZES, lr=LR, epochs=a["epochs"], batch=BATCH)
    run_s = time.perf_counter() - t
    return {"run_s": run_s, "per_model_s": run_s / a["seeds"]}


def worker_cli(a: dict) -> dict:
    """`prtm ARGS` as a user runs it, in this fresh process with an empty compilation cache, so
    the caller's wall time has interpreter start, imports, compile, data, training, fusion,
    metrics and the result files. The lanes kernel comes built, as `make` installs it
    (PRTM_NATIVE_DIR, built once per run by worker_build, which times that).
    `fast=False` compiles at XLA's default optimisation level instead of the runner's, with
    jax.grad's weight-gradient layout and JAX's own Threefry and sorts (the unoptimised
    configuration, for comparison)."""
    import tempfile

    if a["device"] == "cpu":
        os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ["PRTM_CACHE_DIR"] = tempfile.mkdtemp(prefix="prtm-bench-cache-")
    from prtm_jax import cli, experiment, mlp

    if not a["fast"]:
        experiment.CPU_COMPILER_OPTIONS = None
        mlp.NN_WEIGHT_GRADS_ON_CPU = False
        os.environ["PRTM_NATIVE_OPS"] = "0"
    out = Path(tempfile.mkdtemp(prefix="prtm-bench-run-"))
    sys.argv = ["prtm", *a["args"], f"hydra.run.dir={out}", "progress=false"]
    t = time.perf_counter()
    cli.main()
    run_s = time.perf_counter() - t
    summary = json.loads((out / "summary.json").read_text())
    return {
        "run_s": run_s,
        "train_s": summary["seconds"],
        "devices": summary["devices"],
        "train_impl": summary["train_impl"],
        "accuracy": {m: s["mean"] for m, s in summary["models"].items()},
    }


def worker_build(a: dict) -> dict:
    """Compile the lanes kernel into the (empty) PRTM_NATIVE_DIR: once per machine."""
    from prtm_jax import native

    t = time.perf_counter()
    native.build()
    return {"run_s": time.perf_counter() - t}


WORKERS = {
    "build": worker_build,
    "data": worker_data,
    "jax": worker_jax,
    "numpy": worker_numpy,
    "sklearn": worker_sklearn,
    "torch_eager": worker_torch_eager,
    "torch_vmap": worker_torch_vmap,
    "cli": worker_cli,
}


def _worker_main(spec: str) -> None:
    a = json.loads(spec)
    res = WORKERS[a["kind"]](a)
    res.update(peak_rss_bytes=_peak_rss(), loadavg=os.getloadavg())
    print("RESULT " + json.dumps(res), flush=True)
    if a["kind"] == "cli":
        from prtm_jax import cli

        cli.exit_now()  # as the `prtm` script ends (cli.console_main)


# --- the driver ---------------------------------------------------------------------------------


def cpu_seconds() -> tuple[float, float] | None:
    """(busy, steal): seconds of CPU time the machine's CPUs spent running anything, and lost
    to the hypervisor, since boot (/proc/stat; None where there is none)."""
    try:
        with open("/proc/stat") as f:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(
                int, f.readline().split()[1:9]
            )
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _spawn(python: str, a: dict, env: dict[str, str]) -> dict:
    """Run one worker in a fresh process; its wall time includes interpreter start and imports.

    Also what else ran meanwhile: `others_cores`, the CPU time every other process on the
    machine used during the run, per second of it (0 on an idle machine; the worker's own
    share of the cores is `cpu_s` / wall), and `steal_s`, the time the hypervisor gave this
    machine's CPUs to others. A run with others_cores near 0 was timed on a quiet machine.
    /proc/stat covers the whole machine (the host's CPUs in a container), so "others" includes
    this driver (which only waits) and the kernel's interrupt handling."""
    stat0, own0 = cpu_seconds(), _children_cpu()
    t = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "benchmarks.run", "--worker", json.dumps(a)],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t
    stat1, own = cpu_seconds(), _children_cpu() - own0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"worker {a['kind']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    load = {"cpu_s": own, "others_cores": None, "steal_s": None}
    if stat0 and stat1:
        # The clock ticks of /proc/stat (10 ms) can put others a little below 0 when idle.
        others = stat1[0] - stat0[0] - own
        load.update(others_cores=others / wall, steal_s=stat1[1] - stat0[1])
    return {**json.loads(lines[-1][len("RESULT ") :]), "process_wall_s": wall, **load}


def _median_run(results: list[dict]) -> dict:
    """The run of median process wall time (the lower middle one of an even count), with
    every run's wall time as `runs_s`, its `others_cores` as `runs_others_cores`, and the run
    time as `run_s`."""
    walls = [r["process_wall_s"] for r in results]
    res = sorted(results, key=lambda r: r["process_wall_s"])[(len(results) - 1) // 2]
    others = [r.get("others_cores") for r in results]
    return {**res, "run_s": res["process_wall_s"], "runs_s": walls, "runs_others_cores": others}


def _has_torch(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import torch"], capture_output=True)
    return probe.returncode == 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seeds", default="1,16,256,1024", help="seed counts for prtm_jax's trainer")
    p.add_argument("--device", default="cpu", help="cpu, gpu or tpu (prtm_jax rows only)")
    p.add_argument(
        "--variants",
        default=None,
        help="default: plain,xla,lanes on cpu, plain,xla elsewhere.\n"
        "plain: the XLA trainer in one jit(vmap) over all seeds on one device, default\n"
        "XLA flags, jax.grad's weight gradients; xla: the XLA trainer as run_seeds runs it:\n"
        "blocks of --group seeds per device (fewer when there are fewer seeds), sharded over\n"
        "all devices (on CPU one per core), XLA optimisation level 1 and NN weight gradients\n"
        "(mlp.dense) on CPU; lanes: the same with the CPU lanes kernel training, as\n"
        "run_seeds runs by default on CPU; floor: the XLA trainer's matrix products and\n"
        "weight updates alone (benchmarks/floor.py), run as xla runs the trainer",
    )
    p.add_argument(
        "--group",
        type=int,
        default=16,
        help="seeds per block per device (xla, lanes, floor on CPU: seed_chunk)",
    )
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--out", default="outputs/benchmarks", help="directory for JSON and PNG")
    p.add_argument("--quick", action="store_true", help="2 epochs, tiny sizes (a smoke test)")
    p.add_argument("--numpy-models", type=int, default=3)
    p.add_argument("--sklearn-models", type=int, default=2)
    p.add_argument("--torch-python", default=None, help="python with torch (default: this one)")
    p.add_argument("--torch-seeds", type=int, default=128, help="models in the torch.func.vmap row")
    p.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="torch intra-op threads (1: on a busy 2-core machine 2 threads ran ~80x slower)",
    )
    p.add_argument("--e2e-seeds", type=int, default=256, help="prtm2 end to end (0: skip)")
    p.add_argument(
        "--e2e-runs",
        type=int,
        default=8,
        help="runs of the shipped command, each after a NumPy loop run (the median counts;\n"
        "the paired ratios' 95%% CI needs several: on the shared 2-core machine they spread\n"
        "over 6-60%% of their median)",
    )
    p.add_argument("--memory-seeds", type=int, default=4096, help="prtm2 peak memory (0: skip)")
    p.add_argument("--memory-chunk", type=int, default=512, help="seed_chunk of plain's memory run")
    p.add_argument("--memory-epochs", type=int, default=1, help="memory does not grow with epochs")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variants is None:
        args.variants = "plain,xla,lanes" if args.device == "cpu" else "plain,xla"
    if args.quick:
        args.epochs, args.seeds = 2, "1,4"
        args.numpy_models = args.sklearn_models = 1
        args.torch_seeds, args.e2e_seeds, args.memory_seeds = 4, 4, 0
        args.e2e_runs = min(args.e2e_runs, 2)
    return args


def variant_settings(name: str, args: argparse.Namespace) -> dict:
    """Worker arguments of a prtm_jax variant."""
    cpu = args.device == "cpu"
    if name == "plain":
        return {"cpu_devices": 1, "chunk": 0, "fast": False, "impl": "xla"}
    if name == "lanes" and not cpu:
        raise SystemExit("--variants: lanes is a CPU kernel; on --device gpu/tpu use plain,xla")
    if name in ("xla", "lanes", "floor"):
        # Accelerators have no small cache to stay inside: one block of all seeds per device.
        return {
            "cpu_devices": os.cpu_count() or 1,
            "chunk": args.group if cpu else 0,
            "fast": cpu,
            "floor": name == "floor",
            "impl": "lanes" if name == "lanes" else "xla",
        }
    raise SystemExit(f"--variants: {name!r} is not one of: plain, xla, lanes, floor")


def _row(name: str, seeds: int, models: int, res: dict, flop: float, **extra) -> dict:
    per_model = res.get("per_model_s", res["run_s"] / models)
    return {
        "name": name,
        "seeds": seeds,
        "models": models,
        "compile_s": res.get("compile_s"),
        "run_s": res["run_s"],
        "ms_per_model": 1e3 * per_model,
        "models_per_s": 1.0 / per_model,
        "gflops": flop / per_model / 1e9,
        "peak_rss_mib": res["peak_rss_bytes"] / 2**20,
        "raw": res,
        **extra,
    }


def run_all(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    flop = flop_per_model(args.epochs)
    py = sys.executable
    data_path = str(out / "workload.npz")
    n_data = max(args.numpy_models, args.sklearn_models, args.torch_seeds, 1)
    _spawn(py, {"kind": "data", "seeds": n_data, "path": data_path}, {})
    common = {"epochs": args.epochs, "path": data_path}
    rows = []
    native_env, build_s = {"PRTM_NATIVE_DIR": str(out / "native")}, None
    if args.device == "cpu":
        shutil.rmtree(native_env["PRTM_NATIVE_DIR"], ignore_errors=True)
        build_s = _spawn(py, {"kind": "build"}, native_env)["run_s"]
        print(f"  lanes kernel built in {build_s:.2f} s (once per machine, at install)")

    def note(row):
        rows.append(row)
        print(f"  {row['name']:<34} {row['ms_per_model']:9.2f} ms/model", flush=True)

    res = _spawn(py, {"kind": "numpy", "models": args.numpy_models, **common}, {})
    note(_row("numpy loop (seed, float64)", 1, args.numpy_models, res, flop))
    res = _spawn(py, {"kind": "sklearn", "models": args.sklearn_models, **common}, {})
    note(_row("scikit-learn MLPClassifier", 1, args.sklearn_models, res, flop))
    torch_py = args.torch_python or py
    if _has_torch(torch_py):
        common = {**common, "threads": args.torch_threads}
        res = _spawn(torch_py, {"kind": "torch_eager", **common}, {})
        note(_row("pytorch eager loop", 1, 1, res, flop))
        res = _spawn(torch_py, {"kind": "torch_vmap", "seeds": args.torch_seeds, **common}, {})
        note(_row("pytorch torch.func.vmap", args.torch_seeds, args.torch_seeds, res, flop))
    else:
        print(f"  (no torch in {torch_py}: PyTorch rows skipped; see --torch-python)")
    for variant in args.variants.split(","):
        settings = variant_settings(variant, args)
        jax_args = {"device": args.device, "epochs": args.epochs, **settings}
        for s in seeds:
            res = _spawn(py, {"kind": "jax", "seeds": s, **jax_args}, native_env)
            name = f"prtm_jax {variant}, {s} seeds"
            note(_row(name, s, s, res, flop, variant=variant, devices=res["devices"]))
        if variant == "floor":
            continue
        # The user's command: lanes is `prtm experiment=prtm2` exactly as shipped; xla the same
        # with train.impl=xla; plain that on one device, one block, XLA's default optimisation
        # level, jax.grad's weight gradients.
        extra, fast = [], True
        if variant != "lanes":
            extra = ["train.impl=xla"]
        if variant == "plain":
            extra, fast = [*extra, "cpu_devices=1", f"seed_chunk={args.e2e_seeds}"], False
        cli = {"kind": "cli", "device": args.device, "fast": fast}
        if args.e2e_seeds:
            a = ["experiment=prtm2", f"seeds={args.e2e_seeds}", f"train.epochs={args.epochs}"]
            # As a user runs it: interpreter start, imports, compile, data, 2 models per seed.
            # The shipped command (the target's) runs --e2e-runs times, each right after a
            # NumPy loop run (its yardstick at that moment); the median run counts.
            shipped = variant == "lanes"
            results, paired = [], []
            for _ in range(args.e2e_runs if shipped else 1):
                if shipped:
                    yard = _spawn(py, {"kind": "numpy", "models": args.numpy_models, **common}, {})
                    paired.append(1e3 * yard["per_model_s"])
                results.append(_spawn(py, {**cli, "args": a + extra}, native_env))
            res = {**_median_run(results), "numpy_paired_ms": paired}
            name = _e2e_name(variant, args.e2e_seeds)
            note(_row(name, args.e2e_seeds, 2 * args.e2e_seeds, res, flop, variant=variant))
        if args.e2e_seeds and variant == "lanes":
            # The same command for one epoch: what it costs besides training (start, imports,
            # compile, data, evaluation, statistics, files), plus 1 % of the training.
            a = ["experiment=prtm2", f"seeds={args.e2e_seeds}", "train.epochs=1"]
            res = _spawn(py, {**cli, "args": a}, native_env)
            res = {**res, "run_s": res["process_wall_s"]}
            one = flop_per_model(1)
            note(_row(FIXED_COST, args.e2e_seeds, 2 * args.e2e_seeds, res, one, variant=variant))
        if args.memory_seeds and variant != "xla":
            chunk = [f"seed_chunk={args.memory_chunk}"] if variant == "plain" else []
            a = ["experiment=prtm2", f"seeds={args.memory_seeds}"]
            a += [f"train.epochs={args.memory_epochs}", *extra[:2], *chunk]
            res = _spawn(py, {**cli, "args": a}, native_env)
            name = f"memory {variant}: {args.memory_seeds} seeds"
            m = 2 * args.memory_seeds
            note(_row(name, args.memory_seeds, m, res, flop_per_model(args.memory_epochs)))
    # The yardstick moves with the machine's load: time it again, so the run shows how far.
    res = _spawn(py, {"kind": "numpy", "models": args.numpy_models, **common}, {})
    note(_row(NUMPY_AGAIN, 1, args.numpy_models, res, flop))
    numpy_ms = rows[0]["ms_per_model"]
    for r in rows:
        # Rows of a shorter run (the 1-epoch and memory runs) are not the workload: no ratio.
        partial = r["name"] == FIXED_COST or r["name"].startswith("memory")
        r["x_numpy"] = None if partial else numpy_ms / r["ms_per_model"]
    return {
        "machine": _machine(),
        "yardstick_ms": {"start": numpy_ms, "end": rows[-1]["ms_per_model"]},
        "target": target(rows, args.e2e_seeds, (numpy_ms, rows[-1]["ms_per_model"])),
        "lanes_build_s": build_s,
        "workload": {
            "sizes": SIZES,
            "n_train": N_TRAIN,
            "batch": BATCH,
            "lr": LR,
            "epochs": args.epochs,
            "gflop_per_model": flop / 1e9,
        },
        "args": {k: v for k, v in vars(args).items() if k != "worker"},
        "rows": rows,
    }


def target(rows: list[dict], e2e_seeds: int, numpy_ms: tuple[float, float]) -> dict | None:
    """The shipped `prtm experiment=prtm2 seeds=e2e_seeds`, compile included, against the NumPy
    loop at the start and at the end of the run, and the issue's target (TARGET_X)."""
    import numpy as np  # here, not above: workers (the timed command's too) import this module

    from prtm_jax.stats import bootstrap_ci

    e2e = [r for r in rows if r["name"] == _e2e_name("lanes", e2e_seeds)]
    if not e2e:
        return None
    ms, r = e2e[0]["ms_per_model"], e2e[0]
    runs = [1e3 * s / r["models"] for s in r.get("raw", {}).get("runs_s", [])] or [ms]
    yard = r.get("raw", {}).get("numpy_paired_ms") or []
    paired = [y / c for y, c in zip(yard, runs, strict=True)] if yard else []
    return {
        "seeds": e2e_seeds,
        "command_ms_per_model": ms,
        "command_runs_ms_per_model": runs,
        # Each run against the NumPy loop timed just before it, the median of those ratios,
        # and the mean's 95% bootstrap CI (a range of the runs' scatter only from 3 runs on).
        "x_numpy_paired": paired,
        "x_numpy_paired_median": median(paired) if paired else None,
        "x_numpy_paired_mean": sum(paired) / len(paired) if paired else None,
        "x_numpy_paired_ci95": list(bootstrap_ci(np.asarray(paired))) if paired else None,
        # What every other process on the machine used during each run, in cores (_spawn).
        "command_runs_others_cores": r.get("raw", {}).get("runs_others_cores"),
        "x_numpy": numpy_ms[0] / ms,
        "x_numpy_end": numpy_ms[1] / ms,
        "target_x_numpy": TARGET_X,
        "target_ms_per_model": numpy_ms[0] / TARGET_X,
        "target_ms_per_model_end": numpy_ms[1] / TARGET_X,
    }


def _e2e_name(variant: str, seeds: int) -> str:
    return f"prtm2 end to end {variant}, {seeds}"


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}


NUMPY_AGAIN = "numpy loop, again at the end"
FIXED_COST = "prtm2 end to end lanes, 1 epoch"
TARGET_X = 15.0  # issue 6: 15x the NumPy loop, end to end at 256 seeds


def _cores(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def print_table(result: dict) -> None:
    w = result["workload"]
    print(
        f"\nworkload: MLP {w['sizes']}, {w['n_train']} rows, batch {w['batch']}, "
        f"{w['epochs']} epochs, {w['gflop_per_model']:.2f} GFLOP/model; {result['machine']}"
    )
    head = (
        f"{'method':<40}{'ms/model':>10}{'models/s':>10}{'GFLOP/s':>9}{'x NumPy':>9}"
        f"{'compile s':>10}{'run s':>9}{'peak MiB':>10}{'others':>8}"
    )
    print(
        f"prtm_jax rows on {result['args']['device']}; variants: see --help; others: the cores"
        " every other process used during the row's run"
    )
    print(head + "\n" + "-" * len(head))
    for r in result["rows"]:
        comp = f"{r['compile_s']:.2f}" if r["compile_s"] is not None else "-"
        ratio = f"{r['x_numpy']:.2f}" if r["x_numpy"] is not None else "-"
        print(
            f"{r['name']:<40}{r['ms_per_model']:>10.2f}{r['models_per_s']:>10.1f}"
            f"{r['gflops']:>9.1f}{ratio:>9}{comp:>10}{r['run_s']:>9.2f}"
            f"{r['peak_rss_mib']:>10.0f}{_cores(r['raw'].get('others_cores')):>8}"
        )
    y = result["yardstick_ms"]
    print(
        f"x NumPy is against the first NumPy row ({y['start']:.0f} ms/model); the same loop took"
        f" {y['end']:.0f} ms/model at the end of the run"
    )
    if result.get("lanes_build_s"):
        print(f"the lanes kernel's C build took {result['lanes_build_s']:.2f} s (once per machine)")
    t = result.get("target")
    if t:
        print(
            f"`prtm experiment=prtm2 seeds={t['seeds']}` as shipped, compile included:"
            f" {t['command_ms_per_model']:.1f} ms/model (median of"
            f" {len(t['command_runs_ms_per_model'])} runs:"
            f" {min(t['command_runs_ms_per_model']):.1f}-{max(t['command_runs_ms_per_model']):.1f})"
            f" = {t['x_numpy']:.1f}x /"
            f" {t['x_numpy_end']:.1f}x the NumPy loop at the start / end of the run;"
            f" {t['target_x_numpy']:.0f}x needs {t['target_ms_per_model']:.1f} /"
            f" {t['target_ms_per_model_end']:.1f} ms/model"
        )
        if t["x_numpy_paired"]:
            print(
                f"each run against the NumPy loop timed just before it:"
                f" {', '.join(f'{x:.1f}x' for x in t['x_numpy_paired'])}"
                f" (median {t['x_numpy_paired_median']:.1f}x; mean"
                f" {t['x_numpy_paired_mean']:.2f}x, 95% CI {t['x_numpy_paired_ci95'][0]:.2f}-"
                f"{t['x_numpy_paired_ci95'][1]:.2f}x over {len(t['x_numpy_paired'])} runs)"
            )
        others = [x for x in t.get("command_runs_others_cores") or [] if x is not None]
        if others:
            print(
                f"other processes used {min(others):.2f}-{max(others):.2f} of the machine's"
                f" cores during those runs (median {median(others):.2f})"
            )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ticks = set()
    for variant in result["args"]["variants"].split(","):
        vr = [r for r in rows if r["name"].startswith(f"prtm_jax {variant},")]
        ticks |= {r["seeds"] for r in vr}
        x = [r["seeds"] for r in vr]
        line = ax.plot(x, [r["ms_per_model"] for r in vr], "o-", label=f"prtm_jax {variant}: run")
        with_compile = [r["ms_per_model"] + 1e3 * r["compile_s"] / r["models"] for r in vr]
        ax.plot(x, with_compile, "o--", color=line[0].get_color(), label=f"{variant}: + compile")
    for r in rows:
        if r["name"] in (NUMPY_AGAIN, FIXED_COST):
            continue
        if r["name"].startswith(("numpy", "scikit", "pytorch eager")):
            ax.axhline(r["ms_per_model"], ls=":", color="gray")
            ax.annotate(r["name"], (min(ticks), r["ms_per_model"]), fontsize=8, va="bottom")
        elif r["name"].startswith(("pytorch", "prtm2 end")):
            ax.plot([r["seeds"]], [r["ms_per_model"]], "s", label=r["name"])
    ax.set(xscale="log", yscale="log", xlabel="seeds (models trained at once)")
    ax.set_xticks(sorted(ticks), [str(t) for t in sorted(ticks)])
    ax.minorticks_off()
    ax.set(ylabel="ms per model", title="Time per model, reference workload")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    if args.worker:
        _worker_main(args.worker)
        return None
    from prtm_jax.results import write_atomic

    result = run_all(args)
    print_table(result)
    out = Path(args.out)
    write_atomic(out / "results.json", lambda p: p.write_text(json.dumps(result, indent=2)))
    write_atomic(out / "time_per_model.png", lambda p: plot(result, p))
    print(f"\nwrote {out / 'results.json'} and {out / 'time_per_model.png'}")
    return result


if __name__ == "__main__":
    main()
