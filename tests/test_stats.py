import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests

from prtm_jax import stats


def test_describe_and_bootstrap_ci_keep_their_contract():
    out = stats.describe(np.array([1.0, 2.0, 3.0, 4.0]))
    assert set(out) == {"n", "mean", "std", "ci95"}
    assert out["n"] == 4 and out["mean"] == 2.5
    lo, hi = out["ci95"]
    assert lo < 2.5 < hi
    assert stats.bootstrap_ci(np.array([3.0, 3.0])) == (3.0, 3.0)


@pytest.mark.parametrize("n", [2, 7, 256, 1_001])
def test_bootstrap_ci_in_batches_is_scipys_interval_drawn_all_at_once(rng, n):
    x = rng.normal(size=n)
    for statistic, seed in [(np.mean, 0), (np.median, 3)]:
        ref = sps.bootstrap(
            (x,),
            statistic,
            n_resamples=10_000,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        ).confidence_interval
        assert stats.bootstrap_ci(x, statistic, seed=seed) == (ref.low, ref.high)


def test_iqm_is_the_mean_of_the_middle_half(rng):
    assert stats.iqm(np.arange(8.0)) == pytest.approx(3.5)  # mean of 2, 3, 4, 5
    x = rng.normal(size=(37, 3))
    np.testing.assert_allclose(stats.iqm(x), sps.trim_mean(x, 0.25, axis=0))


def test_bootstrap_mean_iqm_equals_brute_force_on_the_same_draws(rng):
    x = rng.exponential(size=(41, 3))
    mean_bk, iqm_bk = stats.bootstrap_mean_iqm(x, 200, np.random.default_rng(5))
    idx = np.sort(np.random.default_rng(5).integers(0, 41, (200, 41)), axis=1)
    resampled = np.sort(x, axis=0)[idx]  # (B, N, K): each resample's sorted values
    np.testing.assert_allclose(mean_bk, resampled.mean(1))
    np.testing.assert_allclose(iqm_bk, sps.trim_mean(resampled, 0.25, axis=1))


def test_bootstrap_cis_cover_the_true_value_about_95_percent(rng):
    # 200 samples of 100 from N(1, 2^2): the mean and the IQM of the population are both 1.
    hits = np.zeros(3)
    for _ in range(200):
        x = rng.normal(1.0, 2.0, (100, 1))
        mean_b, iqm_b = stats.bootstrap_mean_iqm(x, 2000, rng)
        y = x - rng.normal(0, 1, x.shape)
        cmp = stats.paired_comparison(x + 0.5, y, n_resamples=2000, n_permutations=99, rng=rng)
        hits += [
            np.quantile(mean_b, 0.025) <= 1.0 <= np.quantile(mean_b, 0.975),
            np.quantile(iqm_b, 0.025) <= 1.0 <= np.quantile(iqm_b, 0.975),
            cmp["diff_lo"][0] <= 0.5 <= cmp["diff_hi"][0],  # a - b = 0.5 + N(0, 1)
        ]
    coverage = hits / 200
    print(f"\ncoverage of 95% CIs (mean, IQM, paired diff) over 200 repeats: {coverage}")
    assert ((coverage >= 0.9) & (coverage <= 0.99)).all(), coverage


def test_sign_flip_exact_matches_scipy_permutation_test():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.0, 0.4, -0.2, 0.3, 0.1, 0.6])  # 2^10 patterns, ties
    d2 = np.stack([d, -d / 3, d - d.mean()], 1)
    got = stats.sign_flip_pvalue(d2)
    for k in range(3):
        ref = sps.permutation_test(
            (d2[:, k],), np.mean, permutation_type="samples", vectorized=True
        ).pvalue
        assert got[k] == pytest.approx(ref, rel=1e-12)


def test_sign_flip_random_matches_scipy_to_monte_carlo_error(rng):
    d = rng.normal(0.3, 1.0, (40, 1))
    got = stats.sign_flip_pvalue(d, 9999, np.random.default_rng(1))[0]
    ref = sps.permutation_test(
        (d[:, 0],), np.mean, permutation_type="samples", vectorized=True, rng=2
    ).pvalue
    assert abs(got - ref) < 0.01  # both estimate one p (~0.06) with MC sd ~0.0024 each


def test_wilcoxon_matches_scipy_and_all_zero_differences_give_one(rng):
    d = np.stack([rng.normal(0.2, 1, 60), rng.normal(0, 1, 60), np.zeros(60)], 1)
    got = stats.wilcoxon_pvalue(d)
    assert got[0] == pytest.approx(sps.wilcoxon(d[:, 0]).pvalue)
    assert got[1] == pytest.approx(sps.wilcoxon(d[:, 1]).pvalue)
    assert got[2] == 1.0


def test_holm_by_hand_and_against_statsmodels(rng):
    np.testing.assert_allclose(stats.holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    p = rng.uniform(0, 0.1, 12)
    np.testing.assert_allclose(stats.holm(p), multipletests(p, method="holm")[1])
    got = stats.holm(np.array([0.01, np.nan, 0.04]))
    np.testing.assert_allclose(got, [0.02, np.nan, 0.04])


def test_probability_of_improvement_by_hand():
    x, y = np.array([[1.0], [2.0], [3.0], [4.0]]), np.array([[0.0], [2.0], [5.0], [1.0]])
    assert stats.probability_of_improvement(x, y)[0] == pytest.approx(2.5 / 4)
    assert stats.probability_of_improvement(x, y, higher_is_better=False)[0] == 1.5 / 4


def _runs(rng, n_seeds=30, models=("weight", "bias", "fused")):
    df = pd.DataFrame(
        {
            "seed": np.repeat(np.arange(n_seeds), len(models)),
            "model": np.tile(models, n_seeds),
            "status": "ok",
        }
    )
    df["accuracy"] = rng.uniform(0.6, 0.9, len(df)) + 0.05 * (df["model"] == "fused")
    df["nll"] = rng.uniform(0.2, 0.5, len(df))
    return df


def test_summarize_per_model_summary_and_paired_comparisons(rng):
    df = _runs(rng)
    df.loc[(df.model == "bias") & (df.seed == 3), "status"] = "failed"  # dropped
    df.loc[(df.model == "weight") & (df.seed == 7), "nll"] = np.nan  # undefined there
    summary, comp = stats.summarize(df, [("fused", "weight"), ("fused", "bias")], n_resamples=500)

    row = summary.set_index(["model", "metric"])
    ok = df[df.status == "ok"].set_index(["model", "seed"])
    for model in ("weight", "bias", "fused"):
        acc = ok.loc[model, "accuracy"].to_numpy()
        assert row.loc[(model, "accuracy"), "mean"] == pytest.approx(acc.mean())
        assert row.loc[(model, "accuracy"), "iqm"] == pytest.approx(sps.trim_mean(acc, 0.25))
        assert row.loc[(model, "accuracy"), "mean_lo"] < acc.mean() < acc.max()
    assert row.loc[("bias", "accuracy"), "n"] == 29
    assert row.loc[("weight", "nll"), "n"] == 29

    c = comp.set_index(["metric", "model_a", "model_b"])
    for metric, b, seeds in [("accuracy", "bias", 29), ("nll", "weight", 29)]:
        pair = ok.loc["fused", metric] - ok.loc[b, metric]
        d = pair.dropna().to_numpy()
        assert c.loc[(metric, "fused", b), "n"] == seeds == d.size
        assert c.loc[(metric, "fused", b), "diff"] == pytest.approx(d.mean())
        assert c.loc[(metric, "fused", b), "p_wilcoxon"] == pytest.approx(sps.wilcoxon(d).pvalue)
    # Lower NLL is better, so P(improvement) counts seeds where fused's NLL is smaller.
    d = (ok.loc["fused", "nll"] - ok.loc["bias", "nll"]).dropna().to_numpy()
    assert c.loc[("nll", "fused", "bias"), "prob_improvement"] == pytest.approx((d < 0).mean())
    assert len(comp) == 4
    holm = multipletests(comp["p_signflip"], method="holm")[1]
    np.testing.assert_allclose(comp["p_signflip_holm"], holm)


def test_summarize_groups_by_sweep_columns_and_rejects_ambiguous_tables(rng):
    df = pd.concat([_runs(rng).assign(view1_std=s) for s in (1.0, 4.5)])
    with pytest.raises(ValueError, match=r"several rows for one \(seed, model\).*by=\[\]"):
        stats.summarize(df)
    with pytest.raises(ValueError, match="pairs name models not in the table: early"):
        stats.summarize(df, [("early", "weight")], by=["view1_std"])
    summary, comp = stats.summarize(
        df, [("fused", "weight")], by=["view1_std"], n_resamples=200, n_permutations=999
    )
    assert len(summary) == 2 * 3 * 2 and len(comp) == 2 * 2
    assert set(comp["view1_std"]) == {1.0, 4.5}
    np.testing.assert_allclose(
        comp["p_wilcoxon_holm"], multipletests(comp["p_wilcoxon"], method="holm")[1]
    )


def test_summarize_timing_1000_seeds_by_10_models(rng):
    models = ["weight", "bias", "fused"] + [f"fused_{r}" for r in range(7)]
    df = _runs(rng, 1000, tuple(models))
    for m in ("brier", "ece", "follows_confident"):
        df[m] = rng.uniform(size=len(df))
    pairs = [(m, "weight") for m in models[2:]] + [(m, "bias") for m in models[2:]]
    pairs += [(m, "fused") for m in models[3:]]
    start = time.perf_counter()
    summary, comp = stats.summarize(df, pairs)
    seconds = time.perf_counter() - start
    print(
        f"\nsummarize: 1000 seeds x 10 models x 5 metrics, {len(comp)} paired comparisons "
        f"(5000 bootstrap resamples, 9999 sign flips): {seconds:.2f} s"
    )
    assert len(summary) == 50 and len(comp) == 5 * len(pairs)
