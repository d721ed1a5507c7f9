"""The seed's ordering, reproduced over 64 seeds of the default configuration."""

import numpy as np
import pytest

from prtm_jax.config import Config
from prtm_jax.experiment import run_seeds


@pytest.mark.slow
def test_default_run_reproduces_the_seed_ordering():
    r = run_seeds(Config(seeds=64))
    assert all(m["finite"].all() for m in r.values())
    weight, bias, fused = (r[m]["accuracy"][0] for m in ("weight", "bias", "fused"))
    assert 0.90 <= weight.mean() <= 0.96
    assert 0.64 <= bias.mean() <= 0.76
    assert np.mean(fused > weight) >= 0.9
