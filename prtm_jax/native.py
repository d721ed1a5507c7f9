"""The CPU training kernel (`csrc/lanes.c`), built with the machine's C compiler.

`load()` compiles the kernel for this CPU (`-O3 -march=native`) into a cache directory unless
it is there, loads it and registers it with XLA as the FFI target `TARGET`; it raises
`Unavailable` when that is not possible (no C compiler, not a CPU backend), and `available()`
returns that reason instead (None: usable). The build is keyed by
the source, XLA's FFI header, the compiler and the CPU, so a changed kernel, a new jaxlib or a
cluster node with other vector units each get their own build, and a build is written
atomically (two processes may race to build it; both get a whole library).

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

TARGET = "prtm_sgd_lanes"
MAX_LAYERS = 16  # the kernel's MAX_LAYERS
SOURCE = Path(__file__).parent / "csrc" / "lanes.c"
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
    """The kernel's shared library for this machine, compiled unless already in the cache."""
    header = Path(jax.ffi.include_dir()) / "xla" / "ffi" / "api" / "c_api.h"
    cc = _compiler()
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise Unavailable(f"no working C compiler ({shlex.join(cc)}: {e}); set CC") from None
    digest = hashlib.sha256()
    for part in (SOURCE.read_bytes(), header.read_bytes(), version, " ".join(FLAGS).encode()):
        digest.update(part)
    digest.update(_cpu_identity())
    out = cache_dir() / f"lanes-{digest.hexdigest()[:16]}.so"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".so.tmp")
    os.close(fd)
    cmd = [*cc, *FLAGS, "-I", jax.ffi.include_dir(), str(SOURCE), "-o", tmp]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise Unavailable(f"compiling {SOURCE.name} failed: {last}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


@functools.cache
def load() -> ctypes.CDLL:
    """Build (if needed), load and register the kernel; raises Unavailable with the reason."""
    if jax.default_backend() != "cpu":
        raise Unavailable(f"the kernel runs on the CPU; JAX's backend is {jax.default_backend()}")
    lib = ctypes.cdll.LoadLibrary(str(build()))
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(lib.prtm_sgd_lanes), platform="cpu")
    return lib


@functools.cache
def available() -> str | None:
    """None if the kernel is usable here, else the reason it is not (one line)."""
    try:
        load()
    except Unavailable as e:
        return str(e)
    return None


def main() -> None:
    """Build the kernel now and say where it is, or why it is not used (exit status 0 both ways:
    without it, training falls back to XLA)."""
    import time

    t = time.perf_counter()
    try:
        path = build()
    except Unavailable as e:
        print(f"lanes kernel unavailable: {e}; training runs in XLA (train.impl=auto)")
        return
    print(f"lanes kernel: {path} ({time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
