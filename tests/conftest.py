"""Shared fixtures: a tiny configuration that trains in well under a second per seed."""

from __future__ import annotations

import pytest

from prtm_jax.config import Config, DataConfig, ModelConfig, TrainConfig


@pytest.fixture
def tiny_cfg() -> Config:
    return Config(
        seeds=3,
        data=DataConfig(n_train=96, n_test=40),
        model=ModelConfig(hidden=[8]),
        train=TrainConfig(epochs=3, batch_size=32),
    )
