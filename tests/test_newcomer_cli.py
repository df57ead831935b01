"""What a newcomer runs: full-width output off a terminal, --format to stdout, check from an
M,A,T chain, significance defaults on demo-shaped results, progress lines, README vs --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from conftest import synthetic_mat_store
from matprobe.cli import app

ROOT = Path(__file__).resolve().parents[1]
LONG = "a_rather_long_folder_name_so_the_table_exceeds_eighty_columns"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two modalities x two anatomies x two tasks, a label that Z carries, the model's answers."""
    return synthetic_mat_store(tmp_path_factory.mktemp(LONG) / "store.h5", seed=3, n=320, d=6, accuracy=0.85,
                               signal=[("modality", "CT", 2.0), ("anatomy", "Lung", 1.5), ("task", "Det", 1.0),
                                       ("label", 1, 2.0)])


# the CLI plumbing is under test here, not the estimator: KSG is ~15x cheaper than the probe
FAST = ["--estimator", "ksg", "--folds", "3", "--pca", "0"]


def test_mi_off_tty_prints_full_term_names(store, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "60"}
    out = tmp_path / "mi.json"
    proc = subprocess.run([sys.executable, "-m", "matprobe", "mi", str(store), "--factors",
                           "modality,anatomy,task", "--layer", "4", *FAST, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)  # stdout is a pipe
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    lines = proc.stdout.splitlines()
    for term in doc["terms"]:
        # the whole term name and its numbers on one table line, as the JSON has them
        row = next(line for line in lines if f" {term['term']} " in line)
        assert f"{term['estimate']:.3f}" in row
        assert f"[{term['ci_low']:.3f}, {term['ci_high']:.3f}]" in row
    assert "I(Z;task|modality,anatomy)" in proc.stdout
    assert str(store) in proc.stdout  # the title is not cut either
    assert "mi: " in proc.stderr  # progress lines off a terminal go to stderr, not into the table
    quiet = subprocess.run([sys.executable, "-m", "matprobe", "--quiet", "mi", str(store), "--factors", "M,A",
                            "--layer", "4", *FAST, "--format", "csv"], capture_output=True, text=True, env=env,
                           timeout=600)
    assert quiet.returncode == 0 and quiet.stderr == ""
    table = pd.read_csv(__import__("io").StringIO(quiet.stdout))
    assert list(table.term[:2]) == ["I(Z;M)", "I(Z;A|M)"] and {"ci_low", "ci_high", "bound", "unit"} <= set(table)


def test_check_from_an_mat_chain_estimates_the_y_term(store, tmp_path):
    runner = CliRunner()
    mi = tmp_path / "mi.json"
    r = runner.invoke(app, ["mi", str(store), "--factors", "M,A,T", "--layer", "4", *FAST, "--out", str(mi)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "check.json"
    r = runner.invoke(app, ["check", str(store), "--mi", str(mi), "--out", str(out), "--format", "json"])
    assert r.exit_code == 0, r.output
    shown = json.loads(r.stdout)
    doc = json.loads(out.read_text())
    # no answer index in this store, so Y is the label column, and the output says so
    assert doc["target"] == "label" and doc["target_source"] == "the default, as no answer index is stored"
    assert "Y = label" in shown[0]["title"] and "no answer index is stored" in shown[0]["title"]
    # the estimated term is also held against the aggregate bound (stratum average)
    (term,) = doc["aggregate"]["terms"]
    assert term["term"] == "I(Z;label|modality,anatomy,task)" and term["compared_with"] == "stratum average"
    assert any("estimated by check" in note for note in shown[0]["footnotes"])
    settings = doc["estimated_here"]["settings"]
    assert (settings["estimator"], settings["folds"], settings["pca"]) == ("ksg", 3, None)
    strata = doc["strata"]
    assert len(strata) == 8 and all(s["mi"] is not None for s in strata)
    for s in strata:
        assert s["mi"]["ci_low"] <= s["mi"]["estimate"] <= s["mi"]["ci_high"]
        assert s["error_respects_floor"] in ("yes", "within CI", "NO")
    # the estimate agrees with the chain the README would have you run (same settings)
    mi_y = tmp_path / "mi_y.json"
    r = runner.invoke(app, ["mi", str(store), "--factors", "M,A,T,Y", "--layer", "4", *FAST, "--out", str(mi_y)])
    assert r.exit_code == 0, r.output
    ref = {tuple(e["given"].values()): e for e in json.loads(mi_y.read_text())["strata"]
           if e["target"] in ("Y", "label")}
    for s in strata:
        e = ref[tuple(s["given"].values())]
        width = (e["ci_high"] - e["ci_low"]) + (s["mi"]["ci_high"] - s["mi"]["ci_low"])
        assert abs(s["mi"]["estimate"] - e["estimate"]) <= width
    # the typed result reads the file back unchanged (older files lack the new keys), and
    # converts units for display only
    from matprobe.theory.check import CheckResult, load_check

    res = load_check(out)
    assert res.to_dict() == doc
    old = {k: v for k, v in doc.items() if k not in ("target_source", "estimated_here")}
    assert CheckResult.from_dict(old).to_dict() == old
    bits = res.to_table("bits").records()
    assert bits[0]["h_y"] == pytest.approx(strata[0]["h_y"] / np.log(2))
    assert bits[0]["mi"] == pytest.approx(strata[0]["mi"]["estimate"] / np.log(2))
    # --no-estimate says which command fills it, and leaves Î empty
    r = runner.invoke(app, ["check", str(store), "--mi", str(mi), "--out", str(out), "--no-estimate",
                            "--target", "label"])
    assert r.exit_code == 0, r.output
    assert "--factors M,A,T,Y --layer 4 --pool last" in " ".join(r.stdout.split())
    assert "Y = label" in r.stdout and "from --target" in r.stdout
    assert all(s["mi"] is None for s in json.loads(out.read_text())["strata"])


def test_significance_defaults_on_demo_shaped_results(tmp_path):
    """The demo's results.csv: two conditions, one target, three seeds."""
    rng = np.random.default_rng(1)
    rows = [{"condition": c, "target": "MRI,Brain,Exposure", "seed": s, "metric": met,
             "value": v + rng.normal(0, 0.02)}
            for c, v in (("Related", 0.3), ("Unrelated", 0.2)) for s in range(3)
            for met in ("accuracy", "I(Z;anatomy|modality) nats")]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "table9.md"
    r = CliRunner().invoke(app, ["significance", str(path), "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = " ".join(r.stdout.split())
    assert "unit of analysis: seed" in text and "Related vs. Unrelated" in text
    assert "comparisons: CrossMed Table IX's comparisons present in the data (1 of 4" in text
    frame = pd.DataFrame(rows)
    for metric in ("accuracy", "I(Z;anatomy|modality) nats"):
        sub = frame[frame.metric == metric].pivot(index="seed", columns="condition", values="value")
        p = stats.ttest_rel(sub["Related"], sub["Unrelated"]).pvalue
        assert f"{p:.3f}" in out.read_text()


def test_progress_lines_off_tty_and_quiet(capsys):
    from matprobe.progress import set_quiet, track

    with track("work", 3, interval=0.0, unit="items") as bar:
        for i in range(3):
            bar.advance(description=f"item {i}")
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "work: 3 items to do"
    assert err[1].startswith("work: at 1/3 items") and "(item 0)" in err[1]
    assert err[-1].startswith("work: done 3/3 items")
    set_quiet(True)
    try:
        with track("work", 3, interval=0.0) as bar:
            bar.advance()
    finally:
        set_quiet(False)
    assert capsys.readouterr().err == ""


def test_a_progress_line_says_done_only_for_finished_work(capsys):
    """A user study read "sweep: done 13/16 cells" before "interrupted (SIGTERM)", and "extract ... done
    184/200 samples" before an error."""
    from matprobe.progress import track

    with track("work", 4, interval=100.0, unit="cells") as bar:
        bar.advance(2)
    assert capsys.readouterr().err.splitlines()[-1].startswith("work: stopped at 2/4 cells")
    with pytest.raises(KeyboardInterrupt):
        with track("work", 4, interval=100.0, unit="cells") as bar:
            bar.advance(3)
            raise KeyboardInterrupt
    assert capsys.readouterr().err.splitlines()[-1].startswith("work: stopped at 3/4 cells")
    with track("work", 2, interval=100.0, unit="cells") as bar:
        bar.advance(2)
    assert capsys.readouterr().err.splitlines()[-1].startswith("work: done 2/2 cells")


def test_progress_interval_comes_from_the_environment(monkeypatch):
    from matprobe.progress import track

    for value, want in (("2.5", 2.5), ("0", 10.0), ("-1", 10.0), ("soon", 10.0), ("", 10.0)):
        monkeypatch.setenv("MATPROBE_PROGRESS_INTERVAL", value)
        assert track("work", 1, enabled=False).interval == want, value
    monkeypatch.delenv("MATPROBE_PROGRESS_INTERVAL")
    assert track("work", 1, enabled=False).interval == 10.0
    assert track("work", 1, enabled=False, interval=0.5).interval == 0.5  # an explicit interval wins


TOUCHED = {"mi": ["mi"], "check": ["check"], "bounds fano": ["bounds", "fano"], "bounds pac": ["bounds", "pac"],
           "significance": ["significance"], "sweep": ["sweep"], "compare": ["compare"], "relate": ["relate"],
           "store info": ["store", "info"]}


def _readme_options() -> dict[str, set[str]]:
    """Options the README shows for each touched command (command table and the study's code lines)."""
    text = (ROOT / "README.md").read_text()
    found: dict[str, set[str]] = {k: set() for k in TOUCHED}
    lines = [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", text, re.M)]
    lines += [m.group(1) for m in re.finditer(r"^matprobe (.+)$", text, re.M)]
    for line in lines:
        for name in sorted(TOUCHED, key=len, reverse=True):
            if line.startswith(name + " ") or line == name:
                found[name] |= set(re.findall(r"(--[a-z][a-z-]*)", line))
                break
    return found


def test_readme_and_help_agree():
    runner = CliRunner()
    shown = _readme_options()
    assert shown["mi"] and shown["check"] and shown["bounds pac"]
    for name, args in TOUCHED.items():
        r = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0
        helped = set(re.findall(r"(--[a-z][a-z-]*)", r.output))
        assert "--format" in helped, name
        missing = shown[name] - helped
        assert not missing, f"README shows {sorted(missing)} for `{name}`, --help does not"
    assert "--bits-per-param" in shown["bounds pac"]


def test_readme_bounds_commands_run_verbatim():
    """The README's `bounds` lines need no files: run them exactly as printed."""
    import shlex

    text = (ROOT / "README.md").read_text()
    lines = re.findall(r"^matprobe (bounds .+)$", text, re.M)
    assert len(lines) >= 2
    for line in lines:
        r = CliRunner().invoke(app, shlex.split(line))
        assert r.exit_code == 0, f"{line}: {r.output}"


def test_version_flag():
    from matprobe import __version__

    r = CliRunner().invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.strip() == f"matprobe {__version__}"
