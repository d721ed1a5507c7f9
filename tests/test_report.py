import itertools
import json
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib import image

from prtm_jax import aggregate, report, results, stats

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _seeds(rng, n=16, point=None, gain=0.03, models=("weight", "bias", "fused"), pair=False):
    """A seeds.csv table: fused = the better single model + gain + noise, per seed."""
    point = point or {}
    rows = []
    for s in range(n):
        w, b = 0.9 + rng.normal(0, 0.01), 0.7 + rng.normal(0, 0.01)
        acc = {
            "weight": w,
            "bias": b,
            "fused": max(w, b) + gain + rng.normal(0, 0.005),
            "fused_sum": max(w, b) + 0.01 + rng.normal(0, 0.005),
            "concat": w + 0.005 + rng.normal(0, 0.01),
        }
        for m in models:
            rows.append(
                {"seed": s, "model": m, "status": "ok", "accuracy": acc[m], "nll": 1 - acc[m]}
                | point
            )
        if pair:
            q = 0.3 + rng.normal(0, 0.05)
            rows.append(
                {
                    "seed": s,
                    "model": report.PAIR,
                    "status": "ok",
                    "yules_q": q,
                    "yules_q_within": q - 0.3,
                    "cmi": 0.12 + rng.uniform(0, 0.01),
                    "cmi_null": 0.12,
                    "oracle_accuracy": 0.97 + rng.normal(0, 0.005),
                }
                | point
            )
    return pd.DataFrame(rows)


def _sweep(rng, grid, gain=lambda p: 0.03, **kw):
    """A long table like aggregate.collect's: one complete job per grid point."""
    frames = [
        _seeds(rng, point=dict(zip(grid, v, strict=True)), **kw)
        .assign(job=job, job_status="complete", task="prtm2")
        .pipe(lambda d, v=v: d.assign(_gain=gain(dict(zip(grid, v, strict=True)))))
        for job, v in enumerate(itertools.product(*grid.values()))
    ]
    for f in frames:  # the gain is a function of the point: shift fused by it
        f.loc[f.model == "fused", "accuracy"] += f["_gain"] - 0.03
    return pd.concat(frames, ignore_index=True).drop(columns="_gain")


def _ci(r, stat="mean"):
    return f"{r[stat]:.4f} [{r[stat + '_lo']:.4f}, {r[stat + '_hi']:.4f}]"


def _pngs(md_path):
    names = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", md_path.read_text())
    return [md_path.parent / n for n in names]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run dir: 24 seeds of weight, bias, fused (+0.03), 2 fused seeds diverged, pair rows."""
    d = tmp_path_factory.mktemp("run")
    df = _seeds(np.random.default_rng(0), n=24, pair=True)
    bad = (df.model == "fused") & (df.seed < 2)
    df.loc[bad, "status"] = "diverged"
    df.loc[bad, "accuracy"] = 0.1  # would pull the mean down if it were used
    df.to_csv(d / results.SEEDS_FILE, index=False)
    (d / results.SUMMARY_FILE).write_text(json.dumps({"task": "prtm2", "seeds": 24}))
    rel = pd.DataFrame(
        [
            {"model": m, "bin": b, "count": 50, "conf_sum": 50 * (b + 0.5) / 15, "correct_sum": 40}
            for m in ("weight", "bias", "fused")
            for b in range(15)
        ]
    )
    rel.to_csv(d / report.RELIABILITY_FILE, index=False)
    report.main([str(d)])
    return d, df


def test_run_report_numbers_are_stats_summarize_numbers(run_dir):
    d, df = run_dir
    md = (d / report.REPORT_FILE).read_text()
    ok = df[df.status == "ok"]
    # The report's summary call: every known metric present, model metrics first.
    df = df.assign(cmi_excess=df.cmi - df.cmi_null)
    metrics = ["accuracy", "nll", "cmi_excess", "yules_q", "yules_q_within", "oracle_accuracy"]
    summary, _ = stats.summarize(df, metrics=metrics)
    s = summary.set_index(["model", "metric"])
    for model, n in (("weight", 24), ("bias", 24), ("fused", 22)):
        acc, nll = s.loc[(model, "accuracy")], s.loc[(model, "nll")]
        assert acc["n"] == n == ok[ok.model == model].accuracy.notna().sum()
        row = f"| {model} | {n} | {24 - n} | {_ci(acc)} | {_ci(acc, 'iqm')} | {_ci(nll)} |"
        assert row in md, row
    # Paired comparison fused - best single (weight), on the 22 seeds both are ok.
    _, cmp = stats.summarize(df, pairs=[("fused", "weight")], metrics=["accuracy"])
    c = cmp.iloc[0]
    diff = f"{c['diff']:+.4f} [{c.diff_lo:+.4f}, {c.diff_hi:+.4f}]"
    assert f"| fused - best single (weight) | 22 | {diff} |" in md
    assert f"`fused` beats best single (weight): {diff} (n=22 seeds" in md
    assert 0.025 < c["diff"] < 0.035 and c.diff_lo > 0
    # Dependence: the pair row's metrics, and CMI minus its shuffled floor.
    q, e = s.loc[(report.PAIR, "yules_q")], s.loc[(report.PAIR, "cmi_excess")]
    assert f"Q pooled: {_ci(q)} (n=24)" in md
    assert f"{e['mean']:+.4f} [{e.mean_lo:+.4f}, {e.mean_hi:+.4f}]" in md


def test_diverged_rows_are_excluded_and_counted(run_dir):
    d, _ = run_dir
    md = (d / report.REPORT_FILE).read_text()
    assert "weight 0/24, bias 0/24, fused 2/24" in md
    assert "| fused | 22 | 2 |" in md


def test_linked_figures_exist_and_are_valid_pngs(run_dir):
    d, _ = run_dir
    pngs = _pngs(d / report.REPORT_FILE)
    names = {"fig_accuracy.png", "fig_differences.png", "fig_reliability.png"}
    assert {p.name for p in pngs} == names
    for p in pngs:
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert image.imread(p).shape[0] > 100
    assert not (d / "fig_gain_rho.png").exists()  # rho does not vary in a plain run


def test_rho_sweep_shows_the_shrinking_gain(tmp_path):
    rng = np.random.default_rng(1)
    long = _sweep(rng, {"rho": [0.0, 0.25, 0.5, 0.75]}, gain=lambda p: 0.04 - 0.04 * p["rho"])
    path = report.build_report(long, tmp_path, "rho sweep")
    md = path.read_text()
    assert "![fusion gain against rho](fig_gain_rho.png)" in md
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in _pngs(path))
    assert "The gain of `fused` over the best single model shrinks as rho grows" in md
    t = report.trend(report.analyse(long), "rho", "fused").iloc[0]
    assert t.n == 16 and t.lo < -0.04 < t.hi and t.hi < 0
    assert "Product minus sum" not in md  # no fused_sum in this table
    assert "fig_gain_heatmap" not in md  # one axis only


def test_constant_rho_gives_no_rho_figure(tmp_path):
    long = _seeds(np.random.default_rng(2), n=8).assign(rho=0.3)
    md = report.build_report(long, tmp_path, "flat").read_text()
    assert "rho" not in md and not (tmp_path / "fig_gain_rho.png").exists()


def test_incomplete_jobs_are_listed_and_best_single_is_per_point(tmp_path):
    rng = np.random.default_rng(3)
    long = _sweep(rng, {"view1_std": [2.0, 9.0]}, n=8)
    # At view1_std=9 the weight view is poor: bias becomes the best single model there.
    hard = (long.view1_std == 9.0) & (long.model == "weight")
    long.loc[hard, "accuracy"] -= 0.4
    gone = [
        {"job": 2, "job_status": "failed", "view1_std": 12.0, "model": None, "status": "failed"},
        {"job": 3, "job_status": "missing", "view1_std": 15.0, "model": None, "status": "missing"},
    ]
    long = pd.concat([long, pd.DataFrame(gone)], ignore_index=True)
    md = report.build_report(long, tmp_path, "with failures").read_text()
    assert "Jobs: 2 of 4 complete." in md
    assert "| 2 | failed | 12 |" in md and "| 3 | missing | 15 |" in md
    assert "| 2 | fused - best single (weight) | 8 |" in md
    assert "| 9 | fused - best single (bias) | 8 |" in md


def test_noise_grid_gives_heatmap_and_training_size_gives_early_vs_late(tmp_path):
    rng = np.random.default_rng(4)
    grid = _sweep(rng, {"view1_std": [2.0, 4.5], "view2_std": [0.25, 0.5]}, n=8)
    md = report.build_report(grid, tmp_path / "grid", "grid").read_text()
    assert "(fig_gain_heatmap.png)" in md and "fig_gain_rho" not in md
    models = ("weight", "bias", "concat", "fused")
    sizes = _sweep(rng, {"n_train": [250, 1000, 4000]}, n=8, models=models)
    path = report.build_report(sizes, tmp_path / "sizes", "sizes")
    md = path.read_text()
    assert "(fig_n_train.png)" in md and "fig_gain_heatmap" not in md
    assert "Early (concat) minus late (fused) at n_train=250:" in md
    assert all(p.read_bytes()[:8] == PNG_MAGIC for p in _pngs(path))


def test_sweep_dir_end_to_end_lists_the_missing_job(tmp_path):
    sweep = tmp_path / "s"
    job = sweep / "data.rho=0.0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- data.rho=0.0\n")
    results.write_run(job, _seeds(np.random.default_rng(5), n=6), {"task": "prtm2"})
    rel = pd.DataFrame({"model": "fused", "bin": [13, 14], "count": [5, 95]})
    rel.assign(conf_sum=[4.5, 94.0], correct_sum=[4, 93]).to_csv(job / "reliability.csv")
    (sweep / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task:\n    - data.rho=0.0,0.5\n  sweeper:\n    params: null\n"
    )
    report.main([str(sweep)])
    md = (sweep / report.REPORT_FILE).read_text()
    assert "Jobs: 1 of 2 complete." in md and "| 1 | missing | 0.5 |" in md
    assert "(fig_reliability.png)" in md and "fig_gain_rho" not in md


def test_dir_without_results_is_one_line_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        report.main([str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err == (
        f"prtm-report: error: {tmp_path} has neither seeds.csv (a run) nor multirun.yaml"
        " (a sweep)\n"
    )


_BAD_YAML = ({"multirun.yaml": "a: ["}, "{d}/multirun.yaml is not valid YAML (while parsing a flow")
_NOT_HYDRA = ({"multirun.yaml": "a: 1\n"}, "{d}/multirun.yaml is not a Hydra multirun.yaml (no")


@pytest.mark.parametrize(
    "command,files,message",
    [
        ("report", {}, "{d}/nope is not a directory"),
        ("aggregate", {}, "{d}/nope is not a directory"),
        ("report", *_BAD_YAML),
        ("aggregate", *_BAD_YAML),
        ("report", *_NOT_HYDRA),
        ("aggregate", *_NOT_HYDRA),
        ("report", {"seeds.csv": ""}, "{d}/seeds.csv is not a readable CSV table (No columns"),
        ("report", {"seeds.csv": "old\n"}, "{d}/seeds.csv has no column 'seed' (needs seed,"),
        (
            "aggregate",
            {"multirun.yaml": "hydra:\n  overrides:\n    task: null\n  sweeper: {}\n"},
            "{d}/multirun.yaml is not a Hydra multirun.yaml (no",
        ),
        (
            "aggregate",
            {"multirun.yaml": "hydra:\n  overrides:\n    task: ['seeds=range(1,']\n  sweeper: {}"},
            "{d}/multirun.yaml: no viable alternative at input 'range(1,'",
        ),
    ],
)
def test_unreadable_inputs_are_one_line_exit_2(tmp_path, capsys, command, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    main = report.main if command == "report" else aggregate.main
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path if files else tmp_path / "nope")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"prtm-{command}: error: " + message.format(d=tmp_path)), err


def test_point_columns_are_axes_not_metrics():
    long = _seeds(np.random.default_rng(6), n=6, pair=True).assign(lr=0.01)
    long = pd.concat([long, long.assign(lr=0.1)], ignore_index=True)
    long["brier"] = np.where(long.model == report.PAIR, np.nan, 0.2)
    long["new_metric"] = np.where(long.model == report.PAIR, np.nan, long.accuracy * 2)
    assert aggregate.point_columns(long) == ["lr"]


def test_comparison_pairs_cover_whichever_models_exist():
    b = report.BEST
    got = report.comparison_pairs(["fused_sum", "bias", "wb", "concat", "fused", "weight"])
    assert got == [
        ("fused", b),
        ("fused_sum", b),
        ("concat", b),
        ("wb", b),
        ("fused", "fused_sum"),
        ("concat", "fused"),
        ("wb", "fused"),
    ]
    assert report.comparison_pairs(["weight", "bias", "fused"]) == [("fused", b)]
    assert report.comparison_pairs(["mlp"]) == []


def test_view_dependence_section_summarises_dependence_csv(tmp_path):
    rng = np.random.default_rng(3)
    _seeds(rng, n=8).to_csv(tmp_path / results.SEEDS_FILE, index=False)
    views = pd.DataFrame(
        {
            "seed": np.tile(np.arange(4), 2),
            "rho": np.repeat([0.0, 0.8], 4),
            "spearman_within_mean_abs": np.r_[rng.uniform(0, 0.02, 4), rng.uniform(0.2, 0.3, 4)],
            "spearman_pooled_mean_abs": rng.uniform(0, 0.3, 8),
            "cmi_mean": rng.uniform(0, 0.1, 8),
            "cmi_null": np.full(8, 0.02),
            "perm_p": [0.4, 0.7, 0.03, 0.9, 0.005, 0.005, 0.005, 0.005],
        }
    )
    views.to_csv(tmp_path / "dependence.csv", index=False)
    report.main([str(tmp_path)])
    md = (tmp_path / "report.md").read_text()
    section = md.split("## Dependence between the two views (the data)")[1].split("## ")[0]
    rows = [r for r in section.splitlines() if r.startswith("| 0") or r.startswith("| 0.8")]
    assert len(rows) == 2
    hi = stats.describe(views.spearman_within_mean_abs[4:].to_numpy())
    assert f"{hi['mean']:+.4f} [{hi['ci95'][0]:+.4f}, {hi['ci95'][1]:+.4f}]" in rows[1]
    assert rows[0].endswith("| 0.55 | 1/4 |") and rows[1].endswith("| 0.005 | 4/4 |")
