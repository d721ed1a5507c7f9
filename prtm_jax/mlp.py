"""Plain MLPs as pure functions: params are a list of (w, b) tuples.

`init(key, sizes)` -> params; `apply(params, x, activation)` -> logits. `x` may carry any
leading axes (..., d_in); the last layer is linear (logits, no softmax).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Params = list[tuple[jax.Array, jax.Array]]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "sigmoid": jax.nn.sigmoid,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "softplus": jax.nn.softplus,
}


def _seed_init(key: jax.Array, shape: tuple[int, int], dtype: jnp.dtype) -> jax.Array:
    # The seed notes' `np.random.randn(d_in, d_out) * 0.01`.
    return 0.01 * jax.random.normal(key, shape, dtype)


INITS: dict[str, Callable[..., jax.Array]] = {
    "seed": _seed_init,
    "lecun": jax.nn.initializers.lecun_normal(),
    "he": jax.nn.initializers.he_normal(),
    "glorot": jax.nn.initializers.glorot_uniform(),
}


def init(key: jax.Array, sizes: Sequence[int], scheme: str = "seed") -> Params:
    """Weights (d_in, d_out) from `INITS[scheme]`, biases zero; sizes = (d_in, *hidden, d_out)."""
    init_w = INITS[scheme]
    keys = jax.random.split(key, len(sizes) - 1)
    return [
        (init_w(k, (d_in, d_out), jnp.float32), jnp.zeros((d_out,), jnp.float32))
        for k, d_in, d_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]


def apply(params: Params, x: jax.Array, activation: str = "relu") -> jax.Array:
    """Logits (..., d_out) for inputs (..., d_in)."""
    act = ACTIVATIONS[activation]
    *hidden, (w_out, b_out) = params
    for w, b in hidden:
        x = act(x @ w + b)
    return x @ w_out + b_out
