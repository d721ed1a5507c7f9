import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prtm_jax import mlp
from prtm_jax.train import cross_entropy


def _numpy_backprop(params, x, y, activation):
    """The seed notes' hand-written backprop (sigmoid or ReLU hidden layers, softmax output,
    gradient of the cross-entropy summed over the batch), in float64 NumPy."""
    ws = [np.asarray(w, np.float64) for w, _ in params]
    bs = [np.asarray(b, np.float64) for _, b in params]
    act = {
        "relu": (lambda z: np.maximum(z, 0), lambda a: (a > 0).astype(float)),
        "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda a: a * (1 - a)),
    }[activation]
    outs = [x]
    for w, b in zip(ws[:-1], bs[:-1], strict=True):
        outs.append(act[0](outs[-1] @ w + b))
    z = outs[-1] @ ws[-1] + bs[-1]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    delta = p - np.eye(ws[-1].shape[1])[y]
    grads = []
    for i in range(len(ws) - 1, -1, -1):
        grads.append((outs[i].T @ delta, delta.sum(0)))
        if i:
            delta = (delta @ ws[i].T) * act[1](outs[i])
    return grads[::-1]


@pytest.mark.parametrize(
    "sizes,activation", [((10, 64, 32, 10), "relu"), ((10, 32, 10), "sigmoid")]
)
def test_grad_matches_seed_backprop(sizes, activation):
    key = jax.random.key(3)
    params = mlp.init(key, sizes, "lecun")  # a scaled init, so every unit is active
    x = np.asarray(jax.random.normal(jax.random.key(4), (32, sizes[0])), np.float64)
    y = np.asarray(jax.random.randint(jax.random.key(5), (32,), 0, sizes[-1]))
    grads = jax.grad(lambda p: cross_entropy(p, jnp.asarray(x, jnp.float32), y, activation).sum())(
        params
    )
    ref = _numpy_backprop(params, x, y, activation)
    for (gw, gb), (rw, rb) in zip(grads, ref, strict=True):
        np.testing.assert_allclose(gw, rw, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(gb, rb, atol=1e-5, rtol=1e-5)


def test_init_shapes_and_seed_scale():
    params = mlp.init(jax.random.key(0), (10, 64, 32, 10), "seed")
    assert [(w.shape, b.shape) for w, b in params] == [
        ((10, 64), (64,)),
        ((64, 32), (32,)),
        ((32, 10), (10,)),
    ]
    w = np.concatenate([np.ravel(w) for w, _ in params])
    assert abs(w.std() - 0.01) < 0.001
    assert all(np.all(b == 0) for _, b in params)


@pytest.mark.parametrize("name", sorted(mlp.ACTIVATIONS))
def test_apply_jit_matches_eager_for_every_activation(name):
    params = mlp.init(jax.random.key(1), (5, 7, 3), "glorot")
    x = jax.random.normal(jax.random.key(2), (4, 6, 5))  # leading axes pass through
    eager = mlp.apply(params, x, name)
    jitted = jax.jit(mlp.apply, static_argnums=2)(params, x, name)
    assert eager.shape == (4, 6, 3)
    assert np.isfinite(eager).all()
    np.testing.assert_allclose(eager, jitted, rtol=1e-6, atol=1e-6)


def test_activation_registry_covers_required_names():
    required = {"relu", "sigmoid", "tanh", "gelu", "silu", "elu", "leaky_relu", "softplus"}
    assert required <= set(mlp.ACTIVATIONS)
    z = jnp.linspace(-3, 3, 7)
    np.testing.assert_allclose(mlp.ACTIVATIONS["relu"](z), np.maximum(np.asarray(z), 0))
    np.testing.assert_allclose(
        mlp.ACTIVATIONS["sigmoid"](z), 1 / (1 + np.exp(-np.asarray(z))), rtol=1e-6
    )


def test_film_layer_matches_its_formula_and_reduces_to_concat_when_g_is_zero():
    d1, d2 = 4, 3
    params = mlp.init(jax.random.key(7), (d1 + d2, 6, 5, 2), "lecun", film_split=d1)
    w, g, a, b = params[0]
    assert (w.shape, g.shape, a.shape, b.shape) == ((4, 6), (3, 6), (3, 6), (6,))
    x = np.asarray(jax.random.normal(jax.random.key(8), (9, d1 + d2)), np.float64)
    x1, x2 = x[:, :d1], x[:, d1:]
    w, g, a, b = (np.asarray(t, np.float64) for t in params[0])
    h = np.tanh((x1 @ w) * (1 + x2 @ g) + x2 @ a + b)
    for wl, bl in params[1:-1]:
        h = np.tanh(h @ np.asarray(wl, np.float64) + np.asarray(bl, np.float64))
    ref = h @ np.asarray(params[-1][0], np.float64) + np.asarray(params[-1][1], np.float64)
    np.testing.assert_allclose(
        mlp.apply(params, jnp.asarray(x, jnp.float32), "tanh"), ref, rtol=1e-5, atol=1e-5
    )
    # With g = 0 the W&B layer is a plain linear layer on the concatenated input.
    plain = [(jnp.concatenate([params[0][0], params[0][2]]), params[0][3]), *params[1:]]
    zero_g = [(params[0][0], jnp.zeros_like(params[0][1]), params[0][2], params[0][3]), *params[1:]]
    xs = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(
        mlp.apply(zero_g, xs, "relu"), mlp.apply(plain, xs, "relu"), rtol=1e-5, atol=1e-6
    )


def test_dense_gradient_equals_float64_products_with_leading_axes(rng):
    # dense's custom gradient against the math in float64: dx = g w^T, dw = sum over every
    # leading axis of x^T g; also batched over a per-seed weight (vmap), as training runs it.
    x = rng.normal(size=(3, 5, 4))
    w = rng.normal(size=(4, 6))
    g = rng.normal(size=(3, 5, 6))
    f32 = jnp.float32
    out, vjp = jax.vjp(mlp.dense, jnp.asarray(x, f32), jnp.asarray(w, f32))
    dx, dw = vjp(jnp.asarray(g, f32))
    np.testing.assert_allclose(out, x @ w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, g @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, np.einsum("abi,abj->ij", x, g), rtol=1e-5, atol=1e-5)

    ws = rng.normal(size=(3, 4, 6))  # one weight per "seed", x[s] (5, 4) per seed
    loss = lambda x_, w_, g_: (mlp.dense(x_, w_) * g_).sum()  # noqa: E731
    dws = jax.vmap(jax.grad(loss, argnums=1))(*(jnp.asarray(a, f32) for a in (x, ws, g)))
    np.testing.assert_allclose(dws, np.einsum("sbi,sbj->sij", x, g), rtol=1e-5, atol=1e-5)


def _compiled_dots(x, w, batched):
    """Per dot XLA compiles for dense's gradient: (lhs contracting dim, rhs contracting dim),
    counted without the batch dim (the seed axis under vmap); and whether x^T is materialised."""
    jax.clear_caches()  # NN_WEIGHT_GRADS_ON_CPU is read when dense's derivative is traced
    # A cotangent c passed in, so XLA cannot simplify the products away.
    grad = jax.grad(lambda x_, w_, c_: (mlp.dense(x_, w_) * c_).sum(), argnums=(0, 1))
    fn = jax.vmap(grad) if batched else grad
    c = jnp.ones((*x.shape[:-1], w.shape[-1]))
    hlo = jax.jit(fn).lower(x, w, c).compile().as_text()
    dots = []
    for line in hlo.splitlines():
        if " dot(" in line:
            lhs = int(re.search(r"lhs_contracting_dims=\{(\d+)\}", line).group(1))
            rhs = int(re.search(r"rhs_contracting_dims=\{(\d+)\}", line).group(1))
            dots.append((lhs - batched, rhs - batched))
    # x^T (10, 32) written out row-major by a copy, not a transpose left to a layout.
    materialised = re.search(r"= f32\[(?:\d+,)?10,32\]\{(?:2,)?1,0\} (?:copy|fusion)\(", hlo)
    return dots, materialised is not None


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the NN layout is for XLA:CPU")
@pytest.mark.parametrize("batched", [False, True])
def test_dense_weight_gradient_is_a_plain_product_on_cpu(monkeypatch, batched):
    # The point of dense: no product XLA:CPU runs for the gradient contracts over the rows,
    # the major axis of both operands (a "TN" product, which it runs in Eigen at ~2x the cost),
    # also batched over seeds as training runs it, and no transpose is hidden in a layout.
    x, w = jnp.ones((32, 10)), jnp.ones((10, 64))
    if batched:
        x, w = jnp.ones((4, 32, 10)), jnp.ones((4, 10, 64))
    dots, materialised = _compiled_dots(x, w, batched)
    assert len(dots) == 2 and (0, 0) not in dots and materialised, dots
    # The benchmark's unoptimised path switches back to jax.grad's layout.
    monkeypatch.setattr(mlp, "NN_WEIGHT_GRADS_ON_CPU", False)
    dots, materialised = _compiled_dots(x, w, batched)
    assert (0, 0) in dots and not materialised
    monkeypatch.undo()
    jax.clear_caches()  # no trace made with the flag off outlives this test


def test_dense_refuses_a_weight_that_is_not_a_matrix():
    with pytest.raises(ValueError, match=r"^dense: w must be 2-D \(d_in, d_out\), got shape"):
        mlp.dense(jnp.ones((2, 3)), jnp.ones((2, 3, 4)))


def test_dense_supports_forward_mode_like_a_matmul(rng):
    # A custom JVP (not VJP): jax.jvp and jax.hessian work as on x @ w.
    x = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    w, dw = (jnp.asarray(rng.normal(size=(4, 3)), jnp.float32) for _ in range(2))
    _, tangent = jax.jvp(lambda v: mlp.dense(x, v), (w,), (dw,))
    np.testing.assert_allclose(tangent, np.float64(x) @ np.float64(dw), rtol=1e-5, atol=1e-5)
    h = jax.hessian(lambda v: jnp.tanh(mlp.dense(x, v)).sum())(w)
    want = jax.hessian(lambda v: jnp.tanh(x @ v).sum())(w)
    np.testing.assert_allclose(h, want, rtol=1e-5, atol=1e-6)


SHARD_MAP_SCRIPT = """
import json, jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, PartitionSpec as P
from prtm_jax import mlp
rng = np.random.default_rng(0)
x, w = rng.normal(size=(8, 3)), rng.normal(size=(3, 2))
assert len(jax.devices()) == 2, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("d",))
def local(x_, w_):
    return jax.grad(lambda v: jax.lax.psum((mlp.dense(x_, v) ** 2).sum(), "d"))(w_)
got = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P("d"), P()), out_specs=P()))(
    jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
print(json.dumps({"got": np.asarray(got).tolist(), "want": (2 * x.T @ (x @ w)).tolist()}))
"""


def test_dense_gradient_of_a_replicated_weight_under_shard_map_sums_over_devices():
    # Rows sharded over 2 devices, the weight the same on both: its gradient is the sum of the
    # devices' contributions, what autodiff gives for x @ w.
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", SHARD_MAP_SCRIPT], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    np.testing.assert_allclose(res["got"], res["want"], rtol=1e-5, atol=1e-5)
