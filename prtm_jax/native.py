"""The CPU kernels in `csrc/`, built with the machine's C compiler into one library.

* `lanes.c`: the training kernel, FFI target `TARGET` (`train.py` calls it);
* `threefry.c`: JAX's Threefry-2x32 hash, FFI target `THREEFRY_TARGET`. `use_native_threefry()`
  lowers JAX's `threefry2x32` primitive to it on the CPU: the same bits, with no XLA code to
  compile per random-number call site (docs/performance.md, optimisation 41);
* `argsort.c`: a stable argsort of integer keys, FFI target `ARGSORT_TARGET`, behind
  `argsort_stable` and `permutation` (the same results as `jnp.argsort(..., stable=True)` and
  `jax.random.permutation`, in a fraction of XLA's CPU sort time: optimisation 42).

Both replacements of XLA ops give exactly XLA's results; `PRTM_NATIVE_OPS=0` turns them off
(JAX's own ops, for comparison), and without the library they are off.

`load()` compiles the library for this CPU (`-O3 -march=native`) into a cache directory unless
it is there, loads it and registers its targets with XLA; it raises `Unavailable` when that is
not possible (no C compiler, not a CPU backend), and `available()` returns that reason instead
(None: usable). The build is keyed by the sources, XLA's FFI header, the compiler and the CPU,
so a changed kernel, a new jaxlib or a cluster node with other vector units each get their own
build, and a build is written atomically (two processes may race to build it; both get a whole
library).

The cache is `$PRTM_NATIVE_DIR`, else `$XDG_CACHE_HOME/prtm_jax/native` (`~/.cache/...`).
`python -m prtm_jax.native` builds it ahead of time (the Makefile's install step does), so that
a first run does not wait for the compiler; otherwise the first use builds it.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

TARGET = "prtm_sgd_lanes"
THREEFRY_TARGET = "prtm_threefry2x32"
ARGSORT_TARGET = "prtm_argsort_stable"
MAX_LAYERS = 16  # the kernel's MAX_LAYERS
SOURCE = Path(__file__).parent / "csrc" / "lanes.c"
SOURCES = (SOURCE, SOURCE.with_name("threefry.c"), SOURCE.with_name("argsort.c"))
HEADERS = (SOURCE.with_name("ffi.h"),)  # part of the build's key, not compiled on their own
FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-math-errno")


class Unavailable(RuntimeError):
    """The kernel cannot be built or used here; the message says why, in one line."""


def cache_dir() -> Path:
    if "PRTM_NATIVE_DIR" in os.environ:
        return Path(os.environ["PRTM_NATIVE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "prtm_jax" / "native"


def _cpu_identity() -> bytes:
    """What -march=native depends on: the architecture and, on Linux, the CPU's feature flags."""
    ident = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                ident += line
    except OSError:
        ident += platform.processor()
    return ident.encode()


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("CC", "cc"))


def build() -> Path:
    """The kernels' shared library for this machine, compiled unless already in the cache."""
    header = Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
    cc = _compiler()
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise Unavailable(f"no working C compiler ({shlex.join(cc)}: {e}); set CC") from None
    digest = hashlib.sha256()
    sources = [src.read_bytes() for src in (*SOURCES, *HEADERS)]
    for part in (*sources, header.read_bytes(), version, " ".join(FLAGS).encode()):
        digest.update(part)
    digest.update(_cpu_identity())
    out = cache_dir() / f"lanes-{digest.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    os.close(fd)
    cmd = [*cc, *FLAGS, "-I", jax.ffi.include_dir(), *map(str, SOURCES), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            names = " ".join(src.name for src in SOURCES)
            raise Unavailable(f"compiling {names} failed: {last}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def load() -> ctypes.CDLL:
    """Build (if needed), load and register the kernels; raises Unavailable with the reason."""
    if jax.default_backend() != "cpu":
        raise Unavailable(f"the kernel runs on the CPU; JAX's backend is {jax.default_backend()}")
    lib = ctypes.cdll.LoadLibrary(str(build()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.prtm_sgd_lanes), platform="cpu")
    for target in (THREEFRY_TARGET, ARGSORT_TARGET):
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, target)), platform="cpu")
    return lib


def _threefry2x32(*args: jax.Array) -> list[jax.Array]:
    """`threefry2x32_p`'s operands (k1, k2, x1, x2: u32 of one rank, each dimension the
    result's or 1) through the C hash, which broadcasts them itself."""
    out = jax.ShapeDtypeStruct(jnp.broadcast_shapes(*(a.shape for a in args)), jnp.uint32)
    return list(jax.ffi.ffi_call(THREEFRY_TARGET, (out, out))(*args))


@functools.cache
def native_ops() -> bool:
    """Whether the C replacements of XLA ops are used: the library is usable here (so JAX's
    backend is the CPU) and `PRTM_NATIVE_OPS` is not "0". Decided once per process, at first
    use: set the variable before running anything."""
    return os.environ.get("PRTM_NATIVE_OPS", "1") != "0" and available() is None


@functools.cache
def use_native_threefry() -> bool:
    """From now on, lower JAX's Threefry-2x32 hash to `csrc/threefry.c` on the CPU, if
    `native_ops()`; True if it does.

    Every PRNG key of the default implementation hashes through this primitive (split,
    fold_in, random bits), so programs traced after this call draw the same numbers as
    before. JAX's own CPU lowering is a loop over groups of rounds that XLA compiles anew at
    every call site: 0.6-0.8 s of the 2.3-2.5 s that compiling the prtm2 program took on the
    CPU this was measured on (docs/performance.md, optimisation 41).

    It holds for every CPU program lowered afterwards in this process, not only prtm's. jit's
    automatic partitioner cannot split a custom call, so a program that jit shards over
    several devices computes its random numbers whole on each (the same values, more work);
    `experiment.per_device` shards with shard_map, where each device draws only its own."""
    if not native_ops():
        return False
    from jax.extend.random import threefry2x32_p
    from jax.interpreters import mlir

    rule = mlir.lower_fun(_threefry2x32, multiple_results=True)
    mlir.register_lowering(threefry2x32_p, rule, platform="cpu")
    return True


@functools.cache
def available() -> str | None:
    """None if the kernel is usable here, else the reason it is not (one line)."""
    try:
        load()
    except Unavailable as e:
        return str(e)
    return None


def argsort_stable(keys: jax.Array) -> jax.Array:
    """`jnp.argsort(keys, axis=-1, stable=True)`, through `csrc/argsort.c` for int32 and uint32
    keys if `native_ops()` (the kernel's int32 indices in JAX's default integer type). Under
    vmap the kernel sorts every row. The kernel is a CPU target: programs lowered for another
    platform (jax.export) need PRTM_NATIVE_OPS=0."""
    keys = jnp.asarray(keys)
    if keys.dtype not in (jnp.int32, jnp.uint32) or keys.ndim < 1 or not native_ops():
        return jnp.argsort(keys, axis=-1, stable=True)
    out = jax.ShapeDtypeStruct(keys.shape, jnp.int32)
    idx = jax.ffi.ffi_call(ARGSORT_TARGET, out, vmap_method="broadcast_all")(keys)
    return idx.astype(jax.dtypes.canonicalize_dtype(np.int64))  # int64 only with jax_enable_x64


def permutation(key: jax.Array, x: jax.Array | int) -> jax.Array:
    """`jax.random.permutation(key, x)` for a 1-D x (an int n: arange(n)), with its sorts
    through `argsort_stable`.

    JAX's algorithm: rounds of sorting x by fresh 32-bit random keys (a stable sort), as many
    as make key collisions across all rounds unlikely (3 log n / log(2^32 - 1), rounded up)."""
    x = jnp.arange(x) if isinstance(x, int) else jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"permutation shuffles a 1-D array, got shape {x.shape}")
    if not native_ops():
        return jax.random.permutation(key, x)
    n = x.shape[0]
    rounds = int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))
    for _ in range(rounds):
        key, subkey = jax.random.split(key)
        x = x[argsort_stable(jax.random.bits(subkey, (n,), jnp.uint32))]
    return x


def main() -> None:
    """Build the kernel now and say where it is, or why it is not used (exit status 0 both ways:
    without it, training falls back to XLA)."""
    import time

    t = time.perf_counter()
    try:
        path = build()
    except Unavailable as e:
        print(f"lanes kernel unavailable: {e}; training, random numbers and sorts run in XLA")
        return
    print(f"lanes kernel: {path} ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
