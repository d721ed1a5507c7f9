import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from prtm_jax import aggregate, cli, experiment
from prtm_jax.config import GridConfig, OptimConfig


def test_grid_points_equal_the_same_points_run_separately(tiny_cfg):
    grid = GridConfig(view1_std=[1.0, 3.0], lr=[0.005, 0.02])
    gridded = experiment.run_seeds(dataclasses.replace(tiny_cfg, grid=grid))
    points = experiment.grid_points(dataclasses.replace(tiny_cfg, grid=grid))
    assert points == [
        {"view1_std": 1.0, "lr": 0.005},
        {"view1_std": 1.0, "lr": 0.02},
        {"view1_std": 3.0, "lr": 0.005},
        {"view1_std": 3.0, "lr": 0.02},
    ]
    for g, p in enumerate(points):
        single = experiment.run_seeds(
            dataclasses.replace(
                tiny_cfg,
                data=dataclasses.replace(tiny_cfg.data, view1_std=p["view1_std"]),
                optim=OptimConfig(lr=p["lr"]),
            )
        )
        for model in ("weight", "bias", "fused"):
            np.testing.assert_array_equal(
                gridded[model]["accuracy"][g], single[model]["accuracy"][0]
            )
            np.testing.assert_array_equal(gridded[model]["nll"][g], single[model]["nll"][0])


def test_noise_and_learning_rate_changes_reuse_one_compiled_program(tiny_cfg):
    experiment.clear_compiled()
    compiled = experiment._EXECUTABLES  # one per XLA compile of a runner
    for std, lr in [(1.0, 0.01), (2.5, 0.02), (4.0, 0.003)]:
        cfg = dataclasses.replace(
            tiny_cfg,
            data=dataclasses.replace(tiny_cfg.data, view1_std=std),
            optim=OptimConfig(lr=lr),
        )
        experiment.run_seeds(cfg)
    assert len(compiled) == 1
    assert experiment.compiled_runner.cache_info().currsize == 1
    # Another seed_chunk is another block shape: a second program (an uneven last block is
    # padded, so it adds none); the first one stays compiled.
    chunk2 = dataclasses.replace(tiny_cfg, seeds=5, seed_chunk=2)
    experiment.run_seeds(chunk2)
    experiment.run_seeds(tiny_cfg)
    assert len(compiled) == 2 and experiment.compiled_runner.cache_info().currsize == 1


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["-m", "data.view1_std=1.0,x"],
            "Error merging override data.view1_std=x: Value 'x' of"
            " type 'str' could not be converted to Float",
        ),
        (["grid.view1_std=[]"], "grid.view1_std must be a non-empty list of numbers, got []"),
        (
            ["grid.view1_std=[1.0,-2.0]"],
            "grid.view1_std must be a positive finite number, got -2.0",
        ),
        (
            ["grid.lr=[0.1,fast]"],
            "Error merging override grid.lr=[0.1,fast]: Value 'fast' of"
            " type 'str' could not be converted to Float",
        ),
        (["grid.rh=[0.1]"], "Could not override 'grid.rh': Key 'rh' not in 'GridConfig'"),
        (
            ["-m", "model.actvation=relu,tanh"],
            "Could not override 'model.actvation': Key 'actvation' not in 'ModelConfig'",
        ),
    ],
)
def test_bad_sweep_input_is_one_line(capsys, monkeypatch, args, message):
    monkeypatch.setattr(sys, "argv", ["prtm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"prtm: error: {message}\n"


def test_named_sweeps_list_explicit_values():
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        cfg = compose("config", ["experiment=sweep_view1_std"], return_hydra_config=True)
        params = dict(cfg.hydra.sweeper.params)
    jobs = cli.expand_jobs([], params)
    assert [j[0] for j in jobs] == [f"data.view1_std={v}" for v in (1.0, 2.0, 3.0, 4.5, 6.0, 8.0)]


def test_slurm_launcher_config_composes():
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        cfg = compose("config", ["hydra/launcher=slurm"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher")
    assert "export XLA_PYTHON_CLIENT_PREALLOCATE=false" in cfg.hydra.launcher.setup


SWEEP = [
    "seeds=8",
    "data.n_train=128",
    "data.n_test=64",
    "train.epochs=2",
    "model.hidden=[8]",
    "model.activation=relu,tanh",
    "data.view1_std=2.0,4.5",
    "progress=false",
]


def _sweep(sweep_dir, env_extra=None, **kw):
    env = {**os.environ, **(env_extra or {})}
    cmd = [
        sys.executable,
        "-c",
        "from prtm_jax.cli import main; main()",
        "-m",
        *SWEEP,
        f"hydra.sweep.dir={sweep_dir}",
    ]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw
    )


def _mtimes(sweep_dir):
    return {p.parent.name: p.stat().st_mtime_ns for p in Path(sweep_dir).glob("*/seeds.csv")}


@pytest.mark.slow
def test_sweep_aggregates_resumes_and_compiles_once_per_activation(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {"JAX_LOG_COMPILES": "1", "PRTM_CACHE_DIR": str(tmp_path / "cache")}
    out, _ = _sweep(sweep_dir, env).communicate()
    assert out.count("Compiling jit(run)") == 2, out  # relu and tanh; the noise shares one
    long, _ = aggregate.write(sweep_dir)
    assert (long.job_status == "complete").all()
    for model in ("weight", "bias", "fused"):
        rows = long[long.model == model]
        assert len(rows) == 2 * 2 * 8
        assert rows.groupby(["activation", "view1_std"]).size().eq(8).all()
    assert pd.read_parquet(sweep_dir / "aggregate.parquet").shape == long.shape

    before = _mtimes(sweep_dir)
    victim = sorted(before)[1]
    for f in ("seeds.csv", "summary.json"):
        (sweep_dir / victim / f).unlink()
    out, _ = _sweep(sweep_dir).communicate()
    after = _mtimes(sweep_dir)
    assert out.count("skipped") == 3
    assert {k for k in before if before[k] != after[k]} == {victim}
    again, _ = aggregate.write(sweep_dir)
    pd.testing.assert_frame_equal(long, again)


@pytest.mark.slow
def test_sigkilled_sweep_rerun_gives_the_uninterrupted_aggregate(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    env = {"PRTM_CACHE_DIR": str(tmp_path / "cache")}
    _sweep(whole, env).communicate()
    proc = _sweep(killed, env)
    deadline = time.time() + 600
    while not list(killed.glob("*/summary.json")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = aggregate.collect(killed)
    assert (partial.job_status != "complete").any()  # the kill left work undone, and says so
    _sweep(killed, env).communicate()
    a, b = aggregate.collect(whole), aggregate.collect(killed)
    pd.testing.assert_frame_equal(a, b)


def test_aggregate_lists_jobs_without_results(tmp_path):
    # A multirun.yaml naming 2 jobs, one complete, one that never started.
    sweep = tmp_path / "s"
    job = sweep / "data.view1_std=1.0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- data.view1_std=1.0\n")
    df = pd.DataFrame(
        {
            "seed": [0, 0, 0],
            "model": ["weight", "bias", "fused"],
            "accuracy": [0.9, 0.7, 0.95],
            "nll": [0.3, 0.9, 0.2],
            "status": ["ok"] * 3,
        }
    )
    from prtm_jax import results

    results.write_run(job, df, {"task": "prtm2", "models": {}})
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - data.view1_std=1.0,2.0\n"
        "  sweeper:\n    params: null\n"
    )
    long = aggregate.collect(sweep)
    status = long.drop_duplicates("job").set_index("view1_std").job_status.to_dict()
    assert status == {1.0: "complete", 2.0: "missing"}
    assert len(long) == 4


def test_work_done_while_compiling_leaves_results_unchanged(tiny_cfg):
    experiment.clear_compiled()
    plain = experiment.run_seeds(tiny_cfg)
    experiment.clear_compiled()
    calls = []
    hooked = experiment.run_seeds(tiny_cfg, lambda: calls.append(sum(range(10**6))))
    assert len(calls) == 1
    # Compiled already: the hook still runs, once, and the seeds' keys are still computed.
    again = experiment.run_seeds(tiny_cfg, lambda: calls.append(0))
    assert len(calls) == 2
    for model, metrics in plain.items():
        for name, value in metrics.items():
            np.testing.assert_array_equal(hooked[model][name], value, err_msg=f"{model}.{name}")
            np.testing.assert_array_equal(again[model][name], value, err_msg=f"{model}.{name}")
