import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from prtm_jax import cli
from prtm_jax.config import Config


def _error(capsys, monkeypatch, *args):
    monkeypatch.setattr(sys, "argv", ["prtm", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1, err  # one line, no traceback
    return err.strip()


@pytest.mark.parametrize(
    "args,message",
    [
        (
            ["model.activation=swish"],
            "model.activation='swish' is not one of: elu, gelu, leaky_relu, relu, sigmoid,"
            " silu, softplus, tanh",
        ),
        (["data.view2_std=0"], "data.view2_std must be a positive finite number, got 0.0"),
        (["data.view1_std=-1"], "data.view1_std must be a positive finite number, got -1.0"),
        (["optim.lr=inf"], "optim.lr must be a positive finite number, got inf"),
        (["data.view2_mean=nan"], "data.view2_mean must be a finite number, got nan"),
        (["data.view2_offset=-inf"], "data.view2_offset must be a finite number, got -inf"),
        (["grid.view2_offset=[0.5,inf]"], "grid.view2_offset must be a finite number, got inf"),
        (["root_seed=-1"], "root_seed must be an integer in 0..4294967295, got -1"),
        (
            ["+model.width=3"],
            "model.width is not a config key; model has: hidden, activation, init",
        ),
        (
            ["-m", "seeds=2", "+foo=1,2"],
            "foo is not a config key; the config has: "
            + ", ".join(f.name for f in dataclasses.fields(Config)),
        ),
        (["~seeds"], "~seeds: keys cannot be removed; set seeds=..."),
        (["-cn", "nope"], "--config-name='nope' is not one of: config"),
        (["--config-name=nope", "seeds=2"], "--config-name='nope' is not one of: config"),
        (["-cn=nope"], "--config-name='nope' is not one of: config"),
        (["--config-nam", "nope"], "--config-name='nope' is not one of: config"),
        (["seeds=2,4"], "seeds=2,4 is a sweep: add -m (--multirun), or give a list as [a,b]"),
        (["seeds"], "'seeds' is not an override: write key=value (e.g. seeds=64)"),
        (["-m", "seeds=range(1,"], "seeds=range(1,: no viable alternative at input 'range(1,'"),
        (["hydra.run.dir=x("], "hydra.run.dir=x(: no viable alternative at input 'x('"),
        (["~hydra.job.chdir"], "~hydra.job.chdir: keys cannot be removed; set hydra.job.chdir=..."),
        (["root_seed=4294967296"], "root_seed must be an integer in 0..4294967295, got 4294967296"),
        (
            ["data=digits", "data.n_val=5000"],
            "data.n_val must be < the 1437 digits rows left after the test split"
            " (data.n_test_per_class=36), got 5000",
        ),
        (["seeds=0"], "seeds must be a positive integer, got 0"),
        (
            ["train.batch_size=3000"],
            "train.batch_size must be <= the training rows (2000), got 3000",
        ),
        (["model.hidden=[]"], "model.hidden must be a non-empty list of positive integers, got []"),
        (
            ["model.hidden=[64,-2]"],
            "model.hidden must be a non-empty list of positive integers, got [64, -2]",
        ),
        (
            ["experiment=prtm9"],
            "experiment='prtm9' is not one of: "
            + ", ".join(sorted(p.stem for p in (Path(cli.CONF_DIR) / "experiment").glob("*.yaml"))),
        ),
        (["optim=rmsprop"], "optim='rmsprop' is not one of: adam, sgd"),
        (["optim.name=rmsprop"], "optim.name='rmsprop' is not one of: sgd, adam"),
        (
            ["data.view1_sdt=3"],
            "Could not override 'data.view1_sdt': Key 'view1_sdt' not in 'DataConfig'",
        ),
        (["-m", "seeds=4,0"], "seeds must be a positive integer, got 0"),
        (["cpu_devices=-1"], "cpu_devices must be an integer >= 0 (0: one per core), got -1"),
        (
            ["-m", "cpu_devices=1,2"],
            "cpu_devices cannot vary within one multirun (got [1, 2]): JAX fixes its CPU"
            " devices once per process",
        ),
    ],
)
def test_bad_input_is_one_line_before_any_compilation(capsys, monkeypatch, args, message):
    assert _error(capsys, monkeypatch, *args) == f"prtm: error: {message}"


def test_default_composition_equals_the_schema_defaults():
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        assert cli.to_config(compose(config_name="config")) == Config()


def test_prtm1_experiment_sets_the_seed_hyperparameters():
    with initialize_config_dir(config_dir=cli.CONF_DIR, version_base="1.3"):
        cfg = cli.to_config(compose(config_name="config", overrides=["experiment=prtm1"]))
    assert (cfg.task, cfg.model.hidden, cfg.model.activation) == ("prtm1", [32], "sigmoid")
    assert (cfg.optim.lr, cfg.train.epochs, cfg.data.n_train) == (0.01, 30, 1000)


def _prtm(tmp_path, name, *args):
    out = tmp_path / name
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from prtm_jax.cli import console_main; console_main()",  # the `prtm` script
            *args,
            f"hydra.run.dir={out}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out, proc.stdout


def test_same_config_twice_gives_identical_files(tmp_path):
    args = ["seeds=3", "seed_chunk=1", "data.n_train=128", "data.n_test=64", "train.epochs=2"]
    args += ["model.hidden=[8]"]
    a, stdout = _prtm(tmp_path, "a", *args)
    b, _ = _prtm(tmp_path, "b", *args)
    assert (a / "seeds.csv").read_bytes() == (b / "seeds.csv").read_bytes()
    df = pd.read_csv(a / "seeds.csv")
    assert list(df.columns[:2]) == ["seed", "model"]
    assert {"accuracy", "nll", "status"} <= set(df.columns)
    assert len(df) == 12 and set(df.model) == {"weight", "bias", "fused", "weight|bias"}
    summary = json.loads((a / "summary.json").read_text())
    for model in ("weight", "bias", "fused"):
        s = summary["models"][model]
        acc = df.loc[df.model == model, "accuracy"]
        assert s["n"] == 3 and s["mean"] == pytest.approx(acc.mean())
        assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
    assert "fused-weight" in summary["paired"] or "fused-bias" in summary["paired"]
    assert summary["config"]["seeds"] == 3
    # One JAX CPU device per core by default (XLA_FLAGS may force another count), of which
    # the run uses as many as it has blocks of seed_chunk (here 3) to fill.
    forced = re.search(r"device_count=(\d+)", os.environ.get("XLA_FLAGS", ""))
    n_dev = int(forced.group(1)) if forced else len(os.sched_getaffinity(0))
    assert summary["devices"] == f"{min(n_dev, 3)} x cpu"
    assert "fused" in stdout and "95% CI" in stdout
    assert not list(a.glob(".*.tmp"))


def test_the_cli_experiment_and_results_leave_statistics_tables_and_optax_for_later():
    # cli.run_job imports scipy.stats (prtm_jax.stats) and with it pandas while XLA compiles,
    # and optax is imported only where the XLA trainer is built. That only saves time if
    # nothing imports them earlier: not the CLI, the experiment or the results module.
    late = ("scipy.stats", "prtm_jax.stats", "pandas", "optax")
    code = (
        "import sys; from prtm_jax import cli, experiment, results; "
        f"print(sorted(m for m in {late!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_rerun_removes_the_previous_results_first_so_a_failure_leaves_none(tmp_path, monkeypatch):
    # A previous run's files in the job's directory, then a rerun with another config that
    # fails: none of the old files may remain to be read as this configuration's results.
    from prtm_jax import results

    out = tmp_path / "job"
    out.mkdir()
    for name in results.RUN_FILES:
        (out / name).write_text("{}" if name.endswith(".json") else "old\n")

    def fail(*args, **kwargs):
        assert not any((out / name).exists() for name in results.RUN_FILES)
        raise RuntimeError("the run failed")

    monkeypatch.setattr(cli, "run_job", fail)
    monkeypatch.setattr(cli, "_configure_jax", lambda cfg: None)
    monkeypatch.setattr(sys, "argv", ["prtm", "seeds=2", f"hydra.run.dir={out}"])
    with pytest.raises(SystemExit):
        cli.main()
    assert not any((out / name).exists() for name in results.RUN_FILES)
    assert (out / cli.ERROR_FILE).read_text() == "RuntimeError: the run failed\n"


@pytest.mark.parametrize(
    "args,jobs",
    [
        (["-i", "defaults"], 1),
        (["--cfg", "job", "-p", "data"], 1),
        (["-cn", "config", "seeds=2"], 1),
        (["-cn=config.yaml", "seeds=2"], 1),
        (["-cd=/elsewhere", "-cn", "other", "seeds=2"], 1),  # checks our overrides only
        (["hydra/launcher=basic", "model.hidden=[64,32]"], 1),
        (["hydra.mode=MULTIRUN", "seeds=2,4"], 2),
        (["-m", "seeds=2,4", "train.epochs=1,2"], 4),
    ],
)
def test_hydra_flags_and_values_pass_the_override_check(args, jobs):
    # The check must refuse only what Hydra would: a flag's value is not a bare word, and
    # hydra.mode=MULTIRUN makes a sweep as -m does.
    assert cli.check_overrides(args) == jobs
