"""`one_at_a_time`: under vmap, the same values as the batched call, one LAPACK call per item."""

import jax
import jax.numpy as jnp
import numpy as np

from prtm_jax.batching import one_at_a_time


def _svd(a):
    return jnp.linalg.svd(a, full_matrices=False)


def test_nested_vmap_equals_batched_call_bitwise(rng):
    x = jnp.asarray(rng.normal(size=(3, 40, 10, 10)), jnp.float32)
    ref = jax.jit(jax.vmap(jax.vmap(_svd)))(x)
    got = jax.jit(jax.vmap(jax.vmap(one_at_a_time(_svd))))(x)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_array_equal(np.asarray(r), np.asarray(g))


def test_unbatched_arguments_are_closed_over(rng):
    a = jnp.asarray(rng.normal(size=(16, 3, 3)), jnp.float32)
    b = jnp.asarray(rng.normal(size=3), jnp.float32)
    got = jax.vmap(one_at_a_time(jnp.linalg.solve), in_axes=(0, None))(a, b)
    np.testing.assert_allclose(got, np.linalg.solve(np.asarray(a, np.float64), b), rtol=1e-4)
    np.testing.assert_allclose(one_at_a_time(jnp.linalg.solve)(a[0], b), got[0], rtol=0)


def test_the_vmapped_program_has_no_batched_lapack_call(rng):
    """The batch must not reach the LAPACK kernel: its operand has no leading batch axis."""
    x = jnp.asarray(rng.normal(size=(64, 10, 10)), jnp.float32)
    hlo = jax.jit(jax.vmap(one_at_a_time(_svd))).lower(x).compile().as_text()
    calls = [
        line for line in hlo.splitlines() if "lapack_sgesdd" in line and "custom-call(" in line
    ]
    assert calls and all("f32[64,10,10]" not in line for line in calls)
    hlo_ref = jax.jit(jax.vmap(_svd)).lower(x).compile().as_text()
    assert any("lapack_sgesdd" in line and "f32[64,10,10]" in line for line in hlo_ref.splitlines())
