"""Per-seed metrics of one classifier, and of a pair of classifiers, as jnp functions.

Each function takes one seed's arrays (log-probs (N, C), labels (N,) int, predictions (N,) int,
correctness (N,) bool) and returns a scalar; `jax.vmap` it over a leading seeds axis. The class
count C is static (an array shape or an int argument). The functions are jitted so that eager
calls compile once; inside a caller's jit they simply inline.

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

from prtm_jax import native


@jax.jit
def accuracy(logp_NC: jax.Array, y_N: jax.Array) -> jax.Array:
    """Fraction of rows whose argmax is the label."""
    return (logp_NC.argmax(-1) == y_N).mean()


@jax.jit
def nll(logp_NC: jax.Array, y_N: jax.Array) -> jax.Array:
    """Mean negative log-likelihood of the labels, in nats."""
    return -jnp.take_along_axis(logp_NC, y_N[:, None], axis=-1).mean()


@jax.jit
def brier(logp_NC: jax.Array, y_N: jax.Array) -> jax.Array:
    """Multiclass Brier score: sum over classes of (p - one_hot)^2, mean over rows; in [0, 2].

    This is scikit-learn's brier_score_loss(..., scale_by_half=False); for two classes it is
    twice the classic binary score (p_1 - y)^2.
    """
    onehot_NC = jax.nn.one_hot(y_N, logp_NC.shape[-1], dtype=logp_NC.dtype)
    return ((jnp.exp(logp_NC) - onehot_NC) ** 2).sum(-1).mean()


@partial(jax.jit, static_argnames="n_bins")
def reliability_bins(
    logp_NC: jax.Array, y_N: jax.Array, n_bins: int = 15
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per bin of the top-class probability: (row count, summed confidence, summed correct).

    `n_bins` equal-width bins, bin b = (b/n_bins, (b+1)/n_bins] (a confidence of exactly 1
    falls in the last bin). Sums, not means, so bins add up across seeds.
    """
    conf_N = jnp.exp(logp_NC.max(-1))
    correct_N = (logp_NC.argmax(-1) == y_N).astype(conf_N.dtype)
    bin_N = jnp.clip(jnp.ceil(conf_N * n_bins).astype(jnp.int32) - 1, 0, n_bins - 1)
    total = partial(jax.ops.segment_sum, segment_ids=bin_N, num_segments=n_bins)
    return total(jnp.ones_like(conf_N)), total(conf_N), total(correct_N)


@partial(jax.jit, static_argnames="n_bins")
def ece(logp_NC: jax.Array, y_N: jax.Array, n_bins: int = 15) -> jax.Array:
    """Expected calibration error of the top class: sum_b (n_b / N) |acc_b - conf_b|, over the
    bins of `reliability_bins`. Empty bins contribute 0."""
    _, conf_B, correct_B = reliability_bins(logp_NC, y_N, n_bins)
    return jnp.abs(correct_B - conf_B).sum() / y_N.shape[0]


def _tables(correct_a: jax.Array, correct_b: jax.Array, strata: jax.Array, n_strata: int):
    """Per-stratum counts (n11, n10, n01, n00), each (S,): both right, a only, b only, neither."""
    a, b = correct_a.astype(jnp.float32), correct_b.astype(jnp.float32)
    cells_N4 = jnp.stack([a * b, a * (1 - b), (1 - a) * b, (1 - a) * (1 - b)], axis=-1)
    return jax.ops.segment_sum(cells_N4, strata, num_segments=n_strata).T


def _yules_q(n11, n10, n01, n00) -> jax.Array:
    # Mantel-Haenszel: R / S estimates the common odds ratio of the strata, Q = (R-S)/(R+S).
    # With one stratum this is the textbook (n11 n00 - n10 n01) / (n11 n00 + n10 n01). Strata
    # with a zero cell still add information, instead of pinning a per-class Q at +-1.
    n = jnp.maximum(n11 + n10 + n01 + n00, 1.0)
    r, s = (n11 * n00 / n).sum(), (n10 * n01 / n).sum()
    return jnp.where(r + s > 0, (r - s) / jnp.where(r + s > 0, r + s, 1.0), jnp.nan)


def _correlation(n11, n10, n01, n00) -> jax.Array:
    # Pooled within-stratum correlation: correctness centred on its stratum's mean, so each
    # stratum's covariance and variances add with weight n_k (strata where a model is constant
    # add only to the other's variance). One stratum gives the phi coefficient.
    n = jnp.maximum(n11 + n10 + n01 + n00, 1.0)
    a1, a0, b1, b0 = n11 + n10, n01 + n00, n11 + n01, n10 + n00
    cov = (n11 - a1 * b1 / n).sum()
    var = (a1 * a0 / n).sum() * (b1 * b0 / n).sum()
    return jnp.where(var > 0, cov / jnp.sqrt(jnp.where(var > 0, var, 1.0)), jnp.nan)


@jax.jit
def yules_q(correct_a: jax.Array, correct_b: jax.Array) -> jax.Array:
    """Yule's Q of two correctness vectors (N,): +1 fail together, 0 independent, -1 never both.

    NaN when n11 n00 = n10 n01 = 0 (0/0).
    """
    return _yules_q(*_tables(correct_a, correct_b, jnp.zeros_like(correct_a, jnp.int32), 1))


@partial(jax.jit, static_argnames="n_classes")
def yules_q_within(
    correct_a: jax.Array, correct_b: jax.Array, y_N: jax.Array, n_classes: int
) -> jax.Array:
    """Yule's Q within classes: Q of the Mantel-Haenszel common odds ratio over the classes.

    0 in expectation when the two models' errors are independent given the label, even if
    the pooled Q is not. NaN only when every class table is 0/0.
    """
    return _yules_q(*_tables(correct_a, correct_b, y_N, n_classes))


@jax.jit
def correlation(correct_a: jax.Array, correct_b: jax.Array) -> jax.Array:
    """Correlation (phi) of two correctness vectors (N,); NaN if either is constant."""
    return _correlation(*_tables(correct_a, correct_b, jnp.zeros_like(correct_a, jnp.int32), 1))


@partial(jax.jit, static_argnames="n_classes")
def correlation_within(
    correct_a: jax.Array, correct_b: jax.Array, y_N: jax.Array, n_classes: int
) -> jax.Array:
    """Correlation of correctness after removing each class's mean (class-count weighted).

    NaN only if a model is constant (all right or all wrong) within every class.
    """
    return _correlation(*_tables(correct_a, correct_b, y_N, n_classes))


@jax.jit
def disagreement(correct_a: jax.Array, correct_b: jax.Array) -> jax.Array:
    """Fraction of rows where exactly one of the two models is right.

    Its class-count-weighted mean over classes is this same number, so it has no within-class
    variant; the same holds for `double_fault`.
    """
    return (correct_a != correct_b).mean()


@jax.jit
def double_fault(correct_a: jax.Array, correct_b: jax.Array) -> jax.Array:
    """Fraction of rows where both models are wrong."""
    return (~correct_a & ~correct_b).mean()


@partial(jax.jit, static_argnames="n_classes")
def conditional_mutual_information(
    pred_a: jax.Array, pred_b: jax.Array, y_N: jax.Array, n_classes: int
) -> jax.Array:
    """I(pred_a; pred_b | y) in nats, plug-in estimate from the empirical (y, a, b) joint.

    Zero iff the predictions are independent given the label. The plug-in estimate is biased
    upward, by about sum_y (k_a(y) - 1)(k_b(y) - 1) / (2N) nats when the truth is 0 (k(y): the
    distinct predictions seen for label y). At 500 rows and 10 classes that is of the order of
    0.1 nats, so read it against `cmi_null`, its value when the dependence is removed.
    Pass y_N = zeros for the pooled mutual information I(pred_a; pred_b).
    """
    return _cmi_of_counts(_joint_counts(pred_a, pred_b, y_N, n_classes), y_N.shape[0])


def _joint_counts(pred_a: jax.Array, pred_b: jax.Array, y_N: jax.Array, c: int) -> jax.Array:
    """Row counts (c, c, c) of each (y, pred_a, pred_b); exact in float32 below 2^24 rows."""
    idx_N = (y_N * c + pred_a) * c + pred_b
    ones_N = jnp.ones(y_N.shape, jnp.float32)
    return jax.ops.segment_sum(ones_N, idx_N, num_segments=c**3).reshape(c, c, c)


def _cmi_of_counts(counts_YAB: jax.Array, n_rows: int) -> jax.Array:
    p_YAB = counts_YAB / n_rows
    p_Y11 = p_YAB.sum((1, 2), keepdims=True)
    p_YA1 = p_YAB.sum(2, keepdims=True)
    p_Y1B = p_YAB.sum(1, keepdims=True)
    pos = p_YAB > 0
    ratio = jnp.where(pos, p_YAB * p_Y11, 1.0) / jnp.where(pos, p_YA1 * p_Y1B, 1.0)
    return jnp.where(pos, p_YAB * jnp.log(ratio), 0.0).sum()


# Within-class shuffles behind cmi_null.
CMI_NULL_SHUFFLES = 16

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


@partial(jax.jit, static_argnames=("n_classes", "n_shuffles"))
def cmi_null(
    key: jax.Array,
    pred_a: jax.Array,
    pred_b: jax.Array,
    y_N: jax.Array,
    n_classes: int,
    n_shuffles: int = CMI_NULL_SHUFFLES,
) -> jax.Array:
    """Mean plug-in CMI after shuffling pred_b within each class: the estimate's floor at CMI 0.

    The shuffle keeps both (y, pred) marginals and removes any dependence given y, so
    `cmi - cmi_null` is the conditional dependence beyond the plug-in bias (the same idea, and
    name, as `dependence.Dependence.cmi_null` for the views).
    """
    counts_SYAB = _null_counts(key, pred_a, pred_b, y_N, n_classes, n_shuffles)
    return jax.vmap(_cmi_of_counts, in_axes=(0, None))(counts_SYAB, y_N.shape[0]).mean()


def _null_counts(
    key: jax.Array, pred_a: jax.Array, pred_b: jax.Array, y_N: jax.Array, c: int, n_shuffles: int
) -> jax.Array:
    """`_joint_counts` (S, c, c, c) after each of n_shuffles within-class shuffles of pred_b."""
    keys = jax.random.split(key, n_shuffles)
    shuffle = partial(shuffle_within_class, n_classes=c)
    shuffled_SN = jax.vmap(shuffle, in_axes=(0, None, None))(keys, pred_b, y_N)
    return jax.vmap(_joint_counts, in_axes=(None, 0, None, None))(pred_a, shuffled_SN, y_N, c)


@partial(jax.jit, static_argnames="only_disagreements")
def follows_confident(
    logp_a: jax.Array, logp_b: jax.Array, logp_fused: jax.Array, only_disagreements: bool = False
) -> jax.Array:
    """Fraction of rows whose fused argmax is the argmax of the model with the higher max prob.

    Ties in the max prob go to model a. With only_disagreements, only rows where the two models'
    argmaxes differ count (NaN if there are none): on agreeing rows every rule here follows both.
    """
    pred_a, pred_b = logp_a.argmax(-1), logp_b.argmax(-1)
    confident_N = jnp.where(logp_a.max(-1) >= logp_b.max(-1), pred_a, pred_b)
    follows_N = logp_fused.argmax(-1) == confident_N
    if not only_disagreements:
        return follows_N.mean()
    mask_N = pred_a != pred_b
    n = mask_N.sum()
    return jnp.where(n > 0, (follows_N & mask_N).sum() / jnp.maximum(n, 1), jnp.nan)


@partial(jax.jit, static_argnames="n_bins")
def model_metrics(logp_NC: jax.Array, y_N: jax.Array, n_bins: int = 15) -> dict[str, jax.Array]:
    """Accuracy, NLL, Brier and ECE of one model's log-probs (N, C)."""
    return {
        "accuracy": accuracy(logp_NC, y_N),
        "nll": nll(logp_NC, y_N),
        "brier": brier(logp_NC, y_N),
        "ece": ece(logp_NC, y_N, n_bins),
    }


@jax.jit
def pair_metrics(
    logp_a: jax.Array, logp_b: jax.Array, y_N: jax.Array, key: jax.Array | None = None
) -> dict[str, jax.Array]:
    """Diversity of two models (pooled and within class), their dependence, and the oracle.

    With a PRNG key, also cmi_null (the CMI estimate's level under independence given y).
    """
    c, n = logp_a.shape[-1], y_N.shape[0]
    pred_a, pred_b = logp_a.argmax(-1), logp_b.argmax(-1)
    ok_a, ok_b = pred_a == y_N, pred_b == y_N
    # The same numbers as the functions above, with less for XLA to compile: every table
    # and joint distribution comes from one count of rows, and counts are exact in float32,
    # so a pooled table is its class tables' sum, MI's joint is CMI's summed over y, and the
    # CMIs of the data and of the shuffles are one batch (tests/test_metrics.py).
    within = _tables(ok_a, ok_b, y_N, c)
    pooled = within.sum(1, keepdims=True)
    counts_YAB = _joint_counts(pred_a, pred_b, y_N, c)
    pooled_YAB = jnp.zeros_like(counts_YAB).at[0].set(counts_YAB.sum(0))
    null = {} if key is None else {"cmi_null": cmi_null(key, pred_a, pred_b, y_N, c)}
    return null | {
        "yules_q": _yules_q(*pooled),
        "yules_q_within": _yules_q(*within),
        "correlation": _correlation(*pooled),
        "correlation_within": _correlation(*within),
        "disagreement": disagreement(ok_a, ok_b),
        "double_fault": double_fault(ok_a, ok_b),
        "mi": _cmi_of_counts(pooled_YAB, n),
        "cmi": _cmi_of_counts(counts_YAB, n),
        "oracle_accuracy": (ok_a | ok_b).mean(),
    }


def all_metrics(
    logp: Mapping[str, jax.Array],
    y_N: jax.Array,
    pair: tuple[str, str] = ("weight", "bias"),
    fused: Sequence[str] | None = None,
    n_bins: int = 15,
    key: jax.Array | None = None,
) -> tuple[dict[str, dict[str, jax.Array]], dict[str, jax.Array]]:
    """({model: model_metrics}, pair_metrics of `pair`) for one seed's {model: logp (N, C)}.

    Each model in `fused` (default: every model not in `pair`) also gets follows_confident and
    follows_confident_disagree, measured against the two models of `pair`. `key` (optional)
    is passed to pair_metrics for cmi_null.
    """
    a, b = pair
    fused = [m for m in logp if m not in pair] if fused is None else fused
    per_model = {m: model_metrics(lp, y_N, n_bins) for m, lp in logp.items()}
    for m in fused:
        per_model[m]["follows_confident"] = follows_confident(logp[a], logp[b], logp[m])
        per_model[m]["follows_confident_disagree"] = follows_confident(
            logp[a], logp[b], logp[m], only_disagreements=True
        )
    return per_model, pair_metrics(logp[a], logp[b], y_N, key)
