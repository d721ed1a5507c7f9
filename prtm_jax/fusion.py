"""Late fusion of two classifiers' outputs, always in log space.

Multiplying float32 probabilities underflows (the seed's 1e-51 is 0 in float32, products of
zeros tie and argmax returns class 0); summing log-softmaxes does not.

Every rule maps two (..., C) arrays of logits or log-probabilities to normalised fused
log-probabilities (..., C); `fuse` log-softmaxes both inputs first, so logits and log-probs give
the same result. Rules are pure jnp and jit/vmap-safe; the ones that need more than the two
inputs (a prior, temperatures, pool weights) take it as keyword arguments, fitted by the caller
on data the test rows never see (`fit_temperature`, `fit_pool_weights`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp

from prtm_jax.batching import one_at_a_time

# Weights of the log-linear fits are kept in [0, MAX_WEIGHT]; a temperature is 1 / weight, so it
# lies in [1 / MAX_WEIGHT, MAX_WEIGHT]. On separable held-out data the NLL keeps falling as a
# weight grows, and the cap is where the fit stops.
MAX_WEIGHT = 1e3
# One LAPACK call per seed even under vmap: a batched one can hang on multiple CPU devices.
_solve = one_at_a_time(jnp.linalg.solve)


def _product(lp_a: jax.Array, lp_b: jax.Array) -> jax.Array:
    # p ∝ p_a * p_b: the naive-Bayes product rule, exact when the views are independent given y
    # and the classes are balanced.
    return lp_a + lp_b


def _prior_product(lp_a: jax.Array, lp_b: jax.Array, log_prior: jax.Array) -> jax.Array:
    # Kittler et al. (1998): p(y | x_a, x_b) ∝ P(y)^-(R-1) p(y | x_a) p(y | x_b) for R = 2 models
    # whose inputs are independent given y. Each posterior carries the prior once; the product
    # carries it twice, so one copy is divided out. log_prior is (C,), from training labels.
    return lp_a + lp_b - log_prior


def _sum(lp_a: jax.Array, lp_b: jax.Array) -> jax.Array:
    # Soft vote: p ∝ p_a + p_b, what scikit-learn's VotingClassifier(voting="soft") averages.
    return jnp.logaddexp(lp_a, lp_b)


def _max(lp_a: jax.Array, lp_b: jax.Array) -> jax.Array:
    return jnp.maximum(lp_a, lp_b)


def _min(lp_a: jax.Array, lp_b: jax.Array) -> jax.Array:
    return jnp.minimum(lp_a, lp_b)


def _majority(lp_a: jax.Array, lp_b: jax.Array) -> jax.Array:
    # Hard vote with ties broken by summed probability: p = (votes + soft vote) / (R + 1), R = 2.
    # The soft vote sums to 1 and is < 1 on any class nobody voted for, so it never outranks a
    # vote; it only orders classes with equal votes (two models that disagree tie 1:1). Unlike a
    # one-hot vote the result has no zeros, so NLL, Brier and ECE stay finite.
    n_classes = lp_a.shape[-1]
    votes = jax.nn.one_hot(lp_a.argmax(-1), n_classes) + jax.nn.one_hot(lp_b.argmax(-1), n_classes)
    return jnp.logaddexp(jnp.log(votes), jnp.logaddexp(lp_a, lp_b) - jnp.log(2.0))


def _pool(lp_a: jax.Array, lp_b: jax.Array, w_a: jax.Array, w_b: jax.Array) -> jax.Array:
    # Log-linear (logarithmic opinion) pool p ∝ p_a^w_a p_b^w_b; w = (1, 1) is the product.
    return w_a * lp_a + w_b * lp_b


def _calibrated_product(
    lp_a: jax.Array, lp_b: jax.Array, t_a: jax.Array, t_b: jax.Array
) -> jax.Array:
    # Product of softmax(a / t_a) and softmax(b / t_b): a pool whose weights 1/t are fitted per
    # model (fit_temperature) rather than jointly (fit_pool_weights).
    return _pool(lp_a, lp_b, 1.0 / t_a, 1.0 / t_b)


RULES: dict[str, Callable[..., jax.Array]] = {
    "product": _product,
    "prior_product": _prior_product,
    "sum": _sum,
    "max": _max,
    "min": _min,
    "majority": _majority,
    "calibrated_product": _calibrated_product,
    "pool": _pool,
}

# The keyword arguments each rule needs beyond the two inputs, read from its signature.
RULE_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(f).parameters)[2:] for name, f in RULES.items()
}


def fused_name(rule: str) -> str:
    """Row name of a rule's model in seeds.csv: the product keeps `fused`, others `fused_<rule>`."""
    return "fused" if rule == "product" else f"fused_{rule}"


def fuse(a: jax.Array, b: jax.Array, rule: str = "product", **params: jax.Array) -> jax.Array:
    """Normalised fused log-probabilities (..., C) from logits or log-probs a, b (..., C).

    `params` are the rule's extra inputs (see RULE_PARAMS): prior_product needs log_prior (C,),
    calibrated_product t_a and t_b (temperatures), pool w_a and w_b (weights).
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not one of: {', '.join(sorted(RULES))}")
    needed = RULE_PARAMS[rule]
    if set(params) != set(needed):
        raise ValueError(
            f"rule={rule!r} takes keyword arguments ({', '.join(needed) or 'none'}), "
            f"got ({', '.join(sorted(params)) or 'none'})"
        )
    lp_a, lp_b = jax.nn.log_softmax(a), jax.nn.log_softmax(b)
    return jax.nn.log_softmax(RULES[rule](lp_a, lp_b, **params))


def oracle_correct(a: jax.Array, b: jax.Array, y: jax.Array) -> jax.Array:
    """Per-row bool (...,): either model's argmax is the label (the ceiling of any fusion)."""
    return (a.argmax(-1) == y) | (b.argmax(-1) == y)


def _loglinear_nll(f_NCR: jax.Array, y_N: jax.Array, w_R: jax.Array) -> jax.Array:
    lp_NC = jax.nn.log_softmax(f_NCR @ w_R)
    return -jnp.take_along_axis(lp_NC, y_N[:, None], axis=-1).mean()


def _fit_loglinear(
    f_NCR: jax.Array, y_N: jax.Array, lo: float, steps: int, n_halvings: int = 10
) -> jax.Array:
    """Weights w (R,) in [lo, MAX_WEIGHT] minimising the NLL of log_softmax(f @ w) against y.

    The NLL is convex in w (a multinomial logit in w), so projected Newton converges fast: the
    gradient is the mean of E_p[f] - f_y, the Hessian the mean of Cov_p[f]. Coordinates held at a
    bound by a gradient pointing outward are frozen (Bertsekas' projected Newton), and each step
    takes the best of the step lengths 1, 1/2, ..., 2^-(n_halvings-1) and 0, evaluated at once,
    so the NLL never rises and no data-dependent loop is needed under jit or vmap.
    """
    n_r = f_NCR.shape[-1]
    y_onehot_NC = jax.nn.one_hot(y_N, f_NCR.shape[1], dtype=f_NCR.dtype)
    t_K = jnp.concatenate([2.0 ** -jnp.arange(n_halvings), jnp.zeros(1)]).astype(f_NCR.dtype)
    nll_K = jax.vmap(lambda w: _loglinear_nll(f_NCR, y_N, w))

    def step(_, w_R):
        p_NC = jax.nn.softmax(f_NCR @ w_R)
        mean_NR = jnp.einsum("nc,ncr->nr", p_NC, f_NCR)
        g_R = (mean_NR - jnp.einsum("nc,ncr->nr", y_onehot_NC, f_NCR)).mean(0)
        dev_NCR = f_NCR - mean_NR[:, None, :]
        h_RR = jnp.einsum("nc,ncr,ncs->rs", p_NC, dev_NCR, dev_NCR) / f_NCR.shape[0]
        free_R = ((w_R > lo) | (g_R < 0)) & ((w_R < MAX_WEIGHT) | (g_R > 0))
        both = free_R[:, None] & free_R[None, :]
        eye = jnp.eye(n_r, dtype=f_NCR.dtype)
        # A relative ridge keeps the solve finite when the features are collinear (h singular).
        ridge = 1e-6 * jnp.trace(h_RR) / n_r + 1e-12
        d_R = -_solve(jnp.where(both, h_RR, eye) + ridge * eye, jnp.where(free_R, g_R, 0))
        cand_KR = jnp.clip(w_R + t_K[:, None] * d_R, lo, MAX_WEIGHT)
        return cand_KR[jnp.argmin(nll_K(cand_KR))]

    return jax.lax.fori_loop(0, steps, step, jnp.ones(n_r, f_NCR.dtype))


@partial(jax.jit, static_argnames="steps")
def fit_temperature(logits_NC: jax.Array, y_N: jax.Array, steps: int = 15) -> jax.Array:
    """Temperature T (scalar) minimising the NLL of softmax(logits / T) against y (N,).

    Fit on held-out rows, never the test rows. Newton steps on 1/T rather than log T, because
    the NLL is convex in 1/T (and not in log T), with a step-halving search so the NLL never
    rises; T is kept in [1/MAX_WEIGHT, MAX_WEIGHT]. Logits or log-probs give the same T.
    Pure JAX: vmap it over seeds.
    """
    w = _fit_loglinear(logits_NC[..., None], y_N, 1.0 / MAX_WEIGHT, steps)
    return 1.0 / w[0]


@partial(jax.jit, static_argnames="steps")
def fit_pool_weights(
    lp_a: jax.Array, lp_b: jax.Array, y_N: jax.Array, steps: int = 15
) -> tuple[jax.Array, jax.Array]:
    """Weights (w_a, w_b) >= 0 minimising the NLL of log_softmax(w_a lp_a + w_b lp_b) against y.

    Stacking: fit on held-out rows, never the test rows. lp_a, lp_b are (N, C) log-probs (or
    logits: the row-wise constant cancels). Starts from the product (1, 1); pure JAX, vmappable.
    """
    f_NCR = jnp.stack([jax.nn.log_softmax(lp_a), jax.nn.log_softmax(lp_b)], axis=-1)
    w = _fit_loglinear(f_NCR, y_N, 0.0, steps)
    return w[0], w[1]
