"""A report never mixes a results.csv replaced after the run with the significance.csv computed
from the old one (found by a study that put its own per-run table into a run directory: the
summary read the new means beside the old Δ, t and p)."""

from __future__ import annotations

import json
import shutil

import pandas as pd
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.rundir import RunSummary, file_sha256, stale_significance


def _run(tmp_path, digests: bool = True):
    (tmp_path / "results.csv").write_text("condition,target,seed,metric,value\nRelated,t,0,accuracy,0.5\n")
    (tmp_path / "significance.csv").write_text("comparison,metric,p\nRelated vs. Unrelated,accuracy,0.2\n")
    sha = {n: file_sha256(tmp_path / n) for n in ("results.csv", "significance.csv")} if digests else {}
    return RunSummary(target=["CT", "Lung", "COVID"], checkpoints=[], results="results.csv",
                      significance="significance.csv", tables_sha256=sha)


def test_a_results_table_replaced_after_the_run_is_told_apart(tmp_path):
    summary = _run(tmp_path)
    res, sig = tmp_path / "results.csv", tmp_path / "significance.csv"
    assert stale_significance(summary, res, sig) is None  # as the run wrote them
    res.write_text(res.read_text().replace("0.5", "0.81"))
    why = stale_significance(summary, res, sig)
    assert why is not None and f"matprobe significance {res} --out {sig}" in why
    sig.write_text(sig.read_text().replace("0.2", "0.01"))  # recomputed by the user: consistent again
    assert stale_significance(summary, res, sig) is None
    # a run from before the digests: nothing to tell
    old = tmp_path / "old"
    old.mkdir()
    older = _run(old, digests=False)
    (old / "results.csv").write_text("changed")
    assert stale_significance(older, old / "results.csv", old / "significance.csv") is None


def test_report_refuses_a_replaced_results_table_until_significance_is_recomputed(quick_demo, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(quick_demo, run, symlinks=True)
    summary = json.loads((run / "run.json").read_text())
    assert set(summary["tables_sha256"]) == {"results.csv", "significance.csv"}
    results = pd.read_csv(run / "results.csv")
    acc = results["metric"] == "accuracy"
    results.loc[acc, "value"] = (results.loc[acc, "value"] + 0.1).clip(upper=1.0)  # the user's own numbers
    results.to_csv(run / "results.csv", index=False)
    before = (run / "report.md").read_text()
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 2, res.output
    assert "changed after the run computed significance.csv from it" in " ".join(res.output.split())
    assert (run / "report.md").read_text() == before  # the previous report kept
    res = CliRunner().invoke(app, ["significance", str(run / "results.csv"), "--out", str(run / "significance.csv")])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 0, res.output
