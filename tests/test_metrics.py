import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, mutual_info_score
from statsmodels.stats.contingency_tables import StratifiedTable

from prtm_jax import metrics
from prtm_jax.fusion import fuse


def _table_vectors(n11, n10, n01, n00):
    """Correctness vectors (a, b) realising a 2x2 table."""
    a = np.repeat([True, True, False, False], [n11, n10, n01, n00])
    b = np.repeat([True, False, True, False], [n11, n10, n01, n00])
    return np.asarray(a), np.asarray(b)


def _random_logp(rng, n=300, c=4, scale=2.0):
    """Float64 probabilities (N, C) for the references, their float32 logs, and labels."""
    lp = special.log_softmax(rng.normal(0, scale, (n, c)), 1)
    return np.exp(lp), np.float32(lp), rng.integers(0, c, n)


def test_accuracy_nll_brier_match_sklearn(rng):
    p, lp, y = _random_logp(rng)
    assert float(metrics.accuracy(lp, y)) == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert float(metrics.nll(lp, y)) == pytest.approx(log_loss(y, p), rel=1e-6)
    ref = brier_score_loss(y, p, scale_by_half=False)
    assert float(metrics.brier(lp, y)) == pytest.approx(ref, rel=1e-6)


def test_binary_brier_is_twice_the_classic_score(rng):
    p, lp, y = _random_logp(rng, c=2)
    p1 = p[:, 1]
    assert float(metrics.brier(lp, y)) == pytest.approx(2 * np.mean((p1 - y) ** 2), rel=1e-6)


def test_ece_toy_case_by_hand():
    # Confidences 0.9, 0.9 (one right) fall in bin 13 = (13/15, 14/15]: |0.5 - 0.9| = 0.4.
    # Confidences 0.65, 0.65 (both right) fall in bin 9 = (9/15, 10/15]: |1.0 - 0.65| = 0.35.
    # ECE = 2/4 * 0.4 + 2/4 * 0.35 = 0.375.
    lp = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.35, 0.65], [0.65, 0.35]]))
    y = np.array([0, 1, 1, 0])
    assert float(metrics.ece(lp, y)) == pytest.approx(0.375, abs=1e-6)


def test_ece_matches_a_loop_over_bins(rng):
    p, lp, y = _random_logp(rng, n=1000, c=5)
    conf = p.max(1)
    correct = p.argmax(1) == y
    edges = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in itertools.pairwise(edges):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ref += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert float(metrics.ece(lp, y)) == pytest.approx(ref, abs=1e-6)


def test_table_diversity_by_hand():
    # n11=5, n10=2, n01=3, n00=1 (N = 11).
    a, b = _table_vectors(5, 2, 3, 1)
    assert float(metrics.yules_q(a, b)) == pytest.approx((5 * 1 - 2 * 3) / (5 * 1 + 2 * 3))
    assert float(metrics.double_fault(a, b)) == pytest.approx(1 / 11)
    assert float(metrics.disagreement(a, b)) == pytest.approx(5 / 11)
    phi = (5 * 1 - 2 * 3) / np.sqrt((5 + 2) * (3 + 1) * (5 + 3) * (2 + 1))
    assert float(metrics.correlation(a, b)) == pytest.approx(phi, rel=1e-12)
    assert phi == pytest.approx(np.corrcoef(a, b)[0, 1])


def test_zero_cell_gives_q_minus_one_and_undefined_tables_give_nan():
    a, b = _table_vectors(5, 2, 3, 0)  # never wrong together
    assert float(metrics.yules_q(a, b)) == -1.0
    a, b = _table_vectors(6, 0, 0, 0)  # both always right: no variation to measure
    assert np.isnan(metrics.yules_q(a, b))
    assert np.isnan(metrics.correlation(a, b))
    a, b = _table_vectors(6, 3, 0, 0)  # a always right: a zero margin
    assert np.isnan(metrics.correlation(a, b))


def test_within_class_q_is_mantel_haenszel_of_the_class_tables():
    tables = [(5, 2, 3, 1), (4, 1, 2, 3), (7, 0, 2, 0)]  # the last has zero cells
    parts = [_table_vectors(*t) for t in tables]
    a = np.concatenate([p[0] for p in parts])
    b = np.concatenate([p[1] for p in parts])
    y = np.asarray(np.repeat(np.arange(3), [sum(t) for t in tables]))
    odds = StratifiedTable([np.array([[t[0], t[1]], [t[2], t[3]]]) for t in tables])
    odds = odds.oddsratio_pooled
    got = float(metrics.yules_q_within(a, b, y, 3))
    assert got == pytest.approx((odds - 1) / (odds + 1), rel=1e-12)


def test_within_class_correlation_centres_each_class(rng):
    y = rng.integers(0, 4, 400)
    a = rng.uniform(size=400) < np.array([0.95, 0.6, 0.8, 1.0])[y]  # class 3 all right
    b = rng.uniform(size=400) < np.array([0.7, 0.5, 0.9, 0.6])[y]
    means = lambda v: np.array([v[y == k].mean() for k in range(4)])[y]  # noqa: E731
    ca, cb = a - means(a), b - means(b)
    ref = (ca * cb).sum() / np.sqrt((ca**2).sum() * (cb**2).sum())
    got = float(metrics.correlation_within(np.asarray(a), np.asarray(b), np.asarray(y), 4))
    assert got == pytest.approx(ref, rel=1e-12)


def test_errors_independent_given_label_correlate_pooled_but_not_within(rng):
    # Class difficulty is shared (both models fail more on class 1), errors are independent
    # given the class: pooled Q and correlation are clearly positive, within-class ones ~0.
    n = 200_000
    y = rng.integers(0, 2, n)
    acc_a, acc_b = np.array([0.95, 0.6])[y], np.array([0.9, 0.5])[y]
    a = np.asarray(rng.uniform(size=n) < acc_a)
    b = np.asarray(rng.uniform(size=n) < acc_b)
    y = np.asarray(y)
    assert float(metrics.yules_q(a, b)) > 0.3
    assert float(metrics.correlation(a, b)) > 0.1
    assert abs(float(metrics.yules_q_within(a, b, y, 2))) < 0.03
    assert abs(float(metrics.correlation_within(a, b, y, 2))) < 0.01


@pytest.mark.parametrize("c", [4, 40])  # 40: more joint cells than rows, counted sparsely
def test_cmi_is_the_class_weighted_sklearn_mutual_information(rng, c):
    s, n = 3, 2000
    y = rng.integers(0, c, (s, n))
    pa = np.where(rng.uniform(size=(s, n)) < 0.7, y, rng.integers(0, c, (s, n)))
    pb = np.where(rng.uniform(size=(s, n)) < 0.5, pa, rng.integers(0, c, (s, n)))
    got = metrics.conditional_mutual_information(pa, pb, y, c)
    pooled = metrics.conditional_mutual_information(pa, pb, 0 * y, c)
    for i in range(s):
        a, b, t = pa[i], pb[i], y[i]
        ref = sum((t == k).mean() * mutual_info_score(a[t == k], b[t == k]) for k in range(c))
        assert got[i] == pytest.approx(ref, rel=1e-12)
        assert pooled[i] == pytest.approx(mutual_info_score(a, b), rel=1e-12)


def test_cmi_of_copied_uniform_predictions_is_log_c():
    # Given y, pred_a is uniform over c classes and pred_b copies it: I = H(pred_a | y) = log c.
    c = 5
    y, pa = np.meshgrid(np.arange(c), np.arange(c), indexing="ij")
    y, pa = np.asarray(y.ravel()), np.asarray(pa.ravel())
    got = metrics.conditional_mutual_information(pa, pa, y, c)
    assert float(got) == pytest.approx(np.log(c), rel=1e-12)
    # A constant prediction shares nothing: exactly 0, not a rounding error below it.
    assert metrics.conditional_mutual_information(pa, 0 * pa, y, c) == 0.0


def test_cmi_of_predictions_independent_given_label_is_near_zero(rng):
    # Both predictions depend on y (so pooled MI is large) but not on each other given y.
    c, n = 3, 300_000
    y = rng.integers(0, c, n)
    pa = np.where(rng.uniform(size=n) < 0.8, y, rng.integers(0, c, n))
    pb = np.where(rng.uniform(size=n) < 0.6, y, rng.integers(0, c, n))
    cmi = float(metrics.conditional_mutual_information(pa, pb, y, c))
    bias = c * (c - 1) ** 2 / (2 * n)  # the plug-in's expected upward bias here
    assert 0 <= cmi < 5 * bias
    assert float(metrics.conditional_mutual_information(pa, pb, 0 * y, c)) > 0.1


def test_shuffle_within_class_keeps_each_class_values():
    y = jnp.array([2, 0, 1, 0, 2, 2, 1, 0])
    x = jnp.arange(8)
    got = np.asarray(metrics.shuffle_within_class(jax.random.key(3), x, y))
    for k in range(3):
        assert sorted(got[np.asarray(y) == k]) == sorted(np.asarray(x)[np.asarray(y) == k])
    assert (got != np.asarray(x)).any()


def test_shuffle_within_class_one_key_sort_is_the_lexsort(rng):
    # The one-key integer sort (n_classes given) must give the lexsort's permutation, ties
    # included: 5,000 rows of 3 classes make equal 23-bit uniforms within a class likely.
    y = jnp.asarray(rng.integers(0, 3, 5000))
    x = jnp.arange(5000)
    keys = jax.random.split(jax.random.key(7), 64)
    both = jax.jit(
        jax.vmap(
            lambda k: (
                metrics.shuffle_within_class(k, x, y),
                metrics.shuffle_within_class(k, x, y, n_classes=3),
            )
        )
    )
    lex, one = map(np.asarray, both(keys))
    np.testing.assert_array_equal(one, lex)
    u = np.asarray(jax.vmap(lambda k: jax.random.uniform(k, (5000,)))(keys))
    ties = sum(len(v) - len(np.unique(v)) for k in range(64) for v in [u[k][np.asarray(y) == 0]])
    assert ties > 0  # the comparison covered ties
    # Above 512 classes the labels do not fit the key: the lexsort runs.
    big = jnp.asarray(rng.integers(0, 600, 5000))
    got = metrics.shuffle_within_class(keys[0], x, big, n_classes=600)
    np.testing.assert_array_equal(got, metrics.shuffle_within_class(keys[0], x, big))


def test_cmi_null_measures_the_plug_in_bias(rng):
    # At 500 rows and 10 classes the plug-in CMI of independent-given-y predictions is far from
    # 0; the shuffled level matches it, while copied predictions stand well above it.
    c, n = 10, 500
    y = rng.integers(0, c, n)
    pa = np.where(rng.uniform(size=n) < 0.7, y, rng.integers(0, c, n))
    pb = np.where(rng.uniform(size=n) < 0.5, y, rng.integers(0, c, n))
    pb_dep = np.where(rng.uniform(size=n) < 0.5, pa, pb)
    key = jax.random.key(0)

    def null(b):
        shuffled = metrics.null_shuffles(key, jnp.asarray(b), jnp.asarray(y), c)
        assert shuffled.shape == (metrics.CMI_NULL_SHUFFLES, n)
        return float(metrics.cmi_null(pa, np.asarray(shuffled), y, c))

    cmi = float(metrics.conditional_mutual_information(pa, pb, y, c))
    assert cmi > 0.05 and abs(cmi - null(pb)) < 0.3 * null(pb)
    dep = float(metrics.conditional_mutual_information(pa, pb_dep, y, c))
    assert dep - null(pb_dep) > 0.1


def test_follows_confident_by_hand():
    # Row 0: a more confident (0.9 > 0.6), fused picks a's class 0: follows.
    # Row 1: b more confident (0.8 > 0.7), fused picks a's class 0: does not follow.
    # Row 2: both pick class 1 and so does fused: follows (an agreeing row).
    lp_a = np.log(np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8]]))
    lp_b = np.log(np.array([[0.4, 0.6], [0.2, 0.8], [0.4, 0.6]]))
    lp_f = np.log(np.array([[0.8, 0.2], [0.6, 0.4], [0.1, 0.9]]))
    assert float(metrics.follows_confident(lp_a, lp_b, lp_f)) == pytest.approx(2 / 3)
    got = metrics.follows_confident(lp_a, lp_b, lp_f, only_disagreements=True)
    assert float(got) == pytest.approx(1 / 2)
    assert np.isnan(metrics.follows_confident(lp_a, lp_a, lp_f, only_disagreements=True))


def test_all_metrics_over_a_block_of_seeds_is_a_loop_over_them(rng):
    s, n, c = 3, 200, 4
    y = rng.integers(0, c, (s, n))
    logits_a = np.float32(rng.normal(0, 3, (s, n, c)))
    logits_b = np.float32(rng.normal(0, 1, (s, n, c)))
    logp = {
        "weight": special.log_softmax(logits_a, -1),
        "bias": special.log_softmax(logits_b, -1),
        "fused": np.asarray(jax.vmap(fuse)(logits_a, logits_b)),
    }
    pred_b = logp["bias"].argmax(-1)
    shuffle = jax.vmap(lambda k, b, y: metrics.null_shuffles(k, b, y, c))
    null_b = np.asarray(shuffle(jax.random.split(jax.random.key(0), s), pred_b, y))
    per_model, pair = metrics.all_metrics(logp, y, shuffled_b_SN=null_b)
    assert set(per_model) == {"weight", "bias", "fused"}
    scalars = {"accuracy", "nll", "brier", "ece"}
    bins = {"rel_count", "rel_conf", "rel_correct"}
    assert set(per_model["fused"]) == scalars | bins | {
        *("follows_confident", "follows_confident_disagree")
    }
    assert set(per_model["weight"]) == scalars | bins
    rel = metrics.reliability_bins(logp["fused"], y)
    for name, got in zip(("rel_count", "rel_conf", "rel_correct"), rel, strict=True):
        np.testing.assert_array_equal(per_model["fused"][name], got, err_msg=name)
        assert got.shape == (s, 15)
    for i in range(s):
        one = {m: lp[i] for m, lp in logp.items()}
        pm_i, pair_i = metrics.all_metrics(one, y[i], shuffled_b_SN=null_b[i])
        for m, d in pm_i.items():
            for k, v in d.items():
                np.testing.assert_allclose(per_model[m][k][i], v, rtol=1e-12, err_msg=k)
        for k, v in pair_i.items():
            np.testing.assert_allclose(pair[k][i], v, rtol=1e-12, err_msg=k)
        for got, one in zip(rel, metrics.reliability_bins(logp["fused"][i], y[i]), strict=True):
            np.testing.assert_allclose(got[i], one, rtol=1e-12)
    # The pair's numbers are the functions of their names, on the models' predictions.
    pa, pb = logp["weight"].argmax(-1), pred_b
    ok_a, ok_b = pa == y, pb == y
    expected = {
        "yules_q": metrics.yules_q(ok_a, ok_b),
        "yules_q_within": metrics.yules_q_within(ok_a, ok_b, y, c),
        "correlation": metrics.correlation(ok_a, ok_b),
        "correlation_within": metrics.correlation_within(ok_a, ok_b, y, c),
        "mi": metrics.conditional_mutual_information(pa, pb, 0 * y, c),
        "cmi": metrics.conditional_mutual_information(pa, pb, y, c),
        "cmi_null": metrics.cmi_null(pa, null_b, y, c),
        "oracle_accuracy": (ok_a | ok_b).mean(-1),
    }
    for name, value in expected.items():
        np.testing.assert_array_equal(pair[name], value, err_msg=name)
    alone = metrics.pair_metrics(logp["weight"], logp["bias"], y, null_b)
    assert alone.keys() == pair.keys()
    for name, value in alone.items():
        np.testing.assert_array_equal(pair[name], value, err_msg=name)
    # Labels broadcast over further leading axes (here: the models).
    stacked = metrics.model_metrics(np.stack([logp[m] for m in ("weight", "bias")]), y)
    for k, m in enumerate(("weight", "bias")):
        for name, value in per_model[m].items():
            np.testing.assert_array_equal(stacked[name][k], value, err_msg=name)
    assert pair["oracle_accuracy"].shape == (s,)
    assert (pair["oracle_accuracy"] >= per_model["weight"]["accuracy"]).all()
    assert (pair["mi"] > 0).all() and (pair["cmi_null"] > 0).all()
