import json
import os

import numpy as np
import pandas as pd
import pytest

from prtm_jax import results


def _metrics(finite_w):
    acc_w = np.array([0.9, 0.8, 0.95, 0.85])
    acc_b = np.array([0.7, 0.6, 0.75, 0.7])
    acc_f = np.array([0.95, 0.85, 0.9, 0.9])
    nll = np.ones(4)
    return {
        "weight": {"accuracy": acc_w, "nll": nll, "finite": finite_w},
        "bias": {"accuracy": acc_b, "nll": nll, "finite": np.ones(4, bool)},
        "fused": {"accuracy": acc_f, "nll": nll, "finite": finite_w},
    }


def test_diverged_seeds_are_marked_and_left_out_with_a_count():
    finite = np.array([True, False, True, True])
    df = results.seeds_table(_metrics(finite), np.arange(4))
    assert list(df.model[:3]) == ["weight", "bias", "fused"]  # task order, seed-major
    assert (df.status == "diverged").sum() == 2
    s = results.summarize(df, ["weight", "bias"], ["fused"])
    w = s["models"]["weight"]
    assert (w["n"], w["n_diverged"]) == (3, 1)
    assert w["mean"] == pytest.approx(np.mean([0.9, 0.95, 0.85]))
    assert w["std"] == pytest.approx(np.std([0.9, 0.95, 0.85], ddof=1))
    p = s["paired"]["fused-weight"]  # paired over the 3 ok seeds
    assert p["n"] == 3
    assert p["mean"] == pytest.approx(np.mean([0.05, -0.05, 0.05]))
    assert p["frac_better"] == pytest.approx(2 / 3)
    assert p["ci95"][0] <= p["mean"] <= p["ci95"][1]


def test_a_model_whose_every_seed_diverged_is_counted_and_the_pair_has_no_seeds():
    # Weight (the better single by accuracy) diverged on every seed: it has no mean, so the
    # fused model is compared with Bias, and over no seeds, since fused diverged with Weight.
    df = results.seeds_table(_metrics(np.zeros(4, bool)), np.arange(4))
    s = results.summarize(df, ["weight", "bias"], ["fused"])
    w = s["models"]["weight"]
    assert (w["n"], w["n_diverged"]) == (0, 4) and np.isnan(w["mean"])
    assert np.isnan(w["ci95"]).all()
    assert s["models"]["bias"]["mean"] == pytest.approx(np.mean([0.7, 0.6, 0.75, 0.7]))
    p = s["paired"]["fused-bias"]
    assert p["n"] == 0 and np.isnan(p["mean"]) and np.isnan(p["ci95"]).all()
    assert list(s["paired"]) == ["fused-bias"]


def test_summary_json_is_strict_json_with_null_for_statistics_over_no_seeds(tmp_path):
    df = results.seeds_table(_metrics(np.zeros(4, bool)), np.arange(4))
    s = results.summarize(df, ["weight", "bias"], ["fused"])
    results.write_run(tmp_path, df, {**s, "seeds": 4})

    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    back = json.loads((tmp_path / results.SUMMARY_FILE).read_text(), parse_constant=refuse)
    assert back["models"]["weight"]["mean"] is None and back["models"]["weight"]["n"] == 0
    assert back["paired"]["fused-bias"]["ci95"] == [None, None]
    assert back["models"]["bias"]["mean"] == pytest.approx(s["models"]["bias"]["mean"])


def test_write_atomic_leaves_nothing_behind_on_failure(tmp_path):
    target = tmp_path / "x.csv"
    target.write_text("old")

    def boom(path):
        path.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        results.write_atomic(target, boom)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_complete_only_when_both_files_exist(tmp_path):
    df = pd.DataFrame(
        {"seed": [0], "model": ["weight"], "accuracy": [1.0], "nll": [0.1], "status": ["ok"]}
    )
    assert not results.is_complete(tmp_path)
    results.write_atomic(tmp_path / results.SEEDS_FILE, lambda p: df.to_csv(p, index=False))
    assert not results.is_complete(tmp_path)
    results.write_run(tmp_path, df, {"models": {}})
    assert results.is_complete(tmp_path)


def test_write_atomic_gives_the_file_the_mode_open_would(tmp_path):
    # mkstemp makes 0600 files; a result file should be as readable as any other the user writes.
    mask = os.umask(0o022)
    try:
        results.write_atomic(tmp_path / "a.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
