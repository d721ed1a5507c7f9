"""The seed's two views of one set of labels, as a pure function of a PRNG key.

View 1 (input of the Weight model): Gaussian blobs, as `sklearn.datasets.make_blobs` makes them
(centres uniform in [-center_box, center_box]^d, isotropic noise of std `view1_std`).
View 2 (input of the Bias model): per sample, `n_classes` draws of Normal(view2_mean,
view2_std), `view2_offset` added at the sample's label, every negative entry set to
`clip_floor`. Train and test rows come from one draw (shared centres, disjoint noise), so no
test row repeats a training row: the seed's leakage (both splits from `random_state=0`) is gone.

Dependence between the views, given the label, is set by `rho` in [0, 1]. View 2's standard
noise in class column k is `rho * u_k + sqrt(1 - rho^2) * e_k`, where `e_k` is its own N(0, 1)
draw and `u = M z` is view 1's standard noise `z` (n_features,) seen along K orthonormal
directions: M (K, F) is the orthonormal polar factor of the directions from the mean of the
centres to each centre, so u_k measures how far view 1's noise pushes the row towards class k.
The rows of M are orthonormal, so u ~ N(0, I_K) and view 2 on its own has exactly the same law
for every rho (the Bias model's task does not change); only its dependence on view 1 does:
when view 1 errs towards class k, view 2 leans the same way with correlation rho. `rho = 0` is
the seed's independent views (the same draws as without rho). rho > 0 needs
n_features >= n_classes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from prtm_jax import native
from prtm_jax.batching import one_at_a_time


class DataShape(NamedTuple):
    """Static sizes: they change the compiled program."""

    n_train: int
    n_test: int
    n_classes: int
    n_features: int


class DataParams(NamedTuple):
    """Traced noise parameters: scalars, or arrays to vmap over."""

    view1_std: jax.Array | float
    view2_mean: jax.Array | float
    view2_std: jax.Array | float
    view2_offset: jax.Array | float
    clip_floor: jax.Array | float
    center_box: jax.Array | float
    rho: jax.Array | float = 0.0


class TwoView(NamedTuple):
    """x1_* (n, n_features), x2_* (n, n_classes), y_* (n,) int32 labels."""

    x1_train: jax.Array
    x2_train: jax.Array
    y_train: jax.Array
    x1_test: jax.Array
    x2_test: jax.Array
    y_test: jax.Array


def make_two_view(key: jax.Array, p: DataParams, shape: DataShape) -> TwoView:
    """One replicate of both views; train and test share centres and labels' distribution."""
    n = shape.n_train + shape.n_test
    k_centre, k_label, k_v1, k_v2 = (jax.random.fold_in(key, i) for i in range(4))
    centres_KF = jax.random.uniform(
        k_centre, (shape.n_classes, shape.n_features), minval=-1.0, maxval=1.0
    ) * jnp.asarray(p.center_box, jnp.float32)
    # Balanced labels in random order, as make_blobs does.
    y_N = native.permutation(k_label, jnp.arange(n, dtype=jnp.int32) % shape.n_classes)
    z_NF = jax.random.normal(k_v1, (n, shape.n_features))
    x1_NF = centres_KF[y_N] + p.view1_std * z_NF
    u_NK = z_NF @ orthonormal_directions(centres_KF).T
    e_NK = jax.random.normal(k_v2, (n, shape.n_classes))
    noise_NK = p.rho * u_NK + jnp.sqrt(1.0 - jnp.square(p.rho)) * e_NK
    onehot_NK = jax.nn.one_hot(y_N, shape.n_classes, dtype=jnp.float32)
    x2_NK = p.view2_mean + p.view2_std * noise_NK
    x2_NK = x2_NK + p.view2_offset * onehot_NK
    x2_NK = jnp.where(x2_NK < 0, jnp.asarray(p.clip_floor, jnp.float32), x2_NK)
    s = shape.n_train
    return TwoView(x1_NF[:s], x2_NK[:s], y_N[:s], x1_NF[s:], x2_NK[s:], y_N[s:])


# One LAPACK call per seed even under vmap: a batched one can hang on multiple CPU devices.
_svd = one_at_a_time(lambda a: jnp.linalg.svd(a, full_matrices=False))


def orthonormal_directions(centres_KF: jax.Array) -> jax.Array:
    """M (K, F) with orthonormal rows closest to the directions from the centres' mean to each
    centre (the polar factor U V^T of their SVD); needs F >= K."""
    u_KK, _, vt_KF = _svd(centres_KF - centres_KF.mean(0))
    return u_KK @ vt_KF
