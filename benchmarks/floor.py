"""The floor under prtm_jax's trainer: its matrix products and weight updates, and nothing else.

`make_floor_train(sizes, epochs, batch)` returns `train(key, x, y, lr)` with the trainer's
signature. Every step slices its batch from the rows as the trainer does and runs the same
matrix products, laid out by `mlp.dense` as in the trainer (3 forward, 3 weight gradients,
2 input gradients: the first layer's input gradient is never computed), then the SGD update of
each weight. There are no biases, no activation, no softmax and no mask: the network is linear
and fits a fixed random target by least squares, so the only other work is the error at the
output (logits - target), the transposes `mlp.dense` materialises and the updates. The trainer
does all of this and more every step, so the time of this program is a floor under it, measured
on the same machine in the same benchmark run (docs/performance.md: with jax.grad's own product
layout the floor is no lower).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from prtm_jax import mlp


class FloorOut(NamedTuple):
    weights: list[jax.Array]


def target(key: jax.Array, batch: int, n_out: int) -> jax.Array:
    """The fixed (batch, n_out) target of the least-squares fit."""
    return jax.random.normal(jax.random.fold_in(key, 1), (batch, n_out))


def make_floor_train(sizes: Sequence[int], epochs: int, batch: int):
    """`train(key, x (N, sizes[0]), y, lr) -> FloorOut`; y is ignored (there is no loss)."""
    sizes = tuple(sizes)

    def train(key: jax.Array, x_ND: jax.Array, y_N: jax.Array, lr: jax.Array | float) -> FloorOut:
        del y_N
        keys = jax.random.split(jax.random.fold_in(key, 0), len(sizes) - 1)
        ws = [
            0.01 * jax.random.normal(k, (d_in, d_out))
            for k, d_in, d_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
        ]
        t_BC = target(key, batch, sizes[-1])
        n = x_ND.shape[0]

        def squared_error(ws: list[jax.Array], x_BD: jax.Array) -> jax.Array:
            for w in ws:
                x_BD = mlp.dense(x_BD, w)
            return 0.5 * jnp.square(x_BD - t_BC).sum()

        grad = jax.grad(squared_error)

        def step(ws: list[jax.Array], i: jax.Array) -> tuple[list[jax.Array], None]:
            x_BD = jax.lax.dynamic_slice_in_dim(x_ND, jnp.minimum(i * batch, n - batch), batch)
            return [w - lr * g for w, g in zip(ws, grad(ws, x_BD), strict=True)], None

        def epoch(ws: list[jax.Array], _: None) -> tuple[list[jax.Array], None]:
            return jax.lax.scan(step, ws, jnp.arange(-(-n // batch)))[0], None

        return FloorOut(jax.lax.scan(epoch, ws, None, length=epochs)[0])

    return train
