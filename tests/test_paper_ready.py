"""What a paper needs from the table commands: LaTeX that pdflatex compiles without extra packages
(pure ASCII, specials escaped), `significance --out x.tex` the same document as `--format latex`,
one rounding rule for a value and its interval, the shortest float repr in every CSV,
`significance --bits`, and `matprobe -q` silent in the processes a command starts too."""

from __future__ import annotations

import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from conftest import synthetic_mat_store
from matprobe.cli import app
from matprobe.present import Column, OneSided, Table, tex_escape, to_latex

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner(env={"COLUMNS": "250"})
FAST = ["--folds", "3", "--pca", "0", "--seeds", "1"]


def _leaf_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _leaf_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


WITH_FORMAT = sorted(" ".join(path) for path, cmd in _leaf_commands(typer.main.get_command(app))
                     if any(p.name == "fmt" for p in cmd.params))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Two-condition results with MI metrics in nats (one with a difference below 0.001) and a
    summary CSV."""
    tmp = tmp_path_factory.mktemp("paper_files")
    rows = []
    for s, (acc_r, acc_u, i_r, i_u) in enumerate([(0.70, 0.62, 1.7340, 1.7333), (0.74, 0.67, 1.7330, 1.7333),
                                                  (0.69, 0.60, 1.7342, 1.7333)]):
        rows += [("Related", "CT,Lung,Covid", s, "accuracy", acc_r), ("Zero-overlap", "CT,Lung,Covid", s, "accuracy", acc_u),
                 ("Related", "CT,Lung,Covid", s, "I(Z;modality) nats", i_r),
                 ("Zero-overlap", "CT,Lung,Covid", s, "I(Z;modality) nats", i_u),
                 ("Related", "CT,Lung,Covid", s, "I(Z;task|modality,anatomy) nats", 0.3 + 0.05 * s),
                 ("Zero-overlap", "CT,Lung,Covid", s, "I(Z;task|modality,anatomy) nats", 0.2 + 0.01 * s * s)]
    results = tmp / "results.csv"
    pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"]).to_csv(results, index=False)
    summary = tmp / "summary.csv"
    summary.write_text("comparison,metric,mean_a,sd_a,mean_b,sd_b,n,reported_p\n"
                       "Related vs Unrelated,accuracy,0.71,0.02,0.65,0.03,3,< 0.05\n")
    return {"results": results, "summary": summary}


@pytest.fixture(scope="module")
def inputs(files, tmp_path_factory):
    """`files`, a store (modality and the label in Z), a twin of it (the same samples) and its MI results."""
    tmp = tmp_path_factory.mktemp("paper")
    store = synthetic_mat_store(tmp / "s_1.h5", seed=5, n=160, d=4, accuracy=0.8,
                                signal=[("modality", "CT", 2.0), ("label", 1, 1.5)])
    twin = synthetic_mat_store(tmp / "s_2.h5", seed=5, n=160, d=4, accuracy=0.8, signal=[("modality", "CT", 1.0)])
    mi = tmp / "mi.json"
    r = runner.invoke(app, ["mi", str(store), "--factors", "M,A,T", "--layer", "4", *FAST, "--out", str(mi)])
    assert r.exit_code == 0, r.output
    return {**files, "store": store, "twin": twin, "mi": mi}


def _args(command: str, inp) -> list[str]:
    store = str(inp["store"])
    return {
        "mi": ["mi", store, "--factors", "M,A,T,Y", "--layer", "4", *FAST],
        "check": ["check", store, "--mi", str(inp["mi"]), "--out", str(inp["store"].parent / "check.json")],
        "significance": ["significance", str(inp["results"])],
        "significance-summary": ["significance-summary", str(inp["summary"])],
        "sweep": ["sweep", store, "--factors", "M", "--layers", "all", "--pools", "last", "--estimator", "ksg",
                  *FAST, "--out", str(inp["store"].parent / "sweep.csv"), "--overwrite"],
        "compare": ["compare", store, str(inp["twin"]), "--term", "M", "--layer", "4", "--pool", "last", "--estimator", "ksg", *FAST],
        "relate": ["relate", store, "--layer", "4", "--pool", "last", "--folds", "3", "--pca", "0", "--seeds", "1",
                   "--min-stratum", "10"],
        "store info": ["store", "info", store],
        "bounds fano": ["bounds", "fano", "--error", "0.25", "--classes", "4", "--mi", "0.5", "--entropy", "1.2"],
        "bounds pac": ["bounds", "pac", "--emp-risk", "0.1", "--n", "4500", "--params", "7e9", "--bits-per-param",
                       "16", "--delta", "0.05", "--test-errors", "757", "--test-n", "4500"],
    }[command]


def test_every_command_with_a_format_is_covered():
    assert WITH_FORMAT == ["bounds fano", "bounds pac", "check", "compare", "mi", "relate", "significance",
                           "significance-summary", "store info", "sweep"]


@pytest.mark.parametrize("command", WITH_FORMAT)
def test_latex_of_every_command_is_ascii(command, inputs):
    r = runner.invoke(app, [*_args(command, inputs), "--format", "latex"])
    assert r.exit_code == 0, r.output
    tex = r.stdout
    assert r"\begin{tabular}" in tex
    bad = sorted({ch for ch in tex if ord(ch) > 127})
    assert not bad, f"{command}: non-ASCII {bad} in the LaTeX"
    shown = runner.invoke(app, [*_args(command, inputs), "--format", "markdown"]).stdout
    if "≥" in shown:  # a one-sided interval: "at least", in math
        assert r"$\geq$" in tex
    if "Î" in shown:
        assert r"$\hat{I}$" in tex


def test_tex_escape_every_character_the_sources_can_produce():
    # every non-ASCII character in matprobe's own source (what a table, title or note can carry)
    chars = set()
    for path in (ROOT / "src" / "matprobe").rglob("*.py"):
        chars |= {ch for ch in path.read_text(encoding="utf-8") if ord(ch) > 127}
    assert {"≥", "Î", "Δ", "±", "–", "×"} <= chars
    for ch in sorted(chars):
        assert tex_escape(f"a{ch}b").isascii(), repr(ch)
    assert tex_escape("≥ 0.380") == r"$\geq$ 0.380"
    assert tex_escape("Î(Z;Y) ± 0.1 – 2 × 3") == r"$\hat{I}$(Z;Y) $\pm$ 0.1 -- 2 $\times$ 3"
    assert tex_escape("Δ = 10⁻¹") == r"$\Delta$ = 10$^{-1}$"
    assert tex_escape("50% & x_1 #2 $5") == r"50\% \& x\_1 \#2 \$5"
    assert tex_escape("café ☃") == r"caf\'{e} [U+2603]"


def test_latex_table_with_one_sided_cells_and_specials():
    table = Table([Column("term", "term_%"), Column("i", "Î [≥]", fmt=".3f")],
                  title="MI & more, 95% #1 $x_1$", footnotes=["≥ x: at least x; Δ ± 1"])
    table.add_row(term="I(Z;A|M)_&", i=OneSided((0.412, 0.38, 1.1)))
    tex = to_latex(table)
    assert tex.isascii()
    assert r"\caption{MI \& more, 95\% \#1 \$x\_1\$}" in tex
    assert r"term\_\% & $\hat{I}$ [$\geq$] \\" in tex
    assert r"I(Z;A\textbar{}M)\_\& & 0.412 [$\geq$ 0.380] \\" in tex
    assert r"$\geq$ x: at least x; $\Delta$ $\pm$ 1" in tex


@pytest.mark.parametrize("fmt,suffix", [("latex", "tex"), ("markdown", "md")])
def test_significance_out_is_what_format_prints(files, tmp_path, fmt, suffix):
    out = tmp_path / f"table9.{suffix}"
    r = runner.invoke(app, ["significance", str(files["results"]), "--format", fmt, "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = out.read_text()
    # the same captions, the same tables, the same notes; the printed one adds the "wrote" line
    assert r.stdout.startswith(written.rstrip("\n"))
    assert r.stdout[len(written.rstrip("\n")):].strip().endswith(f"wrote {out}")
    if fmt == "latex":
        captions = re.findall(r"\\caption\{(.*)\}", written)
        assert captions[0] == ("Statistical significance (p-values) for key comparisons (paired t-test). "
                               "Unit of analysis: seed.")
        assert len(captions) == 3 and written.isascii()


def test_a_value_and_its_interval_share_their_decimals(files):
    r = runner.invoke(app, ["significance", str(files["results"]), "--metric", "I(Z;modality) nats",
                            "--format", "csv"])
    row = pd.read_csv(io.StringIO(r.stdout)).iloc[0]
    assert abs(row.mean_diff) < 1e-3 and max(abs(row.ci_low), abs(row.ci_high)) > 1e-3
    md = runner.invoke(app, ["significance", str(files["results"]), "--metric", "I(Z;modality) nats",
                             "--format", "markdown"]).stdout
    line = next(x for x in md.splitlines() if x.startswith("| Related vs. Zero-overlap | I(Z;modality)")
                and "[" in x)
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[2] == "3"  # n
    diff, ci = cells[3], cells[4]
    low, high = ci.strip("[]").split(", ")
    decimals = {len(x.split(".")[1]) for x in (diff, low, high)}
    assert len(decimals) == 1, (diff, ci)
    d = decimals.pop()
    assert diff == f"{row.mean_diff:.{d}f}" and low == f"{row.ci_low:.{d}f}" and high == f"{row.ci_high:.{d}f}"
    assert float(diff) != 0 and float(low) != 0  # enough decimals to show each


def test_significance_csv_writes_the_shortest_float_repr(files, tmp_path):
    out = tmp_path / "t9.csv"
    r = runner.invoke(app, ["significance", str(files["results"]), "--format", "csv", "--out", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert text == r.stdout  # --out FILE.csv is --format csv
    frame = pd.read_csv(out)
    assert ",0.95," in text and "0.94999999999999996" not in text
    for col in ("mean_diff", "ci_low", "ci_high", "p"):
        for value in frame[col]:
            assert repr(float(value)) in text  # shortest repr, and it round-trips
    # as `run` writes significance.csv (pandas' default: the shortest repr)
    assert text == frame.to_csv(index=False)
    summary = tmp_path / "s.csv"
    r = runner.invoke(app, ["significance-summary", str(files["summary"]), "--out", str(summary), "--format", "csv"])
    assert r.exit_code == 0, r.output
    written = summary.read_text()
    assert written == r.stdout
    assert ",0.05999999999999994," in written and "0.059999999999999942" not in written  # 0.71 - 0.65


def test_significance_bits(files):
    nats = pd.read_csv(io.StringIO(runner.invoke(app, ["significance", str(files["results"]),
                                                       "--format", "csv"]).stdout))
    r = runner.invoke(app, ["significance", str(files["results"]), "--bits", "--format", "csv"])
    assert r.exit_code == 0, r.output
    bits = pd.read_csv(io.StringIO(r.stdout))
    assert list(bits.metric) == ["accuracy", "I(Z;modality) bits", "I(Z;task|modality,anatomy) bits"]
    assert list(nats.metric) == ["accuracy", "I(Z;modality) nats", "I(Z;task|modality,anatomy) nats"]
    for col in ("mean_a", "mean_b", "mean_diff", "sd_diff", "ci_low", "ci_high"):
        assert bits[col][0] == nats[col][0]  # accuracy is not information
        np.testing.assert_allclose(bits[col][1:], nats[col][1:] / math.log(2), rtol=1e-12)
    for col in ("t", "p", "dz", "wilcoxon_p", "perm_p", "p_holm"):
        np.testing.assert_allclose(bits[col], nats[col], rtol=1e-9)
    table = runner.invoke(app, ["significance", str(files["results"]), "--bits"]).stdout
    assert "I(Z;modality) bits" in table and "I(Z;modality) nats" not in table


def test_significance_unit_bits_says_what_unit_means(files):
    r = runner.invoke(app, ["significance", str(files["results"]), "--unit", "bits"])
    assert r.exit_code == 2
    assert "unit of analysis" in r.output and "auto, target, seed, item" in r.output and "--bits" in r.output


def test_quiet_silences_progress_in_a_portable_numerics_process(inputs, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MATPROBE_QUIET", None)
    cmd = [sys.executable, "-m", "matprobe", "mi", str(inputs["store"]), "--factors", "M,A", "--layer", "4",
           "--estimator", "ksg", *FAST, "--portable-numerics", "--format", "csv"]
    loud = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert loud.returncode == 0, loud.stderr
    assert "mi: " in loud.stderr  # progress lines off a terminal (after a second)
    quiet = subprocess.run([*cmd[:3], "-q", *cmd[3:]], capture_output=True, text=True, env=env, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert "mi: " not in quiet.stderr, quiet.stderr
    assert pd.read_csv(io.StringIO(quiet.stdout)).term.tolist()[:2] == ["I(Z;M)", "I(Z;A|M)"]
    # errors still shown
    bad = subprocess.run([*cmd[:3], "-q", "mi", str(tmp_path / "missing.h5")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert bad.returncode == 2 and "error:" in bad.stderr
