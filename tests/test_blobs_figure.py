import importlib.util
from pathlib import Path

import jax
import pytest

from prtm_jax.data import DataShape

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "blobs_figure.py"


@pytest.fixture(scope="module")
def blobs_figure():
    spec = importlib.util.spec_from_file_location("blobs_figure", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_levels_are_the_seeds_and_the_projects(blobs_figure):
    assert blobs_figure.SEED_STDS == (0.8, 1.3, 1.6, 1.9)
    assert blobs_figure.PROJECT_STDS == (3.0, 4.5)


def test_nearest_mean_accuracy_falls_with_noise(blobs_figure):
    shape = DataShape(n_train=300, n_test=2000, n_classes=5, n_features=2)
    acc = [
        float(blobs_figure.nearest_mean_accuracy(jax.random.key(1), blobs_figure.params(s), shape))
        for s in (0.8, 4.5, 20.0)
    ]
    assert acc[0] > acc[1] > acc[2] and acc[2] < 0.5


def test_main_writes_a_png(blobs_figure, tmp_path, capsys):
    out = tmp_path / "blobs.png"
    blobs_figure.main(["--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert str(out) in capsys.readouterr().out
