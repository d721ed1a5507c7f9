import jax
import jax.numpy as jnp
import numpy as np

from prtm_jax.data import DataParams, DataShape, make_two_view

SHAPE = DataShape(n_train=4000, n_test=2000, n_classes=10, n_features=10)
PARAMS = DataParams(
    view1_std=2.0,
    view2_mean=0.5,
    view2_std=0.25,
    view2_offset=0.55,
    clip_floor=0.001,
    center_box=10.0,
)


def _data(key=0, params=PARAMS, shape=SHAPE):
    return jax.device_get(make_two_view(jax.random.key(key), params, shape))


def test_shapes_and_balanced_labels():
    d = _data()
    assert d.x1_train.shape == (4000, 10) and d.x2_train.shape == (4000, 10)
    assert d.x1_test.shape == (2000, 10) and d.y_test.shape == (2000,)
    counts = np.bincount(np.concatenate([d.y_train, d.y_test]), minlength=10)
    assert np.all(counts == 600)


def test_view1_classes_share_centres_and_have_the_set_std():
    d = _data()
    for c in range(10):
        tr, te = d.x1_train[d.y_train == c], d.x1_test[d.y_test == c]
        # Same centre in both splits: means agree within a few standard errors.
        se = 2.0 * np.sqrt(1 / len(tr) + 1 / len(te))
        assert np.all(np.abs(tr.mean(0) - te.mean(0)) < 5 * se)
        np.testing.assert_allclose(tr.std(0, ddof=1), 2.0, rtol=0.15)
    centres = np.stack([d.x1_train[d.y_train == c].mean(0) for c in range(10)])
    assert np.all(np.abs(centres) < 10.0 + 0.5)
    assert centres.std() > 3.0  # centres spread over the box, not collapsed


def test_view2_pattern_and_clip_floor():
    d = _data()
    x2, y = d.x2_train, d.y_train
    at_label = x2[np.arange(len(y)), y]
    off = x2[np.arange(10)[None, :] != y[:, None]]
    # Label entries ~ N(1.05, 0.25) (almost never clipped); off-label entries ~ N(0.5, 0.25)
    # with the ~2.3% negative draws replaced by the floor.
    assert abs(at_label.mean() - 1.05) < 0.01
    assert abs(off.mean() - 0.5) < 0.01
    assert x2.min() >= 0  # negatives become the floor; small positives stay as drawn
    frac_floor = np.isclose(off, 0.001).mean()
    assert abs(frac_floor - 0.02275) < 0.004  # P(N(0.5, 0.25) < 0)


def test_no_test_row_repeats_a_training_row():
    d = _data(shape=DataShape(2000, 500, 10, 10))
    train = {r.tobytes() for r in np.concatenate([d.x1_train, d.x2_train], 1)}
    assert not any(r.tobytes() in train for r in np.concatenate([d.x1_test, d.x2_test], 1))


def test_deterministic_per_key_and_traced_params_match_python_floats():
    a, b, c = _data(1), _data(1), _data(2)
    np.testing.assert_array_equal(a.x1_train, b.x1_train)
    assert not np.allclose(a.x1_train, c.x1_train)
    traced = jax.jit(make_two_view, static_argnums=2)(
        jax.random.key(1), jax.tree.map(jnp.float32, PARAMS), SHAPE
    )
    np.testing.assert_allclose(traced.x1_train, a.x1_train, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(traced.x2_test, a.x2_test, rtol=1e-6, atol=1e-6)


def test_rho_sets_within_class_dependence_and_keeps_view2_law():
    base = _data(5)
    for rho in (0.0, 0.5, 0.9):
        d = _data(5, PARAMS._replace(view1_std=1.0, rho=rho))
        if rho == 0.0:  # rho = 0 is exactly the independent construction
            np.testing.assert_array_equal(d.x2_train, base.x2_train)
        x2, y = d.x2_train, d.y_train
        off = x2[np.arange(10)[None, :] != y[:, None]]
        assert abs(off.mean() - 0.5) < 0.015 and abs(np.median(off) - 0.5) < 0.015
        # Within each class, view-2 column k correlates ~rho with view 1's noise along the
        # k-th orthonormal direction (estimated from the class means), and view 2's columns
        # stay uncorrelated with each other: no common-mode noise that would change its task.
        centres = np.stack([d.x1_train[y == c].mean(0) for c in range(10)])
        dev = centres - centres.mean(0)
        u_svd, _, vt = np.linalg.svd(dev, full_matrices=False)
        m = u_svd @ vt
        corr, cross = [], []
        for c in range(10):
            z = d.x1_train[y == c] - centres[c]
            cc = np.corrcoef(x2[y == c].T)
            cross.append(cc[~np.eye(10, dtype=bool)].mean())
            for k in range(10):
                if k != c:
                    corr.append(np.corrcoef(z @ m[k], x2[y == c, k])[0, 1])
        assert abs(np.mean(corr) - rho) < 0.05, (rho, np.mean(corr))
        assert abs(np.mean(cross)) < 0.02, (rho, np.mean(cross))
