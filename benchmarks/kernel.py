"""The lanes kernel alone, in C, on one core, as a fraction of that core's FMA throughput.

    python -m benchmarks.kernel                 # 10 epochs, best of 3, 3 rounds
    python -m benchmarks.kernel --epochs 1 --rounds 1

Compiles benchmarks/lanes_harness.c around the shipped prtm_jax/csrc/lanes.c with the
kernel's own compiler and flags (prtm_jax.native), then prints, per round, the kernel's us
per seed-step and GFLOP/s (one block of 16 seeds on the reference workload) and the ratio to
a loop of independent FMAs on the same vectors, timed in the same process: the number that
says how close the kernel is to the core's limit, whatever the core. No JAX, no XLA.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path
from statistics import median

HARNESS = Path(__file__).with_name("lanes_harness.c")


def build(out: Path) -> Path:
    """Compile the harness around the shipped kernel into `out`; raises native.Unavailable."""
    import jax

    from prtm_jax import native

    flags = [f for f in native.FLAGS if f not in ("-fPIC", "-shared")]
    cmd = [
        *native._compiler(),
        *flags,
        "-I",
        jax.ffi.include_dir(),
        f'-DKERNEL="{native.SOURCE}"',
        str(HARNESS),
        "-o",
        str(out),
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise native.Unavailable(f"no working C compiler ({cmd[0]}: {e}); set CC") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise native.Unavailable(f"compiling {HARNESS.name} failed: {last}")
    return out


def run(binary: Path, epochs: int, repeats: int, dump: Path | None = None) -> dict[str, float]:
    """One round: the harness's `key value` lines, plus their ratio `fraction_of_fma`."""
    args = [str(binary), str(epochs), str(repeats), *([str(dump)] if dump else [])]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    res = {k: float(v) for k, v in (line.split() for line in out.splitlines() if line.strip())}
    res["fraction_of_fma"] = res["kernel_gflops"] / res["fma_gflops"]
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10, help="epochs per training (63 steps each)")
    p.add_argument("--repeats", type=int, default=3, help="trainings per round; the best counts")
    p.add_argument("--rounds", type=int, default=3, help="rounds; their median is printed last")
    args = p.parse_args(argv)
    for name in ("epochs", "repeats", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(Path(tmp) / "lanes_harness")
        rounds = []
        for i in range(args.rounds):
            r = run(binary, args.epochs, args.repeats)
            rounds.append(r)
            print(
                f"round {i + 1}: kernel {r['kernel_us_per_seed_step']:.3f} us per seed-step ="
                f" {r['kernel_gflops']:.1f} GFLOP/s; FMA loop {r['fma_gflops']:.1f} GFLOP/s;"
                f" kernel / FMA loop {r['fraction_of_fma']:.2f}"
            )
    mid = median(r["fraction_of_fma"] for r in rounds)
    print(f"median over {len(rounds)} rounds: kernel / FMA loop = {mid:.2f} (one core, 16 seeds)")


if __name__ == "__main__":
    main()
