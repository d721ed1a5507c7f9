"""Statistics across seeds: small named functions over (seeds,) arrays, built on scipy.

Comparisons are paired by seed (model a and model b of one seed saw the same data). Bootstraps
are percentile intervals computed for many columns at once: a resample is a row of counts, and
every statistic here is a weighted sum of sorted values, so a whole bootstrap is one matrix
product instead of a Python loop over resamples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

# Metrics where a smaller value is better; every other metric is better when larger.
LOWER_IS_BETTER = frozenset({"nll", "brier", "ece", "train_loss"})
IQM_TRIM = 0.25


def bootstrap_ci(
    x: np.ndarray, statistic=np.mean, level: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of `statistic` over the seeds axis of x (seeds,). The resamples
    are drawn and reduced 1,000 at a time (`batch`): the same draws from the same stream as
    all at once, so the same interval, in half the time at 256 seeds (the index array stays
    in cache)."""
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
        batch=1_000,
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


def iqm(x: np.ndarray, axis: int = 0) -> np.ndarray | float:
    """Interquartile mean: the mean of the middle 50% (scipy's trim_mean, 25% cut each side)."""
    return stats.trim_mean(x, IQM_TRIM, axis=axis)


def _counts(idx_BM: np.ndarray, n: int) -> np.ndarray:
    """(B, n) float counts of each value 0..n-1 in each row of idx."""
    b = idx_BM.shape[0]
    flat = (idx_BM + n * np.arange(b)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def bootstrap_mean_iqm(
    x_NK: np.ndarray, n_resamples: int = 5000, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap distributions (B, K) of the mean and the IQM of every column of x (N, K).

    A resample draws N ranks with replacement and sorts them; applied to a column sorted
    ascending it gives that resample's sorted values, so its mean is `counts @ x_sorted / N` and
    its IQM the same over the middle ranks. One draw serves every column (each column's
    distribution is an ordinary bootstrap; columns share ranks, not seeds).
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x_NK = np.sort(np.asarray(x_NK, np.float64), axis=0)
    n = x_NK.shape[0]
    idx_BN = np.sort(rng.integers(0, n, (n_resamples, n)), axis=1)
    g = int(IQM_TRIM * n)
    mean_BK = _counts(idx_BN, n) @ x_NK / n
    iqm_BK = _counts(idx_BN[:, g : n - g], n) @ x_NK / (n - 2 * g)
    return mean_BK, iqm_BK


def _interval(boot_BK: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.quantile(boot_BK, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return lo, hi


def sign_flip_pvalue(
    d_NK: np.ndarray, n_resamples: int = 9999, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Two-sided sign-flip permutation p-values (K,) of mean(d) = 0 for paired differences (N, K).

    What scipy.stats.permutation_test(permutation_type="samples") computes for one sample with
    the mean as statistic, for all columns at once: exact over all 2^N sign patterns when
    2^N <= n_resamples, otherwise n_resamples random patterns (p = (count + 1) / (R + 1));
    two-sided p = min(1, 2 min(p_less, p_greater)), with scipy's tolerance for ties.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    d_NK = np.asarray(d_NK, np.float64)
    n = d_NK.shape[0]
    observed_K = d_NK.mean(0)
    gamma_K = np.abs(np.finfo(np.float64).eps * 100 * observed_K)
    exact = n < 63 and 2**n <= n_resamples
    n_null = 2**n if exact else n_resamples
    less_K = np.zeros(d_NK.shape[1])
    greater_K = np.zeros(d_NK.shape[1])
    chunk = max(1, 2**22 // max(n, 1))  # about 32 MB of signs at a time
    for start in range(0, n_null, chunk):
        rows = np.arange(start, min(start + chunk, n_null))
        if exact:
            bits_RN = (rows[:, None] >> np.arange(n)[None, :]) & 1
        else:
            bits_RN = rng.integers(0, 2, (rows.size, n))
        null_RK = (1.0 - 2.0 * bits_RN) @ d_NK / n
        less_K += (null_RK <= observed_K + gamma_K).sum(0)
        greater_K += (null_RK >= observed_K - gamma_K).sum(0)
    adj = 0 if exact else 1
    p_less, p_greater = (less_K + adj) / (n_null + adj), (greater_K + adj) / (n_null + adj)
    return np.clip(2 * np.minimum(p_less, p_greater), 0.0, 1.0)


def wilcoxon_pvalue(d_NK: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values (K,) for paired differences (N, K).

    scipy.stats.wilcoxon with its defaults (zero differences dropped, exact for small N without
    ties, else normal approximation). A column whose differences are all zero gets p = 1.
    """
    d_NK = np.asarray(d_NK, np.float64)
    p_K = np.ones(d_NK.shape[1])
    live = np.any(d_NK != 0, axis=0)
    if live.any():
        p_K[live] = stats.wilcoxon(d_NK[:, live], axis=0).pvalue
    return p_K


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values (statsmodels multipletests); NaNs stay NaN and are not counted."""
    p = np.asarray(p, np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def _improvement(d_NK: np.ndarray, higher_is_better: bool | np.ndarray) -> np.ndarray:
    """Per seed: 1 if x beat y (d = x - y), 0.5 on a tie, 0 otherwise."""
    better_NK = np.where(higher_is_better, 1.0, -1.0) * d_NK
    return (better_NK > 0) + 0.5 * (better_NK == 0)


def probability_of_improvement(
    x_NK: np.ndarray, y_NK: np.ndarray, higher_is_better: bool | np.ndarray = True
) -> np.ndarray:
    """P(x beats y) + 0.5 P(tie) per column, over seeds paired row by row."""
    d_NK = np.asarray(x_NK, np.float64) - np.asarray(y_NK, np.float64)
    return _improvement(d_NK, higher_is_better).mean(0)


def paired_comparison(
    x_NK: np.ndarray,
    y_NK: np.ndarray,
    higher_is_better: bool | np.ndarray = True,
    level: float = 0.95,
    n_resamples: int = 5000,
    n_permutations: int = 9999,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Paired comparison of columns of x and y (N seeds, K comparisons), each entry (K,).

    diff is mean(x - y) with its bootstrap CI; prob_improvement is P(x better) + 0.5 P(tie),
    'better' per higher_is_better (scalar or (K,)), with its bootstrap CI; p_wilcoxon and
    p_signflip test mean/median difference 0, two-sided, unadjusted.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    x_NK, y_NK = np.asarray(x_NK, np.float64), np.asarray(y_NK, np.float64)
    d_NK = x_NK - y_NK
    h_NK = _improvement(d_NK, higher_is_better)
    # Resampling seeds (rows) keeps each seed's a and b together: the pairing the tests use.
    n = d_NK.shape[0]
    counts_BN = _counts(rng.integers(0, n, (n_resamples, n)), n)
    diff_lo, diff_hi = _interval(counts_BN @ d_NK / n, level)
    pi_lo, pi_hi = _interval(counts_BN @ h_NK / n, level)
    return {
        "n": np.full(d_NK.shape[1], n),
        "mean_a": x_NK.mean(0),
        "mean_b": y_NK.mean(0),
        "diff": d_NK.mean(0),
        "diff_lo": diff_lo,
        "diff_hi": diff_hi,
        "prob_improvement": h_NK.mean(0),
        "pi_lo": pi_lo,
        "pi_hi": pi_hi,
        "p_wilcoxon": wilcoxon_pvalue(d_NK),
        "p_signflip": sign_flip_pvalue(d_NK, n_permutations, rng),
    }


def _metric_columns(df: pd.DataFrame, by: Sequence[str]) -> list[str]:
    skip = {"seed", "model", "status", *by}
    return [c for c in df.select_dtypes("number").columns if c not in skip]


def _ok_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] == "ok"] if "status" in df.columns else df


def _by_mask(valid_NK: np.ndarray):
    """Yield (column indices, row mask) for groups of columns defined on the same seeds."""
    keys = [col.tobytes() for col in valid_NK.T]
    for key in dict.fromkeys(keys):
        rows = np.frombuffer(key, dtype=bool)
        if rows.any():
            yield [j for j, k in enumerate(keys) if k == key], rows


def _groups(df: pd.DataFrame, by: Sequence[str]):
    if not by:
        yield {}, df
        return
    for key, sub in df.groupby(list(by), sort=True, dropna=False):
        yield dict(zip(by, key, strict=True)), sub


def summarize(
    df: pd.DataFrame,
    pairs: Sequence[tuple[str, str]] = (),
    metrics: Sequence[str] | None = None,
    by: Sequence[str] = (),
    level: float = 0.95,
    n_resamples: int = 5000,
    n_permutations: int = 9999,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per-model summary, paired comparisons) of a tidy table of runs.

    df has one row per (seed, model) with columns seed, model, metric columns, optionally
    status (only "ok" rows are used) and the `by` columns (e.g. a sweep's noise levels; each
    combination is summarised on its own). metrics defaults to every numeric column but seed.
    Each metric is used on the seeds where it is not NaN; n says how many.

    summary: one row per (by, model, metric): n, mean, std, iqm, with percentile bootstrap CIs
    (mean_lo, mean_hi, iqm_lo, iqm_hi).
    comparisons: one row per (by, metric, pair a-b) over the seeds where both are defined:
    n, mean_a, mean_b, diff = mean(a - b) and its CI, prob_improvement (of a over b, direction
    from LOWER_IS_BETTER) and its CI, p_wilcoxon, p_signflip, and both Holm-adjusted across
    every row of this table (the report's family of comparisons).
    """
    rng = np.random.default_rng(seed)
    df = _ok_rows(df)
    metrics = list(_metric_columns(df, by) if metrics is None else metrics)
    missing = sorted({m for pair in pairs for m in pair} - set(df["model"]))
    if missing:
        raise ValueError(
            f"pairs name models not in the table: {', '.join(missing)} "
            f"(models: {', '.join(sorted(set(df['model'])))})"
        )
    if df.duplicated([*by, "seed", "model"]).any():
        raise ValueError(
            "the table has several rows for one (seed, model); pass the columns that tell them "
            f"apart (e.g. a sweep's noise levels) as by=[...] (got by={list(by)})"
        )
    summary_rows, compare_rows = [], []
    for key, sub in _groups(df, by):
        wide = sub.pivot(index="seed", columns="model", values=metrics)  # columns (metric, model)
        x_all = wide.to_numpy(np.float64)
        for cols, rows in _by_mask(~np.isnan(x_all)):
            x_NK = x_all[np.ix_(rows, cols)]
            mean_BK, iqm_BK = bootstrap_mean_iqm(x_NK, n_resamples, rng)
            mean_lo, mean_hi = _interval(mean_BK, level)
            iqm_lo, iqm_hi = _interval(iqm_BK, level)
            std = x_NK.std(0, ddof=1) if x_NK.shape[0] > 1 else np.full(len(cols), np.nan)
            stat = {
                "n": np.full(len(cols), x_NK.shape[0]),
                "mean": x_NK.mean(0),
                "mean_lo": mean_lo,
                "mean_hi": mean_hi,
                "std": std,
                "iqm": iqm(x_NK),
                "iqm_lo": iqm_lo,
                "iqm_hi": iqm_hi,
            }
            for j, c in enumerate(cols):
                metric, model = wide.columns[c]
                row = {**key, "model": model, "metric": metric}
                summary_rows.append(row | {k: v[j] for k, v in stat.items()})
        keys = [
            (m, a, b)
            for m in metrics
            for a, b in pairs
            if (m, a) in wide.columns and (m, b) in wide.columns
        ]
        if not keys:
            continue
        a_all = np.stack([wide[(m, a)].to_numpy(np.float64) for m, a, _ in keys], 1)
        b_all = np.stack([wide[(m, b)].to_numpy(np.float64) for m, _, b in keys], 1)
        for cols, rows in _by_mask(~np.isnan(a_all) & ~np.isnan(b_all)):
            hib = np.array([keys[c][0] not in LOWER_IS_BETTER for c in cols])
            res = paired_comparison(
                a_all[np.ix_(rows, cols)],
                b_all[np.ix_(rows, cols)],
                hib,
                level,
                n_resamples,
                n_permutations,
                rng,
            )
            for j, c in enumerate(cols):
                metric, a, b = keys[c]
                row = {**key, "metric": metric, "model_a": a, "model_b": b}
                compare_rows.append(row | {k: v[j] for k, v in res.items()})
    summary = pd.DataFrame(summary_rows)
    comparisons = pd.DataFrame(compare_rows)
    if len(comparisons):
        comparisons["p_wilcoxon_holm"] = holm(comparisons["p_wilcoxon"].to_numpy())
        comparisons["p_signflip_holm"] = holm(comparisons["p_signflip"].to_numpy())
    return summary, comparisons
