"""Dependence between two views given the label, measured on the host (NumPy, scipy, sklearn).

Product fusion (`fusion.py`) is the Bayes rule when the views are independent given the label;
these functions measure how far two views a (n, ka) and b (n, kb) with labels y (n,) are from
that. Any two views will do: the RT views, or the blobs views with a controlled dependence.

- `within_class_spearman`: Spearman's rho of every column pair (a_i, b_j) inside each class,
  averaged over classes weighted by class size, (ka, kb). `pooled_spearman` ignores the label,
  for contrast: views that share only the label are correlated pooled, not within class.
- `conditional_mutual_info`: I(a_i; b_j | Y) in nats, (ka, kb), from scikit-learn's
  Kraskov (KSG) estimator within each class, weighted by class size. The estimator clips
  negative estimates at 0, so it reads slightly above 0 for independent views;
  `Dependence.cmi_null` measures that floor on within-class shuffled rows.
- `permutation_test`: statistic = class-weighted mean over all column pairs of the squared
  within-class Spearman rho; its null distribution comes from shuffling b's rows within each
  class, which keeps both views' class-conditional distributions and breaks any link between
  them. A small p-value rejects conditional independence; a large one does not prove it (rank
  correlation misses non-monotone dependence).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import stats
from sklearn.feature_selection import mutual_info_regression

MIN_CLASS_ROWS = 3
PERM_BLOCK = 128


class Permutation(NamedTuple):
    statistic: float
    p_value: float  # >= 1/(n_permutations + 1)
    null_mean: float  # the statistic's mean and std under within-class shuffles: when the
    null_std: float  # p-value is at its floor, (statistic - null_mean)/null_std still ranks


class Dependence(NamedTuple):
    spearman_within: np.ndarray  # (ka, kb)
    spearman_pooled: np.ndarray  # (ka, kb)
    cmi: np.ndarray  # (ka, kb), nats
    cmi_null: float  # mean CMI after one within-class shuffle of b: the estimator's floor
    permutation: Permutation


def _check(a, b, y) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    y = np.asarray(y)
    if a.ndim != 2 or b.ndim != 2 or y.ndim != 1 or not len(a) == len(b) == len(y):
        raise ValueError(
            f"need views a (n, ka), b (n, kb) and labels y (n,), got shapes "
            f"{a.shape}, {b.shape}, {y.shape}"
        )
    rows = [np.flatnonzero(y == c) for c in np.unique(y)]
    small = [len(r) for r in rows if len(r) < MIN_CLASS_ROWS]
    if small:
        raise ValueError(f"every class needs >= {MIN_CLASS_ROWS} rows, some have {small}")
    return a, b, y, rows


def _zranks(x: np.ndarray) -> np.ndarray:
    # Standardised ranks per column: Spearman's rho is the mean product of two of these.
    # A constant column has no ranks to correlate; its z-scores are 0, so its rho is 0.
    r = stats.rankdata(x, axis=0)
    sd = r.std(0)
    return (r - r.mean(0)) / np.where(sd > 0, sd, 1.0)


def pooled_spearman(a, b) -> np.ndarray:
    """Spearman's rho (ka, kb) of every column pair over all rows, ignoring the label."""
    za, zb = _zranks(np.asarray(a, np.float64)), _zranks(np.asarray(b, np.float64))
    return za.T @ zb / len(za)


def within_class_spearman(a, b, y) -> np.ndarray:
    """Spearman's rho (ka, kb) of every column pair within each class, class-size weighted."""
    a, b, y, rows = _check(a, b, y)
    return sum(len(r) * pooled_spearman(a[r], b[r]) for r in rows) / len(y)


def conditional_mutual_info(a, b, y, n_neighbors: int = 3, seed: int = 0) -> np.ndarray:
    """KSG estimate of I(a_i; b_j | Y) in nats, (ka, kb), class-size weighted."""
    a, b, y, rows = _check(a, b, y)
    cmi = np.zeros((a.shape[1], b.shape[1]))
    for r in rows:
        for j in range(b.shape[1]):
            mi = mutual_info_regression(a[r], b[r, j], n_neighbors=n_neighbors, random_state=seed)
            cmi[:, j] += len(r) * mi
    return cmi / len(y)


def _shuffle_within(rows: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    perm = np.arange(n)
    for r in rows:
        perm[r] = rng.permutation(r)
    return perm


def permutation_test(a, b, y, n_permutations: int = 999, seed: int = 0) -> Permutation:
    """Mean squared within-class Spearman rho over column pairs, and its within-class null."""
    a, b, y, rows = _check(a, b, y)
    rng = np.random.default_rng(seed)
    stat_obs, stat_null = 0.0, np.zeros(n_permutations)
    for r in rows:
        # Ranks do not change when rows are permuted, so rank once and permute the z-scores.
        za, zb = _zranks(a[r]), _zranks(b[r])
        w = len(r) / len(y)
        stat_obs += w * np.mean((za.T @ zb / len(r)) ** 2)
        for start in range(0, n_permutations, PERM_BLOCK):  # blocks bound the memory
            m = min(PERM_BLOCK, n_permutations - start)
            perms = rng.permuted(np.broadcast_to(np.arange(len(r)), (m, len(r))), axis=1)
            rho_PAB = np.einsum("na,pnb->pab", za, zb[perms]) / len(r)
            stat_null[start : start + m] += w * (rho_PAB**2).mean((1, 2))
    p = (1 + np.count_nonzero(stat_null >= stat_obs)) / (1 + n_permutations)
    return Permutation(float(stat_obs), float(p), float(stat_null.mean()), float(stat_null.std()))


def dependence(a, b, y, n_permutations: int = 999, seed: int = 0) -> Dependence:
    """Every measure above for views a (n, ka), b (n, kb) given labels y (n,)."""
    a, b, y, rows = _check(a, b, y)
    shuffled = b[_shuffle_within(rows, len(y), np.random.default_rng(seed))]
    return Dependence(
        spearman_within=within_class_spearman(a, b, y),
        spearman_pooled=pooled_spearman(a, b),
        cmi=conditional_mutual_info(a, b, y, seed=seed),
        cmi_null=float(conditional_mutual_info(a, shuffled, y, seed=seed).mean()),
        permutation=permutation_test(a, b, y, n_permutations, seed),
    )


def summarize(dep: Dependence) -> dict[str, float]:
    """Scalars for a table: means over all column pairs and, for square views, matching ones."""
    out = {
        "spearman_within_mean_abs": float(np.abs(dep.spearman_within).mean()),
        "spearman_pooled_mean_abs": float(np.abs(dep.spearman_pooled).mean()),
        "cmi_mean": float(dep.cmi.mean()),
        "cmi_null": dep.cmi_null,
        "perm_statistic": dep.permutation.statistic,
        "perm_null_mean": dep.permutation.null_mean,
        "perm_z": (dep.permutation.statistic - dep.permutation.null_mean)
        / dep.permutation.null_std,
        "perm_p": dep.permutation.p_value,
    }
    if dep.cmi.shape[0] == dep.cmi.shape[1]:
        out["spearman_within_matching"] = float(np.diag(dep.spearman_within).mean())
        out["spearman_pooled_matching"] = float(np.diag(dep.spearman_pooled).mean())
        out["cmi_matching"] = float(np.diag(dep.cmi).mean())
    return out
