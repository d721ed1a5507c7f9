"""Statistics across seeds: small named functions over (seeds,) arrays, built on scipy."""

from __future__ import annotations

import numpy as np
from scipy import stats


def bootstrap_ci(
    x: np.ndarray, statistic=np.mean, level: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` over the seeds axis of x (seeds,)."""
    x = np.asarray(x, np.float64)
    if x.size < 2 or np.all(x == x[0]):
        v = float(statistic(x)) if x.size else float("nan")
        return (v, v)
    res = stats.bootstrap(
        (x,),
        statistic,
        confidence_level=level,
        n_resamples=n_resamples,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return (float(res.confidence_interval.low), float(res.confidence_interval.high))


def describe(x: np.ndarray) -> dict[str, float | int | list[float]]:
    """Mean, std (ddof=1), 95% bootstrap CI of the mean, and the seed count n."""
    x = np.asarray(x, np.float64)
    return {
        "n": int(x.size),
        "mean": float(x.mean()) if x.size else float("nan"),
        "std": float(x.std(ddof=1)) if x.size > 1 else float("nan"),
        "ci95": list(bootstrap_ci(x)),
    }
