import numpy as np
import pytest
from scipy import stats

from prtm_jax import dependence as dep


def views(rho: float, n_per_class: int = 300, n_classes: int = 3, k: int = 2, seed: int = 0):
    """Views a, b (n, k) sharing the label through large class means; within each class,
    column j of a and column j of b are bivariate normal with correlation rho."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    means = rng.normal(scale=5.0, size=(n_classes, 2, k))
    z = rng.normal(size=(len(y), 2, k))
    a = z[:, 0]
    b = rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1]
    return a + means[y, 0], b + means[y, 1], y


def test_spearman_matches_scipy_within_each_class_and_pooled():
    a, b, y = views(0.4, n_per_class=50, k=3)
    a[y == 1] *= -1.0  # a different sign per class: the within-class average is not pooled
    want = np.zeros((3, 3))
    for c in range(3):
        rho = stats.spearmanr(a[y == c], b[y == c]).statistic[:3, 3:]
        want += rho * np.mean(y == c)
    np.testing.assert_allclose(dep.within_class_spearman(a, b, y), want, atol=1e-12)
    pooled = stats.spearmanr(a, b).statistic[:3, 3:]
    np.testing.assert_allclose(dep.pooled_spearman(a, b), pooled, atol=1e-12)


def test_views_sharing_only_the_label_look_dependent_pooled_not_within_class():
    a, b, y = views(0.0)
    assert np.abs(np.diag(dep.pooled_spearman(a, b))).mean() > 0.3
    assert np.abs(dep.within_class_spearman(a, b, y)).max() < 0.1
    test = dep.permutation_test(a, b, y, n_permutations=499)
    assert test.p_value > 0.2
    # Under independence E[rho^2] = 1/(n_c - 1) per pair.
    assert test.null_mean == pytest.approx(1 / 299, rel=0.2)


def test_permutation_p_values_are_calibrated_under_conditional_independence():
    p = np.array(
        [dep.permutation_test(*views(0.0, 40, seed=s), 99, seed=s).p_value for s in range(500)]
    )
    assert 0.07 < np.mean(p <= 0.1) < 0.13  # 0.1 if calibrated (binomial sd 0.013)
    assert 0.47 < p.mean() < 0.56  # 0.5 (sd 0.013)


def test_dependent_views_are_detected_and_rank_correlation_has_its_gaussian_value():
    a, b, y = views(0.5)
    rho_s = dep.within_class_spearman(a, b, y)
    np.testing.assert_allclose(np.diag(rho_s), 6 / np.pi * np.arcsin(0.25), atol=0.05)
    test = dep.permutation_test(a, b, y, n_permutations=199)
    assert test.p_value == pytest.approx(1 / 200)
    assert test.statistic > test.null_mean + 10 * test.null_std


def test_permutation_test_sees_dependence_between_non_matching_columns():
    a, b, y = views(0.0, k=3)
    b[:, 2] = 0.6 * a[:, 0] + 0.8 * b[:, 2]  # only a_0 and b_2 are linked, within class too
    assert abs(np.diag(dep.within_class_spearman(a, b, y))).max() < 0.1
    assert dep.permutation_test(a, b, y, n_permutations=199).p_value < 0.01


def test_cmi_matches_the_gaussian_closed_form():
    a, b, y = views(0.6, n_per_class=800, k=1)
    cmi = dep.conditional_mutual_info(a, b, y)
    assert float(cmi[0, 0]) == pytest.approx(-0.5 * np.log(1 - 0.6**2), abs=0.04)
    a0, b0, y0 = views(0.0, n_per_class=800, k=1, seed=1)
    assert float(dep.conditional_mutual_info(a0, b0, y0)[0, 0]) < 0.03


def test_dependence_bundles_every_measure_and_summarizes():
    a, b, y = views(0.5, n_per_class=60, k=2)
    d = dep.dependence(a, b, y, n_permutations=99)
    assert d.spearman_within.shape == d.cmi.shape == (2, 2)
    assert d.cmi_null < 0.5 * np.diag(d.cmi).mean()
    s = dep.summarize(d)
    assert s["perm_p"] == pytest.approx(0.01) and s["cmi_matching"] > s["cmi_null"]
    narrow = dep.summarize(dep.dependence(a, b[:, :1], y, n_permutations=9))
    assert "spearman_within_matching" not in narrow and "perm_z" in narrow


def test_bad_inputs_are_refused_with_a_message():
    a, b, y = views(0.0, n_per_class=10)
    with pytest.raises(ValueError, match="views a"):
        dep.within_class_spearman(a, b[:-1], y)
    y_small = y.copy()
    y_small[:2] = 7  # a class with two rows
    with pytest.raises(ValueError, match=">= 3 rows"):
        dep.permutation_test(a, b, y_small)
