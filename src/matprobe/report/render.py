"""`matprobe report RUN_DIR`: report.md, a self-contained report.html and PNG figures.

The report is built from the run directory's files alone (run.json, MI results, check
results, results.csv, significance.csv). Its summary answers four questions with numbers
taken from those files: which MAT factor Z encodes most; whether Related training raised
I(Z;T|M,A) (and the answer information on the target) over Unrelated; whether observed
errors respect Fano; whether the Related–Unrelated difference is significant.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from matprobe.data.splits import relation
from matprobe.errors import MatprobeError
from matprobe.io import write_text_atomic
from matprobe.report import figures


class ReportError(MatprobeError):
    """A run directory lacks what the report needs."""


# ------------------------------------------------------------------------------ loading
@dataclass
class RunData:
    run: Path
    summary: dict
    terms: pd.DataFrame
    strata: pd.DataFrame
    pac: pd.DataFrame
    results: pd.DataFrame
    significance: pd.DataFrame | None
    composition: pd.DataFrame


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"{path} is missing; rerun the pipeline (`matprobe run` / `matprobe demo`)") from None


def _resolve(run: Path, p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() or path.exists() else run / path


def load_run(run_dir: str | Path) -> RunData:
    run = Path(run_dir)
    summary = _read_json(run / "run.json")
    if summary.get("kind") != "matprobe.run":
        raise ReportError(f"{run / 'run.json'} is not a matprobe run summary")
    target = tuple(summary["target"])
    term_rows, strata_rows, pac_rows = [], [], []
    from matprobe.pipeline import CONDITION_NAMES

    for ck in summary["checkpoints"]:
        cond = CONDITION_NAMES.get(ck["condition"], ck["condition"])
        base = {"checkpoint": ck["name"], "condition": cond, "seed": ck["seed"]}
        for lp, mi_path in ck["mi"].items():
            doc = _read_json(_resolve(run, mi_path))
            for t in doc["terms"]:
                term_rows.append({**base, "layer_pool": lp, "term": t["term"], "estimator": t["estimator"],
                                  "estimate": t["estimate"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                                  "h_upper": t["h_upper"], "n": t["n"], "main": mi_path == ck["main_mi"]})
        check = _read_json(_resolve(run, ck["check"]))
        for s in check["strata"]:
            g = s["given"]
            mi = s.get("mi") or {}
            strata_rows.append({
                **base, "stratum": f"{g.get('modality')} / {g.get('anatomy')} / {g.get('task')}",
                "is_target": (g.get("modality"), g.get("anatomy"), g.get("task")) == target,
                "n": s["n"], "error": s["error"], "err_low": s["error_ci"][0], "err_high": s["error_ci"][1],
                "h_y": s["h_y"], "classes": s["classes"], "mi": mi.get("estimate", np.nan),
                "mi_low": mi.get("ci_low", np.nan), "mi_high": mi.get("ci_high", np.nan),
                "error_floor": s.get("error_floor"), "fano_mi_lower": s.get("fano_mi_lower"),
                "error_respects_floor": s.get("error_respects_floor"), "mi_meets_bound": s.get("mi_meets_bound"),
            })
        p = check["pac"]
        obs = {**base, "error": p["error"], "err_low": p["error_ci"][0], "err_high": p["error_ci"][1],
               "m": p["m"], "heldout": p["heldout"]}
        pac_rows.append({**obs, "bound": "test-set (held-out)", "value": p["test_set_bound"], "vacuous": False})
        for b in p.get("bounds", []):
            pac_rows.append({**obs, "bound": b["name"], "value": b["value"], "vacuous": b["vacuous"]})
    results = pd.read_csv(run / summary["results"])
    sig = None
    if summary.get("significance"):
        sig = pd.read_csv(run / summary["significance"])
    from matprobe.data import load_dataset

    ds = load_dataset(_resolve(run, summary["manifest"]))
    counts = ds.frame().groupby(["modality", "anatomy", "task"]).size().rename("n").reset_index()
    counts["relation"] = [relation((m, a, t), target) for m, a, t in
                          zip(counts["modality"], counts["anatomy"], counts["task"])]
    order = {"target": 0, "related": 1, "unrelated": 2, "zero-overlap": 3}
    counts = counts.sort_values(by="relation", key=lambda s: s.map(order)).reset_index(drop=True)
    return RunData(run, summary, pd.DataFrame(term_rows), pd.DataFrame(strata_rows), pd.DataFrame(pac_rows),
                   results, sig, counts)


# ------------------------------------------------------------------------------ findings
def _ci(lo: float, hi: float) -> str:
    return f"[{lo:.3f}, {hi:.3f}]"


def findings(data: RunData) -> dict:
    """The numbers behind the summary's four answers (also written to findings.json)."""
    out: dict = {}
    main = data.terms[data.terms["main"]]
    per_term = main.groupby("term").agg(estimate=("estimate", "mean"), h_upper=("h_upper", "mean"),
                                        n_ckpt=("checkpoint", "nunique")).reset_index()
    factor_terms = per_term[~per_term["term"].str.contains("label")]
    best = factor_terms.sort_values("estimate", ascending=False).iloc[0]
    out["most_encoded"] = {"term": best["term"], "mean_estimate_nats": float(best["estimate"]),
                           "mean_h_upper_nats": float(best["h_upper"]),
                           "all_terms": {r.term: float(r.estimate) for r in per_term.itertuples()}}
    by_cond = main.groupby(["term", "condition"])["estimate"].mean().unstack()
    out["term_by_condition"] = {t: {c: float(v) for c, v in row.items()} for t, row in by_cond.iterrows()}
    st = data.strata.dropna(subset=["mi"])
    out["fano"] = {
        "strata": int(len(st)),
        "error_respects_floor": {k: int(v) for k, v in st["error_respects_floor"].value_counts().items()},
        "mi_meets_bound": {k: int(v) for k, v in st["mi_meets_bound"].value_counts().items()},
    }
    acc = data.results[data.results["metric"] == "accuracy"].groupby("condition")["value"].agg(["mean", "std", "count"])
    out["target_accuracy"] = {c: {"mean": float(r["mean"]), "sd": float(r["std"]) if r["count"] > 1 else None,
                                  "n_seeds": int(r["count"])} for c, r in acc.iterrows()}
    if data.significance is not None:
        out["significance"] = [
            {"comparison": r["comparison"], "metric": r["metric"], "mean_diff": float(r["mean_diff"]),
             "ci": [float(r["ci_low"]), float(r["ci_high"])], "t": float(r["t"]), "df": float(r["df"]),
             "p": float(r["p"]), "p_holm": float(r["p_holm"]), "n_pairs": int(r["n_pairs"]),
             "perm_p": float(r["perm_p"]), "warning": "" if pd.isna(r.get("warning")) else str(r["warning"])}
            for _, r in data.significance.iterrows()
        ]
    return out


def summary_lines(data: RunData, f: dict) -> list[str]:
    target = " / ".join(data.summary["target"])
    m = f["most_encoded"]
    lines = [
        f"**Which MAT factor is most encoded?** {m['term']}, {m['mean_estimate_nats']:.3f} nats on average "
        f"over the checkpoints (its entropy cap is {m['mean_h_upper_nats']:.3f} nats). All chain terms "
        "(mean over checkpoints, nats): " + "; ".join(f"{k} = {v:.3f}" for k, v in m["all_terms"].items()) + ".",
    ]
    tbc = f["term_by_condition"]
    t_term = next((t for t in tbc if t.startswith("I(Z;task|")), None)
    sig = {(s["comparison"], s["metric"]): s for s in f.get("significance", [])}
    if t_term and {"Related", "Unrelated"} <= set(tbc[t_term]):
        r, u = tbc[t_term]["Related"], tbc[t_term]["Unrelated"]
        s = sig.get(("Related vs. Unrelated", f"{t_term} nats"))
        test = (f" (paired over seeds: Δ = {s['mean_diff']:.3f} nats, 95% CI {_ci(*s['ci'])}, "
                f"t({s['df']:.0f}) = {s['t']:.2f}, p = {s['p']:.3g})") if s else ""
        main = data.terms[data.terms["main"] & (data.terms["term"] == t_term)]
        cap = float(main["h_upper"].max())
        at_cap = min(r, u) >= 0.9 * cap
        lines.append(f"**Did Related training raise I(Z;T|M,A) over Unrelated?** Related {r:.3f} vs "
                     f"Unrelated {u:.3f} nats{test}; its cap H(T|M,A) is {cap:.3f} nats."
                     + (" Both are within 10% of the cap: when the question text names the task, every "
                        "checkpoint's Z carries it and this term cannot separate the conditions."
                        if at_cap else ""))
    y_key = "I(Z;Y|target) nats"
    first = data.results["target"] == ",".join(data.summary["target"])
    y = data.results[(data.results["metric"] == y_key) & first].groupby("condition")["value"].mean()
    if {"Related", "Unrelated"} <= set(y.index):
        s = sig.get(("Related vs. Unrelated", y_key))
        test = (f"; Δ = {s['mean_diff']:.3f} nats, 95% CI {_ci(*s['ci'])}, p = {s['p']:.3g}") if s else ""
        lines.append(f"Information about the answer inside the held-out target ({target}), "
                     f"I(Z;Y | target): Related {y['Related']:.3f} vs Unrelated {y['Unrelated']:.3f} nats{test}.")
    fa = f["fano"]
    resp = fa["error_respects_floor"]
    meets = fa["mi_meets_bound"]
    lines.append(
        f"**Do the observed errors respect Fano?** Over {fa['strata']} (checkpoint, stratum) cells, the "
        f"observed error respects the floor implied by Î in {resp.get('yes', 0)}, only within the "
        f"intervals in {resp.get('within CI', 0)}, and not in {resp.get('NO', 0)}; Î meets the information "
        f"Fano demands of the observed error in {meets.get('yes', 0)} (within CI {meets.get('within CI', 0)}, "
        f"no {meets.get('NO', 0)}).")
    acc = f["target_accuracy"]
    s = sig.get(("Related vs. Unrelated", "accuracy"))
    if s:
        head = (f"**Is the Related–Unrelated difference significant?** Accuracy on the held-out target: "
                f"Related {acc['Related']['mean']:.3f}, Unrelated {acc['Unrelated']['mean']:.3f} "
                f"({s['n_pairs']} seeds each, paired by seed), Δ = {s['mean_diff']:.3f}. ")
        floor = 2.0 ** (1 - s["n_pairs"])
        if not np.isfinite(s["t"]) or not np.isfinite(s["p"]):
            body = ("Every paired difference is the same, so the t-test is degenerate (zero variance) and "
                    f"says nothing; the exact sign-flip test gives p = {s['perm_p']:.3g}: not significant.")
        else:
            verdict = "significant" if s["p_holm"] < 0.05 else "not significant"
            body = (f"Paired t-test t({s['df']:.0f}) = {s['t']:.2f}, p = {s['p']:.3g}, Holm-adjusted "
                    f"{s['p_holm']:.3g} (95% CI of Δ {_ci(*s['ci'])}): {verdict} at α = 0.05. The exact "
                    f"sign-flip test gives p = {s['perm_p']:.3g}; with {s['n_pairs']} pairs it cannot go "
                    f"below {floor:.3g}, so any verdict here rests on the t-test's normality assumption.")
        lines.append(head + body)
    lines.extend(_ciou_lines(data, sig))
    return lines


def _ciou_lines(data: RunData, sig: dict) -> list[str]:
    """cIoU (Σ I / Σ U per run) on segmentation targets, Related vs Unrelated."""
    runs = data.results[data.results["metric"] == "cIoU"]
    if runs.empty:
        return []
    out = []
    for target, sub in runs.groupby("target"):
        by = sub.groupby("condition")["value"].agg(["mean", "count"])
        parts = ", ".join(f"{c} {r['mean']:.3f} ({int(r['count'])} seeds)" for c, r in by.iterrows())
        s = sig.get(("Related vs. Unrelated", "cIoU"))
        test = (f"; paired by seed Δ = {s['mean_diff']:.3f}, 95% CI {_ci(*s['ci'])}, t({s['df']:.0f}) = "
                f"{s['t']:.2f}, p = {s['p']:.3g}") if s and np.isfinite(s["t"]) else ""
        out.append(f"**Segmentation target ({target.replace(',', ' / ')}):** cIoU = Σ intersection / Σ union "
                   f"over its items (each a choice among four candidate masks): {parts}{test}.")
    return out


# ------------------------------------------------------------------------------ rendering
def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    out = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        out.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
    return "\n".join(out)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def _md_cell(v) -> str:
    return _cell(v).replace("|", "\\|")  # I(Z;A|M) would otherwise split the column


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _md_inline_to_html(text: str) -> str:
    import re

    esc = html.escape(text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", esc)


class Doc:
    """Blocks rendered both to Markdown and to self-contained HTML (figures inlined as base64)."""

    def __init__(self, run: Path):
        self.run = run
        self.md: list[str] = []
        self.html: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.md.append("#" * level + " " + text)
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def para(self, text: str) -> None:
        self.md.append(text)
        self.html.append(f"<p>{_md_inline_to_html(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {i}" for i in items))
        self.html.append("<ul>" + "".join(f"<li>{_md_inline_to_html(i)}</li>" for i in items) + "</ul>")

    def table(self, frame: pd.DataFrame) -> None:
        self.md.append(_md_table(frame))
        self.html.append(_html_table(frame))

    def figure(self, rel: str, caption: str) -> None:
        self.md.append(f"![{caption.split('.')[0]}]({rel})\n\n*{caption}*")
        data = base64.b64encode((self.run / rel).read_bytes()).decode()
        self.html.append(f'<figure><img alt="{html.escape(rel)}" src="data:image/png;base64,{data}">'
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def markdown(self) -> str:
        return "\n\n".join(self.md) + "\n"

    def html_page(self, title: str) -> str:
        style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;color:#222;line-height:1.45}"
                 "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}"
                 "td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#eee}"
                 "img{max-width:100%}figcaption{font-size:0.88em;color:#444;margin-top:0.3em}"
                 "figure{margin:1.2em 0}")
        return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>" + "\n".join(self.html) + "</body></html>\n")


def write_report(run_dir: str | Path) -> dict[str, Path]:
    """Write figures, report.md, report.html and findings.json into the run directory."""
    data = load_run(run_dir)
    run = data.run
    fig_dir = run / "figures"
    found = findings(data)
    write_text_atomic(run / "findings.json", json.dumps(found, indent=2))
    doc = Doc(run)
    target = " / ".join(data.summary["target"])
    doc.heading("matprobe report", 1)
    doc.para(f"Run `{run}`: {len(data.summary['checkpoints'])} checkpoints, {data.summary['n_samples']} "
             f"samples, held-out target triplet **{target}**. Information is in nats; intervals are 90% "
             "for MI estimates and 95% for error rates and mean differences.")
    doc.heading("Summary")
    doc.bullets(summary_lines(data, found))

    doc.heading("Dataset")
    cap = figures.composition(data.composition, fig_dir / "composition.png")
    doc.figure("figures/composition.png", cap)
    sizes = data.summary.get("train_sizes", {})
    if sizes:
        doc.para("Training samples per condition (equalised): "
                 + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".")

    doc.heading("MI chain")
    cap = figures.mi_chain_bars(data.terms, fig_dir / "mi_chain.png")
    doc.figure("figures/mi_chain.png", cap)
    main = data.terms[data.terms["main"]]
    tbl = main.assign(interval=[_ci(lo, hi) for lo, hi in zip(main["ci_low"], main["ci_high"])])[
        ["checkpoint", "condition", "term", "estimate", "interval", "h_upper", "n"]]
    doc.table(tbl)

    doc.heading("Information vs behaviour")
    cap = figures.mi_vs_accuracy(data.strata.dropna(subset=["mi"]), fig_dir / "mi_vs_accuracy.png")
    doc.figure("figures/mi_vs_accuracy.png", cap)

    doc.heading("Fano's inequality against observed errors")
    cap = figures.fano_curve(data.strata.dropna(subset=["mi"]), fig_dir / "fano.png")
    doc.figure("figures/fano.png", cap)
    st = data.strata[["checkpoint", "stratum", "n", "error", "mi", "error_floor", "error_respects_floor",
                      "fano_mi_lower", "mi_meets_bound"]]
    doc.table(st)

    doc.heading("PAC bounds against observed error")
    cap = figures.pac_bounds(data.pac, fig_dir / "pac.png")
    doc.figure("figures/pac.png", cap)
    doc.table(data.pac[["checkpoint", "bound", "value", "vacuous", "error", "m"]])

    doc.heading("Significance (CrossMed Table IX layout)")
    if data.significance is not None:
        from matprobe.stats.formatting import table_ix

        doc.table(table_ix(data.significance).reset_index())
        cols = ["comparison", "metric", "n_pairs", "mean_diff", "ci_low", "ci_high", "t", "df", "p",
                "wilcoxon_p", "perm_p", "p_holm", "unit"]
        doc.table(data.significance[[c for c in cols if c in data.significance.columns]])
        doc.para("Paired by seed (the unit this design supports); p-values from the paired t-test, "
                 "Holm-adjusted over the table. With few seeds, exact tests cannot reach small p.")
    else:
        doc.para("Not computed: the run needs Related and another condition with at least two seeds each.")

    doc.heading("Per-run results")
    if "item" in data.results and data.results["item"].notna().any():
        n_items = int(data.results["item"].notna().sum())
        doc.para(f"Run-level rows; the {n_items} item-level rows (intersection / union per segmentation item) "
                 "are in results.csv.")
        doc.table(data.results[data.results["item"].isna()].drop(columns=["item"]))
    else:
        doc.table(data.results)
    doc.heading("Provenance")
    secs = data.summary.get("seconds", {})
    doc.para("Wall time per step (s): " + ", ".join(f"{k} {v:.1f}" for k, v in secs.items()) + ".")
    doc.para("Configuration: `" + json.dumps(data.summary["config"]) + "`")

    md_path, html_path = run / "report.md", run / "report.html"
    write_text_atomic(md_path, doc.markdown())
    write_text_atomic(html_path, doc.html_page(f"matprobe report: {target}"))
    return {"markdown": md_path, "html": html_path, "figures": fig_dir, "findings": run / "findings.json"}
