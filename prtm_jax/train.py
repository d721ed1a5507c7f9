"""Training as one pure function of a key: `make_train(spec)` -> `train(key, x, y, lr)`.

Epochs and minibatches are nested `lax.scan`s. The last, partial batch (2000 rows in batches of
32 leave 16) is padded and masked, so every step sees exactly the seed's rows and the seed's
6,300 steps are reproduced. The learning rate is traced, so a sweep over it does not recompile.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from prtm_jax import mlp


class TrainSpec(NamedTuple):
    """Static choices: each distinct spec is its own compiled program."""

    sizes: tuple[int, ...]
    activation: str = "relu"
    init: str = "seed"
    optimizer: str = "sgd"
    epochs: int = 100
    batch_size: int = 32
    shuffle: bool = False
    loss: str = "sum"
    film_split: int = 0  # > 0: the W&B first layer, view 1 = the first film_split columns


class TrainOut(NamedTuple):
    params: mlp.Params
    loss_E: jax.Array  # mean cross-entropy per training row, for each epoch


def cross_entropy(
    params: mlp.Params, x_BD: jax.Array, y_B: jax.Array, activation: str
) -> jax.Array:
    """Per-row cross-entropy (B,) of softmax(apply(params, x)) against integer labels."""
    logits_BC = mlp.apply(params, x_BD, activation)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BC, y_B)


def make_optimizer(name: str, lr: jax.Array | float) -> optax.GradientTransformation:
    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"optim.name={name!r} is not one of: sgd, adam")


def make_train(
    spec: TrainSpec,
) -> Callable[[jax.Array, jax.Array, jax.Array, jax.Array | float], TrainOut]:
    """Return `train(key, x (N, D), y (N,), lr) -> TrainOut`, pure and vmappable."""
    batch = spec.batch_size

    def batch_loss(params: mlp.Params, x_BD: jax.Array, y_B: jax.Array, m_B: jax.Array):
        ce_B = cross_entropy(params, x_BD, y_B, spec.activation) * m_B
        total = ce_B.sum()
        # "sum" is the seed's gradient (summed over the batch); "mean" divides by real rows.
        loss = total if spec.loss == "sum" else total / m_B.sum()
        return loss, total

    grad_fn = jax.grad(batch_loss, has_aux=True)

    def train(key: jax.Array, x_ND: jax.Array, y_N: jax.Array, lr: jax.Array | float) -> TrainOut:
        n = x_ND.shape[0]
        n_batches = -(-n // batch)
        pad = n_batches * batch - n
        k_init, k_order = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        params = mlp.init(k_init, (x_ND.shape[1], *spec.sizes[1:]), spec.init, spec.film_split)
        opt = make_optimizer(spec.optimizer, lr)
        mask_N = jnp.concatenate([jnp.ones(n), jnp.zeros(pad)])

        def epoch(carry, k_epoch):
            params, opt_state = carry
            if spec.shuffle:
                order = jax.random.permutation(k_epoch, n)
                x_use, y_use = x_ND[order], y_N[order]
            else:
                x_use, y_use = x_ND, y_N
            x_pad = jnp.concatenate([x_use, jnp.zeros((pad, x_ND.shape[1]), x_ND.dtype)])
            y_pad = jnp.concatenate([y_use, jnp.zeros((pad,), y_N.dtype)])
            xs = (
                x_pad.reshape(n_batches, batch, -1),
                y_pad.reshape(n_batches, batch),
                mask_N.reshape(n_batches, batch),
            )

            def step(carry, xs_b):
                params, opt_state = carry
                grads, total = grad_fn(params, *xs_b)
                updates, opt_state = opt.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), total

            (params, opt_state), totals = jax.lax.scan(step, (params, opt_state), xs)
            return (params, opt_state), totals.sum() / n

        keys = jax.random.split(k_order, spec.epochs)
        (params, _), loss_E = jax.lax.scan(epoch, (params, opt.init(params)), keys)
        return TrainOut(params, loss_E)

    return train
