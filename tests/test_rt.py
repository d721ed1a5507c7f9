import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.distance import minkowski

from prtm_jax import rt


def soart3_ref(y: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The formulas of SPEC.md in float64 NumPy, one pair of vectors at a time."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    beta = (x @ y + 1e-4) / (x @ x + 1e-4)
    m = minkowski(y, beta * x, 1)
    v = minkowski(y, beta * x, 4)
    return np.log(beta), np.log(m + 1.0), np.log(m + 1.0) - np.log(v + 1.0)


def taguchi_ref(y: np.ndarray, x: np.ndarray) -> dict[str, float]:
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    L, r = x @ y, x @ x
    beta = L / r
    S_e = y @ y - L**2 / r
    V_e = S_e / (len(y) - 1)
    return {"L": L, "r": r, "beta": beta, "S_T": y @ y, "S_beta": L**2 / r, "S_e": S_e,
            "V_e": V_e, "eta": beta**2 / V_e}  # fmt: skip


@pytest.fixture
def pairs():
    rng = np.random.default_rng(0)
    # Items (5, 7, d) against references (7, d): pixel-like values, plus a few small ones.
    y = rng.uniform(0, 16, size=(5, 7, 64))
    x = rng.uniform(0, 16, size=(7, 64))
    x[3] *= 1e-3
    return y, x


def test_soart3_matches_float64_reference_in_float32(pairs):
    y, x = pairs
    got = rt.soart3(y, x)
    assert got.log_beta.shape == (5, 7) and got.log_beta.dtype == jnp.float32
    ref = np.array([[soart3_ref(y[i, j], x[j]) for j in range(7)] for i in range(5)])
    np.testing.assert_allclose(np.stack(got, -1), ref, rtol=2e-5, atol=2e-5)


def test_soart3_matches_float64_reference_exactly_under_x64(pairs):
    y, x = pairs
    with jax.enable_x64(True):
        got = rt.soart3(y, x)
        assert got.log_beta.dtype == jnp.float64
        ref = np.array([[soart3_ref(y[i, j], x[j]) for j in range(7)] for i in range(5)])
        np.testing.assert_allclose(np.stack(got, -1), ref, rtol=1e-12, atol=1e-12)


def test_soart3_jit_equals_eager_and_accepts_jax_and_int_input(pairs):
    y, x = pairs
    eager = rt.soart3(y, x)
    jitted = jax.jit(rt.soart3)(jnp.asarray(y), jnp.asarray(x))
    np.testing.assert_allclose(np.stack(jitted), np.stack(eager), rtol=1e-6)
    ints = rt.soart3(np.arange(1, 9), np.arange(8, 0, -1))
    np.testing.assert_allclose(ints, soart3_ref(np.arange(1, 9), np.arange(8, 0, -1)), rtol=1e-5)


def test_beta_scales_with_the_signal(pairs):
    y, x = pairs
    with jax.enable_x64(True):
        for c in (0.01, 0.5, 3.0, 250.0):
            delta = 1e-4 / ((x * x).sum(-1) + 1e-4)
            exact = c * rt.sensitivity(y, x) + (1 - c) * delta
            np.testing.assert_allclose(rt.sensitivity(c * y, x), exact, rtol=1e-12)
        # Away from tiny references the delta term is negligible: log_beta shifts by ln(c).
        big = np.arange(7) != 3
        shift = rt.soart3(7.0 * y, x).log_beta - rt.soart3(y, x).log_beta
        np.testing.assert_allclose(shift[:, big], np.log(7.0), atol=1e-6)


def test_log_gamma_under_signal_scaling_is_monotone_and_bounded_not_invariant(pairs):
    y, x = pairs
    with jax.enable_x64(True):
        # Reference 3 is tiny, so the delta term is not negligible there: leave it out.
        y, x = y[:, np.arange(7) != 3], x[np.arange(7) != 3]
        cs = np.geomspace(1e-6, 1e6, 49)
        g = np.stack([rt.soart3(c * y, x).log_gamma for c in cs])  # (c, 5, 6)
        resid = y - rt.sensitivity(y, x)[..., None] * x
        ln_m_over_v = np.log(np.abs(resid).sum(-1) / (resid**4).sum(-1) ** 0.25)
        assert (np.diff(g, axis=0) >= -1e-12).all()  # non-decreasing in c
        assert (g >= 0).all() and (g <= ln_m_over_v + 1e-9).all()
        assert (ln_m_over_v <= 0.75 * np.log(64) + 1e-12).all()
        np.testing.assert_allclose(g[-1], ln_m_over_v, atol=1e-3)  # c -> inf: ln(m/v)
        assert (g[0] < 1e-3).all()  # c -> 0: log_gamma -> 0
        assert (g[-1] - g[0] > 1.0).all()  # so it is not scale-invariant


def test_log_eta_under_signal_scaling_neither_invariant_nor_shifted(pairs):
    y, x = pairs
    with jax.enable_x64(True):
        m = np.abs(y - rt.sensitivity(y, x)[..., None] * x).sum(-1)
        large = rt.soart3(1e6 * y, x).log_eta  # c*m >> 1: ln(c) + ln(m)
        np.testing.assert_allclose(large, np.log(1e6) + np.log(m), rtol=1e-6)
        # c*m << 1: c*m (references not tiny, so the delta term stays negligible).
        big = np.arange(7) != 3
        small = rt.soart3(1e-5 * y, x).log_eta
        np.testing.assert_allclose(small[:, big], 1e-5 * m[:, big], rtol=1e-2)
        shift = rt.soart3(2.0 * y, x).log_eta - rt.soart3(y, x).log_eta
        assert (shift > 0).all() and (shift < np.log(2.0)).all()


def test_reference_scaling_leaves_eta_and_gamma_unchanged(pairs):
    y, x = pairs
    big = np.arange(7) != 3
    with jax.enable_x64(True):
        a, b = rt.soart3(y[:, big], x[big]), rt.soart3(y[:, big], 5.0 * x[big])
        np.testing.assert_allclose(b.log_eta, a.log_eta, rtol=1e-6)
        np.testing.assert_allclose(b.log_gamma, a.log_gamma, rtol=1e-6)
        np.testing.assert_allclose(b.log_beta - a.log_beta, -np.log(5.0), atol=1e-6)


def test_negative_beta_is_clipped_and_counted_not_nan():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.stack([-x, x, -0.5 * x + np.array([0, 0, 0, 1.0])])
    got = rt.soart3(y, x)
    assert np.isfinite(np.stack(got)).all()
    assert float(got.log_beta[0]) == pytest.approx(np.log(rt.BETA_FLOOR))
    assert float(got.log_beta[2]) == pytest.approx(np.log(rt.BETA_FLOOR))
    assert float(got.log_beta[1]) == pytest.approx(np.log((30 + 1e-4) / (30 + 1e-4)))
    assert int(rt.count_clipped(y, x)) == 2
    # log_eta and log_gamma use the signed beta: y = -x is fitted exactly by beta ~ -1.
    assert float(got.log_eta[0]) < 1e-3
    # beta exactly 0 (x.y = -1e-4) is clipped too.
    y0 = np.array([-1e-4, 0.0])
    with jax.enable_x64(True):
        assert float(rt.sensitivity(y0, np.array([1.0, 0.0]))) == 0.0
        assert float(rt.soart3(y0, np.array([1.0, 0.0])).log_beta) == np.log(rt.BETA_FLOOR)


def test_zero_reference_gives_beta_one_and_norms_of_the_signal():
    y = np.array([[3.0, -4.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    got = rt.soart3(y, np.zeros(4))
    assert np.isfinite(np.stack(got)).all()
    np.testing.assert_allclose(got.log_beta, 0.0)
    l1, l4 = np.abs(y).sum(-1), (y**4).sum(-1) ** 0.25
    np.testing.assert_allclose(got.log_eta, np.log1p(l1), rtol=1e-6)
    np.testing.assert_allclose(got.log_gamma, np.log1p(l1) - np.log1p(l4), rtol=1e-6)


def test_huge_values_do_not_overflow_the_p4_distance():
    y = np.full(64, 3e9, np.float32)
    y[0] = 0.0
    got = rt.soart3(y, np.ones(64, np.float32))
    assert np.isfinite(np.stack(got)).all()


def test_taguchi_matches_float64_reference_and_decomposes(pairs):
    y, x = pairs
    got = rt.taguchi(y, x)
    for i, j in [(0, 0), (2, 3), (4, 6)]:
        ref = taguchi_ref(y[i, j], x[j])
        for name, value in ref.items():
            assert float(getattr(got, name)[i, j]) == pytest.approx(value, rel=1e-4), name
    np.testing.assert_allclose(got.S_T, got.S_beta + got.S_e, rtol=1e-5)
    # soaRT3's beta is Taguchi's beta with a 1e-4 regulariser: equal for non-tiny references.
    np.testing.assert_allclose(rt.sensitivity(y, x)[:, :3], got.beta[:, :3], rtol=1e-5)


def test_taguchi_policies_zero_reference_perfect_fit_and_short_vectors():
    zero = rt.taguchi(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    assert float(zero.beta) == 0.0 and float(zero.S_beta) == 0.0 and float(zero.eta) == 0.0
    assert float(zero.S_e) == pytest.approx(14.0) and float(zero.V_e) == pytest.approx(7.0)
    perfect = rt.taguchi(np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert float(perfect.V_e) == 0.0 and float(perfect.eta) == np.inf
    assert not np.isnan(np.stack(rt.taguchi(np.zeros(3), np.zeros(3)))).any()
    with pytest.raises(ValueError, match="d >= 2"):
        rt.taguchi(np.ones(1), np.ones(1))


def test_unit_spaces_are_class_means_and_empty_class_is_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5))
    y = rng.integers(0, 3, size=30)
    u = rt.unit_spaces(x, y, n_classes=4)
    assert u.shape == (4, 5)
    for c in range(3):
        np.testing.assert_allclose(u[c], x[y == c].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(u[3], 0.0)


def test_rt_views_are_columns_of_soart3_against_each_unit_space(pairs):
    y, x = pairs
    items = y[:, 0]  # (5, 64)
    weight, bias = rt.rt_views(items, x)
    assert weight.shape == bias.shape == (5, 7)
    for j in range(7):
        one = rt.soart3(items, x[j])
        np.testing.assert_allclose(weight[:, j], one.log_gamma, rtol=1e-6)
        np.testing.assert_allclose(bias[:, j], one.log_beta, rtol=1e-6)
    eta, _ = rt.rt_views(items, x, weight_metric="log_eta")
    np.testing.assert_allclose(eta[:, 2], rt.soart3(items, x[2]).log_eta, rtol=1e-6)
    with pytest.raises(ValueError, match="weight_metric='beta' is not one of"):
        rt.rt_views(items, x, weight_metric="beta")
