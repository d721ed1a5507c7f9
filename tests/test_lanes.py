"""The lanes kernel (csrc/lanes.c) against float64 NumPy SGD and against the XLA trainer.

tests/test_train_perf.py runs the trainer's float64 checks for both implementations; these
cover what only the kernel has: seeds packed 16 to a register (padding, lane independence),
shapes that do not fill its register tiles, its exp/log, divergence, and how it is chosen,
built and refused.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prtm_jax import native
from prtm_jax.config import Config, ConfigError, ModelConfig, TrainConfig
from prtm_jax.experiment import train_impls, validate_config
from prtm_jax.train import TrainSpec, make_train, resolve_impl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed
from benchmarks.baselines import numpy_sgd

ROOT = Path(__file__).resolve().parents[1]


def _problem(seed: int, n: int, d: int, c: int):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    x = rng.normal(size=(n, d)) + 1.5 * np.eye(c, d)[y]
    return x.astype(np.float32), y.astype(np.int32)


def _fit(spec, key, x, y, lr):
    return jax.jit(make_train(spec))(key, x, y, lr)


@pytest.mark.parametrize(
    ("sizes", "batch", "n", "loss"),
    [
        ((0, 3), 8, 50, "sum"),  # softmax regression: one layer, 3 classes
        ((0, 7, 5, 6, 4), 16, 61, "mean"),  # widths off the 4- and 5-wide register tiles
        ((0, 64, 32, 10), 32, 70, "sum"),  # the reference widths, a partial last batch
    ],
)
def test_kernel_matches_float64_numpy_sgd(sizes, batch, n, loss):
    d, c = 9, sizes[-1]
    x, y = _problem(0, n, d, c)
    spec = TrainSpec(sizes=sizes, init="he", epochs=3, batch_size=batch, loss=loss, impl="lanes")
    key = jax.random.key(2)
    start = _fit(spec._replace(epochs=0), key, x, y, 0).params
    init = [(np.asarray(w), np.asarray(b)) for w, b in start]
    lr = 0.2 if loss == "mean" else 0.01
    want = numpy_sgd(init, x, y, lr=lr, epochs=3, batch_size=batch, loss=loss)
    got = _fit(spec, key, x, y, lr)
    assert max(np.abs(w - w0).max() for (w, _), (w0, _) in zip(want, init, strict=True)) > 0.02
    for (gw, gb), (ww, wb) in zip(got.params, want, strict=True):
        np.testing.assert_allclose(gw, ww, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gb, wb, rtol=1e-4, atol=1e-5)


def test_epoch_loss_is_the_mean_cross_entropy_of_the_rows_seen():
    # The kernel's own exp and log against the XLA trainer's (optax) on the same trajectory.
    x, y = _problem(1, 100, 5, 3)
    key = jax.random.key(0)
    spec = TrainSpec(sizes=(0, 16, 3), epochs=4, batch_size=32)
    lanes = _fit(spec._replace(impl="lanes"), key, x, y, 0.02).loss_E
    xla = _fit(spec._replace(impl="xla"), key, x, y, 0.02).loss_E
    assert lanes.shape == (4,) and lanes[-1] < lanes[0]
    np.testing.assert_allclose(lanes, xla, rtol=2e-6)


def test_a_seed_trains_alike_in_any_lane_and_any_seed_count():
    # 17 seeds fill one register and 1 lane of the next (15 padding lanes): each seed's result
    # is bitwise that of the seed trained alone, whichever lane it ran in.
    data = [_problem(s, 40, 4, 3) for s in range(17)]
    x = jnp.stack([a for a, _ in data])
    y = jnp.stack([b for _, b in data])
    keys = jax.random.split(jax.random.key(5), 17)
    lr = jnp.linspace(0.01, 0.05, 17)  # a per-seed learning rate reaches its own lane
    spec = TrainSpec(sizes=(0, 8, 3), epochs=2, batch_size=16, impl="lanes")
    many = jax.jit(jax.vmap(make_train(spec)))(keys, x, y, lr)
    for s in (0, 9, 16):
        one = _fit(spec, keys[s], x[s], y[s], lr[s])
        for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(many), strict=True):
            np.testing.assert_array_equal(a, b[s])


def test_a_diverging_seed_is_reported_not_hidden():
    x, y = _problem(3, 64, 5, 3)
    spec = TrainSpec(sizes=(0, 16, 3), epochs=3, batch_size=32, impl="lanes")
    fit = _fit(spec, jax.random.key(0), x * 1e3, y, 1e4)
    assert not np.isfinite(np.asarray(fit.loss_E)).all()


def test_auto_picks_the_kernel_where_it_can_train_the_model():
    spec = TrainSpec(sizes=(0, 8, 3))
    assert resolve_impl(spec) == "lanes"  # CPU, a C compiler, ReLU, SGD, batches in order
    assert resolve_impl(spec._replace(impl="xla")) == "xla"
    for change in ({"activation": "tanh"}, {"optimizer": "adam"}, {"shuffle": True}):
        assert resolve_impl(spec._replace(**change)) == "xla", change
    with pytest.raises(ValueError, match=r"^train.impl='lanes' cannot train this model: "):
        make_train(spec._replace(impl="lanes", activation="tanh"))
    with pytest.raises(ValueError, match=r"^train.impl='fast' is not one of: auto, xla, lanes$"):
        resolve_impl(spec._replace(impl="fast"))


def test_impl_is_checked_with_the_config_before_compiling():
    with pytest.raises(ConfigError) as e:
        validate_config(Config(train=TrainConfig(impl="fast")))
    assert str(e.value) == "train.impl='fast' is not one of: auto, xla, lanes"
    lanes_tanh = Config(model=ModelConfig(activation="tanh"), train=TrainConfig(impl="lanes"))
    with pytest.raises(ConfigError) as e:
        validate_config(lanes_tanh)
    assert str(e.value) == (
        "train.impl=lanes cannot train model weight: it trains relu networks, not tanh"
        " (use auto or xla)"
    )
    study = Config(task="study", train=TrainConfig(impl="auto"))
    study.data.n_val = 50
    assert train_impls(study) == {
        "weight": "lanes",
        "bias": "lanes",
        "concat": "lanes",
        "wb": "xla",  # the W&B network's first layer is not the kernel's
    }


def test_build_is_cached_and_a_missing_compiler_falls_back_to_xla(tmp_path):
    first = native.build()
    assert first.parent == native.cache_dir() and native.build() == first
    # A fresh process with no compiler and an empty cache: auto trains with XLA, and says why.
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "PRTM_NATIVE_DIR": str(tmp_path)}
    code = (
        "import json; from prtm_jax import native; from prtm_jax.train import TrainSpec, "
        "resolve_impl; print(json.dumps([resolve_impl(TrainSpec((0, 4, 2))), native.available(), "
        "native.native_ops(), native.use_native_threefry()]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    impl, why, native_ops, threefry = json.loads(out.stdout)
    assert (impl, native_ops, threefry) == ("xla", False, False)  # random numbers, sorts: JAX's
    assert why.startswith(f"no working C compiler ({tmp_path / 'no-such-cc'}: ")
    assert why.endswith("); set CC")
    assert list(tmp_path.iterdir()) == []  # nothing half-built left behind
    # `python -m prtm_jax.native` (make's install step) says so, and does not fail the install.
    cmd = [sys.executable, "-m", "prtm_jax.native"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.startswith("lanes kernel unavailable: no working C compiler (")
    env["CC"] = os.environ.get("CC", "cc")
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.startswith(f"lanes kernel: {tmp_path}/lanes-")
    assert [p.suffix for p in tmp_path.iterdir()] == [".so"]
