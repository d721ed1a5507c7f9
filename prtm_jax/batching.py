"""`one_at_a_time(f)`: f, but under `jax.vmap` it runs item by item instead of as one batched call.

Why: jaxlib's CPU LAPACK kernels (svd, solve, ...) split a large enough batch into tasks on
XLA's intra-op thread pool and then block that pool thread until the tasks finish. With one
CPU device per core, every pool thread can be such a blocked caller, nobody is left to run the
tasks, and the program hangs (prtm2 on 2 CPU devices at seed_chunk 64 did, in the data
generator's SVD). A call with batch size 1 never splits, so mapping the items through
`lax.map` cannot block; each item runs the same LAPACK routine on the same matrix, so the
results are bitwise those of the batched call (tests/test_batching.py checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
from jax.custom_batching import custom_vmap


def one_at_a_time(f: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap f (positional array arguments) so that vmap maps it with `lax.map`."""
    g = custom_vmap(f)

    @g.def_vmap
    def _rule(axis_size: int, in_batched: list[bool], *args: jax.Array):
        def item(batched: list[jax.Array]):
            it = iter(batched)
            return g(*(next(it) if b else a for a, b in zip(args, in_batched, strict=True)))

        out = jax.lax.map(item, [a for a, b in zip(args, in_batched, strict=True) if b])
        return out, jax.tree.map(lambda _: True, out)

    return g
