"""Per-seed metrics of one classifier, and of a pair of classifiers, in NumPy on the host.

The compiled program returns each seed's test log-probs; these functions turn a block of
seeds' worth of them into metrics, in float64. Each takes arrays with any leading axes (a
block of seeds, models, ...) before the row axis: log-probs (..., N, C), labels (..., N) int,
predictions (..., N) int, correctness (..., N) bool; and returns one value per leading index.

Why not in the compiled program: they are a few reductions over a few hundred rows, which
NumPy runs in microseconds, but XLA compiled them into ~110 small kernels at ~9 ms of CPU
each: half of the program's compile time (docs/performance.md, optimisation 47). The one part
that needs the seed's PRNG key, `cmi_null`'s within-class shuffles, is drawn in the program
and returned with the log-probs: `null_shuffles` and `shuffle_within_class`, the JAX
functions at the end of this module.

Undefined values are NaN on purpose, and only where a formula is 0/0: Yule's Q when
n11 n00 = n10 n01 = 0 in every table (e.g. a model right on every row), the correlation
when a model is right on all rows or wrong on all rows (a zero margin), and
`follows_confident(..., only_disagreements=True)` when the two models never disagree. Every
other metric is finite for finite inputs. The statistics layer summarises each metric over the
seeds where it is defined and reports that count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from prtm_jax import native

# Within-class shuffles behind cmi_null.
CMI_NULL_SHUFFLES = 16


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64)


def _counts(idx: np.ndarray, n: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Per leading index, the count (int64) of each value 0..n-1 along the last axis of idx
    (..., N), or the sum of `weights` (..., N) over the rows of each value (float64, in row
    order): (..., n)."""
    idx = np.asarray(idx, np.int64)
    lead = idx.shape[:-1]
    offsets = n * np.arange(int(np.prod(lead))).reshape(*lead, 1)
    w = None if weights is None else np.broadcast_to(weights, idx.shape).ravel()
    flat = np.bincount((idx + offsets).ravel(), weights=w, minlength=n * offsets.size)
    return flat.reshape(*lead, n)


def _top(logp_NC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(argmax, max) over the classes: each row's prediction and its log-prob."""
    pred_N = np.argmax(logp_NC, -1)
    return pred_N, np.take_along_axis(logp_NC, pred_N[..., None], -1)[..., 0]


def accuracy(logp_NC: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """Fraction of rows whose argmax is the label."""
    return (np.argmax(logp_NC, -1) == y_N).mean(-1)


def nll(logp_NC: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """Mean negative log-likelihood of the labels, in nats."""
    y_N1 = np.broadcast_to(np.asarray(y_N)[..., None], (*np.shape(logp_NC)[:-1], 1))
    return -np.take_along_axis(_f64(logp_NC), y_N1, -1)[..., 0].mean(-1)


def brier(logp_NC: np.ndarray, y_N: np.ndarray) -> np.ndarray:
    """Multiclass Brier score: sum over classes of (p - one_hot)^2, mean over rows; in [0, 2].

    This is scikit-learn's brier_score_loss(..., scale_by_half=False); for two classes it is
    twice the classic binary score (p_1 - y)^2.
    """
    onehot_NC = np.asarray(y_N)[..., None] == np.arange(np.shape(logp_NC)[-1])
    return ((np.exp(_f64(logp_NC)) - onehot_NC) ** 2).sum(-1).mean(-1)


def reliability_bins(
    logp_NC: np.ndarray, y_N: np.ndarray, n_bins: int = 15
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin of the top-class probability: (row count, summed confidence, summed correct),
    each (..., n_bins).

    `n_bins` equal-width bins, bin b = (b/n_bins, (b+1)/n_bins] (a confidence of exactly 1
    falls in the last bin). Sums, not means, so bins add up across seeds.
    """
    return _bins(*_top(logp_NC), y_N, n_bins)


def _bins(pred_N: np.ndarray, top_N: np.ndarray, y_N: np.ndarray, n_bins: int):
    conf_N = np.exp(_f64(top_N))
    # A diverged seed's NaN rows go to bin 0 (its bins are left out of every table).
    bin_N = np.clip(np.ceil(np.nan_to_num(conf_N * n_bins)).astype(np.int64) - 1, 0, n_bins - 1)
    correct_N = _f64(pred_N == y_N)
    count = _counts(bin_N, n_bins).astype(np.float64)
    return count, _counts(bin_N, n_bins, conf_N), _counts(bin_N, n_bins, correct_N)


def ece(logp_NC: np.ndarray, y_N: np.ndarray, n_bins: int = 15) -> np.ndarray:
    """Expected calibration error of the top class: sum_b (n_b / N) |acc_b - conf_b|, over the
    bins of `reliability_bins`. Empty bins contribute 0."""
    return _ece(reliability_bins(logp_NC, y_N, n_bins), np.shape(y_N)[-1])


def _ece(bins: tuple[np.ndarray, np.ndarray, np.ndarray], n_rows: int) -> np.ndarray:
    _, conf_B, correct_B = bins
    return np.abs(correct_B - conf_B).sum(-1) / n_rows


def _tables(
    correct_a: np.ndarray, correct_b: np.ndarray, strata: np.ndarray, n_strata: int
) -> np.ndarray:
    """Per-stratum counts (..., 4, S): both right, a only, b only, neither."""
    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    cell = 2 * (~a) + (~b)  # 0: both right, 1: a only, 2: b only, 3: neither
    counts = _counts(np.asarray(strata) * 4 + cell, 4 * n_strata).astype(np.float64)
    return np.swapaxes(counts.reshape(*counts.shape[:-1], n_strata, 4), -1, -2)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, else NaN (the 0/0 cases), without a warning."""
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _yules_q(n11, n10, n01, n00) -> np.ndarray:
    # Mantel-Haenszel: R / S estimates the common odds ratio of the strata, Q = (R-S)/(R+S).
    # With one stratum this is the textbook (n11 n00 - n10 n01) / (n11 n00 + n10 n01). Strata
    # with a zero cell still add information, instead of pinning a per-class Q at +-1.
    n = np.maximum(n11 + n10 + n01 + n00, 1.0)
    r, s = (n11 * n00 / n).sum(-1), (n10 * n01 / n).sum(-1)
    return _safe_ratio(r - s, r + s)


def _correlation(n11, n10, n01, n00) -> np.ndarray:
    # Pooled within-stratum correlation: correctness centred on its stratum's mean, so each
    # stratum's covariance and variances add with weight n_k (strata where a model is constant
    # add only to the other's variance). One stratum gives the phi coefficient.
    n = np.maximum(n11 + n10 + n01 + n00, 1.0)
    a1, a0, b1, b0 = n11 + n10, n01 + n00, n11 + n01, n10 + n00
    cov = (n11 - a1 * b1 / n).sum(-1)
    var = (a1 * a0 / n).sum(-1) * (b1 * b0 / n).sum(-1)
    return _safe_ratio(cov, np.sqrt(var))


def _pooled(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    return _tables(correct_a, correct_b, np.zeros(np.shape(correct_a), np.int64), 1)


def yules_q(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Yule's Q of two correctness vectors (N,): +1 fail together, 0 independent, -1 never both.

    NaN when n11 n00 = n10 n01 = 0 (0/0).
    """
    return _yules_q(*np.moveaxis(_pooled(correct_a, correct_b), -2, 0))


def yules_q_within(
    correct_a: np.ndarray, correct_b: np.ndarray, y_N: np.ndarray, n_classes: int
) -> np.ndarray:
    """Yule's Q within classes: Q of the Mantel-Haenszel common odds ratio over the classes.

    0 in expectation when the two models' errors are independent given the label, even if
    the pooled Q is not. NaN only when every class table is 0/0.
    """
    return _yules_q(*np.moveaxis(_tables(correct_a, correct_b, y_N, n_classes), -2, 0))


def correlation(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Correlation (phi) of two correctness vectors (N,); NaN if either is constant."""
    return _correlation(*np.moveaxis(_pooled(correct_a, correct_b), -2, 0))


def correlation_within(
    correct_a: np.ndarray, correct_b: np.ndarray, y_N: np.ndarray, n_classes: int
) -> np.ndarray:
    """Correlation of correctness after removing each class's mean (class-count weighted).

    NaN only if a model is constant (all right or all wrong) within every class.
    """
    return _correlation(*np.moveaxis(_tables(correct_a, correct_b, y_N, n_classes), -2, 0))


def disagreement(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Fraction of rows where exactly one of the two models is right.

    Its class-count-weighted mean over classes is this same number, so it has no within-class
    variant; the same holds for `double_fault`.
    """
    return (np.asarray(correct_a) != np.asarray(correct_b)).mean(-1)


def double_fault(correct_a: np.ndarray, correct_b: np.ndarray) -> np.ndarray:
    """Fraction of rows where both models are wrong."""
    return (~np.asarray(correct_a, bool) & ~np.asarray(correct_b, bool)).mean(-1)


def conditional_mutual_information(
    pred_a: np.ndarray, pred_b: np.ndarray, y_N: np.ndarray, n_classes: int
) -> np.ndarray:
    """I(pred_a; pred_b | y) in nats, plug-in estimate from the empirical (y, a, b) joint.

    Zero iff the predictions are independent given the label. The plug-in estimate is biased
    upward, by about sum_y (k_a(y) - 1)(k_b(y) - 1) / (2N) nats when the truth is 0 (k(y): the
    distinct predictions seen for label y). At 500 rows and 10 classes that is of the order of
    0.1 nats, so read it against `cmi_null`, its value when the dependence is removed.
    Pass y_N = zeros for the pooled mutual information I(pred_a; pred_b).
    """
    c = n_classes
    pred_a, pred_b, y_N = np.broadcast_arrays(pred_a, pred_b, y_N)
    n = pred_a.shape[-1]
    y, a, b = np.asarray(y_N, np.int64), np.asarray(pred_a, np.int64), np.asarray(pred_b, np.int64)
    # sum p log(p(y,a,b) p(y) / (p(y,a) p(y,b))) = (1/N) sum n log(n(y,a,b) n(y) / ...): four
    # sums of n log n over the cells of the joint's and the marginals' count tables. Clipped
    # at 0, which it is when the predictions are independent given y, up to rounding.
    xlogx = np.zeros(n + 1)
    xlogx[1:] = np.arange(1, n + 1) * np.log(np.arange(1, n + 1))
    joint = _sum_xlogx((y * c + a) * c + b, c**3, xlogx)
    y_a, y_b = _sum_xlogx(y * c + a, c**2, xlogx), _sum_xlogx(y * c + b, c**2, xlogx)
    return np.maximum((joint + _sum_xlogx(y, c, xlogx) - y_a - y_b) / n, 0.0)


def _sum_xlogx(idx: np.ndarray, n_cells: int, xlogx: np.ndarray) -> np.ndarray:
    """sum over cells of k log k, k the count of each value 0..n_cells-1 along the last axis
    of idx (..., N): a dense count where the cells are few, else only the occupied cells (a
    sort), so that many classes (c^3 joint cells) cost no memory."""
    if n_cells <= 4 * idx.shape[-1]:
        return xlogx[_counts(idx, n_cells)].sum(-1)
    lead = idx.shape[:-1]
    item = np.arange(int(np.prod(lead))).reshape(*lead, 1)
    cells, k = np.unique((idx + n_cells * item).ravel(), return_counts=True)
    return np.bincount(cells // n_cells, xlogx[k], minlength=item.size).reshape(lead)


def cmi_null(
    pred_a: np.ndarray, shuffled_b_SN: np.ndarray, y_N: np.ndarray, n_classes: int
) -> np.ndarray:
    """Mean plug-in CMI of pred_a and each within-class shuffle of pred_b (..., S, N, from
    `null_shuffles`): the estimate's floor at CMI 0.

    The shuffle keeps both (y, pred) marginals and removes any dependence given y, so
    `cmi - cmi_null` is the conditional dependence beyond the plug-in bias (the same idea, and
    name, as `dependence.Dependence.cmi_null` for the views).
    """
    a, y = np.asarray(pred_a)[..., None, :], np.asarray(y_N)[..., None, :]
    return conditional_mutual_information(a, shuffled_b_SN, y, n_classes).mean(-1)


def follows_confident(
    logp_a: np.ndarray,
    logp_b: np.ndarray,
    logp_fused: np.ndarray,
    only_disagreements: bool = False,
) -> np.ndarray:
    """Fraction of rows whose fused argmax is the argmax of the model with the higher max prob.

    Ties in the max prob go to model a. With only_disagreements, only rows where the two models'
    argmaxes differ count (NaN if there are none): on agreeing rows every rule here follows both.
    """
    pred_f = np.argmax(logp_fused, -1)
    return _follows(_top(logp_a), _top(logp_b), pred_f, only_disagreements)


def _follows(top_a, top_b, pred_f: np.ndarray, only_disagreements: bool) -> np.ndarray:
    (pred_a, max_a), (pred_b, max_b) = top_a, top_b
    follows_N = pred_f == np.where(max_a >= max_b, pred_a, pred_b)
    if not only_disagreements:
        return follows_N.mean(-1)
    mask_N = pred_a != pred_b
    return _safe_ratio(_f64((follows_N & mask_N).sum(-1)), _f64(mask_N.sum(-1)))


def model_metrics(logp_NC: np.ndarray, y_N: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Accuracy, NLL, Brier and ECE of one model's log-probs (..., N, C), and ECE's reliability
    bins (rel_count, rel_conf, rel_correct: (..., n_bins), see `reliability_bins`)."""
    return _model(logp_NC, _top(logp_NC), y_N, n_bins)


def _model(logp_NC: np.ndarray, top, y_N: np.ndarray, n_bins: int) -> dict[str, np.ndarray]:
    bins = _bins(*top, y_N, n_bins)
    count, conf, correct = bins
    return {
        "accuracy": (top[0] == y_N).mean(-1),
        "nll": nll(logp_NC, y_N),
        "brier": brier(logp_NC, y_N),
        "ece": _ece(bins, np.shape(y_N)[-1]),
        "rel_count": count,
        "rel_conf": conf,
        "rel_correct": correct,
    }


def pair_metrics(
    logp_a: np.ndarray,
    logp_b: np.ndarray,
    y_N: np.ndarray,
    shuffled_b_SN: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Diversity of two models (pooled and within class), their dependence, and the oracle.

    With pred_b's within-class shuffles (`null_shuffles`), also cmi_null.
    """
    c = np.shape(logp_a)[-1]
    return _pair(np.argmax(logp_a, -1), np.argmax(logp_b, -1), y_N, c, shuffled_b_SN)


def _pair(pred_a, pred_b, y_N, c: int, shuffled_b_SN) -> dict[str, np.ndarray]:
    ok_a, ok_b = pred_a == y_N, pred_b == y_N
    # One count of the class tables; the pooled table is their sum (exact: counts).
    within = np.moveaxis(_tables(ok_a, ok_b, y_N, c), -2, 0)
    pooled = within.sum(-1, keepdims=True)
    null = {}
    if shuffled_b_SN is not None:
        null = {"cmi_null": cmi_null(pred_a, shuffled_b_SN, y_N, c)}
    return null | {
        "yules_q": _yules_q(*pooled),
        "yules_q_within": _yules_q(*within),
        "correlation": _correlation(*pooled),
        "correlation_within": _correlation(*within),
        "disagreement": disagreement(ok_a, ok_b),
        "double_fault": double_fault(ok_a, ok_b),
        "mi": conditional_mutual_information(pred_a, pred_b, np.zeros_like(y_N), c),
        "cmi": conditional_mutual_information(pred_a, pred_b, y_N, c),
        "oracle_accuracy": (ok_a | ok_b).mean(-1),
    }


def all_metrics(
    logp: Mapping[str, np.ndarray],
    y_N: np.ndarray,
    pair: tuple[str, str] = ("weight", "bias"),
    fused: Sequence[str] | None = None,
    n_bins: int = 15,
    shuffled_b_SN: np.ndarray | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """({model: model_metrics}, pair_metrics of `pair`) for {model: logp (..., N, C)}, with
    each model's argmax taken once.

    Each model in `fused` (default: every model not in `pair`) also gets follows_confident and
    follows_confident_disagree, measured against the two models of `pair`. `shuffled_b_SN`
    (optional) is passed to pair_metrics for cmi_null.
    """
    a, b = pair
    fused = [m for m in logp if m not in pair] if fused is None else fused
    top = {m: _top(lp) for m, lp in logp.items()}  # each model's argmax, once
    per_model = {m: _model(lp, top[m], y_N, n_bins) for m, lp in logp.items()}
    for m in fused:
        for name, only in (("follows_confident", False), ("follows_confident_disagree", True)):
            per_model[m][name] = _follows(top[a], top[b], top[m][0], only)
    c = np.shape(logp[a])[-1]
    return per_model, _pair(top[a][0], top[b][0], y_N, c, shuffled_b_SN)


# In the compiled program: the shuffles need the seed's PRNG key.

# Labels below this many fit beside a uniform's 23 random bits in one uint32 sort key.
_ONE_KEY_CLASSES = 2**9


def shuffle_within_class(
    key: jax.Array, x_N: jax.Array, y_N: jax.Array, n_classes: int | None = None
) -> jax.Array:
    """x with its rows permuted at random among rows of the same label (y's pairing is kept).

    The rows are ordered by (label, uniform(key)), ties by row. With `n_classes` (static) at
    most 512, that is one integer sort: a float32 uniform is its bits' top 23 over 2^23, so
    the key (label << 23) | (bits >> 9) orders rows exactly as the pair does, and a one-key
    sort is faster on the CPU than a two-key lexsort (tests check both give one permutation);
    on the CPU it runs in C (`native.argsort_stable`).
    """
    by_class_N = native.argsort_stable(y_N)
    if n_classes is not None and n_classes <= _ONE_KEY_CLASSES:
        bits_N = jax.random.bits(key, y_N.shape, jnp.uint32)
        one_key_N = (y_N.astype(jnp.uint32) << 23) | (bits_N >> 9)
        shuffled_N = native.argsort_stable(one_key_N)
    else:
        shuffled_N = jnp.lexsort((jax.random.uniform(key, y_N.shape), y_N))
    # Both orders list the rows class by class with the same class sizes, so position i of
    # one and of the other hold rows of one class.
    return x_N.at[by_class_N].set(x_N[shuffled_N])


def null_shuffles(
    key: jax.Array,
    pred_b: jax.Array,
    y_N: jax.Array,
    n_classes: int,
    n_shuffles: int = CMI_NULL_SHUFFLES,
) -> jax.Array:
    """(n_shuffles, N) within-class shuffles of pred_b, for `cmi_null` (jnp, traceable)."""
    keys = jax.random.split(key, n_shuffles)
    shuffle = partial(shuffle_within_class, n_classes=n_classes)
    return jax.vmap(shuffle, in_axes=(0, None, None))(keys, pred_b, y_N)
