"""Throughput benchmarks: `python -m benchmarks.run` (see docs/performance.md).

Nothing here imports JAX at module level, so the PyTorch worker can run in a venv without it.
"""
