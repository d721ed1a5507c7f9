import dataclasses

import jax
import numpy as np
import pytest

from prtm_jax.config import DataConfig, OptimConfig, TrainConfig
from prtm_jax.experiment import run_seeds


def test_seed_results_do_not_depend_on_seed_count_or_position(tiny_cfg):
    full = run_seeds(dataclasses.replace(tiny_cfg, seeds=9))  # 3 blocks of 4
    fewer = run_seeds(dataclasses.replace(tiny_cfg, seeds=2))  # 1 block, padded
    for model in ("weight", "bias", "fused"):
        for metric in ("accuracy", "nll"):
            np.testing.assert_array_equal(fewer[model][metric][0], full[model][metric][0, :2])
    assert full["fused"]["accuracy"].shape == (1, 9)


def test_prtm2_gives_every_model_and_the_pair_per_seed(tiny_cfg):
    r = run_seeds(tiny_cfg)
    assert set(r) == {"weight", "bias", "fused", "weight|bias"}
    assert r["weight|bias"]["finite"].all()
    for m in ("weight", "bias", "fused"):
        assert r[m]["accuracy"].shape == (1, 3)
        assert np.all((0 <= r[m]["accuracy"]) & (r[m]["accuracy"] <= 1))
        assert r[m]["finite"].all()


def test_a_diverging_seed_is_flagged_not_raised(tiny_cfg):
    cfg = dataclasses.replace(
        tiny_cfg, seeds=6, optim=OptimConfig(lr=50.0), train=TrainConfig(epochs=3, batch_size=32)
    )
    r = run_seeds(cfg)
    assert not r["weight"]["finite"].all() or not r["bias"]["finite"].all()
    # A fused row is finite only where both of its inputs are.
    assert np.all(r["fused"]["finite"] <= (r["weight"]["finite"] & r["bias"]["finite"]))


def test_split_validation_holds_out_the_last_training_rows():
    import jax

    from prtm_jax.data import DataParams, DataShape, make_two_view
    from prtm_jax.experiment import split_validation

    d = make_two_view(
        jax.random.key(0), DataParams(2.0, 0.5, 0.25, 0.55, 0.001, 10.0), DataShape(50, 10, 3, 4)
    )
    fit, val = split_validation(d, 8)
    assert fit.x1_train.shape == (42, 4) and val.x2_train.shape == (8, 3)
    np.testing.assert_array_equal(np.concatenate([fit.y_train, val.y_train]), d.y_train)
    np.testing.assert_array_equal(fit.x1_test, d.x1_test)
    assert split_validation(d, 0) == (d, None)


@pytest.mark.parametrize("source", ["digits", "parts"])
def test_rt_sources_run_end_to_end(tiny_cfg, source):
    cfg = dataclasses.replace(
        tiny_cfg,
        seeds=2,
        data=DataConfig(source=source, n_train=64, n_test=40, n_val=16, image_size=8),
        train=TrainConfig(epochs=2, batch_size=32),
    )
    r = run_seeds(cfg)
    for m in ("weight", "bias", "fused"):
        assert r[m]["finite"].all() and r[m]["accuracy"].shape == (1, 2)


def test_study_trains_every_model_and_rule_on_the_same_seeds(tiny_cfg):
    from prtm_jax.experiment import PAIR, TASKS

    cfg = dataclasses.replace(
        tiny_cfg, task="study", seeds=2, data=DataConfig(n_train=96, n_test=40, n_val=32)
    )
    r = run_seeds(cfg)
    names = {m.name for m in TASKS["study"].models} | {f.name for f in TASKS["study"].fusions}
    assert set(r) == names | {PAIR}
    assert {"fused", "fused_sum", "fused_calibrated_product", "fused_pool", "concat", "wb"} <= names
    # Weight and Bias are the same models as in prtm2: adding models changes no one's keys.
    base = run_seeds(dataclasses.replace(cfg, task="prtm2"))
    for m in ("weight", "bias", "fused"):
        np.testing.assert_allclose(r[m]["accuracy"], base[m]["accuracy"])
    assert np.all(r["fused_calibrated_product"]["t_a"] > 0)
    assert np.all(r["fused_pool"]["w_a"] >= 0)
    assert np.all(
        r[PAIR]["oracle_accuracy"] >= np.maximum(r["weight"]["accuracy"], r["bias"]["accuracy"])
    )
    assert r["fused"]["rel_count"].shape == (1, 2, 15)
    np.testing.assert_array_equal(r["fused"]["rel_count"].sum(-1), 40)


def test_fitted_rules_need_held_out_rows(tiny_cfg):
    from prtm_jax.config import ConfigError
    from prtm_jax.experiment import validate_config

    with pytest.raises(ConfigError) as exc:
        validate_config(dataclasses.replace(tiny_cfg, task="study"))
    assert str(exc.value) == (
        "data.n_val must be >= 1 for task=study (rules calibrated_product, pool are fitted on"
        " held-out rows), got 0"
    )


def test_view_dependence_sees_rho(tiny_cfg):
    from prtm_jax.config import GridConfig
    from prtm_jax.experiment import view_dependence

    cfg = dataclasses.replace(
        tiny_cfg,
        data=DataConfig(n_train=400, n_test=40, view1_std=1.0),
        grid=GridConfig(rho=[0.0, 0.9]),
    )
    deps = view_dependence(cfg, 2, n_permutations=99)
    assert list(deps.rho) == [0.0, 0.0, 0.9, 0.9] and list(deps.seed) == [0, 1, 0, 1]
    independent, dependent = deps[deps.rho == 0.0], deps[deps.rho == 0.9]
    assert (dependent.perm_p <= 0.01).all()
    assert (independent.perm_p > 0.01).all()
    dep_rho = dependent.spearman_within_mean_abs.to_numpy()
    assert (dep_rho > 2 * independent.spearman_within_mean_abs.to_numpy()).all()


def test_fast_compile_option_keeps_every_result(tiny_cfg, monkeypatch):
    """XLA:CPU backend optimisation level 1 (the runner's default on CPU) against XLA's default
    level: the same training trajectories, so every accuracy, count and final training loss is
    equal; the float reductions behind NLL and ECE may differ by a few ulps. The log-linear
    pool's weights are a fit of a nearly flat NLL here (32 held-out rows, tiny models): those
    ulps move them, and what is computed from them, by up to ~3e-4 relative (measured), so
    they get rtol 2e-3."""
    from prtm_jax import experiment

    cfg = dataclasses.replace(
        tiny_cfg, seeds=5, task="study", data=DataConfig(n_train=96, n_test=40, n_val=32)
    )
    fast = run_seeds(cfg)
    experiment.clear_compiled()
    monkeypatch.setattr(experiment, "CPU_COMPILER_OPTIONS", None)
    default = run_seeds(cfg)
    experiment.clear_compiled()
    for model, metrics in default.items():
        for name, value in metrics.items():
            msg = f"{model}.{name}"
            if name in {"accuracy", "rel_count", "train_loss"} or value.dtype.kind in "biu":
                np.testing.assert_array_equal(fast[model][name], value, err_msg=msg)
            else:
                rtol = 2e-3 if model == "fused_pool" else 1e-5
                np.testing.assert_allclose(fast[model][name], value, rtol=rtol, err_msg=msg)


@pytest.mark.parametrize("root_seed", [0, 12345, 2**31, 2**40 + 3])
def test_host_seed_key_data_are_the_seed_keys(root_seed):
    # run_seeds cuts its items into blocks on the host: the keys must be seed_keys' exactly.
    from prtm_jax import experiment

    seeds = np.r_[np.arange(40), [2**31, 2**32 - 1]].astype(np.uint32)
    host = experiment.seed_key_data(root_seed, seeds)
    ref = jax.random.key_data(experiment.seed_keys(root_seed, seeds))
    assert isinstance(host, np.ndarray) and host.dtype == np.uint32
    np.testing.assert_array_equal(host, np.asarray(ref))
