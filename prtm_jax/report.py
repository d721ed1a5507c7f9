"""`prtm-report DIR`: report.md and PNG figures for a run dir (seeds.csv) or a sweep dir
(multirun.yaml), every number with its seed count and 95% CI.

Reading a directory (`read_run`, `read_sweep`) is kept apart from `build_report(long, out_dir,
title)`, which turns a long table (seeds.csv's columns, one row per seed, model and point; a
sweep's also job, job_status and one column per override) into the report. The statistics
are `stats.summarize`: one call for the per-model summaries and one for every paired
comparison in the report, so Holm's adjustment runs over the report's whole family of tests.
Figures use matplotlib's object API (`Figure`, Agg), so nothing touches pyplot's global state.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from prtm_jax import aggregate, results, stats
from prtm_jax.aggregate import point_columns

REPORT_FILE = "report.md"
RELIABILITY_FILE = results.RELIABILITY_FILE
MULTIRUN_FILE = results.MULTIRUN_FILE

PAIR = "weight|bias"  # the per-seed row of pair metrics (its accuracy is NaN)
SINGLES = ("weight", "bias")
PRODUCT = "fused"  # the product rule; every model named fused* is a late-fusion rule
EARLY = "concat"  # one MLP on both views
WB = "wb"  # the paired W&B FiLM model
BEST = "best_single"  # per point, a copy of whichever of SINGLES has the higher mean accuracy
ORDER = ("weight", "bias", "concat", "wb", "fused")

MODEL_METRICS = {
    "accuracy": "accuracy",
    "nll": "NLL (nats)",
    "brier": "Brier",
    "ece": "ECE",
    "follows_confident": "follows confident",
    "follows_confident_disagree": "follows confident (disagreements)",
}
PAIR_METRICS = {
    "cmi_excess": "CMI - null (nats)",
    "yules_q": "Q pooled",
    "yules_q_within": "Q within class",
    "correlation": "r pooled",
    "correlation_within": "r within class",
    "double_fault": "double fault",
    "disagreement": "disagreement",
    "oracle_accuracy": "oracle accuracy",
}
OTHER_METRICS = ("train_loss", "mi", "cmi", "cmi_null")
IDS = ("job", "job_status", "task", "seed", "model", "status", "_point")
NOISE_AXES = ("view1_std", "view2_std", "rho", "view2_offset")  # heatmap axes, in preference
MAX_PANELS = 16
ALPHA = 0.05


class Analysis(NamedTuple):
    done: pd.DataFrame  # rows of complete jobs, with _point (an int per point) and cmi_excess
    incomplete: pd.DataFrame  # one row per job without complete results
    points: list[str]  # the point columns
    point_table: pd.DataFrame  # index _point: the point columns, and `best` (single model)
    summary: pd.DataFrame  # stats.summarize's summary, with the point columns
    comparisons: pd.DataFrame  # stats.summarize's comparisons (accuracy), with point columns


def _ordered(models) -> list[str]:
    models = list(dict.fromkeys(m for m in models if isinstance(m, str) and m != PAIR))
    rank = {m: i for i, m in enumerate(ORDER)}
    return sorted(models, key=lambda m: (rank.get(m, len(ORDER)), models.index(m)))


def comparison_pairs(models: Sequence[str]) -> list[tuple[str, str]]:
    """(a, b) pairs compared by seed (difference a - b), for whichever models are present.

    Every combining model (fused rules, concat, wb) against the best single model; the
    product rule against every other fused rule; early fusion and W&B against the product.
    """
    models = _ordered(models)
    fused = [m for m in models if m.startswith(PRODUCT)]
    combined = [*fused, *(m for m in (EARLY, WB) if m in models)]
    pairs = [(m, BEST) for m in combined] if set(SINGLES) & set(models) else []
    if PRODUCT in models:
        pairs += [(PRODUCT, f) for f in fused if f != PRODUCT]
        pairs += [(m, PRODUCT) for m in (EARLY, WB) if m in models]
    return pairs


def _with_best(done: pd.DataFrame, point_table: pd.DataFrame) -> pd.DataFrame:
    best_rows = done[done["model"] == done["_point"].map(point_table["best"])]
    return pd.concat([done, best_rows.assign(model=BEST)], ignore_index=True)


def analyse(long: pd.DataFrame) -> Analysis:
    """The statistics of a long table: summaries per (point, model, metric) and comparisons."""
    long = long.copy()
    if "job_status" not in long:
        long["job_status"] = "complete"
    if "status" not in long:
        long["status"] = "ok"
    if "accuracy" not in long:  # e.g. a sweep none of whose jobs completed
        long["accuracy"] = np.nan
    if {"cmi", "cmi_null"} <= set(long.columns):
        long["cmi_excess"] = long["cmi"] - long["cmi_null"]
    points = point_columns(long)
    done = long[long["job_status"] == "complete"].copy()
    if "job" in long:
        incomplete = long[long["job_status"] != "complete"].drop_duplicates("job")
    else:
        incomplete = long.iloc[:0]
    if points and len(done):
        done["_point"] = done.groupby(points, sort=True, dropna=False).ngroup()
    else:
        done["_point"] = 0
    point_table = done.drop_duplicates("_point").set_index("_point")[points].sort_index()
    ok = done[(done["status"] == "ok") & done["model"].isin(SINGLES)]
    means = ok.groupby(["_point", "model"])["accuracy"].mean().dropna().unstack()
    point_table["best"] = means.idxmax(axis=1) if len(means) else np.nan
    empty = pd.DataFrame(columns=["_point", "model", "metric", "model_a", "model_b"])
    summary, comparisons = empty, empty
    metrics = [m for m in (*MODEL_METRICS, *PAIR_METRICS) if m in done and done[m].notna().any()]
    if metrics:
        summary, _ = stats.summarize(done, metrics=metrics, by=["_point"])
    present = done.loc[done["status"] == "ok", "model"].dropna().unique()  # seeds.csv's order
    pairs = comparison_pairs(list(present))
    if pairs:
        table = _with_best(done, point_table)
        involved = {m for p in pairs for m in p}
        _, comparisons = stats.summarize(
            table[table["model"].isin(involved)], pairs, metrics=["accuracy"], by=["_point"]
        )
        rank = {p: i for i, p in enumerate(pairs)}
        order = [rank[p] for p in zip(comparisons["model_a"], comparisons["model_b"], strict=True)]
        comparisons = comparisons.iloc[np.lexsort((order, comparisons["_point"]))]
        comparisons = comparisons.reset_index(drop=True)
    summary = summary.join(point_table, on="_point")
    comparisons = comparisons.join(point_table, on="_point")
    return Analysis(done, incomplete, points, point_table, summary, comparisons)


def trend(a: Analysis, axis: str, model: str, against: str = BEST) -> pd.DataFrame:
    """Per combination of the other point columns: how `model - against` accuracy moves with
    `axis`. Each seed's least-squares slope over the points it has, summarised over seeds by
    stats.describe (n, mean, bootstrap CI) with a sign-flip p-value (not Holm-adjusted)."""
    table = _with_best(a.done, a.point_table)
    table = table[table["status"] == "ok"]
    wide = table.pivot(index=["_point", "seed"], columns="model", values="accuracy")
    if model not in wide or against not in wide:
        return pd.DataFrame()
    d = (wide[model] - wide[against]).dropna().rename("d").reset_index()
    d = d.join(a.point_table, on="_point")
    d[axis] = d[axis].astype(float)
    rows = []
    for key, g in stats._groups(d, [c for c in a.points if c != axis]):
        x = g[axis] - g.groupby("seed")[axis].transform("mean")
        y = g["d"] - g.groupby("seed")["d"].transform("mean")
        sxx = (x * x).groupby(g["seed"]).sum()
        slopes = ((x * y).groupby(g["seed"]).sum() / sxx)[sxx > 0].to_numpy()
        if slopes.size == 0:
            continue
        desc = stats.describe(slopes)
        p = stats.sign_flip_pvalue(slopes[:, None])[0] if slopes.size > 1 else np.nan
        lo, hi = desc["ci95"]
        rows.append({**key, "n": desc["n"], "slope": desc["mean"], "lo": lo, "hi": hi, "p": p})
    return pd.DataFrame(rows)


# -- formatting ---------------------------------------------------------------------------


def _value(v) -> str:
    if isinstance(v, float | np.floating):
        return "NaN" if np.isnan(v) else f"{v:g}"
    return str(v)


def _label(key: dict) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in key.items()) or "all seeds"


def _num(x: float, signed: bool = False) -> str:
    if x is None or np.isnan(x):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def _ci(m: float, lo: float, hi: float, signed: bool = False) -> str:
    return f"{_num(m, signed)} [{_num(lo, signed)}, {_num(hi, signed)}]"


def _p(p: float) -> str:
    if p is None or np.isnan(p):
        return "n/a"
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(r) + " |" for r in rows)])


def _name(model: str, best: str | float = np.nan) -> str:
    if model != BEST:
        return model
    return f"best single ({best})" if isinstance(best, str) else "best single"


VERBS = {"better": "beats", "worse": "is worse than", "unclear": "is not clearly different from"}


def _verdict(row) -> str:
    """'better', 'worse' or 'unclear': Holm sign-flip p < ALPHA and a CI that excludes 0."""
    if row["p_signflip_holm"] < ALPHA and row["diff_lo"] > 0:
        return "better"
    if row["p_signflip_holm"] < ALPHA and row["diff_hi"] < 0:
        return "worse"
    return "unclear"


def _cmp_text(row) -> str:
    diff = _ci(row["diff"], row["diff_lo"], row["diff_hi"], signed=True)
    better = _ci(row["prob_improvement"], row["pi_lo"], row["pi_hi"])
    return (
        f"{diff} (n={int(row['n'])} seeds; P(better)={better}; "
        f"Holm sign-flip p={_p(row['p_signflip_holm'])})"
    )


# -- sections -----------------------------------------------------------------------------


def _header(a: Analysis, title: str, notes: Sequence[str]) -> str:
    done = a.done
    lines = [f"# {title}", ""]
    tasks = sorted(done["task"].dropna().unique()) if "task" in done else []
    lines.append(f"- Task: {', '.join(map(str, tasks)) or 'not recorded'}.")
    models = _ordered(done["model"].dropna().unique())
    if len(done):
        seeds = done.groupby("_point")["seed"].nunique()
        span = f"{seeds.min()}" if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
        per = " per point" if a.points else ""
        lines.append(f"- Seeds: {span}{per}; models: {', '.join(models)}.")
        status = done[done["model"].isin(models)].groupby("model")["status"]
        div = ", ".join(
            f"{m} {int((status.get_group(m) != 'ok').sum())}/{len(status.get_group(m))}"
            for m in models
        )
        lines.append(f"- Diverged rows per model (excluded from every statistic): {div}.")
    if a.points and len(a.point_table):
        values = {c: a.point_table[c].drop_duplicates().sort_values() for c in a.points}
        axes = " x ".join(
            f"{c} in {{{', '.join(_value(v) for v in vs)}}}" for c, vs in values.items()
        )
        lines.append(f"- Points with results: {len(a.point_table)} ({axes}).")
    if "job" in a.done or len(a.incomplete):
        n_jobs = a.done["job"].nunique() + len(a.incomplete)
        lines.append(f"- Jobs: {n_jobs - len(a.incomplete)} of {n_jobs} complete.")
    lines += [f"- {n}" for n in notes]
    lines += [
        "",
        "Means with 95% percentile-bootstrap CIs over seeds; IQM = mean of the middle 50% of "
        "seeds; n = seeds used. Comparisons are paired by seed within a point; p-values are "
        f"two-sided and Holm-adjusted across all {len(a.comparisons)} comparisons in this report. "
        f"A finding says better or worse when the Holm sign-flip p < {ALPHA} and the CI of the "
        "mean difference excludes 0.",
    ]
    if len(a.comparisons):
        n = int(a.comparisons["n"].min())
        floor = 2.0 / 2**n
        if floor * len(a.comparisons) >= ALPHA:
            lines.append(
                f"\nWith n={n} seeds the smallest possible two-sided sign-flip p is {_p(floor)} "
                f"(2/2^n); after Holm over {len(a.comparisons)} comparisons a verdict may need "
                "more seeds."
            )
    if len(a.incomplete):
        cols = ["job", "job_status", *(c for c in a.points if c in a.incomplete)]
        rows = [[_value(r[c]) for c in cols] for _, r in a.incomplete.iterrows()]
        lines += ["", "Jobs without complete results (not in any statistic):", ""]
        lines.append(_table(cols, rows))
    return "\n".join(lines)


def _findings(a: Analysis) -> str:
    out = []
    c = a.comparisons
    by_size = "n_train" in _axes(a)  # then early - late is listed point by point below
    for (ma, mb), g in c.groupby(["model_a", "model_b"], sort=False):
        if by_size and (ma, mb) == (EARLY, PRODUCT):
            continue
        if len(g) == 1:
            row = g.iloc[0]
            verb = VERBS[_verdict(row)]
            where = f" at {_label(row[a.points].to_dict())}" if a.points else ""
            out.append(f"`{ma}` {verb} {_name(mb, row['best'])}{where}: {_cmp_text(row)}.")
            continue
        verdicts = g.apply(_verdict, axis=1)
        lo, hi = g.loc[g["diff"].idxmin()], g.loc[g["diff"].idxmax()]
        if lo["diff"] == hi["diff"]:
            extremes = f"the same mean difference at every point, {_cmp_text(lo)}"
        else:
            extremes = (
                f"smallest {_cmp_text(lo)} at {_label(lo[a.points].to_dict())}, "
                f"largest {_cmp_text(hi)} at {_label(hi[a.points].to_dict())}"
            )
        out.append(
            f"`{ma}` - {_name(mb)}: better at {(verdicts == 'better').sum()}, worse at "
            f"{(verdicts == 'worse').sum()}, unclear at {(verdicts == 'unclear').sum()} of "
            f"{len(g)} points; {extremes}."
        )
    if "rho" in _axes(a):
        out += _rho_findings(a)
    if by_size:
        early = c[(c["model_a"] == EARLY) & (c["model_b"] == PRODUCT)]
        for _, row in early.sort_values("n_train").iterrows():
            where = _label(row[a.points].to_dict())
            out.append(f"Early ({EARLY}) minus late ({PRODUCT}) at {where}: {_cmp_text(row)}.")
    out += _dependence_findings(a)
    if not out:
        out.append("No comparison: the table has no pair of models to compare.")
    return "## Findings\n\n" + "\n".join(f"- {t}" for t in out)


def _dependence_findings(a: Analysis) -> list[str]:
    """Pooled vs within-class Yule's Q and the CMI excess: at the point, or their extremes."""
    dep = a.summary[a.summary["model"] == PAIR]
    out = []
    for metric in ("yules_q", "yules_q_within", "cmi_excess"):
        d = dep[dep["metric"] == metric]
        if not len(d):
            continue
        what = PAIR_METRICS[metric]
        signed = metric == "cmi_excess"

        def at(r, signed=signed):
            where = f" at {_label(r[a.points].to_dict())}" if a.points else ""
            return f"{_ci(r['mean'], r['mean_lo'], r['mean_hi'], signed)} (n={int(r['n'])}){where}"

        if len(d) == 1:
            out.append(f"Weight and bias, {what}: {at(d.iloc[0])}.")
        else:
            lo, hi = d.loc[d["mean"].idxmin()], d.loc[d["mean"].idxmax()]
            out.append(f"Weight and bias, {what}: lowest {at(lo)}, highest {at(hi)}.")
    return out


def _rho_findings(a: Analysis) -> list[str]:
    out = []
    combined = [m for m, b in _pairs(a) if b == BEST]
    for model in combined:
        for _, t in trend(a, "rho", model).iterrows():
            other = {k: t[k] for k in a.points if k != "rho"}
            where = f" at {_label(other)}" if other else ""
            if t["p"] < ALPHA and t["lo"] > 0:
                word = "grows"
            elif t["p"] < ALPHA and t["hi"] < 0:
                word = "shrinks"
            else:
                word = "shows no clear trend"
            out.append(
                f"The gain of `{model}` over the best single model {word} as rho grows{where}: "
                f"slope {_ci(t['slope'], t['lo'], t['hi'], signed=True)} accuracy per unit rho "
                f"(per-seed least-squares slopes, n={int(t['n'])} seeds; sign-flip p="
                f"{_p(t['p'])}, not Holm-adjusted)."
            )
    c = a.comparisons
    low = c[(c["model_a"] == PRODUCT) & (c["model_b"] == "fused_sum")]
    low = low[low["rho"] == low["rho"].min()] if len(low) else low
    for _, row in low.iterrows():
        out.append(
            f"Product minus sum rule at {_label(row[a.points].to_dict())}: {_cmp_text(row)}."
        )
    return out


def _pairs(a: Analysis) -> list[tuple[str, str]]:
    c = a.comparisons
    return list(dict.fromkeys(zip(c["model_a"], c["model_b"], strict=True)))


def _models_table(a: Analysis) -> str:
    s = a.summary.set_index(["_point", "model", "metric"])
    metrics = [m for m in MODEL_METRICS if m in set(a.summary["metric"])]
    others = [m for m in metrics if m != "accuracy"]
    header = [*a.points, "model", "n", "diverged", "accuracy mean", "accuracy IQM"]
    header += [f"{MODEL_METRICS[m]} mean" for m in others]
    rows = []
    groups = a.done[a.done["model"] != PAIR].groupby(["_point", "model"], sort=False)
    not_ok = groups["status"].apply(lambda x: int((x != "ok").sum()))
    for p in a.point_table.index:
        for model in _ordered(a.done.loc[a.done["_point"] == p, "model"].unique()):
            row = [_value(a.point_table.loc[p, c]) for c in a.points]
            acc = s.loc[(p, model, "accuracy")] if (p, model, "accuracy") in s.index else None
            n = int(acc["n"]) if acc is not None else 0
            row += [model, str(n), str(not_ok.get((p, model), 0))]
            if acc is None:
                rows.append(row + ["n/a"] * (len(header) - len(row)))
                continue
            row += [
                _ci(acc["mean"], acc["mean_lo"], acc["mean_hi"]),
                _ci(acc["iqm"], acc["iqm_lo"], acc["iqm_hi"]),
            ]
            for m in others:
                if (p, model, m) not in s.index:
                    row.append("")
                    continue
                r = s.loc[(p, model, m)]
                extra = f" (n={int(r['n'])})" if int(r["n"]) != n else ""
                row.append(_ci(r["mean"], r["mean_lo"], r["mean_hi"]) + extra)
            rows.append(row)
    return _table(header, rows)


def _comparisons_table(a: Analysis) -> str:
    header = [*a.points, "a - b (accuracy)", "n", "mean difference", "P(a better)"]
    header += ["p Wilcoxon", "p sign-flip", "Holm p Wilcoxon", "Holm p sign-flip"]
    rows = []
    for _, r in a.comparisons.sort_values("_point", kind="stable").iterrows():
        rows.append(
            [
                *(_value(r[c]) for c in a.points),
                f"{r['model_a']} - {_name(r['model_b'], r['best'])}",
                str(int(r["n"])),
                _ci(r["diff"], r["diff_lo"], r["diff_hi"], signed=True),
                _ci(r["prob_improvement"], r["pi_lo"], r["pi_hi"]),
                _p(r["p_wilcoxon"]),
                _p(r["p_signflip"]),
                _p(r["p_wilcoxon_holm"]),
                _p(r["p_signflip_holm"]),
            ]
        )
    return _table(header, rows)


def _dependence_table(a: Analysis) -> str:
    s = a.summary[a.summary["model"] == PAIR].set_index(["_point", "metric"])
    metrics = [m for m in PAIR_METRICS if m in set(s.index.get_level_values("metric"))]
    header = [*a.points, "n", *(PAIR_METRICS[m] for m in metrics)]
    rows = []
    for p in a.point_table.index:
        have = [m for m in metrics if (p, m) in s.index]
        if not have:
            continue
        n = int(max(s.loc[(p, m), "n"] for m in have))
        row = [*(_value(a.point_table.loc[p, c]) for c in a.points), str(n)]
        for m in metrics:
            if (p, m) not in s.index:
                row.append("")
                continue
            r = s.loc[(p, m)]
            extra = f" (n={int(r['n'])})" if int(r["n"]) != n else ""
            row.append(_ci(r["mean"], r["mean_lo"], r["mean_hi"], m == "cmi_excess") + extra)
        rows.append(row)
    return _table(header, rows)


# -- figures ------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> None:
    results.write_atomic(path, lambda p: fig.savefig(p, format="png", dpi=110))


def _grid(n: int, width: float, height: float, ncols: int = 4) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = list(fig.subplots(nrows, ncols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _axes(a: Analysis) -> list[str]:
    """Numeric point columns (candidate x axes)."""
    t = a.point_table
    return [c for c in a.points if pd.api.types.is_numeric_dtype(t[c]) and t[c].nunique() > 1]


def _panels(df: pd.DataFrame, others: list[str]) -> tuple[list[tuple[dict, pd.DataFrame]], str]:
    """Groups of df by the other point columns, at most MAX_PANELS, and a note if cut."""
    groups = list(stats._groups(df, others))
    note = f" First {MAX_PANELS} of {len(groups)} panels." if len(groups) > MAX_PANELS else ""
    return groups[:MAX_PANELS], note


def _fig_accuracy(a: Analysis, out_dir: Path) -> str:
    ok = a.done[(a.done["status"] == "ok") & a.done["accuracy"].notna()]
    ok = ok[ok["model"] != PAIR]
    if not len(ok):
        return ""
    models = _ordered(ok["model"].unique())
    groups, note = _panels(ok, ["_point"])
    ncols = max(1, min(4, 16 // len(models)))  # about 16 boxes per row of panels
    fig, axes = _grid(len(groups), 0.6 * len(models) + 1.2, 3.8, ncols)
    jitter = np.random.default_rng(0)
    for ax, (key, sub) in zip(axes, groups, strict=True):
        data = [(m, sub.loc[sub["model"] == m, "accuracy"].to_numpy()) for m in models]
        data = [(m, x) for m, x in data if x.size]
        labels = [f"{m} (n={x.size})" for m, x in data]
        ax.boxplot([x for _, x in data], tick_labels=labels, showfliers=False)
        for i, (_, x) in enumerate(data):
            ax.scatter(i + 1 + jitter.uniform(-0.15, 0.15, x.size), x, s=5, alpha=0.4)
        ax.set_title(_label(a.point_table.loc[key["_point"], a.points].to_dict()), fontsize=9)
        ax.set_ylabel("test accuracy")
        ax.tick_params(axis="x", labelsize=7, labelrotation=35)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
    _save(fig, out_dir / "fig_accuracy.png")
    return (
        "![accuracy distributions](fig_accuracy.png)\n\n"
        "Accuracy per model (box: quartiles, whiskers 1.5 IQR; dots: ok seeds; n under each "
        f"box). Means and IQMs with CIs are in the table above.{note}"
    )


def _forest(ax, rows: pd.DataFrame, labels: list[str]) -> None:
    y = np.arange(len(rows))[::-1]
    err = [rows["diff"] - rows["diff_lo"], rows["diff_hi"] - rows["diff"]]
    ax.errorbar(rows["diff"], y, xerr=err, fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(y, labels, fontsize=7)
    ax.set_xlabel("accuracy difference a - b (95% CI)")


def _fig_differences(a: Analysis, out_dir: Path) -> str:
    c = a.comparisons
    if not len(c):
        return ""
    if not a.points:
        fig = Figure(figsize=(7, 0.45 * len(c) + 1.2), layout="constrained")
        ax = fig.subplots()
        labels = [f"{r.model_a} - {_name(r.model_b, r.best)} (n={r.n})" for r in c.itertuples()]
        _forest(ax, c, labels)
    else:
        pairs = _pairs(a)
        fig, axes = _grid(len(pairs), 5.5, 0.3 * len(a.point_table) + 1.5, ncols=2)
        for ax, (ma, mb) in zip(axes, pairs, strict=True):
            rows = c[(c["model_a"] == ma) & (c["model_b"] == mb)].sort_values("_point")
            labels = [f"{_label(r[a.points].to_dict())} (n={r['n']})" for _, r in rows.iterrows()]
            _forest(ax, rows, labels)
            ax.set_title(f"{ma} - {_name(mb)}", fontsize=9)
    _save(fig, out_dir / "fig_differences.png")
    return (
        "![paired differences](fig_differences.png)\n\n"
        "Paired accuracy differences (a - b, by seed) with 95% bootstrap CIs; n seeds in each "
        "label. Best single = whichever of weight and bias has the higher mean at that point."
    )


def _fig_rho(a: Analysis, out_dir: Path) -> str:
    c = a.comparisons[a.comparisons["model_b"] == BEST] if len(a.comparisons) else None
    if c is None or not len(c) or "rho" not in _axes(a):
        return ""
    groups, note = _panels(c, [p for p in a.points if p != "rho"])
    fig, axes = _grid(len(groups), 5.0, 3.6, ncols=3)
    for ax, (key, g) in zip(axes, groups, strict=True):
        for model, m in g.groupby("model_a", sort=False):
            m = m.sort_values("rho")
            n = f"n={m['n'].min()}" + (f"-{m['n'].max()}" if m["n"].nunique() > 1 else "")
            line = ax.plot(m["rho"], m["diff"], "o-", label=f"{model} ({n})")[0]
            ax.fill_between(m["rho"], m["diff_lo"], m["diff_hi"], alpha=0.2, color=line.get_color())
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("rho")
        ax.set_ylabel("accuracy gain over best single")
        ax.set_title(_label(key), fontsize=9)
        ax.legend(fontsize=7)
    _save(fig, out_dir / "fig_gain_rho.png")
    return (
        "![fusion gain against rho](fig_gain_rho.png)\n\n"
        "Accuracy gain of each combining model over the best single model against rho: mean "
        f"paired difference and its 95% bootstrap CI band, n seeds in the legend.{note}"
    )


def _heatmap_axes(a: Analysis) -> tuple[str, str] | None:
    numeric = _axes(a)
    ranked = [c for c in NOISE_AXES if c in numeric] + [c for c in numeric if c not in NOISE_AXES]
    return (ranked[0], ranked[1]) if len(ranked) >= 2 else None


def _fig_heatmap(a: Analysis, out_dir: Path) -> str:
    axes_xy = _heatmap_axes(a)
    c = a.comparisons
    c = c[(c["model_a"] == PRODUCT) & (c["model_b"] == BEST)] if len(c) else c
    if axes_xy is None or not len(c):
        return ""
    x_axis, y_axis = axes_xy
    groups, note = _panels(c, [p for p in a.points if p not in axes_xy])
    xs, ys = sorted(c[x_axis].unique()), sorted(c[y_axis].unique())
    fig, axes = _grid(len(groups), 1.1 * len(xs) + 2.0, 0.8 * len(ys) + 1.5, ncols=2)
    bound = max(float(np.nanmax(np.abs(c["diff"]))), 1e-9)
    norm = TwoSlopeNorm(0.0, -bound, bound)
    size = max(5, 9 - max(len(xs), len(ys)) // 2)
    for ax, (key, g) in zip(axes, groups, strict=True):
        cells = g.set_index([y_axis, x_axis])
        grid = np.full((len(ys), len(xs)), np.nan)
        for (yv, xv), r in cells.iterrows():
            i, j = ys.index(yv), xs.index(xv)
            grid[i, j] = r["diff"]
            text = f"{r['diff']:+.3f}\n[{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]\nn={r['n']}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size)
        image = ax.imshow(grid, cmap="RdBu", norm=norm, origin="lower", aspect="auto")
        ax.set_xticks(range(len(xs)), [_value(v) for v in xs])
        ax.set_yticks(range(len(ys)), [_value(v) for v in ys])
        ax.set_xlabel(x_axis)
        ax.set_ylabel(y_axis)
        ax.set_title(_label(key), fontsize=9)
        fig.colorbar(image, ax=ax, label=f"{PRODUCT} - best single")
    _save(fig, out_dir / "fig_gain_heatmap.png")
    return (
        "![fusion gain heatmap](fig_gain_heatmap.png)\n\n"
        f"Mean accuracy gain of `{PRODUCT}` over the best single model at each ({x_axis}, "
        f"{y_axis}) point, with its 95% bootstrap CI and seed count in the cell.{note}"
    )


def _fig_n_train(a: Analysis, out_dir: Path) -> str:
    if "n_train" not in _axes(a):
        return ""
    s = a.summary[(a.summary["metric"] == "accuracy")]
    s = s[s["model"].isin([EARLY, PRODUCT, *SINGLES, WB])]
    if not len(s):
        return ""
    c = a.comparisons
    diff = c[(c["model_a"] == EARLY) & (c["model_b"] == PRODUCT)] if len(c) else c
    others = [p for p in a.points if p != "n_train"]
    groups, note = _panels(s, others)
    rows = 2 if len(diff) else 1
    fig = Figure(figsize=(4.8 * len(groups), 3.4 * rows), layout="constrained")
    axes = fig.subplots(rows, len(groups), squeeze=False, sharex="col")
    log = s["n_train"].max() >= 4 * s["n_train"].min() > 0
    for j, (key, g) in enumerate(groups):
        ax = axes[0, j]
        for model in _ordered(g["model"].unique()):
            m = g[g["model"] == model].sort_values("n_train")
            n = f"n={m['n'].min()}" + (f"-{m['n'].max()}" if m["n"].nunique() > 1 else "")
            line = ax.plot(m["n_train"], m["mean"], "o-", label=f"{model} ({n})")[0]
            ax.fill_between(
                m["n_train"], m["mean_lo"], m["mean_hi"], alpha=0.2, color=line.get_color()
            )
        ax.set_ylabel("test accuracy")
        ax.set_title(_label(key), fontsize=9)
        ax.legend(fontsize=7)
        if rows == 2:
            d = diff.merge(pd.DataFrame([key]), on=others) if others else diff
            d = d.sort_values("n_train")
            axes[1, j].plot(d["n_train"], d["diff"], "o-", color="k")
            axes[1, j].fill_between(d["n_train"], d["diff_lo"], d["diff_hi"], alpha=0.2)
            axes[1, j].axhline(0.0, color="grey", lw=0.8, ls="--")
            axes[1, j].set_ylabel(f"{EARLY} - {PRODUCT} (paired)")
        for ax in axes[:, j]:
            if log:
                ax.set_xscale("log")
            sizes = sorted(g["n_train"].unique())
            ax.set_xticks(sizes, [_value(v) for v in sizes])
            ax.minorticks_off()
        axes[-1, j].set_xlabel("n_train")
    _save(fig, out_dir / "fig_n_train.png")
    return (
        "![early vs late fusion against training-set size](fig_n_train.png)\n\n"
        "Mean test accuracy with 95% bootstrap CI bands against the training-set size (n seeds "
        f"in the legend); bottom: the paired difference early ({EARLY}) minus late ({PRODUCT}) "
        f"fusion with its CI, where both exist.{note}"
    )


def _fig_reliability(a: Analysis, reliability: pd.DataFrame | None, out_dir: Path) -> str:
    if reliability is None or not len(reliability):
        return (
            f"No {RELIABILITY_FILE} in the run (or in any job): no reliability diagrams. "
            "Per-seed ECE with CIs is in the model table when seeds.csv has it."
        )
    sums = ["count", "conf_sum", "correct_sum"]
    keys = [c for c in a.points if c in reliability] + ["model", "bin"]
    rel = reliability.groupby(keys, dropna=False, sort=True)[sums].sum().reset_index()
    rel = rel[(rel["count"] > 0) & (rel["model"] != PAIR)]
    drawn = set(rel["model"])
    models = [m for m in _ordered([*a.done["model"].unique(), *drawn]) if m in drawn]
    fig, axes = _grid(len(models), 3.6, 3.6)
    lines = [c for c in a.points if c in rel]
    ok = a.done[a.done["status"] == "ok"]
    for ax, model in zip(axes, models, strict=True):
        groups = list(stats._groups(rel[rel["model"] == model], lines))
        for key, g in groups[:MAX_PANELS]:
            runs = ok[ok["model"] == model]
            for k, v in key.items():
                runs = runs[runs[k].isna()] if pd.isna(v) else runs[runs[k] == v]
            label = f"{_label(key)} (n={len(runs)})" if lines else f"n={len(runs)}"
            conf, acc = g["conf_sum"] / g["count"], g["correct_sum"] / g["count"]
            ax.plot(conf, acc, "o-", ms=3, label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean confidence in bin", ylabel="accuracy in bin")
        ax.set_title(model, fontsize=9)
        if len(groups) <= 8:
            ax.legend(fontsize=6)
    _save(fig, out_dir / "fig_reliability.png")
    cut = f" Lines for the first {MAX_PANELS} points only." if len(groups) > MAX_PANELS else ""
    return (
        "![reliability diagrams](fig_reliability.png)\n\n"
        "Reliability diagrams: per confidence bin (15 equal-width bins of the top-class "
        "probability), accuracy against mean confidence, bins summed over seeds; n in the legend "
        "= ok runs (seeds, and points pooled into a line) in seeds.csv. Pooled counts have no "
        "CI; the per-seed ECE with its CI is in the model table. Dashed: perfect calibration." + cut
    )


# -- the report ---------------------------------------------------------------------------


def build_report(
    long: pd.DataFrame,
    out_dir: Path,
    title: str,
    reliability: pd.DataFrame | None = None,
    notes: Sequence[str] = (),
    views: pd.DataFrame | None = None,
) -> Path:
    """Write out_dir/report.md and its PNG figures from a long table; returns report.md's path.

    `long` is seeds.csv's table (optionally with job/job_status and override columns, as from
    aggregate.collect); `reliability` has columns model, bin, count, conf_sum, correct_sum
    (and any point columns); `notes` are extra lines for the header; `views` is a run's
    dependence.csv (the two views' dependence given the label, per seed and point).
    """
    out_dir = Path(out_dir)
    a = analyse(long)
    parts = [_header(a, title, notes)]
    if not len(a.done):
        parts.append("No complete results: nothing to summarise.")
    else:
        parts.append(_findings(a))
        parts += ["## Accuracy and calibration per model", _models_table(a)]
        parts.append(_fig_accuracy(a, out_dir))
        if len(a.comparisons):
            parts += ["## Paired comparisons", _comparisons_table(a)]
            parts.append(_fig_differences(a, out_dir))
        figures = {
            "## Fusion gain against rho": _fig_rho(a, out_dir),
            "## Fusion gain over the noise grid": _fig_heatmap(a, out_dir),
            "## Early vs late fusion against training-set size": _fig_n_train(a, out_dir),
        }
        parts += [x for heading, fig in figures.items() if fig for x in (heading, fig)]
        if (a.done["model"] == PAIR).any():
            parts += [
                "## Dependence between weight and bias",
                "Per seed, from the two models' test predictions: CMI - null is the plug-in "
                "conditional mutual information of the predictions given the label minus its "
                "level after within-class shuffles; Q and r pooled vs within class; the oracle "
                "(either model right) is a ceiling for any fusion rule.",
                _dependence_table(a),
            ]
        if views is not None and len(views):
            parts += [
                "## Dependence between the two views (the data)",
                "Per seed, on the training rows: Spearman correlation between the views' "
                "columns within each class (matching columns, and the mean abs(r) over all column "
                "pairs), the kNN conditional mutual information given the label minus its level "
                "after within-class shuffles, and a stratified permutation test (view 2 shuffled "
                "within class; statistic = mean squared within-class Spearman).",
                _views_table(views),
            ]
        parts += ["## Reliability", _fig_reliability(a, reliability, out_dir)]
    text = "\n\n".join(p for p in parts if p) + "\n"
    path = out_dir / REPORT_FILE
    results.write_atomic(path, lambda p: p.write_text(text))
    return path


def _views_table(views: pd.DataFrame) -> str:
    axes = [c for c in views.columns if c in aggregate.point_columns(views.assign(model="v"))]
    head = [
        *axes,
        "n",
        "Spearman within (matching)",
        "mean abs Spearman within",
        "mean abs Spearman pooled",
        "CMI - null (nats)",
        "median perm p",
        "seeds p < 0.05",
    ]
    rows = []
    groups = views.groupby(axes, sort=False) if axes else [((), views)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"{v:g}" for v in key] + [str(len(g))]
        cols = [
            g.get("spearman_within_matching"),
            g["spearman_within_mean_abs"],
            g["spearman_pooled_mean_abs"],
            g["cmi_mean"] - g["cmi_null"],
        ]
        for col in cols:
            if col is None:
                cells.append("")
                continue
            d = stats.describe(col.to_numpy())
            cells.append(f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]")
        cells += [f"{g.perm_p.median():.3g}", f"{(g.perm_p < 0.05).sum()}/{len(g)}"]
        rows.append(cells)
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def read_run(run_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """(long table, reliability or None, header notes) of a run dir."""
    run_dir = Path(run_dir)
    long = results.read_table(run_dir / results.SEEDS_FILE, results.SEEDS_COLUMNS)
    notes = []
    if (run_dir / results.SUMMARY_FILE).is_file():
        long.insert(0, "task", results.read_summary(run_dir).get("task"))
    else:
        notes.append(f"{results.SUMMARY_FILE} is absent: the run may not have finished.")
    rel = run_dir / RELIABILITY_FILE
    return long, results.read_table(rel) if rel.is_file() else None, notes


def read_sweep(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """(long table from aggregate.collect, reliability of complete jobs or None, notes)."""

    sweep_dir = Path(sweep_dir)
    long = aggregate.collect(sweep_dir)
    frames = []
    for overrides, job_dir in aggregate.job_dirs(sweep_dir).items():
        if results.is_complete(job_dir) and (job_dir / RELIABILITY_FILE).is_file():
            rel = results.read_table(job_dir / RELIABILITY_FILE)
            frames.append(rel.assign(**aggregate._parse(list(overrides))))
    return long, pd.concat(frames, ignore_index=True) if frames else None, []


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="prtm-report", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a run dir (seeds.csv) or a sweep dir")
    args = parser.parse_args(argv)
    d = args.dir
    try:
        if not d.is_dir():
            raise results.InputError(f"{d} is not a directory")
        if (d / MULTIRUN_FILE).is_file():
            kind, (long, reliability, notes) = "sweep", read_sweep(d)
        elif (d / results.SEEDS_FILE).is_file():
            kind, (long, reliability, notes) = "run", read_run(d)
        else:
            raise results.InputError(
                f"{d} has neither {results.SEEDS_FILE} (a run) nor {MULTIRUN_FILE} (a sweep)"
            )
        views = d / results.DEPENDENCE_FILE
        views = results.read_table(views) if views.is_file() else None
    except (FileNotFoundError, results.InputError) as exc:
        print(f"prtm-report: error: {exc}", file=sys.stderr)
        sys.exit(2)
    path = build_report(long, d, f"Report: {kind} `{d}`", reliability, notes, views)
    print(path)
