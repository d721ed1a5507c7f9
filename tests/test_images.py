import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from prtm_jax import images, rt

DIGITS_COUNTS = np.array([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
SMALL_PARTS = images.PartsShape(n_train=200, n_test=60, n_types=3, size=10)


def test_digits_arrays_are_load_digits():
    x, y = images.digits_arrays()
    assert x.shape == (1797, 64) and x.dtype == np.float32 and y.dtype == np.int32
    assert x.min() == 0 and x.max() == 16
    np.testing.assert_array_equal(np.bincount(y), DIGITS_COUNTS)


def test_digits_split_is_stratified_disjoint_complete_and_shuffled():
    _, y = images.digits_arrays()
    train, test = (np.asarray(i) for i in images.digits_split(jax.random.key(3), 36))
    assert len(test) == 360 and len(train) == 1797 - 360
    assert len(np.intersect1d(train, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, test])), np.arange(1797))
    np.testing.assert_array_equal(np.bincount(y[test]), np.full(10, 36))
    np.testing.assert_array_equal(np.bincount(y[train]), DIGITS_COUNTS - 36)
    # Class proportions of train stay within half a percentage point of the full set's.
    np.testing.assert_allclose(np.bincount(y[train]) / len(train), DIGITS_COUNTS / 1797, atol=5e-3)
    # Rows are not class-sorted (the seed's in-order batches would see one class at a time).
    assert len(set(y[train[:50]])) >= 8 and len(set(y[test[:50]])) >= 8
    other, _ = images.digits_split(jax.random.key(4), 36)
    assert not np.array_equal(np.sort(train), np.sort(np.asarray(other)))


def test_digits_split_refuses_impossible_test_sizes():
    for bad in (0, 174):
        with pytest.raises(ValueError, match=r"n_test_per_class must be in 1\.\.173"):
            images.digits_split(jax.random.key(0), bad)


@functools.cache
def _digits_batch(shape: images.DigitsShape):
    keys = jax.random.split(jax.random.key(0), 2)
    maker = functools.partial(images.make_digits_two_view, p=images.DigitsParams(), shape=shape)
    return keys, maker, jax.jit(jax.vmap(maker))(keys)


@pytest.mark.parametrize("standardize", [False, True])
def test_digits_maker_is_split_then_rt_views_and_vmaps_over_keys(standardize):
    shape = images.DigitsShape(n_test_per_class=20, standardize=standardize)
    keys, maker, batch = _digits_batch(shape)
    assert batch.x1_train.shape == (2, 1597, 10) and batch.x2_test.shape == (2, 200, 10)
    x, y = images.digits_arrays()
    for i, key in enumerate(keys):
        one = jax.jit(maker)(key)
        for got, want in zip(jax.tree.leaves(one), jax.tree.leaves(batch), strict=True):
            np.testing.assert_allclose(got, want[i], rtol=1e-5, atol=1e-5)
        train, test = images.digits_split(jax.random.fold_in(key, 0), 20)
        ref = images.rt_two_view(x[train], y[train], x[test], y[test], 10, "log_gamma", standardize)
        for got, want in zip(jax.tree.leaves(one), jax.tree.leaves(ref), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if standardize:
        np.testing.assert_allclose(batch.x1_train.mean(1), 0.0, atol=1e-4)
        np.testing.assert_allclose(batch.x2_train.std(1), 1.0, atol=1e-4)
    else:
        assert (batch.x1_train > 0).all()  # log_gamma >= 0; raw values


def test_digits_noise_is_traced_and_changes_the_views():
    shape = images.DigitsShape()
    key = jax.random.key(1)
    run = jax.jit(lambda s: images.make_digits_two_view(key, images.DigitsParams(s), shape))
    clean, noisy = run(0.0), run(2.0)
    np.testing.assert_array_equal(clean.y_train, noisy.y_train)  # same split
    assert not np.allclose(clean.x1_train, noisy.x1_train)
    assert np.isfinite(noisy.x2_train).all()


@pytest.mark.parametrize("standardize", [False, True])
def test_rt_two_view_test_rows_never_touch_the_unit_spaces(standardize):
    rng = np.random.default_rng(0)
    y_train, y_test = np.arange(60) % 4, np.arange(12) % 4
    x_train = rng.uniform(0, 16, (60, 64))
    x_train[:, :16] += 4 * y_train[:, None]  # classes differ in the first 16 pixels
    x_test = rng.uniform(0, 16, (12, 64))
    view = functools.partial(
        images.rt_two_view, n_classes=4, weight_metric="log_gamma", standardize=standardize
    )
    base = view(x_train, y_train, x_test, y_test)
    if not standardize:
        w, b = rt.rt_views(x_train, rt.unit_spaces(x_train, y_train, 4))
        np.testing.assert_allclose(base.x1_train, w, rtol=1e-6)
        np.testing.assert_allclose(base.x2_train, b, rtol=1e-6)
    # Changing every test image leaves the training features unchanged...
    other = view(x_train, y_train, rng.uniform(0, 16, (12, 64)), y_test)
    np.testing.assert_array_equal(other.x1_train, base.x1_train)
    np.testing.assert_array_equal(other.x2_train, base.x2_train)
    # ...and changing one test image changes its own row and no other.
    x_test2 = x_test.copy()
    x_test2[5] = rng.uniform(0, 16, 64)
    one = view(x_train, y_train, x_test2, y_test)
    changed = ~np.isclose(one.x1_test, base.x1_test).all(1) | ~np.isclose(
        one.x2_test, base.x2_test
    ).all(1)
    np.testing.assert_array_equal(np.flatnonzero(changed), [5])
    # Changing a training image does move the test features: the check above could fail.
    x_train2 = x_train.copy()
    x_train2[0] += 5.0
    assert not np.allclose(view(x_train2, y_train, x_test, y_test).x1_test, base.x1_test)


def test_parts_images_labels_defects_and_scale():
    key = jax.random.key(2)
    p = images.PartsParams()
    make = jax.jit(functools.partial(images.parts_images, key, shape=SMALL_PARTS))
    img, y = make(p)
    assert img.shape == (260, 100) and (img >= 0).all()
    np.testing.assert_array_equal(np.bincount(np.asarray(y)), np.bincount(np.arange(260) % 6))
    # With depth 0 a defect is invisible: good parts are unchanged, defective ones change
    # only in a few pixels around the spot.
    flat, _ = make(p._replace(defect_depth=0.0))
    diff = np.abs(np.asarray(img - flat))
    good, bad = np.asarray(y) % 2 == 0, np.asarray(y) % 2 == 1
    assert diff[good].max() == 0.0
    assert (diff[bad].max(1) > 0.2 * p.scale).mean() > 0.9
    assert (diff[bad] > 0.05 * p.scale).sum(1).max() <= 16
    double, _ = make(p._replace(scale=2 * p.scale))
    np.testing.assert_allclose(double, 2 * img, rtol=1e-6)


def test_parts_scale_leaves_log_beta_but_moves_log_gamma():
    # Images and unit spaces both double: beta is unchanged, gamma is not scale-invariant.
    shape = SMALL_PARTS._replace(standardize=False)
    p = images.PartsParams(scale=1.0)
    key = jax.random.key(5)
    make = jax.jit(functools.partial(images.make_parts_two_view, key, shape=shape))
    dim, bright = make(p), make(p._replace(scale=255.0))
    np.testing.assert_allclose(dim.x2_train, bright.x2_train, atol=1e-4)
    assert np.abs(np.asarray(dim.x1_train - bright.x1_train)).min() > 0.1


def test_parts_maker_vmaps_over_keys_and_refuses_bad_types():
    keys = jax.random.split(jax.random.key(0), 3)
    maker = functools.partial(images.make_parts_two_view, p=images.PartsParams(), shape=SMALL_PARTS)
    batch = jax.jit(jax.vmap(maker))(keys)
    assert batch.x1_train.shape == (3, 200, 6) and batch.x2_test.shape == (3, 60, 6)
    assert jnp.isfinite(batch.x1_train).all() and jnp.isfinite(batch.x2_test).all()
    one = jax.jit(maker)(keys[1])
    for got, want in zip(jax.tree.leaves(one), jax.tree.leaves(batch), strict=True):
        np.testing.assert_allclose(got, want[1], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match=r"n_types must be in 1\.\.5, got 6"):
        images.make_parts_two_view(keys[0], images.PartsParams(), SMALL_PARTS._replace(n_types=6))
