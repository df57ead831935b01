"""Issue 24: one place for presentation. Tables are built and rendered by the table model in
`matprobe.present` (its `views` build every result's display table, `significance` the Table IX
files) and by the report, which renders through the same model. Every other module hands a result
to them: this test parses the package and fails on a module outside `present/` and `report/` that
builds a table (the model's Table or Column, rich's tables, pandas' Markdown/LaTeX/HTML writers)."""

from __future__ import annotations

import ast
from pathlib import Path

import matprobe

SRC = Path(matprobe.__file__).parent
TABLE_NAMES = {"Table", "Column", "to_markdown", "to_html", "to_latex", "to_csv", "glossary", "table_document"}
FRAME_WRITERS = {"to_markdown", "to_latex", "to_html", "style"}


def table_building(path: Path) -> list[str]:
    """What in `path` builds or renders a table itself, as 'line: what'."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("matprobe.present"):
            out += [f"{node.lineno}: imports {a.name}" for a in node.names if a.name in TABLE_NAMES]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            out += [f"{node.lineno}: imports {m}" for m in mods if m in ("rich.table", "tabulate")]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FRAME_WRITERS:
            out.append(f"{node.lineno}: calls .{node.func.attr}()")
    return out


def test_only_the_presentation_package_and_the_report_build_tables():
    bad = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("present/", "report/")):
            continue
        found = table_building(path)
        if found:
            bad[rel] = found
    assert bad == {}


def test_the_scan_finds_table_building(tmp_path):
    stray = tmp_path / "stray.py"
    stray.write_text("from matprobe.present import Column, Table, show\n"
                     "import rich.table\n"
                     "def f(frame):\n"
                     "    return frame.to_markdown(), frame.to_latex()\n")
    assert table_building(stray) == ["1: imports Column", "1: imports Table", "2: imports rich.table",
                                     "4: calls .to_markdown()", "4: calls .to_latex()"]


def test_report_tables_render_through_the_table_model():
    """The report's Markdown and HTML tables are the model's renderers (align=False, compact)."""
    import pandas as pd

    from matprobe.report.render import Doc

    frame = pd.DataFrame({"term": ["I(Z;A|M)", "I(Z;M)"], "Î (nats)": [0.1234, float("nan")], "n": [None, None]})
    doc = Doc(Path("."))
    doc.table(frame, "caption")
    md = doc.markdown()
    assert "| term | Î (nats) |\n|---|---|\n| I(Z;A\\|M) | 0.123 |\n| I(Z;M) |  |" in md  # n: empty, left out
    assert "<table><thead><tr><th>term</th><th>Î (nats)</th></tr></thead><tbody><tr><td>I(Z;A|M)</td>" \
           "<td>0.123</td></tr><tr><td>I(Z;M)</td><td></td></tr></tbody></table>" in "".join(doc.html)
