"""The benchmark is not a test: this only checks that it runs end to end at a tiny size."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quick_benchmark_writes_table_json_and_plot(tmp_path):
    cmd = [sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "x NumPy" in proc.stdout
    result = json.loads((tmp_path / "results.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names[0].startswith("numpy loop") and names[-1] == "numpy loop, again at the end"
    assert result["yardstick_ms"] == {
        "start": result["rows"][0]["ms_per_model"],
        "end": result["rows"][-1]["ms_per_model"],
    }
    assert "the same loop took" in proc.stdout
    assert any(n.startswith("scikit-learn") for n in names)
    jax_rows = [r for r in result["rows"] if r["name"].startswith("prtm_jax")]
    assert [(r["variant"], r["seeds"]) for r in jax_rows] == [
        ("plain", 1),
        ("plain", 4),
        ("tuned", 1),
        ("tuned", 4),
    ]
    assert sum(n.startswith("prtm2 end to end") for n in names) == 2
    for r in result["rows"]:
        assert r["ms_per_model"] > 0 and r["x_numpy"] > 0 and r["peak_rss_mib"] > 0
    assert all(r["compile_s"] > 0 for r in jax_rows)
    assert (tmp_path / "time_per_model.png").stat().st_size > 0
