import dataclasses

import numpy as np

from prtm_jax.config import OptimConfig, TrainConfig
from prtm_jax.experiment import run_seeds


def test_seed_results_do_not_depend_on_seed_count_or_chunking(tiny_cfg):
    full = run_seeds(dataclasses.replace(tiny_cfg, seeds=4))
    fewer = run_seeds(dataclasses.replace(tiny_cfg, seeds=2))
    chunked = run_seeds(dataclasses.replace(tiny_cfg, seeds=4, seed_chunk=3))
    for model in ("weight", "bias", "fused"):
        for metric in ("accuracy", "nll"):
            np.testing.assert_array_equal(fewer[model][metric][0], full[model][metric][0, :2])
            np.testing.assert_allclose(chunked[model][metric], full[model][metric], rtol=1e-6)


def test_fused_is_the_product_of_weight_and_bias(tiny_cfg):
    r = run_seeds(tiny_cfg)
    assert set(r) == {"weight", "bias", "fused"}
    for m in r.values():
        assert m["accuracy"].shape == (1, 3)
        assert np.all((0 <= m["accuracy"]) & (m["accuracy"] <= 1))
        assert m["finite"].all()


def test_a_diverging_seed_is_flagged_not_raised(tiny_cfg):
    cfg = dataclasses.replace(
        tiny_cfg, seeds=6, optim=OptimConfig(lr=50.0), train=TrainConfig(epochs=3, batch_size=32)
    )
    r = run_seeds(cfg)
    assert not r["weight"]["finite"].all() or not r["bias"]["finite"].all()
    # A fused row is finite only where both of its inputs are.
    assert np.all(r["fused"]["finite"] <= (r["weight"]["finite"] & r["bias"]["finite"]))
