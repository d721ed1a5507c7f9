"""The `prtm` command: a Hydra app whose overrides are checked before anything compiles.

`prtm experiment=prtm2 seeds=128 data.view1_std=3.0` trains, fuses and writes `seeds.csv` and
`summary.json` into the Hydra run dir. Every override (each value of a multirun sweep too) is
composed and validated first; a bad one stops the command with one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import DictConfig, OmegaConf

from prtm_jax.config import Config, ConfigError

ERROR_FILE = "error.txt"
CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

ConfigStore.instance().store(name="base_config", node=Config)


def to_config(raw: DictConfig) -> Config:
    """The typed Config behind a composed DictConfig (its schema is Config)."""
    cfg = OmegaConf.to_object(raw)
    assert isinstance(cfg, Config)
    return cfg


def _one_line(exc: BaseException) -> str:
    """Hydra's and OmegaConf's messages span lines; keep the first line of each cause."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.options is not None:
        group = (exc.missing_cfg_file or "").rsplit("/", 1)
        name = group[0] if len(group) == 2 else "config"
        return f"{name}={group[-1]!r} is not one of: {', '.join(sorted(exc.options))}"
    from prtm_jax.results import first_line

    parts = []
    while exc is not None:
        first = first_line(exc)
        if first not in parts:
            parts.append(first)
        exc = exc.__cause__
    return ": ".join(parts)


def expand_jobs(
    overrides: list[str], sweep_params: dict[str, Any] | None = None
) -> list[list[str]]:
    """Every job of a (multirun) override list, in the order Hydra's basic sweeper runs them:
    the config's `hydra.sweeper.params` first, command-line overrides after (and winning)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (sweep_params or {}).items()]
    try:
        parsed = OverridesParser.create().parse_overrides(params + overrides)
        return BasicSweeper.split_arguments(parsed, None)[0]
    except Exception as exc:
        raise ConfigError(_one_line(exc)) from None


def _command_line(args: list[str]) -> argparse.Namespace:
    """The arguments as Hydra's own parser reads them: its flags (with their values, in any
    form argparse accepts) and `overrides`, every other argument."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_known_args(args)[0]


def _config_name(ns: argparse.Namespace) -> str | None:
    """The primary config the command line chooses ("config" unless -cn says otherwise), or
    None when it also names another config dir or path (whose configs this check cannot see)."""
    return None if ns.config_dir or ns.config_path else ns.config_name or "config"


def is_multirun(ns: argparse.Namespace) -> bool:
    """-m, --multirun, or Hydra's equivalent override hydra.mode=MULTIRUN."""
    return ns.multirun or "hydra.mode=MULTIRUN" in {o.lstrip("+") for o in ns.overrides}


def _check_syntax(lines: list[str], multirun: bool) -> list[Override]:
    """The overrides of our config (not hydra.*), parsed; a ConfigError for what Hydra would
    reject, or quietly accept, with a multi-line message: a bare word, a sweep without
    --multirun, a deleted key, an override that does not parse."""
    for arg in lines:
        if "=" not in arg and not arg.startswith("~"):
            raise ConfigError(f"{arg!r} is not an override: write key=value (e.g. seeds=64)")
    # Every override, Hydra's own included, for its syntax; the rules below are for ours.
    parser, parsed = OverridesParser.create(), []
    for line in lines:
        try:
            parsed += parser.parse_overrides([line])
        except Exception as exc:
            # Hydra's message: "Error parsing override ...", the parser's reason, a URL.
            text = [t for t in str(exc).splitlines() if t.strip()] or [_one_line(exc)]
            reason = next((t for t in text[1:] if not t.startswith("See ")), text[0])
            raise ConfigError(f"{line}: {reason.strip()}") from None
    ours = []
    for o in parsed:
        if o.is_delete():
            raise ConfigError(f"{o.input_line}: keys cannot be removed; set {o.key_or_group}=...")
        if o.key_or_group.startswith("hydra"):
            continue
        if o.is_sweep_override() and not multirun:
            raise ConfigError(
                f"{o.input_line} is a sweep: add -m (--multirun), or give a list as [a,b]"
            )
        ours.append(o)
    return ours


def _extra_keys(raw: DictConfig, schema: object, prefix: str = "") -> list[str]:
    """Keys of a composed config (added with +key=...) that its schema does not have."""
    names = {f.name for f in dataclasses.fields(schema)}
    extra = []
    for key in raw:
        if key not in names:
            extra.append(f"{prefix}{key}")
        elif dataclasses.is_dataclass(sub := getattr(schema, str(key))):
            extra += _extra_keys(raw[key], sub, f"{prefix}{key}.")
    return extra


def _at(cfg: Config, path: str) -> Any:
    for part in filter(None, path.split(".")):
        cfg = getattr(cfg, part)
    return cfg


def check_overrides(args: list[str]) -> int:
    """Compose and validate every job the arguments describe; returns the job count."""
    from hydra import compose, initialize_config_dir

    from prtm_jax.experiment import validate_config

    ns = _command_line(args)
    multirun, name = is_multirun(ns), _config_name(ns)
    primary = sorted(p.stem for p in Path(CONF_DIR).glob("*.yaml"))
    if name is None:
        name = "config"  # another config dir: only its overrides of ours are checked here
    elif name.removesuffix(".yaml") not in primary:
        raise ConfigError(f"--config-name={name!r} is not one of: {', '.join(primary)}")
    ours = _check_syntax(ns.overrides, multirun)
    overrides = [o.input_line for o in ours]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        sweep_params = None
        if multirun:
            fixed = [o.input_line for o in ours if not o.is_sweep_override()]
            try:
                base = compose(config_name=name, overrides=fixed, return_hydra_config=True)
            except Exception as exc:
                raise ConfigError(_one_line(exc)) from None
            params = base.hydra.sweeper.params
            sweep_params = OmegaConf.to_container(params) if params is not None else None
        jobs = expand_jobs(overrides, sweep_params)
        cpu_devices = set()
        for job in jobs:
            try:
                raw = compose(config_name=name, overrides=job)
                cfg = to_config(raw)
            except Exception as exc:
                raise ConfigError(_one_line(exc)) from None
            if extra := _extra_keys(raw, cfg):
                parent = extra[0].rpartition(".")[0]
                allowed = dataclasses.fields(_at(cfg, parent))
                raise ConfigError(
                    f"{extra[0]} is not a config key; {parent or 'the config'} has:"
                    f" {', '.join(f.name for f in allowed)}"
                )
            validate_config(cfg)
            cpu_devices.add(cfg.cpu_devices)
    if len(cpu_devices) > 1:
        raise ConfigError(
            f"cpu_devices cannot vary within one multirun (got {sorted(cpu_devices)}): JAX "
            "fixes its CPU devices once per process"
        )
    return len(jobs)


def format_table(summary: dict[str, Any]) -> str:
    """A short text table of one summary (per grid point if the run had a grid)."""
    if "points" in summary:
        return "\n".join(
            f"-- {', '.join(f'{k}={v}' for k, v in p['grid'].items())}\n{format_table(p)}"
            for p in summary["points"]
        )
    w = max(12, *(len(m) for m in summary["models"]))
    lines = [f"{'model':<{w}} {'n':>5} {'accuracy':>9}  {'95% CI':<17} {'diverged':>8}"]
    for model, s in summary["models"].items():
        ci = f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"
        lines.append(f"{model:<{w}} {s['n']:>5} {s['mean']:>9.4f}  {ci:<17} {s['n_diverged']:>8}")
    for name, p in summary["paired"].items():
        if not p["n"]:
            lines.append(f"{name}: no seed where both models are ok")
            continue
        lines.append(
            f"{name}: {p['mean']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}],"
            f" fused better on {p['frac_better']:.0%} of {p['n']} seeds"
        )
    return "\n".join(lines)


def run_job(cfg: Config, out_dir: Path, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every seed (at every grid point) of `cfg`; write seeds.csv and summary.json."""
    import jax
    import numpy as np

    from prtm_jax import experiment, results

    task = experiment.TASKS[cfg.task]
    # "Best single" is the better of the one-view models (concat and wb see both views).
    singles = [m.name for m in task.models if m.view != "concat"]
    fused = [f.name for f in task.fusions]
    t0 = time.perf_counter()
    # The statistics' and the tables' imports (scipy.stats, statsmodels, pandas) run while
    # XLA compiles, on the two threads.
    metrics = experiment.run_seeds(cfg, lambda: importlib.import_module("prtm_jax.stats"))
    seconds = time.perf_counter() - t0
    import pandas as pd

    points = experiment.grid_points(cfg)
    at = [
        {m: {k: v[g] for k, v in d.items()} for m, d in metrics.items()} for g in range(len(points))
    ]
    tables = [
        results.seeds_table(m, np.arange(cfg.seeds), extra=p)
        for m, p in zip(at, points, strict=True)
    ]
    df = pd.concat(tables, ignore_index=True)
    reliability = pd.concat(
        [results.reliability_table(m, p) for m, p in zip(at, points, strict=True)],
        ignore_index=True,
    )
    if len(points) == 1 and not points[0]:
        summary = results.summarize(df, singles, fused)
    else:
        summary = {
            "points": [
                {"grid": point, **results.summarize(t, singles, fused)}
                for point, t in zip(points, tables, strict=True)
            ]
        }
    if cfg.dependence_seeds:
        deps = experiment.view_dependence(cfg, cfg.dependence_seeds)
        results.write_atomic(
            out_dir / results.DEPENDENCE_FILE, lambda p: deps.to_csv(p, index=False)
        )
    summary.update(
        task=cfg.task,
        seeds=cfg.seeds,
        seconds=round(seconds, 2),
        devices=f"{experiment.block_devices(cfg.seeds * len(points), cfg.seed_chunk)}"
        f" x {jax.default_backend()}",
        train_impl=experiment.train_impls(cfg),
        config=resolved,
    )
    results.write_run(out_dir, df, summary, reliability)
    return summary


_JOBS: dict[str, Any] = {}


def _set_cpu_devices(jax: Any, requested: int) -> None:
    """One JAX CPU device per core (or `requested`): run_seeds shards its blocks over them, and
    a result does not depend on the device count. XLA_FLAGS' forced device count wins."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    n = requested or len(os.sched_getaffinity(0))
    if jax.config.jax_num_cpu_devices == n:
        return
    jax.config.update("jax_num_cpu_devices", n)


def _configure_jax(cfg: Config) -> None:
    import jax

    # Hydra's job logging is at INFO; JAX's backend probing there is noise.
    logging.getLogger("jax").setLevel(logging.WARNING)
    jax.config.update("jax_default_matmul_precision", cfg.matmul_precision)
    _set_cpu_devices(jax, cfg.cpu_devices)
    if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        cache = os.environ.get("PRTM_CACHE_DIR", str(Path(CONF_DIR).parent / ".cache" / "jax"))
        jax.config.update("jax_compilation_cache_dir", cache)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _app(raw: DictConfig) -> None:
    from prtm_jax import results
    from prtm_jax.experiment import validate_config

    cfg = validate_config(to_config(raw))
    _configure_jax(cfg)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    resolved = OmegaConf.to_container(raw, resolve=True)
    if results.is_complete(out_dir) and results.read_summary(out_dir).get("config") == resolved:
        print(f"{cfg.task}: complete results in {out_dir}, skipped")
    else:
        results.clear_run(out_dir)  # a rerun in the same directory starts from no results
        try:
            summary = run_job(cfg, out_dir, resolved)
        except Exception as exc:
            # Leave the reason beside the job for prtm-aggregate; Hydra reports it too.
            (out_dir / ERROR_FILE).write_text(f"{type(exc).__name__}: {exc}\n")
            raise
        (out_dir / ERROR_FILE).unlink(missing_ok=True)
        print(
            f"{cfg.task}: {cfg.seeds} seeds in {summary['seconds']:.1f} s on"
            f" {summary['devices']} devices -> {out_dir}"
        )
        print(format_table(summary))
    if "bar" in _JOBS:
        _JOBS["bar"].update(1)


def main() -> None:
    args = sys.argv[1:]
    try:
        n_jobs = check_overrides(args)
    except ConfigError as exc:
        print(f"prtm: error: {exc}", file=sys.stderr)
        sys.exit(2)
    if is_multirun(_command_line(args)):
        from prtm_jax.experiment import tqdm

        _JOBS["bar"] = tqdm(total=n_jobs, desc="jobs", unit="job", position=1)
    _app()


def console_main() -> None:
    """The `prtm` console script: `main()`, then, once it has succeeded, leave without tearing
    the interpreter down. The result files are written and closed by then; what is skipped is
    JAX's and Python's clean-up of a finished process (backends, executables, every module),
    ~0.5 s. Errors still exit through SystemExit as usual. In-process callers use `main()`."""
    main()
    exit_now()


def exit_now() -> None:
    """End a process whose work is done, with status 0, skipping interpreter teardown."""
    logging.shutdown()  # flush and close Hydra's job log
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
