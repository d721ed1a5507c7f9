"""Seeds sharded over 4 (forced host) devices give the single-device results."""

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = """
import json, jax
from prtm_jax.config import Config, DataConfig, ModelConfig, TrainConfig
from prtm_jax.experiment import block_devices, run_seeds
cfg = Config(seeds=6, seed_chunk=5, progress=False, data=DataConfig(n_train=96, n_test=40),
             model=ModelConfig(hidden=[8]), train=TrainConfig(epochs=3))
r = run_seeds(cfg)
print(json.dumps({"devices": jax.device_count(),
                  "used": [block_devices(n, 16) for n in (1, 16, 17, 1000)],
                  **{m: r[m]["accuracy"].tolist() for m in ("weight", "bias", "fused")},
                  **{m + "_nll": r[m]["nll"].tolist() for m in ("weight", "bias", "fused")}}))
"""


def _run(devices):
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_sharded_seeds_equal_one_device():
    one, four = _run(1), _run(4)
    assert (one["devices"], four["devices"]) == (1, 4)
    # Never more devices than blocks to fill: 6 seeds in blocks of 5 run on 2 of the 4.
    assert (one["used"], four["used"]) == ([1, 1, 1, 1], [1, 1, 2, 4])
    for model in ("weight", "bias", "fused"):
        np.testing.assert_array_equal(one[model], four[model])
        np.testing.assert_array_equal(one[model + "_nll"], four[model + "_nll"])


HANG_SCRIPT = """
from prtm_jax.config import Config, DataConfig, TrainConfig
from prtm_jax.experiment import run_seeds
for task in ("prtm2", "study"):
    run_seeds(Config(task=task, seeds=128, seed_chunk=64, progress=False,
                     data=DataConfig(n_val=100), train=TrainConfig(epochs=1)))
print("finished")
"""


def test_one_device_per_core_does_not_hang():
    """Regression: with 2 CPU devices and 64 items per device, the data generator's batched
    SVD split itself over XLA's thread pool from inside both pool threads and waited forever
    (prtm_jax/batching.py). Both tasks must finish, far inside the timeout."""
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", HANG_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert out.stdout.strip().splitlines()[-1] == "finished"
