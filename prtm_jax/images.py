"""Two views of images through the RT method, as pure functions of a PRNG key.

`data.py` makes the seed's synthetic blobs; this module makes the same `TwoView` from images,
the way the seed meant its views (SPEC.md, "The RT-method metrics"): each class's mean
training image is a unit space, and each image's soaRT3 metrics against the k unit spaces give
    x1 (Weight view) = log_gamma (or log_eta) against unit spaces 0..k-1, shape (n, k);
    x2 (Bias view)   = log_beta against unit spaces 0..k-1, shape (n, k).
Unit spaces come from the training rows of the same replicate only; a test image never
touches them. The early-fusion input is `concatenate([x1, x2], -1)`, which
`experiment._view(..., "concat")` already builds.

Two sources, each `make_*_two_view(key, params, shape) -> TwoView` like
`data.make_two_view`: traced noise parameters, static sizes, jit- and vmap-able over keys.
- digits: scikit-learn's `load_digits` (1,797 8x8 images, pixel values 0..16, 10 classes),
  split per key, stratified: exactly `n_test_per_class` test images per class (default 36, so
  360 test and 1,437 train), the rest train. The images are host constants loaded once.
- parts: simulated small images of a few part types for visual inspection; see
  `make_parts_two_view`.

`standardize=True` z-scores each column of both views with the training split's mean and std
(so test rows use training statistics only). The raw RT features are far from unit scale:
on digits log_gamma is about 2.35 with a within-class std of about 0.07, log_eta about 5.3,
log_beta about -0.19 with a within-class std of about 0.12. With the seed's hyper-parameters
(init 0.01, SGD lr 0.005, summed gradient) on raw digits views, the Weight model's loss stays
at ln(10) and its accuracy at chance (0.105 over 16 seeds; Bias 0.76); standardised, Weight
reaches 0.64 and Bias 0.945 (experiments/rt_digits_check.py). Default on.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from prtm_jax import native, rt
from prtm_jax.data import TwoView

N_PART_TYPES = 5  # disc, ring, square, cross, bar


class DigitsShape(NamedTuple):
    """Static choices for the digits views: they change the compiled program."""

    n_test_per_class: int = 36
    weight_metric: str = "log_gamma"
    standardize: bool = True


class DigitsParams(NamedTuple):
    """Traced: Gaussian noise (in pixel units, 0..16 scale) added to every image of the key."""

    noise_std: jax.Array | float = 0.0


class PartsShape(NamedTuple):
    """Static sizes for the simulated parts: n_types part types, size x size pixel images."""

    n_train: int = 2000
    n_test: int = 500
    n_types: int = 5
    size: int = 12
    weight_metric: str = "log_gamma"
    standardize: bool = True


class PartsParams(NamedTuple):
    """Traced image-formation parameters, in units of the part's nominal intensity.

    noise_std: sensor noise; defect_depth: fraction of intensity a defect removes at its
    centre; defect_width: the defect's Gaussian radius in pixels; gain_std: log-normal
    illumination gain; jitter: std of the part's position in pixels; scale: grey level of a
    nominal part (255 = 8-bit images; it matters because log_eta and log_gamma are not
    scale-invariant, see `rt`).
    """

    noise_std: jax.Array | float = 0.05
    defect_depth: jax.Array | float = 0.8
    defect_width: jax.Array | float = 0.8
    gain_std: jax.Array | float = 0.1
    jitter: jax.Array | float = 0.5
    scale: jax.Array | float = 255.0


@functools.cache
def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """load_digits as host constants: images (1797, 64) float32 in 0..16, labels (1797,) int32."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int32)


@functools.cache
def _split_positions(n_test_per_class: int) -> tuple[np.ndarray, np.ndarray]:
    # Positions in the class-sorted order: the first n_test_per_class of each class are test.
    _, y = digits_arrays()
    counts = np.bincount(y)
    if not 1 <= n_test_per_class < counts.min():
        raise ValueError(
            f"n_test_per_class must be in 1..{counts.min() - 1} (the smallest digits class has "
            f"{counts.min()} images), got {n_test_per_class}"
        )
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    is_test = np.zeros(len(y), bool)
    for s in starts:
        is_test[s : s + n_test_per_class] = True
    return np.flatnonzero(is_test), np.flatnonzero(~is_test)


def rt_two_view(
    img_train: jax.Array,
    y_train: jax.Array,
    img_test: jax.Array,
    y_test: jax.Array,
    n_classes: int,
    weight_metric: str,
    standardize: bool,
) -> TwoView:
    """RT views of any images (n, d) with labels, unit spaces from the training images only."""
    units_KD = rt.unit_spaces(img_train, y_train, n_classes)
    w_train, b_train = rt.rt_views(img_train, units_KD, weight_metric)
    w_test, b_test = rt.rt_views(img_test, units_KD, weight_metric)
    if standardize:
        w_train, w_test = _zscore(w_train, w_test)
        b_train, b_test = _zscore(b_train, b_test)
    return TwoView(w_train, b_train, y_train, w_test, b_test, y_test)


def _zscore(train_NK: jax.Array, test_MK: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean, std = train_NK.mean(0), train_NK.std(0)
    std = jnp.where(std > 0, std, 1.0)
    return (train_NK - mean) / std, (test_MK - mean) / std


def digits_split(key: jax.Array, n_test_per_class: int) -> tuple[jax.Array, jax.Array]:
    """Row indices (train, test) into `digits_arrays()`, each in random order.

    Stratified: exactly n_test_per_class test rows per class, the rest train, so the train
    split has 1797 - 10*n_test_per_class rows. Random order matters: the seed's trainer takes
    batches in order, and class-sorted rows would hurt it.
    """
    _, y_np = digits_arrays()
    test_pos, train_pos = _split_positions(n_test_per_class)
    k_sort, k_train, k_test = (jax.random.fold_in(key, i) for i in range(3))
    y = jnp.asarray(y_np)
    # Sort by class, randomly within class; the first n_test_per_class of each class are test.
    order = jnp.lexsort((jax.random.uniform(k_sort, y.shape), y))
    return (
        native.permutation(k_train, order[train_pos]),
        native.permutation(k_test, order[test_pos]),
    )


def make_digits_two_view(key: jax.Array, p: DigitsParams, shape: DigitsShape) -> TwoView:
    """One stratified split of load_digits (see `digits_split`) and its RT views, (n, 10) each."""
    x_np, y_np = digits_arrays()
    train_idx, test_idx = digits_split(jax.random.fold_in(key, 0), shape.n_test_per_class)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    x = x + p.noise_std * jax.random.normal(jax.random.fold_in(key, 1), x.shape)
    return rt_two_view(
        x[train_idx],
        y[train_idx],
        x[test_idx],
        y[test_idx],
        int(y_np.max()) + 1,
        shape.weight_metric,
        shape.standardize,
    )


def _part_templates(u: jax.Array, v: jax.Array, size: int) -> jax.Array:
    """Clean part images (N_PART_TYPES, ...) in [0, 1] at pixel offsets u, v from the centre."""
    radius = 0.3 * size
    arm = 0.3 * radius
    r = jnp.sqrt(u**2 + v**2)
    au, av = jnp.abs(u), jnp.abs(v)
    signed_dist = jnp.stack(
        [
            r - radius,  # disc
            jnp.abs(r - radius) - arm,  # ring
            jnp.maximum(au, av) - 0.85 * radius,  # square
            jnp.minimum(
                jnp.maximum(au - arm, av - radius), jnp.maximum(av - arm, au - radius)
            ),  # cross
            jnp.maximum(au - 1.2 * radius, av - 0.4 * radius),  # bar
        ]
    )
    # Soft edges, so sub-pixel jitter moves the image continuously.
    return jax.nn.sigmoid(-signed_dist / 0.3)


def parts_images(key: jax.Array, p: PartsParams, shape: PartsShape) -> tuple[jax.Array, jax.Array]:
    """Simulated inspection images (n_train + n_test, size*size) and labels; train rows first.

    Label = 2*type + defective: class 2t is a good part of type t, class 2t+1 the same part
    with one small dark defect (a Gaussian spot of depth `defect_depth`, centred on the part at
    a pixel drawn in proportion to the part's intensity). Labels are balanced and shuffled, as
    in `data.make_two_view`. Every image: the type's template shifted by `jitter`, times a
    log-normal gain, plus Gaussian noise, clipped at 0 (a sensor floor), times `scale`.
    """
    if not 1 <= shape.n_types <= N_PART_TYPES:
        raise ValueError(f"n_types must be in 1..{N_PART_TYPES}, got {shape.n_types}")
    n, n_classes, s = shape.n_train + shape.n_test, 2 * shape.n_types, shape.size
    k_label, k_shift, k_gain, k_spot, k_noise = (jax.random.fold_in(key, i) for i in range(5))
    y_N = native.permutation(k_label, jnp.arange(n, dtype=jnp.int32) % n_classes)
    part_N, defective_N = y_N // 2, (y_N % 2).astype(jnp.float32)

    grid = jnp.arange(s, dtype=jnp.float32) - (s - 1) / 2
    shift_N2 = p.jitter * jax.random.normal(k_shift, (n, 2))
    u_NSS = grid[None, None, :] - shift_N2[:, 0, None, None]
    v_NSS = grid[None, :, None] - shift_N2[:, 1, None, None]
    clean_NSS = jnp.take_along_axis(
        _part_templates(u_NSS, v_NSS, s), part_N[None, :, None, None], axis=0
    )[0]

    spot_N = jax.random.categorical(k_spot, jnp.log(clean_NSS.reshape(n, -1) + 1e-6))
    sv, su = (spot_N // s).astype(jnp.float32), (spot_N % s).astype(jnp.float32)
    d2_NSS = (jnp.arange(s)[None, None, :] - su[:, None, None]) ** 2 + (
        jnp.arange(s)[None, :, None] - sv[:, None, None]
    ) ** 2
    spot_NSS = jnp.exp(-d2_NSS / (2 * p.defect_width**2))
    part_NSS = clean_NSS * (1 - p.defect_depth * defective_N[:, None, None] * spot_NSS)

    gain_N = jnp.exp(p.gain_std * jax.random.normal(k_gain, (n,)))
    noise_NSS = p.noise_std * jax.random.normal(k_noise, (n, s, s))
    img_NSS = jnp.maximum(gain_N[:, None, None] * part_NSS + noise_NSS, 0.0)
    return p.scale * img_NSS.reshape(n, s * s), y_N


def make_parts_two_view(key: jax.Array, p: PartsParams, shape: PartsShape) -> TwoView:
    """RT views (n, 2*n_types) of `parts_images`; unit spaces from the n_train training rows."""
    img_ND, y_N = parts_images(key, p, shape)
    t = shape.n_train
    return rt_two_view(
        img_ND[:t],
        y_N[:t],
        img_ND[t:],
        y_N[t:],
        2 * shape.n_types,
        shape.weight_metric,
        shape.standardize,
    )
