"""csrc/threefry.c: JAX's Threefry-2x32 hash in C, which `native.use_native_threefry` lowers
JAX's random numbers to on the CPU. It must draw exactly JAX's numbers: checked against the
Random123 paper's known answers, a NumPy implementation, and JAX's own lowering (a process
with PRTM_NATIVE_OPS=0)."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.random import threefry2x32_p

from prtm_jax import native

pytestmark = pytest.mark.skipif(native.available() is not None, reason="no native library")


def numpy_threefry2x32(k1, k2, x1, x2):
    """Threefry-2x32 with 20 rounds (Salmon et al. 2011), in NumPy uint32 arithmetic."""
    k1, k2, x1, x2 = np.broadcast_arrays(*(np.atleast_1d(np.uint32(v)) for v in (k1, k2, x1, x2)))
    ks = [k1, k2, k1 ^ k2 ^ np.uint32(0x1BD11BDA)]
    rotations = [(13, 15, 26, 6), (17, 29, 16, 24)]
    a, b = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in rotations[i % 2]:
            a = a + b
            b = (b << np.uint32(r)) | (b >> np.uint32(32 - r))
            b = a ^ b
        a = a + ks[(i + 1) % 3]
        b = b + ks[(i + 2) % 3] + np.uint32(i + 1)
    return a, b


@jax.jit
def hash_(k1, k2, x1, x2):
    return threefry2x32_p.bind(k1, k2, x1, x2)


def test_threefry_gives_the_papers_known_answers_and_numpys_bits():
    assert native.use_native_threefry()
    assert "prtm_threefry2x32" in hash_.lower(*[np.uint32(0)] * 4).as_text()
    # Random123's known-answer vectors for threefry2x32_20: (key, counter) -> output.
    known = [
        ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 2, (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, ctr, want in known:
        got = hash_(*(np.uint32(v) for v in (*key, *ctr)))
        assert [int(v) for v in got] == list(want)
    assert [int(v[0]) for v in numpy_threefry2x32(*known[2][0], *known[2][1])] == list(known[2][2])
    # Shapes the kernel broadcasts: scalar keys, keys per row and counters per column (as
    # under vmap), dimensions it cannot merge, rows longer than its 1,024-entry chunks.
    rng = np.random.default_rng(0)
    shapes = [((), (3, 5)), ((4, 1), (1, 7)), ((2, 3), (2, 3)), ((), (0,))]
    shapes += [((4, 1, 1), (1, 5, 3)), ((2, 1, 3), (1, 4, 1)), ((2, 1), (1, 3000))]
    for k_shape, x_shape in shapes:
        k1, k2 = (rng.integers(0, 2**32, k_shape, dtype=np.uint32) for _ in range(2))
        x1, x2 = (rng.integers(0, 2**32, x_shape, dtype=np.uint32) for _ in range(2))
        for got, want in zip(
            hash_(k1, k2, x1, x2), numpy_threefry2x32(k1, k2, x1, x2), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(got), want)


DRAWS = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from prtm_jax import native
from prtm_jax.config import Config, DataConfig, ModelConfig, TrainConfig
from prtm_jax.experiment import run_seeds
native_rng = native.use_native_threefry()

@jax.jit
def draws(key):
    a, b, c = jax.random.split(key, 3)
    return {
        "normal": jax.vmap(lambda k: jax.random.normal(k, (5, 3)))(jax.random.split(a, 4)),
        "permutation": native.permutation(b, jnp.arange(2500) % 10),
        "argsort": native.argsort_stable(jax.random.randint(b, (3, 999), -5, 5)),
        "fold_in": jax.random.key_data(jax.random.fold_in(c, 123456789)),
        "bits": jax.random.bits(c, (7,), jnp.uint32),
    }

out = jax.tree.map(lambda v: np.asarray(v).tolist(), draws(jax.random.key(7)))
cfg = Config(seeds=3, seed_chunk=4, data=DataConfig(n_train=96, n_test=40),
             model=ModelConfig(hidden=[8]), train=TrainConfig(epochs=3, batch_size=32))
runs = run_seeds(cfg)
out["run_seeds"] = {m: {k: np.asarray(v).tolist() for k, v in r.items()} for m, r in runs.items()}
lowered = draws.lower(jax.random.key(7)).as_text()
print(json.dumps({"native": native_rng, "custom_call": "prtm_threefry2x32" in lowered, **out}))
"""


def test_every_draw_and_run_is_the_same_with_jaxs_own_threefry():
    def run(flag: str) -> dict:
        env = {**os.environ, "PRTM_NATIVE_OPS": flag, "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, "-c", DRAWS]
        return json.loads(subprocess.run(cmd, env=env, capture_output=True, check=True).stdout)

    ours, jaxs = run("1"), run("0")
    assert (ours.pop("native"), ours.pop("custom_call")) == (True, True)
    assert (jaxs.pop("native"), jaxs.pop("custom_call")) == (False, False)
    assert ours == jaxs  # bit for bit: integers, and floats through JSON's exact repr
    assert sorted(ours["permutation"]) == sorted(np.arange(2500) % 10)
    assert len(ours["run_seeds"]["weight"]["accuracy"][0]) == 3


def test_argsort_is_numpys_stable_argsort_for_every_row():
    assert native.native_ops()
    rng = np.random.default_rng(1)
    cases = [
        rng.integers(0, 3, (4, 1000)).astype(np.uint32),  # many ties: stability decides
        rng.integers(-(2**31), 2**31, (2, 3, 517)).astype(np.int32),  # signs: every digit
        rng.integers(0, 2**32, (1, 2500), dtype=np.uint32),
        (rng.integers(0, 4, (64,)) << 24).astype(np.uint32),  # only the top digit varies
        np.full((2, 300), 7, np.int32),  # all equal: every digit pass is skipped
        np.zeros((3, 1), np.uint32),
        np.zeros((3, 0), np.int32),
    ]
    for keys in cases:
        got = jax.jit(native.argsort_stable)(keys)
        assert "prtm_argsort_stable" in jax.jit(native.argsort_stable).lower(keys).as_text()
        assert got.dtype == np.int32
        np.testing.assert_array_equal(np.asarray(got), np.argsort(keys, axis=-1, kind="stable"))
    keys = cases[0]
    rows = jax.vmap(native.argsort_stable)(keys)  # batched by vmap, not by a leading axis
    np.testing.assert_array_equal(np.asarray(rows), np.argsort(keys, axis=-1, kind="stable"))
    floats = np.float32([0.5, -1.0, 0.5])  # not the kernel's: jnp.argsort
    assert jax.jit(native.argsort_stable)(floats).tolist() == [1, 0, 2]
    with jax.enable_x64(True):  # JAX's default integer type, as jnp.argsort
        assert native.argsort_stable(keys).dtype == jnp.argsort(keys).dtype == np.int64


def test_permutation_is_jaxs_for_any_key_and_size():
    assert native.native_ops()
    x = jnp.arange(2500, dtype=jnp.int32)
    assert (
        "prtm_argsort_stable" in jax.jit(native.permutation).lower(jax.random.key(0), x).as_text()
    )
    for n in (1, 2, 7, 1625, 1626, 2500):  # 1,626 rows and more take 2 rounds of sorting
        x = jnp.arange(n, dtype=jnp.int32) * 3
        for seed in range(3):
            key = jax.random.key(seed)
            got = jax.jit(native.permutation)(key, x)
            np.testing.assert_array_equal(got, jax.random.permutation(key, x))
    keys = jax.random.split(jax.random.key(5), 4)
    floats = jnp.linspace(0.0, 1.0, 30)
    got = jax.vmap(native.permutation, in_axes=(0, None))(keys, floats)
    want = jax.vmap(jax.random.permutation, in_axes=(0, None))(keys, floats)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        native.permutation(keys[0], 9), jax.random.permutation(keys[0], 9)
    )
    with pytest.raises(ValueError, match=r"^permutation shuffles a 1-D array, got shape \(2, 2\)$"):
        native.permutation(jax.random.key(0), jnp.zeros((2, 2)))
