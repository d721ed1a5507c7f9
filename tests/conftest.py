"""Shared fixtures: a tiny configuration that trains in well under a second per seed, and a
fresh random generator per test."""

from __future__ import annotations

import numpy as np
import pytest

from prtm_jax.config import Config, DataConfig, ModelConfig, TrainConfig


@pytest.fixture
def tiny_cfg() -> Config:
    return Config(
        seeds=3,
        seed_chunk=4,
        data=DataConfig(n_train=96, n_test=40),
        model=ModelConfig(hidden=[8]),
        train=TrainConfig(epochs=3, batch_size=32),
    )


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator per test, so a test's data never depends on which tests ran before."""
    return np.random.default_rng(0)
