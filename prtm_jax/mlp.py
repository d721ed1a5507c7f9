"""Plain MLPs as pure functions: params are a list of (w, b) tuples.

`init(key, sizes)` -> params; `apply(params, x, activation)` -> logits. `x` may carry any
leading axes (..., d_in); the last layer is linear (logits, no softmax).

The "W&B" paired-input network of the notes' open question 3 is the same MLP with a FiLM-like
first layer (`init(..., film_split=d1)`): the input is the concatenation [x1 (d1), x2 (d2)],
and the first pre-activation is `(x1 @ w) * (1 + x2 @ g) + x2 @ a + b`, so view 1 enters as
the weighted ("Weight") path, modulated multiplicatively by view 2 and shifted additively by
it ("Bias"). Its first layer is the 4-tuple (w, g, a, b) instead of (w, b).

Every product with a weight matrix goes through `dense`, whose gradient is the same math as
autodiff's but laid out for XLA:CPU's fast matmul library (docs/performance.md, optimisation
18).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

Params = list[tuple[jax.Array, ...]]

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


def init(key: jax.Array, sizes: Sequence[int], scheme: str = "seed", film_split: int = 0) -> Params:
    """Weights (d_in, d_out) from `INITS[scheme]`, biases zero; sizes = (d_in, *hidden, d_out).

    With `film_split = d1 > 0` the first layer is the W&B layer (w, g, a, b) on [x1 | x2].
    """
    init_w = INITS[scheme]
    keys = jax.random.split(key, len(sizes) - 1)
    params = [
        (init_w(k, (d_in, d_out), jnp.float32), jnp.zeros((d_out,), jnp.float32))
        for k, d_in, d_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    ]
    if film_split:
        d1, d2, h = film_split, sizes[0] - film_split, sizes[1]
        w = init_w(keys[0], (d1, h), jnp.float32)
        g, a = (init_w(jax.random.fold_in(key, i), (d2, h), jnp.float32) for i in (1, 2))
        params[0] = (w, g, a, params[0][1])
    return params


# False: the weight gradient as jax.grad lays it out (x^T g contracting the rows) on every
# platform, as the benchmark's unoptimised path runs it. Read when dense's derivative is first
# traced, and remembered with that trace: set it before differentiating anything, or call
# jax.clear_caches() after changing it.
NN_WEIGHT_GRADS_ON_CPU = True


def _rows_transposed(x_ND: jax.Array) -> jax.Array:
    """x^T, materialised on the CPU behind a barrier so XLA cannot fold it into a product."""
    if not NN_WEIGHT_GRADS_ON_CPU:
        return x_ND.T
    return jax.lax.platform_dependent(
        x_ND, cpu=lambda v: jax.lax.optimization_barrier(v.T), default=lambda v: v.T
    )


@jax.custom_jvp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """x @ w for x (..., d_in), w (d_in, d_out), with the same derivatives as `x @ w`.

    Only the layout of the weight gradient differs. jax.grad computes it as x^T g contracting
    the rows, the major axis of both operands: a "TN" product, which XLA:CPU runs in Eigen at
    ~2x the cost of the plain (NN) products YNNPACK takes. Here the tangent through w is
    written against a materialised x^T, so its transpose, the weight gradient, is the NN
    product x^T @ g (docs/performance.md, optimisation 18). A custom JVP rather than a custom
    VJP keeps forward mode (jax.jvp, jacfwd) working, and lets autodiff handle shard_map;
    forward mode pays for the transpose and a TN product, reverse mode is what it is for.
    """
    if w.ndim != 2:
        raise ValueError(f"dense: w must be 2-D (d_in, d_out), got shape {w.shape}")
    return x @ w


@dense.defjvp
def _dense_jvp(
    primals: tuple[jax.Array, jax.Array], tangents: tuple[jax.Array, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    x, w = primals
    dx, dw = tangents
    y = x @ w
    xt = _rows_transposed(x.reshape(-1, x.shape[-1]))
    return y, dx @ w + (xt.T @ dw).reshape(y.shape)


def _first_layer(layer: tuple[jax.Array, ...], x: jax.Array) -> jax.Array:
    if len(layer) == 2:
        w, b = layer
        return dense(x, w) + b
    w, g, a, b = layer
    x1, x2 = x[..., : w.shape[0]], x[..., w.shape[0] :]
    return dense(x1, w) * (1.0 + dense(x2, g)) + dense(x2, a) + b


def apply(params: Params, x: jax.Array, activation: str = "relu") -> jax.Array:
    """Logits (..., d_out) for inputs (..., d_in)."""
    act = ACTIVATIONS[activation]
    first, *rest = params
    if not rest:
        return _first_layer(first, x)
    x = act(_first_layer(first, x))
    *hidden, (w_out, b_out) = rest
    for w, b in hidden:
        x = act(dense(x, w) + b)
    return dense(x, w_out) + b_out
