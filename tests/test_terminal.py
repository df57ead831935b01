"""Tables fit the terminal (COLUMNS=100 on a real pseudo-terminal) without losing a value; off a
terminal nothing is wrapped or cut; store info keeps provenance behind --verbose; every Δ is the
difference of the printed values or says what it is."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from rich.cells import cell_len
from rich.console import Console

from conftest import synthetic_mat_store
from matprobe.present import Column, Table, show

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 100


def run_on_terminal(args, cols=WIDTH, timeout=300):
    """Run `python -m matprobe ARGS` with stdout on a pseudo-terminal `cols` wide; (rc, stdout)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, cols, 0, 0))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": str(cols), "LINES": "60", "TERM": "dumb"}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "matprobe", *map(str, args)], stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise TimeoutError(args)
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    text = b"".join(chunks).decode()
    return proc.wait(), re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text).replace("\r\n", "\n")


def run_piped(args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": str(WIDTH)}
    return subprocess.run([sys.executable, "-m", "matprobe", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def assert_fits(text: str, width: int = WIDTH) -> None:
    too_wide = [line for line in text.splitlines() if cell_len(line) > width]
    assert not too_wide, f"{len(too_wide)} lines wider than {width}: {too_wide[0]!r}"


def assert_shown(value: str, text: str) -> None:
    """Every piece of `value` (split at spaces) is in the output: wrapped, never cut."""
    flat = " ".join(text.replace("│", " ").split())
    for piece in str(value).split():
        assert piece in flat, (piece, value)


# --------------------------------------------------------------------------- the table model


def wide_table() -> Table:
    rng = np.random.default_rng(0)
    cols = [Column("term", "term"), Column("estimator", "estimator")]
    cols += [Column(f"c{j}", f"layer {j} [95% CI]", "nats", fmt=".3f") for j in range(9)]
    cols += [Column("empty", "always empty"), Column("note", "note")]
    rows = []
    for i in range(4):
        row = {"term": f"I(Z;T{i}|M,A)", "estimator": "probe", "empty": None,
               "note": "a long note that explains what the estimate means and why it was flagged " * (i % 2)}
        for j in range(9):
            v = rng.uniform(-1, 2)
            row[f"c{j}"] = (v, v - 0.1, v + 0.1)
        rows.append(row)
    return Table(cols, rows, title="a title that is long enough to need wrapping " * 3, footnotes=["a footnote"])


def test_a_wide_table_fits_a_100_column_terminal_with_every_value():
    table = wide_table()
    buf = io.StringIO()
    show(table, "table", Console(file=buf, width=WIDTH, force_terminal=True, color_system=None))
    out = buf.getvalue()
    assert_fits(out)
    assert "always empty" not in out  # an empty column is left out
    for row in table.cells():
        for col, cell in zip(table.columns, row):
            if col.key == "empty":
                continue
            if col.key.startswith("c"):
                assert cell in out.replace("│", "|"), cell  # numbers and intervals are never wrapped
            assert_shown(cell, out)
    # the columns are dealt into parts; each part repeats the row labels
    parts = out.count("┃ term")
    assert parts >= 2 and out.count("I(Z;T3|M,A)") == parts
    assert out.count("a footnote") == 1 and "(continued)" in out


def test_off_a_terminal_rows_are_whole_lines():
    table = wide_table()
    buf = io.StringIO()
    show(table, "table", Console(file=buf, width=100_000, color_system=None))  # not a terminal
    lines = buf.getvalue().splitlines()
    assert max(cell_len(line) for line in lines) > WIDTH  # nothing squeezed
    assert sum(line.startswith("┃ term") for line in lines) == 1  # one table
    for row in table.cells():
        line = next(line for line in lines if f" {row[0]} " in line)
        for col, cell in zip(table.columns, row):
            if col.key != "empty":
                assert cell.strip() in line, cell


def test_every_delta_is_the_printed_difference_or_says_what_it_is():
    from matprobe.present.views import comparison_table

    def comp(a, b, delta):
        diff = SimpleNamespace(delta=delta, ci_low=delta - 0.01, ci_high=delta + 0.01, ci_level=0.95,
                               p_value=0.5, unit="nats", n=300)
        side = lambda v, s: {"store": s, "layer": "16", "pool": "last", "estimate": v,  # noqa: E731
                             "ci_low": v - 0.01, "ci_high": v + 0.01}
        return SimpleNamespace(difference=diff, side_a=side(a, "a.h5"), side_b=side(b, "b.h5"), term="I(Z;T|M,A)",
                               seeds=5, folds=5, estimator="probe", note="")

    for a, b, delta in ((0.2310, 0.2295, 0.0019), (0.2310, 0.2295, 0.0015), (0.5, 0.25, 0.25)):
        table = comparison_table(comp(a, b, delta))
        cells = table.cells()
        shown = {row[0]: row[4] for row in cells}
        printed_delta = float(shown["paired ΔI"])
        printed_diff = float(shown["A"]) - float(shown["B"])
        notes = " ".join(table.footnotes)
        assert "paired ΔI = mean over the 300 shared samples" in notes  # the label says what it is
        if f"{printed_diff:+.4f}" == f"{printed_delta:+.4f}":
            assert "differ by" not in notes
        else:  # and when it is not the printed difference, that difference is printed too
            assert f"differ by {printed_diff:+.4f} nats" in notes


def test_a_p_of_1_inside_the_extrapolation_slack_is_explained():
    # the p inverts the interval widened by the slack: |ΔI| within the slack gives p = 1 (the
    # paired module's own formula), and the footnote says so; outside it, the footnote says what
    # is tested without the "p = 1" clause; no slack, no footnote
    from matprobe.present.views import comparison_table

    def comp(delta, slack, p):
        diff = SimpleNamespace(delta=delta, ci_low=delta - 0.3 - slack, ci_high=delta + 0.3 + slack, ci_level=0.95,
                               p_value=p, unit="nats", n=199, slack=slack)
        side = {"store": "a.h5", "layer": "1", "pool": "last", "estimate": 0.6, "ci_low": 0.5, "ci_high": 0.7}
        return SimpleNamespace(difference=diff, side_a=side, side_b={**side, "store": "b.h5"}, term="I(Z;T|M,A)",
                               seeds=2, folds=3, estimator="probe", note="")

    notes = " ".join(comparison_table(comp(0.179, 0.2, 1.0)).footnotes)
    assert "extrapolation slack of ±0.2000 nats" in notes and "|ΔI| = 0.1790 is within it, so p = 1" in notes
    notes = " ".join(comparison_table(comp(0.5, 0.2, 0.04)).footnotes)
    assert "extrapolation slack of ±0.2000 nats" in notes and "so p = 1" not in notes
    assert "slack" not in " ".join(comparison_table(comp(0.5, 0.0, 0.04)).footnotes)


# --------------------------------------------------------------------------- commands on a terminal


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    # a provenance as long as an extraction's: 35 fields, some of them long
    prov = {f"field_{i:02d}": ("value " * (i % 7 + 1) + "/a/long/path/to/some/checkpoint/folder" * (i % 3))
            for i in range(32)}
    return synthetic_mat_store(tmp_path_factory.mktemp("term") / "store.h5", seed=5, n=240, d=4, accuracy=0.8,
                               signal=[("modality", "CT", 2.0), ("anatomy", "Lung", 1.5)], provenance=prov)


def test_store_info_fits_and_keeps_provenance_behind_verbose(store):
    info = json.loads(run_piped(["store", "info", store, "--json"]).stdout)
    assert len(info["provenance"]) >= 35
    rc, out = run_on_terminal(["store", "info", store])
    assert rc == 0, out
    assert_fits(out)
    assert "field_00" not in out and f"provenance: {len(info['provenance'])} fields" in out
    assert "seg. items" not in out and "cIoU" not in out  # empty columns (no segmentation items) left out
    for r in info["by_triplet"]:
        assert f"{r['accuracy']:.3f}" in out
    rc, out = run_on_terminal(["store", "info", store, "--verbose"])
    assert rc == 0
    assert_fits(out)
    for key, value in info["provenance"].items():
        assert key in out
        assert_shown(value, out)
    # piped: nothing wrapped or cut, each provenance value whole on its own line, and no line padded to
    # the longest value (a table padded every row to a field of thousands of characters)
    piped = run_piped(["store", "info", store, "--verbose"]).stdout
    for key, value in info["provenance"].items():
        line = next(line for line in piped.splitlines() if line.startswith(f"provenance {key}: "))
        assert line == f"provenance {key}: {value}".rstrip() or str(value).strip() in line
    assert not any(line.endswith("  ") for line in piped.splitlines())


def test_mi_fits_a_100_column_terminal(store, tmp_path):
    out_json = tmp_path / "mi.json"
    rc, out = run_on_terminal(["mi", store, "--layer", "4", "--estimator", "ksg", "--folds", "3", "--pca", "0",
                               "--out", out_json])
    assert rc == 0, out
    assert_fits(out)
    doc = json.loads(out_json.read_text())
    for term in doc["terms"]:
        assert term["term"] in out
        assert f"{term['estimate']:.3f}" in out and f"[{term['ci_low']:.3f}, {term['ci_high']:.3f}]" in out
        if term.get("note"):
            assert_shown(term["note"], out)


def test_significance_tables_and_notes_fit(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(1)
    metrics = ["accuracy", "I(Z;label|modality,anatomy,task) nats", "I(Z;task|modality,anatomy) nats", "cIoU"]
    rows = [{"condition": cond, "target": f"target {t}", "seed": s, "metric": m,
             "value": 0.5 + 0.05 * (cond == "Related") + 0.02 * rng.standard_normal()}
            for cond in ("Related", "Unrelated") for t in range(2) for s in range(3) for m in metrics]
    csv = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    rc, out = run_on_terminal(["significance", csv, "--unit", "seed", "--out", tmp_path / "sig.csv"])
    assert rc == 0, out
    assert_fits(out)
    res = pd.read_csv(tmp_path / "sig.csv")
    for r in res.itertuples():
        assert_shown(r.metric, out)
        assert f"{r.p:.3f}" in out or r.p < 0.001
    piped = run_piped(["significance", csv, "--unit", "seed"])
    notes = [line for line in piped.stdout.splitlines() if line.startswith("note:")]
    assert notes
    for note in notes:  # wrapped at the terminal's width, every word kept
        assert_shown(note, out)
