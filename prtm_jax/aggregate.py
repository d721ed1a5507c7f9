"""`prtm-aggregate SWEEP_DIR`: every job of a Hydra multirun into one long table.

Writes into SWEEP_DIR:
- `aggregate.parquet` / `aggregate.csv`: one row per (job, grid point, seed, model), with a
  column per overridden key named by its last part (`activation`, `view1_std`, ...), and one
  row per job that has no complete results (status `failed`, `incomplete` or `missing`);
- `points.csv`: per sweep point and model, n, n_diverged, mean, std and 95% CI of accuracy,
  and each fused model's paired gain over the best single model.
The expected jobs come from `multirun.yaml`, so a job that never started is listed too.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from prtm_jax import results
from prtm_jax.cli import ERROR_FILE, expand_jobs
from prtm_jax.config import ConfigError

# Per-seed measurements in seeds.csv (never sweep axes).
METRICS = frozenset(
    {
        "accuracy",
        "nll",
        "brier",
        "ece",
        "train_loss",
        "follows_confident",
        "follows_confident_disagree",
        "t_a",
        "t_b",
        "w_a",
        "w_b",
        "yules_q",
        "yules_q_within",
        "correlation",
        "correlation_within",
        "disagreement",
        "double_fault",
        "mi",
        "cmi",
        "cmi_null",
        "cmi_excess",
        "oracle_accuracy",
    }
)


def _column(key: str, taken: set[str]) -> str:
    last = key.lstrip("+~").rsplit(".", 1)[-1]
    return last if last not in taken else key.lstrip("+~")


def _parse(overrides: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+~").startswith("hydra"):
            continue
        parsed = yaml.safe_load(value)
        # Lists (e.g. model.hidden=[64,32]) stay as written: one cell, one sweep point.
        out[_column(key, set(out))] = value if isinstance(parsed, list | dict) else parsed
    return out


def expected_jobs(sweep_dir: Path) -> list[list[str]]:
    """The job override lists of the multirun in SWEEP_DIR, in job-number order."""
    path = sweep_dir / results.MULTIRUN_FILE
    try:
        conf = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise results.InputError(f"{path} is not valid YAML ({results.first_line(exc)})") from None
    try:
        task_overrides = list(conf["hydra"]["overrides"]["task"])
        params = conf["hydra"]["sweeper"].get("params")
    except (KeyError, TypeError, AttributeError):
        raise results.InputError(
            f"{path} is not a Hydra multirun.yaml (no hydra.overrides.task or hydra.sweeper)"
        ) from None
    try:
        return expand_jobs(task_overrides, params)
    except ConfigError as exc:
        raise results.InputError(f"{path}: {exc}") from None


def job_dirs(sweep_dir: Path) -> dict[tuple[str, ...], Path]:
    """Job directories found under SWEEP_DIR, keyed by their override list."""
    found = {}
    for f in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        found[tuple(yaml.safe_load(f.read_text()) or [])] = f.parent.parent
    return found


def _job_status(job_dir: Path | None) -> str:
    if job_dir is None:
        return "missing"
    if results.is_complete(job_dir):
        return "complete"
    return "failed" if (job_dir / ERROR_FILE).is_file() else "incomplete"


def collect(sweep_dir: Path) -> pd.DataFrame:
    """The long table of SWEEP_DIR (see the module docstring)."""
    sweep_dir = Path(sweep_dir)
    dirs = job_dirs(sweep_dir)
    expected = expected_jobs(sweep_dir) if (sweep_dir / results.MULTIRUN_FILE).is_file() else []
    order = [tuple(j) for j in expected] + [k for k in dirs if list(k) not in expected]
    frames = []
    for num, overrides in enumerate(order):
        job_dir = dirs.get(overrides)
        status = _job_status(job_dir)
        meta = {"job": num, **_parse(list(overrides)), "job_status": status}
        if status == "complete":
            df = results.read_table(job_dir / results.SEEDS_FILE, results.SEEDS_COLUMNS)
            df.insert(0, "task", results.read_summary(job_dir)["task"])
        else:
            df = pd.DataFrame({"seed": [np.nan], "model": [None], "status": [status]})
        frames.append(df.assign(**meta))
    if not frames:
        raise FileNotFoundError(f"no Hydra jobs under {sweep_dir}")
    long = pd.concat(frames, ignore_index=True)
    front = ["job", "job_status", *(c for c in frames[0].columns if c in meta)]
    front = list(dict.fromkeys(c for c in front if c in long.columns))
    return long[front + [c for c in long.columns if c not in front]]


def point_columns(long: pd.DataFrame) -> list[str]:
    """Columns that name a point (grid axes, sweep overrides) and take more than one value.

    Not an id or a metric; defined on every row of a complete job (metrics are NaN on some
    rows, e.g. accuracy on the pair row, t_a on all but one fused row); and each value is
    shared by several seeds (a point holds every seed; a continuous metric mostly does not).
    """
    done = long[long["job_status"] == "complete"] if "job_status" in long else long
    ids = {"job", "job_status", "task", "seed", "model", "status", "_point"}
    many_seeds = done["seed"].nunique() > 1 if len(done) else False
    out = []
    for c in long.columns:
        if c in ids or c in METRICS or long[c].nunique(dropna=False) < 2 or done[c].isna().any():
            continue
        if many_seeds and done.groupby(c, dropna=False)["seed"].nunique().min() < 2:
            continue
        out.append(c)
    return out


def summarize_points(long: pd.DataFrame) -> pd.DataFrame:
    """Per point and model: accuracy statistics, and fused-minus-best-single gains."""
    from prtm_jax.experiment import TASKS

    done = long[long.job_status == "complete"]
    keys = point_columns(long)
    rows = []
    groups = done.groupby(keys, dropna=False, sort=False) if keys else [((), done)]
    for point, g in groups:
        point = point if isinstance(point, tuple) else (point,)
        task = TASKS[g.task.iloc[0]]
        singles, fused = [m.name for m in task.models], [f.name for f in task.fusions]
        s = results.summarize(g, singles, fused)
        for name, stats in {**s["models"], **s["paired"]}.items():
            ci = stats.pop("ci95")
            rows.append(
                {
                    **dict(zip(keys, point, strict=True)),
                    "model": name,
                    **stats,
                    "ci95_low": ci[0],
                    "ci95_high": ci[1],
                }
            )
    return pd.DataFrame(rows)


def write(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    sweep_dir = Path(sweep_dir)
    long = collect(sweep_dir)
    points = summarize_points(long)
    results.write_atomic(sweep_dir / "aggregate.parquet", lambda p: long.to_parquet(p, index=False))
    results.write_atomic(sweep_dir / "aggregate.csv", lambda p: long.to_csv(p, index=False))
    results.write_atomic(sweep_dir / "points.csv", lambda p: points.to_csv(p, index=False))
    return long, points


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prtm-aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"prtm-aggregate: error: {args.sweep_dir} is not a directory", file=sys.stderr)
        sys.exit(2)
    try:
        long, points = write(args.sweep_dir)
    except (FileNotFoundError, results.InputError) as exc:
        print(f"prtm-aggregate: error: {exc}", file=sys.stderr)
        sys.exit(2)
    jobs = long.drop_duplicates("job")
    print(
        f"{len(jobs)} jobs ({(jobs.job_status == 'complete').sum()} complete), "
        f"{len(long)} rows -> {args.sweep_dir / 'aggregate.parquet'}"
    )
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(points.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
