"""The `prtm` command: a Hydra app whose overrides are checked before anything compiles.

`prtm experiment=prtm2 seeds=128 data.view1_std=3.0` trains, fuses and writes `seeds.csv` and
`summary.json` into the Hydra run dir. Every override (each value of a multirun sweep too) is
composed and validated first; a bad one stops the command with one line on stderr, exit 2.
"""

from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from prtm_jax.config import Config, ConfigError, validate

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
    parts = []
    while exc is not None:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.rstrip(".")
        if first not in parts:
            parts.append(first)
        exc = exc.__cause__
    return ": ".join(parts)


def _expand(overrides: list[str]) -> list[list[str]]:
    """Every combination of a (multirun) override list, as Hydra's basic sweeper forms them."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise ConfigError(_one_line(exc)) from None
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            key = o.get_key_element()
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.product(*choices)]


def check_overrides(args: list[str]) -> int:
    """Compose and validate every job the arguments describe; returns the job count."""
    from hydra import compose, initialize_config_dir

    from prtm_jax.experiment import TASKS

    overrides = [
        a
        for a in args
        if "=" in a and not a.startswith("-") and not a.lstrip("+~").startswith("hydra")
    ]
    jobs = _expand(overrides)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        for job in jobs:
            try:
                raw = compose(config_name="config", overrides=job)
                cfg = to_config(raw)
            except Exception as exc:
                raise ConfigError(_one_line(exc)) from None
            validate(cfg, tuple(TASKS))
    return len(jobs)


def format_table(summary: dict[str, Any]) -> str:
    lines = [f"{'model':<12} {'n':>5} {'accuracy':>9}  {'95% CI':<17} {'diverged':>8}"]
    for model, s in summary["models"].items():
        ci = f"[{s['ci95'][0]:.4f}, {s['ci95'][1]:.4f}]"
        lines.append(f"{model:<12} {s['n']:>5} {s['mean']:>9.4f}  {ci:<17} {s['n_diverged']:>8}")
    for name, p in summary["paired"].items():
        lines.append(
            f"{name}: {p['mean']:+.4f} [{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}],"
            f" fused better on {p['frac_better']:.0%} of {p['n']} seeds"
        )
    return "\n".join(lines)


def run_job(cfg: Config, out_dir: Path, resolved: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train every seed of `cfg`, write seeds.csv and summary.json into out_dir."""
    import numpy as np

    from prtm_jax import experiment, results

    task = experiment.TASKS[cfg.task]
    t0 = time.perf_counter()
    metrics = experiment.run_seeds(cfg)
    seconds = time.perf_counter() - t0
    df = results.seeds_table(metrics, np.arange(cfg.seeds))
    summary = results.summarize(df, [m.name for m in task.models], [f.name for f in task.fusions])
    summary.update(task=cfg.task, seeds=cfg.seeds, seconds=round(seconds, 2), config=resolved)
    results.write_run(out_dir, df, summary)
    return summary


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _app(raw: DictConfig) -> None:
    from prtm_jax.experiment import TASKS

    # Hydra's job logging is at INFO; JAX's backend probing there is noise.
    logging.getLogger("jax").setLevel(logging.WARNING)

    cfg = validate(to_config(raw), tuple(TASKS))
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    summary = run_job(cfg, out_dir, OmegaConf.to_container(raw, resolve=True))
    print(f"{cfg.task}: {cfg.seeds} seeds in {summary['seconds']:.1f} s -> {out_dir}")
    print(format_table(summary))


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except ConfigError as exc:
        print(f"prtm: error: {exc}", file=sys.stderr)
        sys.exit(2)
    _app()
