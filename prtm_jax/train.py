"""Training as one pure function of a key: `make_train(spec)` -> `train(key, x, y, lr)`.

On the CPU, ReLU networks trained by plain SGD on in-order batches run in the lanes kernel
(`_make_train_lanes`, csrc/lanes.c); everything else, and every spec on other backends, in XLA,
as follows. Epochs and minibatches are nested `lax.scan`s. Each step slices its batch straight
out of the training rows, so no padded or reordered copy of the data is ever made
(docs/performance.md). The last, partial batch (2000 rows in batches of 32 leave 16) is the
final `batch_size` rows with the ones already used this epoch masked out, so every step sees
exactly the seed's rows and the seed's 6,300 steps are reproduced. The learning rate is traced,
so a sweep over it does not recompile."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import jax
import jax.numpy as jnp

from prtm_jax import mlp, native

if TYPE_CHECKING:
    import optax

# How a spec is trained: "xla" is the scan below, on any backend; "lanes" is the CPU kernel
# (native.py, csrc/lanes.c), which trains 16 seeds per SIMD register; "auto" is "lanes" where
# it can train the spec (lanes_unsupported) and "xla" elsewhere. The two are the same SGD with
# float32 sums in different orders, so per-seed results differ at the last bits, and training
# amplifies that (docs/performance.md): a result records the one that ran (resolve_impl).
IMPLS = ("auto", "xla", "lanes")


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
    impl: str = "auto"  # one of IMPLS


class TrainOut(NamedTuple):
    params: mlp.Params
    loss_E: jax.Array  # mean cross-entropy per training row, for each epoch


def cross_entropy(
    params: mlp.Params, x_BD: jax.Array, y_B: jax.Array, activation: str
) -> jax.Array:
    """Per-row cross-entropy (B,) of softmax(apply(params, x)) against integer labels."""
    import optax

    logits_BC = mlp.apply(params, x_BD, activation)
    return optax.softmax_cross_entropy_with_integer_labels(logits_BC, y_B)


def make_optimizer(name: str, lr: jax.Array | float) -> optax.GradientTransformation:
    import optax

    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr)
    raise ValueError(f"optim.name={name!r} is not one of: sgd, adam")


def lanes_unsupported(spec: TrainSpec) -> str | None:
    """Why the lanes kernel cannot train `spec` here, in a few words (None: it can)."""
    if spec.activation != "relu":
        return f"it trains relu networks, not {spec.activation}"
    if spec.optimizer != "sgd":
        return f"it runs plain SGD, not {spec.optimizer}"
    if spec.shuffle:
        return "it takes batches in order, not shuffled"
    if spec.film_split:
        return "it does not train the W&B (FiLM) network"
    if len(spec.sizes) - 1 > native.MAX_LAYERS:
        return f"it trains at most {native.MAX_LAYERS} layers"
    return native.available()


def resolve_impl(spec: TrainSpec) -> str:
    """The implementation that trains `spec` here: "xla" or "lanes"."""
    if spec.impl not in IMPLS:
        raise ValueError(f"train.impl={spec.impl!r} is not one of: {', '.join(IMPLS)}")
    if spec.impl == "auto":
        return "xla" if lanes_unsupported(spec) else "lanes"
    return spec.impl


def _check_batch(spec: TrainSpec, n_rows: int) -> None:
    if spec.batch_size > n_rows:
        raise ValueError(
            f"batch_size ({spec.batch_size}) must be <= the number of training rows ({n_rows})"
        )


def make_train(
    spec: TrainSpec,
) -> Callable[[jax.Array, jax.Array, jax.Array, jax.Array | float], TrainOut]:
    """Return `train(key, x (N, D), y (N,), lr) -> TrainOut`, pure and vmappable."""
    if resolve_impl(spec) == "lanes":
        if reason := lanes_unsupported(spec):
            raise ValueError(f"train.impl='lanes' cannot train this model: {reason}")
        return _make_train_lanes(spec)
    # optax is imported here, not at the top: a run the lanes kernel trains never needs it,
    # and `prtm` saves its import (0.1 s) when nothing else does.
    import optax

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
        _check_batch(spec, n)
        n_batches = -(-n // batch)
        k_init, k_order = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        params = mlp.init(k_init, (x_ND.shape[1], *spec.sizes[1:]), spec.init, spec.film_split)
        opt = make_optimizer(spec.optimizer, lr)

        def epoch(carry, k_epoch):
            params, opt_state = carry
            order_N = jax.random.permutation(k_epoch, n) if spec.shuffle else None

            def step(carry, i):
                params, opt_state = carry
                # Batch i is rows [i*batch, (i+1)*batch) of this epoch's order; the slice starts
                # early enough to stay in bounds, and rows before i*batch are masked out.
                start = jnp.minimum(i * batch, n - batch)
                m_B = (start + jnp.arange(batch) >= i * batch).astype(x_ND.dtype)
                if spec.shuffle:
                    rows_B = jax.lax.dynamic_slice_in_dim(order_N, start, batch)
                    x_BD, y_B = x_ND[rows_B], y_N[rows_B]
                else:
                    x_BD = jax.lax.dynamic_slice_in_dim(x_ND, start, batch)
                    y_B = jax.lax.dynamic_slice_in_dim(y_N, start, batch)
                grads, total = grad_fn(params, x_BD, y_B, m_B)
                updates, opt_state = opt.update(grads, opt_state, params)
                return (optax.apply_updates(params, updates), opt_state), total

            (params, opt_state), totals = jax.lax.scan(
                step, (params, opt_state), jnp.arange(n_batches)
            )
            return (params, opt_state), totals.sum() / n

        keys = jax.random.split(k_order, spec.epochs)
        (params, _), loss_E = jax.lax.scan(epoch, (params, opt.init(params)), keys)
        return TrainOut(params, loss_E)

    return train


def _make_train_lanes(
    spec: TrainSpec,
) -> Callable[[jax.Array, jax.Array, jax.Array, jax.Array | float], TrainOut]:
    """The same `train` as the scan's, run by the lanes kernel (one XLA custom call).

    Parameters start from the same `mlp.init` draw. Under vmap every argument is broadcast
    to the seed axis, and the kernel trains the seeds 16 at a time.
    """

    def train(key: jax.Array, x_ND: jax.Array, y_N: jax.Array, lr: jax.Array | float) -> TrainOut:
        _check_batch(spec, x_ND.shape[0])
        params = mlp.init(jax.random.fold_in(key, 0), (x_ND.shape[1], *spec.sizes[1:]), spec.init)
        flat = [a for layer in params for a in layer]
        opts = jnp.array([spec.batch_size, spec.loss == "mean"], jnp.int32)
        shapes = [jax.ShapeDtypeStruct(a.shape, jnp.float32) for a in flat]
        shapes.append(jax.ShapeDtypeStruct((spec.epochs,), jnp.float32))
        call = jax.ffi.ffi_call(native.TARGET, shapes, vmap_method="broadcast_all")
        *trained, loss_E = call(
            x_ND.astype(jnp.float32),
            y_N.astype(jnp.int32),
            jnp.asarray(lr, jnp.float32),
            opts,
            *flat,
        )
        return TrainOut([tuple(trained[i : i + 2]) for i in range(0, len(trained), 2)], loss_E)

    return train
