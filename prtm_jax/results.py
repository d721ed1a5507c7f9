"""Result files of one run: `seeds.csv` (one row per seed and model) and `summary.json`.

Every file is written atomically (temporary file in the same directory, then `os.replace`),
and `summary.json` is written last, so its presence marks a complete run.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    # pandas (0.2 s) is imported where a table is built: `prtm` imports it while XLA compiles
    # (cli.run_job), and checking for complete results needs none of it.
    import pandas as pd

SEEDS_FILE = "seeds.csv"
SUMMARY_FILE = "summary.json"
RELIABILITY_FILE = "reliability.csv"
DEPENDENCE_FILE = "dependence.csv"
MULTIRUN_FILE = "multirun.yaml"  # Hydra's record of a sweep, in its sweep dir
SEEDS_COLUMNS = ("seed", "model", "status")  # what every reader of seeds.csv needs
# What a run writes, its completion marker first: a rerun removes them in this order first,
# so an interrupted or failed rerun never leaves the previous run's results looking current.
RUN_FILES = (SUMMARY_FILE, SEEDS_FILE, RELIABILITY_FILE, DEPENDENCE_FILE)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, then rename tmp_path onto `path`; no half-written file remains."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> what open() would have made
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def seeds_table(
    metrics: dict[str, dict[str, np.ndarray]],
    seed_ids: np.ndarray,
    extra: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Tidy table: one row per (seed, model) with the metrics and `status` (ok / diverged)."""
    import pandas as pd

    frames = []
    for model, m in metrics.items():
        # One value per seed; per-seed vectors (reliability bins) go to reliability_table.
        cols = {k: np.asarray(v) for k, v in m.items() if k != "finite" and np.ndim(v) == 1}
        df = pd.DataFrame({"seed": seed_ids, "model": model, **cols})
        df["status"] = np.where(np.asarray(m["finite"]), "ok", "diverged")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    for k, v in (extra or {}).items():
        df[k] = v
    return df.sort_values("seed", kind="stable").reset_index(drop=True)


def reliability_table(
    metrics: dict[str, dict[str, np.ndarray]], extra: dict[str, Any] | None = None
) -> pd.DataFrame:
    """Per model and confidence bin: row count, summed confidence and summed correct, added up
    over the ok seeds (the `rel_*` (seeds, bins) arrays of a run)."""
    import pandas as pd

    frames = []
    for model, m in metrics.items():
        if "rel_count" not in m:
            continue
        ok = np.asarray(m["finite"])
        sums = {k: np.asarray(m[f"rel_{k}"])[ok].sum(0) for k in ("count", "conf", "correct")}
        frames.append(
            pd.DataFrame(
                {
                    "model": model,
                    "bin": np.arange(sums["count"].size),
                    "count": sums["count"],
                    "conf_sum": sums["conf"],
                    "correct_sum": sums["correct"],
                    **(extra or {}),
                }
            )
        )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(df: pd.DataFrame, singles: list[str], fused: list[str]) -> dict[str, Any]:
    """Per-model accuracy statistics over ok seeds, and each fused model minus the best single.

    The best single model is the one with the highest mean accuracy; differences are paired
    by seed, over seeds where every model involved is ok.
    """
    # Imported here, not with this module: scipy.stats takes ~0.5 s, which `prtm` spends
    # while XLA compiles (cli.run_job); reading and writing results needs none of it.
    from prtm_jax.stats import bootstrap_ci, describe

    df = df[~df.model.str.contains("|", regex=False)]  # pair rows carry no accuracy
    ok = df[df.status == "ok"]
    out: dict[str, Any] = {"models": {}, "paired": {}}
    for model, g in df.groupby("model", sort=False):
        acc = ok.loc[ok.model == model, "accuracy"].to_numpy()
        out["models"][model] = {
            **describe(acc),
            "n_diverged": int((g.status != "ok").sum()),
            "nll_mean": float(ok.loc[ok.model == model, "nll"].mean()),
        }
    if not singles or not fused:
        return out
    wide = ok.pivot(index="seed", columns="model", values="accuracy")
    # A model whose every seed diverged has no mean: the best is among the others, and a pair
    # without ok seeds has n = 0 and NaN statistics (the seeds' status says why).
    finite = [m for m in singles if np.isfinite(out["models"][m]["mean"])] or singles
    best = max(finite, key=lambda m: out["models"][m]["mean"])
    for f in fused:
        pair = wide.reindex(columns=[f, best]).dropna()
        diff = (pair[f] - pair[best]).to_numpy()
        out["paired"][f"{f}-{best}"] = {
            "n": int(diff.size),
            "mean": float(diff.mean()) if diff.size else float("nan"),
            "ci95": list(bootstrap_ci(diff)),
            "frac_better": float((diff > 0).mean()) if diff.size else float("nan"),
        }
    return out


def write_run(
    out_dir: Path,
    df: pd.DataFrame,
    summary: dict[str, Any],
    reliability: pd.DataFrame | None = None,
) -> None:
    """Write seeds.csv (and reliability.csv), then summary.json (the completion marker), each
    atomically."""
    out_dir = Path(out_dir)
    if reliability is not None and len(reliability):
        write_atomic(out_dir / RELIABILITY_FILE, lambda p: reliability.to_csv(p, index=False))
    write_atomic(out_dir / SEEDS_FILE, lambda p: df.to_csv(p, index=False))
    text = json.dumps(_strict_json(summary), indent=2, default=str, allow_nan=False)
    write_atomic(out_dir / SUMMARY_FILE, lambda p: p.write_text(text))


def _strict_json(v: Any) -> Any:
    """v with every NaN or infinite float as None (JSON's null), for parsers other than
    Python's: a statistic over no ok seeds is undefined."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _strict_json(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_strict_json(x) for x in v]
    return v


class InputError(ValueError):
    """A result file that cannot be read as one; the message names it, in one line."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__


def read_table(path: Path, columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A result CSV (seeds.csv, reliability.csv, dependence.csv) with at least `columns`, or
    InputError."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a readable CSV table ({first_line(exc)})") from None
    if missing := [c for c in columns if c not in df.columns]:
        raise InputError(f"{path} has no column {missing[0]!r} (needs {', '.join(columns)})")
    return df


def clear_run(out_dir: Path) -> None:
    """Remove a previous run's result files from out_dir (before a run writes its own); what
    prtm-report wrote there (report.md, figures) it writes anew from these files."""
    for name in RUN_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)


def is_complete(out_dir: Path) -> bool:
    out_dir = Path(out_dir)
    return (out_dir / SUMMARY_FILE).is_file() and (out_dir / SEEDS_FILE).is_file()


def read_summary(out_dir: Path) -> dict[str, Any]:
    path = Path(out_dir) / SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid JSON ({first_line(exc)})") from None
