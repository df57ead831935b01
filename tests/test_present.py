"""The one table model and its renderers: Markdown parsed by a CommonMark parser (GFM tables),
HTML by html.parser, CSV by the csv module, JSON by json; every cell accounted for."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from markdown_it import MarkdownIt

from matprobe.present import Column, Table, render, to_csv, to_html, to_json, to_latex, to_markdown

NASTY = ["I(Z;A|M)", "a | b", "back\\slash|", "pipe at end |", "x_y & 50% <1>", "ε [0.1, 0.2]"]


def md_rows(text: str) -> list[list[str]]:
    """Rows of the first table in `text` as the CommonMark+table parser sees them (header first)."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    rows, row = [], None
    for tok in tokens:
        if tok.type == "tr_open":
            row = []
        elif tok.type == "inline" and row is not None:
            row.append(tok.children[0].content if len(tok.children) == 1 else
                       "".join(c.content for c in tok.children))
        elif tok.type == "tr_close":
            rows.append(row)
            row = None
    return rows


def nasty_table() -> Table:
    cols = [Column(f"c{i}", name, description=f"column {i}") for i, name in enumerate(NASTY)]
    cols.append(Column("v", "value", "nats", "a number", ".3f"))
    cols.append(Column("ci", "95% interval", "nats", "an interval", ".3f"))
    rows = [{**{f"c{i}": name for i, name in enumerate(NASTY)}, "v": 1.23456, "ci": (0.5, 2.0)},
            {**{f"c{i}": NASTY[-1 - i] for i in range(len(NASTY))}, "v": np.float64(-0.5), "ci": (None, None)}]
    return Table(cols, rows, title="T|itle", footnotes=["note | one"])


def test_markdown_cells_survive_a_commonmark_parser():
    table = nasty_table()
    rows = md_rows(to_markdown(table))
    assert len(rows) == 3
    assert all(len(r) == len(table.columns) for r in rows)  # no cell split by a `|`
    assert rows[0] == NASTY + ["value", "95% interval"]  # header cells escaped too
    assert rows[1] == NASTY + ["1.235", "[0.500, 2.000]"]
    assert rows[2] == NASTY[::-1] + ["-0.500", "-"]


def test_html_escapes_every_cell():
    table = nasty_table()

    class Cells(HTMLParser):
        def __init__(self):
            super().__init__()
            self.rows, self.cell = [], None

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.cell = ""

        def handle_endtag(self, tag):
            if tag in ("td", "th"):
                self.rows[-1].append(self.cell)
                self.cell = None

        def handle_data(self, data):
            if self.cell is not None:
                self.cell += data

    p = Cells()
    p.feed(to_html(table))
    assert p.rows[0] == NASTY + ["value", "95% interval"]
    assert p.rows[1][:len(NASTY)] == NASTY


def test_latex_escapes_specials():
    tex = to_latex(nasty_table())
    body = tex.split(r"\hline")[1]
    # 8 columns -> 7 unescaped & separators in the header line
    assert body.replace(r"\&", "").count("&") == len(NASTY) + 1
    assert r"x\_y \& 50\% $<$1$>$" in tex and r"I(Z;A\textbar{}M)" in tex


def test_csv_and_json_carry_raw_values():
    table = nasty_table()
    back = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert float(back[0]["v"]) == 1.23456 and float(back[0]["ci_low"]) == 0.5
    assert back[0]["c0"] == "I(Z;A|M)" and back[1]["ci_low"] == ""
    doc = json.loads(to_json(table))
    assert doc["rows"][0]["v"] == 1.23456 and doc["rows"][1]["ci_high"] is None
    assert [c["unit"] for c in doc["columns"]][-2:] == ["nats", "nats"]
    assert table.glossary()[-1] == ("95% interval", "nats", "an interval")
    assert render(table, "json") == to_json(table)


def test_significance_markdown_header_with_pipes_parses(tmp_path):
    """The Table IX layout has metrics as header cells: MI metrics such as I(Z;A|M) used to break it."""
    from matprobe.present.significance import write_output
    from matprobe.stats.significance import compare_conditions

    rng = np.random.default_rng(0)
    rows = []
    for cond, shift in (("Related", 0.1), ("Unrelated", 0.0)):
        for seed in range(4):
            for metric in ("accuracy", "I(Z;A|M) nats"):
                rows.append({"condition": cond, "target": "t", "seed": seed, "metric": metric,
                             "value": 0.5 + shift + rng.normal(0, 0.05)})  # an accuracy in [0, 1]
    res = compare_conditions(pd.DataFrame(rows), ["Related vs Unrelated"], unit="seed")
    text = write_output(res, tmp_path / "t9.md").read_text()
    tables = [t for t in text.split("\n\n") if t.startswith("|")]
    assert len(tables) == 3  # Table IX, the differences, their p-values (as --format markdown)
    for t in tables:
        parsed = md_rows(t)
        width = len(parsed[0])
        assert all(len(r) == width for r in parsed)
    header = md_rows(tables[0])[0]
    assert header == ["Comparison", "Classification (accuracy)", "I(Z;A|M) nats"]


def test_from_frame_keeps_column_order_and_index():
    frame = pd.DataFrame({"a|b": [1, 2]}, index=pd.Index(["x", "y"], name="row"))
    t = Table.from_frame(frame, index=True)
    assert t.headers() == ["row", "a|b"] and t.cells() == [["x", "1"], ["y", "2"]]


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json", "latex", "html"])
def test_render_every_format(fmt):
    assert "I(Z;A" in render(nasty_table(), fmt)
