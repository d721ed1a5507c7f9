import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special
from sklearn.datasets import make_blobs
from sklearn.ensemble import VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB

from prtm_jax import fusion
from prtm_jax.fusion import fit_pool_weights, fit_temperature, fuse

rng = np.random.default_rng(0)

PARAMS = {
    "prior_product": {"log_prior": jnp.log(jnp.array([0.5, 0.3, 0.2]))},
    "calibrated_product": {"t_a": jnp.float32(2.0), "t_b": jnp.float32(0.5)},
    "pool": {"w_a": jnp.float32(0.7), "w_b": jnp.float32(1.3)},
}


def _logp(p):
    # The log is taken in float64: 1e-60 is representable there and its log (-138) in float32.
    return jnp.asarray(np.log(np.asarray(p, np.float64)), jnp.float32)


def _nll(lp, y):
    return -lp[np.arange(len(y)), y].mean()


def test_product_survives_float32_underflow():
    # Every product is below float32's range; multiplied as probabilities they all tie at 0
    # and argmax says class 0. Class 2 is right: 1e-50 * 1 beats 5e-52 and 5e-61.
    p_a = np.array([[1e-60, 1e-51, 1.0]])
    p_b = np.array([[0.5, 0.5, 1e-50]])
    assert (p_a.astype(np.float32) * p_b.astype(np.float32)).argmax() == 0
    assert int(fuse(_logp(p_a), _logp(p_b)).argmax()) == 2


def test_product_matches_float64_product_on_extreme_confidences(rng):
    # Two models as confident as the seed's Weight model (1e-51 beside 1.0) that often disagree:
    # then every product in a row is below float32's smallest number, 1.4e-45.
    logits_a = rng.normal(0, 100, (500, 10))
    logits_b = rng.normal(0, 100, (500, 10))
    lp_a, lp_b = special.log_softmax(logits_a, 1), special.log_softmax(logits_b, 1)
    ref = (lp_a + lp_b).argmax(1)  # the float64 product, in logs so it is exact
    got = np.asarray(fuse(jnp.float32(lp_a), jnp.float32(lp_b)).argmax(-1))
    naive = (np.exp(lp_a).astype(np.float32) * np.exp(lp_b).astype(np.float32)).argmax(1)
    assert (naive != ref).any()  # the test has teeth: float32 probabilities do fail here
    np.testing.assert_array_equal(got, ref)


def test_prior_product_divides_out_one_prior():
    # Hand case: prior (0.8, 0.2), both models say (0.6, 0.4). The product keeps the prior twice
    # and says class 0; dividing one prior out gives (0.45, 0.8) / 1.25 = (0.36, 0.64).
    lp = _logp([[0.6, 0.4]])
    got = np.exp(fuse(lp, lp, "prior_product", log_prior=_logp([0.8, 0.2])))
    np.testing.assert_allclose(got, [[0.36, 0.64]], rtol=1e-5)
    assert int(fuse(lp, lp).argmax()) == 0


def test_prior_product_is_the_bayes_posterior_of_independent_views(rng):
    # Posteriors of two views independent given y on an imbalanced prior: the exact joint
    # posterior is P(y) L_a L_b, which only the prior-corrected product recovers.
    prior = np.array([0.7, 0.2, 0.05, 0.05])
    lik_a, lik_b = rng.uniform(0.01, 1, (200, 4)), rng.uniform(0.01, 1, (200, 4))
    post_a = prior * lik_a / (prior * lik_a).sum(1, keepdims=True)
    post_b = prior * lik_b / (prior * lik_b).sum(1, keepdims=True)
    joint = prior * lik_a * lik_b / (prior * lik_a * lik_b).sum(1, keepdims=True)
    got = fuse(_logp(post_a), _logp(post_b), "prior_product", log_prior=_logp(prior))
    np.testing.assert_allclose(np.exp(got), joint, rtol=1e-4, atol=1e-6)
    assert not np.allclose(np.exp(fuse(_logp(post_a), _logp(post_b))), joint, atol=1e-2)


def test_sum_is_sklearn_soft_voting():
    x, y = make_blobs(120, n_features=4, centers=3, cluster_std=3.0, random_state=0)
    a, b = LogisticRegression(max_iter=500), GaussianNB()
    vote = VotingClassifier([("a", a), ("b", b)], voting="soft").fit(x, y)
    p_a, p_b = (est.predict_proba(x) for est in vote.estimators_)
    got = np.exp(fuse(_logp(p_a), _logp(p_b), "sum"))
    np.testing.assert_allclose(got, vote.predict_proba(x), rtol=1e-4, atol=1e-6)


def test_max_and_min_by_hand():
    lp_a, lp_b = _logp([[0.7, 0.2, 0.1]]), _logp([[0.4, 0.5, 0.1]])
    np.testing.assert_allclose(
        np.exp(fuse(lp_a, lp_b, "max")), [[0.7 / 1.3, 0.5 / 1.3, 0.1 / 1.3]], rtol=1e-5
    )
    np.testing.assert_allclose(
        np.exp(fuse(lp_a, lp_b, "min")), [[0.4 / 0.7, 0.2 / 0.7, 0.1 / 0.7]], rtol=1e-5
    )


def test_majority_breaks_ties_by_summed_probability():
    # Agreement: both vote class 0. Disagreement: a votes 0, b votes 1; the 1:1 tie goes to the
    # larger summed probability (0.75 for class 1 against 0.7 for class 0).
    lp_a = _logp([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1]])
    lp_b = _logp([[0.5, 0.1, 0.4], [0.1, 0.45, 0.45]])
    got = np.exp(np.asarray(fuse(lp_a, lp_b, "majority")))
    votes = np.array([[2, 0, 0], [1, 1, 0]])
    soft = (np.exp(lp_a) + np.exp(lp_b)) / 2
    np.testing.assert_allclose(got, (votes + soft) / 3, rtol=1e-5)
    np.testing.assert_array_equal(got.argmax(1), [0, 1])


def test_majority_never_lets_soft_vote_outrank_a_vote(rng):
    lp_a = jax.nn.log_softmax(jnp.asarray(rng.normal(0, 3, (1000, 5)), jnp.float32))
    lp_b = jax.nn.log_softmax(jnp.asarray(rng.normal(0, 3, (1000, 5)), jnp.float32))
    pred = np.asarray(fuse(lp_a, lp_b, "majority").argmax(-1))
    a, b = np.asarray(lp_a.argmax(-1)), np.asarray(lp_b.argmax(-1))
    assert ((pred == a) | (pred == b)).all()
    tie_pick = np.where(
        np.take_along_axis(np.exp(lp_a) + np.exp(lp_b), a[:, None], 1)[:, 0]
        >= np.take_along_axis(np.exp(lp_a) + np.exp(lp_b), b[:, None], 1)[:, 0],
        a,
        b,
    )
    np.testing.assert_array_equal(pred, tie_pick)


def test_calibrated_product_and_pool_by_hand(rng):
    logits_a, logits_b = rng.normal(0, 3, (20, 4)), rng.normal(0, 1, (20, 4))
    ref = special.log_softmax(
        special.log_softmax(logits_a / 2.0, 1) + special.log_softmax(logits_b / 0.5, 1), 1
    )
    got = fuse(jnp.float32(logits_a), jnp.float32(logits_b), "calibrated_product", t_a=2.0, t_b=0.5)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    lp_a, lp_b = special.log_softmax(logits_a, 1), special.log_softmax(logits_b, 1)
    ref = special.log_softmax(0.7 * lp_a + 1.3 * lp_b, 1)
    got = fuse(jnp.float32(logits_a), jnp.float32(logits_b), "pool", w_a=0.7, w_b=1.3)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    product = fuse(jnp.float32(lp_a), jnp.float32(lp_b))
    np.testing.assert_allclose(fuse(lp_a, lp_b, "pool", w_a=1.0, w_b=1.0), product, atol=1e-5)


@pytest.mark.parametrize("rule", sorted(fusion.RULES))
def test_rule_is_normalised_shift_invariant_and_vmappable(rng, rule):
    logits_a = jnp.asarray(rng.normal(0, 5, (4, 6, 3)), jnp.float32)  # (seeds, N, C)
    logits_b = jnp.asarray(rng.normal(0, 1, (4, 6, 3)), jnp.float32)
    params = PARAMS.get(rule, {})
    out = jax.jit(jax.vmap(lambda a, b: fuse(a, b, rule, **params)))(logits_a, logits_b)
    loop = jnp.stack([fuse(a, b, rule, **params) for a, b in zip(logits_a, logits_b, strict=True)])
    np.testing.assert_allclose(out, loop, atol=1e-5)
    np.testing.assert_allclose(jax.nn.logsumexp(out, -1), 0.0, atol=1e-5)
    assert jnp.isfinite(out).all()
    shifted = fuse(logits_a + 7.0, jax.nn.log_softmax(logits_b), rule, **params)
    np.testing.assert_allclose(shifted, out, atol=1e-4)


def test_unknown_rule_and_wrong_params_raise_clear_errors():
    lp = _logp([[0.5, 0.5]])
    listed = ", ".join(sorted(fusion.RULES))
    with pytest.raises(ValueError, match=f"rule='bogus' is not one of: {listed}$"):
        fuse(lp, lp, "bogus")
    with pytest.raises(ValueError, match=r"rule='prior_product' takes keyword arguments \(log_"):
        fuse(lp, lp, "prior_product")
    with pytest.raises(ValueError, match=r"takes keyword arguments \(none\), got \(w_a\)"):
        fuse(lp, lp, "product", w_a=1.0)


def test_fused_name():
    assert fusion.fused_name("product") == "fused"
    assert fusion.fused_name("sum") == "fused_sum"


def test_oracle_correct_is_either_right():
    lp_a = _logp([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.2, 0.8]])
    lp_b = _logp([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1], [0.2, 0.8]])
    got = fusion.oracle_correct(lp_a, lp_b, jnp.array([0, 1, 0, 0]))
    np.testing.assert_array_equal(got, [True, True, True, False])


def _sample_labels(rng, logits, t):
    p = special.softmax(logits / t, axis=1)
    u = rng.uniform(size=(len(p), 1))
    return (p.cumsum(1) < u).sum(1).clip(0, p.shape[1] - 1)


@pytest.mark.parametrize("t_true", [0.3, 1.0, 4.0])
def test_fit_temperature_recovers_the_generating_temperature(rng, t_true):
    logits = rng.normal(0, 3, (20_000, 5))
    y = _sample_labels(rng, logits, t_true)
    t_hat = float(fit_temperature(jnp.float32(logits), jnp.asarray(y)))
    assert abs(t_hat / t_true - 1) < 0.05
    f = lambda inv_t: _nll(special.log_softmax(logits * inv_t, 1), y)  # noqa: E731
    ref = optimize.minimize_scalar(f, bounds=(1e-3, 1e3), method="bounded").x
    assert abs(t_hat * ref - 1) < 1e-3  # the same optimum as scipy's, to float32 precision


def test_fit_temperature_is_vmappable_over_seeds(rng):
    logits = rng.normal(0, 3, (3, 400, 4))
    y = np.stack([_sample_labels(rng, z, t) for z, t in zip(logits, [0.5, 1.0, 2.0], strict=True)])
    batched = jax.jit(jax.vmap(fit_temperature))(jnp.float32(logits), jnp.asarray(y))
    loop = [fit_temperature(jnp.float32(z), jnp.asarray(v)) for z, v in zip(logits, y, strict=True)]
    np.testing.assert_allclose(batched, loop, rtol=1e-4)


def _pool_data(rng, misleading_b: bool):
    n, c = 2000, 10
    y = rng.integers(0, c, n)
    za = rng.normal(0, 1, (n, c))
    za[np.arange(n), y] += 1.5
    zb = rng.normal(0, 2, (n, c))
    zb[np.arange(n), y] += -1.0 if misleading_b else 1.0
    return special.log_softmax(5 * za, 1), special.log_softmax(0.5 * zb, 1), y


@pytest.mark.parametrize("misleading_b", [False, True])
def test_fit_pool_weights_matches_scipy_bounded_minimum(rng, misleading_b):
    lp_a, lp_b, y = _pool_data(rng, misleading_b)
    w = fit_pool_weights(jnp.float32(lp_a), jnp.float32(lp_b), jnp.asarray(y))
    ref = optimize.minimize(
        lambda w: _nll(special.log_softmax(w[0] * lp_a + w[1] * lp_b, 1), y),
        [1.0, 1.0],
        bounds=[(0, None), (0, None)],
        method="L-BFGS-B",
    ).x
    np.testing.assert_allclose(np.array([float(v) for v in w]), ref, atol=2e-3)
    if misleading_b:  # b points away from the label: its weight sits on the bound 0
        assert float(w[1]) == 0.0
