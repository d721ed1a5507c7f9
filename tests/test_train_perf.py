"""The optimised trainer against an independent float64 NumPy SGD loop (benchmarks.baselines).

The trainer slices batches in place and masks the partial last one (docs/performance.md);
these check that it still takes exactly the seed's steps, including under vmap over seeds.
"""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prtm_jax import mlp
from prtm_jax.train import TrainSpec, make_train

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.baselines import numpy_sgd

SIZES = (5, 16, 8, 3)


def _problem(seed: int, n: int = 100):
    """Separable-ish blobs: n rows (not a multiple of the batch), 5 features, 3 classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 5)) + 2.0 * np.eye(3, 5)[y]
    return x.astype(np.float32), y.astype(np.int32)


def _init(spec: TrainSpec, key, x, y):
    # Zero epochs return the initial parameters without assuming how the trainer splits keys.
    return make_train(spec._replace(epochs=0))(key, x, y, 0.0).params


IMPLS = pytest.mark.parametrize("impl", ["xla", "lanes"])


@IMPLS
@pytest.mark.parametrize(
    ("loss", "lr", "batch"), [("sum", 0.02, 32), ("mean", 0.5, 32), ("sum", 0.02, 100)]
)
def test_matches_float64_numpy_sgd(loss, lr, batch, impl):
    spec = TrainSpec(
        sizes=(0, *SIZES[1:]), init="he", epochs=4, batch_size=batch, loss=loss, impl=impl
    )
    x, y = _problem(0)
    key = jax.random.key(7)
    init = [(np.asarray(w), np.asarray(b)) for w, b in _init(spec, key, x, y)]
    want = numpy_sgd(init, x, y, lr=lr, epochs=spec.epochs, batch_size=batch, loss=loss)
    got = jax.jit(make_train(spec))(key, x, y, lr).params
    moved = max(np.abs(w1 - w0).max() for (w1, _), (w0, _) in zip(want, init, strict=True))
    assert moved > 0.05  # the comparison is not between two copies of the init
    for (gw, gb), (ww, wb) in zip(got, want, strict=True):
        np.testing.assert_allclose(gw, ww, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gb, wb, rtol=1e-4, atol=1e-5)


@IMPLS
def test_vmapped_seeds_each_match_their_own_numpy_run(impl):
    spec = TrainSpec(sizes=(0, *SIZES[1:]), epochs=3, batch_size=32, impl=impl)
    data = [_problem(s) for s in range(3)]
    x_SND = jnp.stack([x for x, _ in data])
    y_SN = jnp.stack([y for _, y in data])
    keys = jax.random.split(jax.random.key(1), 3)
    fit = jax.jit(jax.vmap(make_train(spec), in_axes=(0, 0, 0, None)))(keys, x_SND, y_SN, 0.02)
    for s, (x, y) in enumerate(data):
        init = [(np.asarray(w), np.asarray(b)) for w, b in _init(spec, keys[s], x, y)]
        want = numpy_sgd(init, x, y, lr=0.02, epochs=3, batch_size=32)
        for (gw, gb), (ww, wb) in zip(fit.params, want, strict=True):
            np.testing.assert_allclose(gw[s], ww, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(gb[s], wb, rtol=1e-4, atol=1e-5)


@IMPLS
def test_epoch_loss_is_the_mean_cross_entropy_of_the_rows_seen(impl):
    spec = TrainSpec(sizes=(0, *SIZES[1:]), epochs=1, batch_size=32, impl=impl)
    x, y = _problem(2)
    key = jax.random.key(3)
    init = _init(spec, key, x, y)
    # With lr = 0 every step sees the initial model, so the epoch loss is its mean loss.
    loss_E = make_train(spec)(key, x, y, 0.0).loss_E
    logits = np.asarray(jax.nn.log_softmax(mlp.apply(init, x)))
    np.testing.assert_allclose(loss_E[0], -logits[np.arange(len(y)), y].mean(), rtol=1e-5)


@IMPLS
def test_runs_under_shard_map_over_seeds(impl):
    # The multi-device path (seeds sharded over devices): every carry must vary with the seed.
    from jax.sharding import Mesh, PartitionSpec

    spec = TrainSpec(sizes=(0, *SIZES[1:]), epochs=2, batch_size=32, impl=impl)
    data = [_problem(s) for s in range(2)]
    x_SND, y_SN = jnp.stack([x for x, _ in data]), jnp.stack([y for _, y in data])
    keys = jax.random.split(jax.random.key(4), 2)
    vtrain = jax.vmap(make_train(spec), in_axes=(0, 0, 0, None))
    seed = PartitionSpec("seed")
    sharded = jax.shard_map(
        vtrain,
        mesh=Mesh(np.array(jax.devices()[:1]), ("seed",)),
        in_specs=(seed, seed, seed, PartitionSpec()),
        out_specs=seed,
    )
    got = jax.jit(sharded)(keys, x_SND, y_SN, 0.02)
    want = jax.jit(vtrain)(keys, x_SND, y_SN, 0.02)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
