import jax
import jax.numpy as jnp
import numpy as np

from prtm_jax import mlp
from prtm_jax.data import DataParams, DataShape, make_two_view
from prtm_jax.train import TrainSpec, cross_entropy, make_train

SHAPE = DataShape(n_train=100, n_test=50, n_classes=4, n_features=5)
PARAMS = DataParams(2.0, 0.5, 0.25, 0.55, 0.001, 10.0)


def _data(seed):
    return make_two_view(jax.random.key(seed), PARAMS, SHAPE)


def _accuracy(params, x, y, activation):
    return float((mlp.apply(params, x, activation).argmax(-1) == y).mean())


def test_vmapped_run_equals_runs_one_at_a_time():
    spec = TrainSpec(sizes=(0, 16, 4), epochs=5, batch_size=32, shuffle=True)
    train = make_train(spec)
    keys = jax.random.split(jax.random.key(0), 4)
    data = jax.vmap(_data)(jnp.arange(4))
    batched = jax.jit(jax.vmap(train, in_axes=(0, 0, 0, None)))(
        keys, data.x1_train, data.y_train, 0.01
    )
    for i in range(4):
        one = jax.jit(train)(keys[i], data.x1_train[i], data.y_train[i], 0.01)
        for (w1, b1), (wb, bb) in zip(one.params, batched.params, strict=True):
            np.testing.assert_allclose(w1, wb[i], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(b1, bb[i], rtol=1e-5, atol=1e-6)
        got = [jax.tree.map(lambda a, i=i: a[i], batched.params), one.params]
        accs = [_accuracy(p, data.x1_test[i], data.y_test[i], "relu") for p in got]
        assert accs[0] == accs[1]


def test_summed_loss_equals_mean_loss_with_lr_times_batch():
    # With only full batches, SGD on the summed loss at lr equals SGD on the mean at lr * B.
    d = _data(1)
    x, y = d.x1_train[:96], d.y_train[:96]
    key = jax.random.key(2)
    summed = make_train(TrainSpec((0, 8, 4), epochs=3, batch_size=32, loss="sum"))(key, x, y, 0.01)
    mean = make_train(TrainSpec((0, 8, 4), epochs=3, batch_size=32, loss="mean"))(key, x, y, 0.32)
    for (ws, bs), (wm, bm) in zip(summed.params, mean.params, strict=True):
        np.testing.assert_allclose(ws, wm, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(bs, bm, rtol=1e-4, atol=1e-6)


def test_matches_a_python_loop_over_the_seeds_slices():
    # Reference: the seed's loop `for i in range(0, n, B)` with plain SGD on the summed loss,
    # one Python step per slice (the last slice has 100 - 96 = 4 rows), no padding or scan.
    d = _data(3)
    x, y = np.asarray(d.x1_train, np.float64), np.asarray(d.y_train)
    spec = TrainSpec((0, 8, 4), epochs=2, batch_size=32, init="lecun")
    key = jax.random.key(0)
    got = make_train(spec)(key, d.x1_train, d.y_train, 0.05).params

    params = [
        (np.asarray(w, np.float64), np.asarray(b, np.float64))
        for w, b in mlp.init(jax.random.fold_in(key, 0), (5, 8, 4), "lecun")
    ]
    with jax.enable_x64():
        grad = jax.grad(lambda p, xb, yb: cross_entropy(p, xb, yb, "relu").sum())
        for _ in range(2):
            for i in range(0, 100, 32):
                g = grad(params, x[i : i + 32], y[i : i + 32])
                params = [
                    (w - 0.05 * gw, b - 0.05 * gb)
                    for (w, b), (gw, gb) in zip(params, g, strict=True)
                ]
    for (w, b), (rw, rb) in zip(got, params, strict=True):
        np.testing.assert_allclose(w, rw, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b, rb, rtol=1e-4, atol=1e-5)


def test_training_reduces_loss_and_learning_rate_is_traced():
    d = _data(4)
    train = make_train(TrainSpec((0, 16, 4), epochs=20, batch_size=20))
    traces = []
    fn = jax.jit(train)
    for lr in (0.01, 0.02):
        traces.append(fn(jax.random.key(0), d.x1_train, d.y_train, jnp.float32(lr)).loss_E)
    assert fn._cache_size() == 1  # a new learning rate does not recompile
    assert traces[0][-1] < 0.5 * traces[0][0]
    assert not np.allclose(traces[0], traces[1])
