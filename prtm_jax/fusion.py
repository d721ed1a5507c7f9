"""Late fusion of two classifiers' outputs, always in log space.

Multiplying float32 probabilities underflows (the seed's 1e-51 is 0 in float32, products of
zeros tie and argmax returns class 0); summing log-softmaxes does not.
"""

from __future__ import annotations

from collections.abc import Callable

import jax


def _product(logp_a: jax.Array, logp_b: jax.Array) -> jax.Array:
    # p_fused ∝ p_a * p_b: the naive-Bayes / product rule.
    return logp_a + logp_b


RULES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "product": _product,
}


def fuse(a: jax.Array, b: jax.Array, rule: str = "product") -> jax.Array:
    """Normalised fused log-probabilities (..., C) from logits or log-probs a, b (..., C)."""
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not one of: {', '.join(sorted(RULES))}")
    return jax.nn.log_softmax(RULES[rule](jax.nn.log_softmax(a), jax.nn.log_softmax(b)))
