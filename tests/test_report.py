"""The report of a run directory, rebuilt from the run's files alone.

Runs are made from the committed demo results (reports/demo: run.json, MI and check JSON,
results.csv, significance.csv; its data, checkpoints and stores are not committed), so no
model is trained here. A second layer is added to each checkpoint by copying its MI results
with halved values, to exercise the MI-by-layer figure. Expected numbers come from those
JSON/CSV files, not from the report's own findings.
"""

from __future__ import annotations

import ast
import colorsys
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matprobe.report import figures
from matprobe.report.render import load_run, write_report
from matprobe.rundir import RunSummary, resolve_run_path, run_relative

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "reports" / "demo"


def make_run(out: Path, extra_layer: bool = True) -> Path:
    """A format-2 run directory from the committed demo's results, optionally with a second layer."""
    src = json.loads((DEMO / "run.json").read_text())

    def copy(recorded: str, rel: str) -> str:
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resolve_run_path(DEMO, recorded, RunSummary.from_dict(src)), target)
        return rel

    run = {**src, "format_version": 2, "manifest": "data/manifest.jsonl", "checkpoints": []}
    # tests edit the copied results.csv to make other studies: without the demo's digests of its
    # tables (a run before they were recorded) the report does not refuse them as stale
    run.pop("tables_sha256", None)
    for ck in src["checkpoints"]:
        ck = dict(ck)
        ck["mi"] = {lp: copy(p, f"mi/{Path(p).name}") for lp, p in ck["mi"].items()}
        ck["main_mi"] = f"mi/{Path(src_main := ck['main_mi']).name}"
        ck["check"] = copy(ck["check"], f"check/{Path(ck['check']).name}")
        ck["store"] = f"stores/{ck['name']}.h5"
        ck["ckpt"] = f"checkpoints/{ck['name']}"
        if extra_layer:
            doc = json.loads(resolve_run_path(DEMO, src_main, RunSummary.from_dict(src)).read_text())
            for t in doc["terms"]:
                t["estimate"], t["ci_low"], t["ci_high"] = (0.5 * t[k] for k in ("estimate", "ci_low", "ci_high"))
            doc["layer"] = "1"
            rel = f"mi/{ck['name']}__1__last.json"
            (out / rel).write_text(json.dumps(doc))
            ck["mi"] = {"1/last": rel, **ck["mi"]}
        run["checkpoints"].append(ck)
    for name in ("results.csv", "significance.csv"):
        copy(name, name)
    if not run.get("composition"):  # a format-1 demo: counts from its check results
        check = json.loads((out / run["checkpoints"][0]["check"]).read_text())
        run["composition"] = [{**s["given"], "n": s["n"]} for s in check["strata"]]
    run["environment"] = {"versions": {"python": "3.11.7", "matprobe": "0.1.0", "torch": "2.13.0+cpu",
                                       "transformers": "5.24.0"},
                          "source": {"commit": "0123456789abcdef0123456789abcdef01234567", "modified": False}}
    (out / "run.json").write_text(json.dumps(run, indent=2))
    return out


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("report") / "run")
    write_report(run)
    return run


def _tables(md: str):
    """Tables as a CommonMark parser with the table extension (markdown-it-py) sees them:
    (source lines, header cells, body rows of cells) per table."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark").enable("table")
    tokens = parser.parse(md)
    lines = md.splitlines()
    tables, current, row, cell_text = [], None, None, None
    for tok in tokens:
        if tok.type == "table_open":
            current = {"lines": lines[tok.map[0]:tok.map[1]], "head": [], "rows": []}
        elif tok.type == "tr_open":
            row = []
        elif tok.type in ("th_open", "td_open"):
            cell_text = ""
        elif tok.type == "inline" and cell_text is not None:
            cell_text = tok.content
        elif tok.type in ("th_close", "td_close"):
            row.append(cell_text.replace("\\|", "|"))
            cell_text = None
        elif tok.type == "tr_close":
            if not current["head"]:
                current["head"] = row
            else:
                current["rows"].append(row)
        elif tok.type == "table_close":
            tables.append(current)
    return tables


def _split_unescaped(line: str) -> list[str]:
    return re.split(r"(?<!\\)\|", line.strip().strip("|"))


def test_markdown_tables_parse_with_consistent_cells(report_run):
    md = (report_run / "report.md").read_text()
    tables = _tables(md)
    labels = re.findall(r"^\*\*Table (\d+)\.\*\*", md, flags=re.M)
    # every table the report labels was recognised as a table (an unescaped | in a header breaks that)
    assert len(tables) == len(labels) >= 9
    for t in tables:
        for line in t["lines"][2:]:  # the source rows hold as many cells as the header, no more
            assert len(_split_unescaped(line)) == len(t["head"]), line
    cells = {c for t in tables for r in t["rows"] for c in r} | {h for t in tables for h in t["head"]}
    # term names with a | survive as one cell, in bodies and in the Table IX header
    assert {"I(Z;anatomy|modality)", "I(Z;task|modality,anatomy)", "I(Z;anatomy|modality) nats"} <= cells


def test_every_column_is_in_the_glossary(report_run):
    tables = _tables((report_run / "report.md").read_text())
    glossary = tables[-1]
    assert glossary["head"] == ["column", "meaning"]
    explained = {r[0] for r in glossary["rows"]}
    used = {h for t in tables[:-1] for h in t["head"]}
    assert used == explained
    assert all(r[1] for r in glossary["rows"])


def test_tables_are_labelled_and_p_values_named(report_run):
    md = (report_run / "report.md").read_text()
    sig = md.split("## Significance")[1].split("## Per-run results")[0]
    captions = re.findall(r"^\*\*Table \d+\.\*\* (.+)$", sig, flags=re.M)
    assert len(captions) == 2 and captions[0].startswith("p-values of the paired t-test")


def test_fano_table_carries_the_check_intervals(report_run):
    run = json.loads((report_run / "run.json").read_text())
    tables = _tables((report_run / "report.md").read_text())
    fano = next(t for t in tables if "ε respects floor" in t["head"])
    h = fano["head"]
    rows = {(r[h.index("checkpoint")], r[h.index("stratum")]): r for r in fano["rows"]}
    n_checked = n_one_sided = 0
    for ck in run["checkpoints"]:
        check = json.loads((report_run / ck["check"]).read_text())
        for s in check["strata"]:
            g = s["given"]
            r = rows[(ck["name"], f"{g['modality']} / {g['anatomy']} / {g['task']}")]
            lo, hi = s["error_ci"]
            assert r[h.index("ε 95% CI")] == f"[{lo:.3f}, {hi:.3f}]"
            if s.get("mi"):
                m = s["mi"]
                mi_col = next(c for c in h if c.startswith("Î ") and c.endswith(" interval"))
                assert mi_col == f"Î {m.get('ci_level', 0.9):.0%} interval"
                # one-sided where the check says so (the term is, or the stratum's estimate is near its cap)
                assert r[h.index(mi_col)] == (f"≥ {m['ci_low']:.3f} (one-sided)" if m.get("bound") == "lower"
                                              else f"[{m['ci_low']:.3f}, {m['ci_high']:.3f}]")
                n_one_sided += m.get("bound") == "lower"
                assert r[h.index("ε floor at Î / at upper")] == \
                    f"{s['error_floor']:.3f} / {s['error_floor_lenient']:.3f}"
                n_checked += 1
    assert n_checked >= 30
    # every chain term of the demo is one-sided (small-cells), so are its strata
    assert n_one_sided == n_checked


def test_provenance_and_contents(report_run):
    md = (report_run / "report.md").read_text()
    prov = md.split("## Provenance")[1]
    assert "git commit `0123456789abcdef0123456789abcdef01234567`" in prov
    assert "| torch | 2.13.0+cpu |" in prov and "| transformers | 5.24.0 |" in prov
    sections = re.findall(r"^## (.+)$", md, flags=re.M)
    contents = re.search(r"^\*\*Contents:\*\* (.+)$", md, flags=re.M).group(1)
    assert re.findall(r"\[([^\]]+)\]\(#", contents) == sections
    assert "MI by layer" in sections
    page = (report_run / "report.html").read_text()
    for anchor in re.findall(r"\]\(#([\w-]+)\)", contents):  # every contents link has its target
        assert f'id="{anchor}"' in page


def test_mi_by_layer_figure_and_table(report_run):
    assert (report_run / "figures" / "mi_by_layer.png").exists()
    tables = _tables((report_run / "report.md").read_text())
    by_layer = next(t for t in tables if "layer/pool" in t["head"])
    h = by_layer["head"]
    got = {(r[h.index("checkpoint")], r[h.index("term")], r[h.index("layer/pool")]): r[h.index("Î (nats)")]
           for r in by_layer["rows"]}
    run = json.loads((report_run / "run.json").read_text())
    for ck in run["checkpoints"]:
        for lp, rel in ck["mi"].items():
            for t in json.loads((report_run / rel).read_text())["terms"]:
                assert got[(ck["name"], t["term"], lp)] == f"{t['estimate']:.3f}"
    assert len(got) == len(run["checkpoints"]) * 4 * 2  # checkpoints x terms x layers


def test_single_layer_run_has_no_layer_figure(tmp_path):
    run = make_run(tmp_path / "one", extra_layer=False)
    write_report(run)
    assert "## MI by layer" not in (run / "report.md").read_text()
    assert not (run / "figures" / "mi_by_layer.png").exists()


def test_every_figure_also_as_svg(report_run):
    import xml.etree.ElementTree as ET

    pngs = sorted(p.stem for p in (report_run / "figures").glob("*.png"))
    svgs = sorted(p.stem for p in (report_run / "figures").glob("*.svg"))
    assert pngs == svgs == ["baselines", "composition", "fano", "mi_by_layer", "mi_chain", "mi_vs_accuracy", "pac",
                            "pointwise"]
    for stem in svgs:
        root = ET.parse(report_run / "figures" / f"{stem}.svg").getroot()
        assert root.tag.endswith("svg") and len(list(root.iter())) > 50


def test_moved_run_gives_the_same_report(tmp_path):
    first = make_run(tmp_path / "a")
    write_report(first)
    before = {p.relative_to(first): p.read_bytes() for p in first.rglob("*") if p.is_file()}
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(first, moved)
    shutil.rmtree(first)  # nothing can be read from the old place
    for name in ("report.md", "report.html", "findings.json"):
        (moved / name).unlink()
    shutil.rmtree(moved / "figures")
    write_report(moved)
    after = {p.relative_to(moved): p.read_bytes() for p in moved.rglob("*") if p.is_file()}
    assert after.keys() == before.keys()
    changed = [str(k) for k in before if before[k] != after[k]]
    assert changed == []


def test_format1_run_with_working_directory_paths_after_a_move(tmp_path, monkeypatch):
    """The committed demo's run.json may name files as `reports/demo/mi/...` (format 1)."""
    old = json.loads((DEMO / "run.json").read_text())
    moved = tmp_path / "copy"
    shutil.copytree(DEMO, moved, ignore=shutil.ignore_patterns("data", "checkpoints", "stores", "figures",
                                                                "report.*", "findings.json"))
    if old.get("format_version", 1) >= 2:  # write the entries the way format 1 did
        rec = json.loads((moved / "run.json").read_text())
        rec["format_version"] = 1
        for ck in rec["checkpoints"]:
            ck["mi"] = {lp: f"reports/demo/{p}" for lp, p in ck["mi"].items()}
            ck["main_mi"], ck["check"] = f"reports/demo/{ck['main_mi']}", f"reports/demo/{ck['check']}"
        rec.pop("composition", None)
        (moved / "run.json").write_text(json.dumps(rec))
    monkeypatch.chdir(tmp_path)  # the recorded working-directory paths lead nowhere from here
    data = load_run(moved)
    ck = data.summary.checkpoints[0]
    assert ck.main_mi.startswith("reports/demo/")
    expected = json.loads((DEMO / "mi" / Path(ck.main_mi).name).read_text())["terms"]
    got = data.terms[(data.terms["checkpoint"] == ck.name)].set_index("term")["estimate"]
    assert [got[t["term"]] for t in expected] == [t["estimate"] for t in expected]
    assert data.composition["n"].sum() == data.summary.n_samples
    write_report(moved)
    assert (moved / "report.md").read_text().count("| related-s0 |") > 10


def _committed_demo_copy(tmp_path) -> Path:
    """A copy of what git tracks under reports/demo (no data, checkpoints, stores) in tmp_path/demo."""
    try:
        files = subprocess.run(["git", "ls-files", "reports/demo"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    if not files:
        pytest.skip("no committed demo report")
    copy = tmp_path / "demo"
    for f in files:
        target = copy / Path(f).relative_to("reports/demo")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / f, target)
    return copy


def test_committed_demo_report_rebuilds_from_committed_files(tmp_path):
    """Only what git tracks under reports/demo (no data, checkpoints, stores) rebuilds its report.md."""
    copy = _committed_demo_copy(tmp_path)
    committed = (copy / "report.md").read_text()
    os.chdir(tmp_path)
    try:
        write_report(copy)
    finally:
        os.chdir(ROOT)
    assert (copy / "report.md").read_text() == committed


def test_a_metric_on_several_targets_is_paired_by_target_and_one_on_one_target_by_seed(tmp_path):
    """The run pairs each metric as `matprobe significance` does (`metric_units`): a metric measured on
    several held-out targets by target (each the mean of its seeds: no seeds nested in targets taken as
    independent pairs), one measured on one target by its seeds. (The run paired every metric by seed,
    and said the pairs were nested; `significance` on the same results.csv paired by target.)"""
    copy = _committed_demo_copy(tmp_path)
    results = pd.read_csv(copy / "results.csv")
    sig = pd.read_csv(copy / "significance.csv")
    assert results["target"].nunique() >= 2
    spans = results.groupby("metric")["target"].nunique()
    assert list(sig["unit"]) == ["target" if spans[m] > 1 else "seed" for m in sig["metric"]]
    assert set(sig["unit"]) == {"seed", "target"}
    assert not sig["warning"].fillna("").str.contains("seeds nested in targets").any()
    os.chdir(tmp_path)
    try:
        write_report(copy)
        md = (copy / "report.md").read_text()
        assert "as independent pairs" not in md
        assert "Pairs: seeds for accuracy, cIoU; targets, each the mean of its seeds for" in md
    finally:
        os.chdir(ROOT)


def test_mi_table_cells_say_which_intervals_are_one_sided():
    """Each MI table row shows a two-sided term as [lo, hi] and a lower-bound term (the estimator's
    shortfall not bounded) as "≥ lo (one-sided)", read from the committed MI files themselves."""
    run = json.loads((DEMO / "run.json").read_text())
    report = (DEMO / "report.md").read_text()
    kinds = set()
    for ck in run["checkpoints"]:
        doc = json.loads((DEMO / ck["main_mi"]).read_text())
        for t in doc["terms"]:
            if t.get("degenerate"):
                continue
            lower = t.get("bound") == "lower"
            kinds.add(lower)
            cell = (f"≥ {t['ci_low']:.3f} (one-sided)" if lower else f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}]")
            term = t["term"].replace("|", "\\|")
            row = f"| {ck['name']} | {ck['condition'].capitalize()} | {term} | {t['estimate']:.3f} | {cell} |"
            assert row in report, row
    assert True in kinds  # the demo's small cells make some terms one-sided: the test sees that case


def test_run_paths_helpers(tmp_path):
    run = tmp_path / "run"
    (run / "mi").mkdir(parents=True)
    assert run_relative(run / "mi" / "a.json", run) == "mi/a.json"
    assert run_relative(tmp_path / "model", run) == str((tmp_path / "model").resolve())
    current = RunSummary(target=[], checkpoints=[], results="", format_version=2)
    assert resolve_run_path(run, "mi/a.json", current) == run / "mi" / "a.json"
    assert resolve_run_path(run, "/abs/x", current) == Path("/abs/x")
    old = RunSummary(target=[], checkpoints=[], results="", format_version=1, config={"out": "reports/run"})
    (run / "mi" / "a.json").write_text("{}")
    assert resolve_run_path(run, "reports/run/mi/a.json", old) == run / "mi" / "a.json"


def test_report_imports_nothing_from_pipeline_or_cli():
    report_dir = ROOT / "src" / "matprobe" / "report"
    for path in report_dir.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            assert not [n for n in names if n.startswith(("matprobe.pipeline", "matprobe.cli"))], path
    code = ("import sys, matprobe.report.render, matprobe.report.figures; "
            "print(sorted(m for m in sys.modules if m in ('matprobe.pipeline', 'matprobe.cli')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ figures
def test_checkpoint_colours_distinct_within_condition(report_run):
    data = load_run(report_run)
    colours = figures.checkpoint_colours(data.terms)
    n_ckpt = data.terms["checkpoint"].nunique()
    assert len(set(colours.values())) == len(colours) == n_ckpt
    for cond, sub in data.terms.drop_duplicates("checkpoint").groupby("condition"):
        base = colorsys.rgb_to_hsv(*__import__("matplotlib").colors.to_rgb(figures.PALETTE[cond]))[0]
        for name in sub["checkpoint"]:  # the condition's hue, another shade
            assert abs(colorsys.rgb_to_hsv(*colours[name])[0] - base) < 0.02
    from matplotlib.container import BarContainer

    fig = figures.draw_mi_chain(data.terms, 0.9)
    drawn = {c.get_label(): tuple(np.round(c.patches[0].get_facecolor()[:3], 4))
             for c in fig.axes[0].containers if isinstance(c, BarContainer)}
    assert set(drawn) == set(colours) and len(set(drawn.values())) == n_ckpt


def test_legends_do_not_cover_data(report_run):
    data = load_run(report_run)
    st = data.strata.dropna(subset=["mi"])
    for fig in (figures.draw_mi_chain(data.terms), figures.draw_mi_by_layer(data.terms),
                figures.draw_mi_vs_accuracy(st), figures.draw_fano_curve(st), figures.draw_pac_bounds(data.pac)):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        assert legends
        for leg in legends:
            box = leg.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), ax.get_title()


# ------------------------------------------------------------------------------ browser
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
LAYOUT_PROBE = """<script>window.addEventListener('load', function () {
  var w = document.documentElement.clientWidth, bad = [];
  document.querySelectorAll('table').forEach(function (t, i) {
    var r = t.getBoundingClientRect();
    if (r.right > w + 0.5 || r.left < -0.5) bad.push(i);
  });
  var o = document.createElement('pre'); o.id = 'layout-probe';
  o.textContent = JSON.stringify({width: w, scroll: document.documentElement.scrollWidth,
                                  tables: document.querySelectorAll('table').length, overflow: bad});
  document.body.appendChild(o);
});</script>"""


def _browser(*args: str) -> str:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def _layout(page: Path, tmp: Path, width: int) -> dict:
    probe = tmp / f"probe-{page.stem}.html"
    probe.write_text(page.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = _browser(f"--window-size={width},900", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="layout-probe">([^<]*)</pre>', dom)
    assert found, dom[-2000:]
    return json.loads(found.group(1))


@pytest.fixture
def browser():
    if BROWSER is None:
        if os.environ.get("MATPROBE_REQUIRE_BROWSER"):
            pytest.fail("MATPROBE_REQUIRE_BROWSER is set but no chromium is installed")
        pytest.skip("no headless chromium (apt-get install chromium)")
    return BROWSER


def test_html_report_in_a_browser(report_run, tmp_path, browser):
    from PIL import Image

    page = report_run / "report.html"
    shot = tmp_path / "shot.png"
    _browser("--window-size=1024,2400", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("L"))
    assert pixels.shape == (2400, 1024)
    assert (pixels < 200).mean() > 0.03  # text, figures and tables, not a blank page
    for width in (1024, 760):
        layout = _layout(page, tmp_path, width)
        assert layout["tables"] >= 9
        assert layout["overflow"] == [] and layout["scroll"] <= layout["width"], (width, layout)


def test_browser_layout_check_can_fail(tmp_path, browser):
    wide = "<table><tr>" + "".join(f"<td style='white-space:nowrap'>{'x' * 60}</td>" for _ in range(8)) + "</tr></table>"
    page = tmp_path / "wide.html"
    page.write_text(f"<!DOCTYPE html><html><body>{wide}</body></html>")
    layout = _layout(page, tmp_path, 800)
    assert layout["overflow"] == [0]


def test_significance_markdown_escapes_headers():
    """`significance --out table9.md` writes through present.significance.markdown: metric names with a
    `|` in the header row must not split columns (else CommonMark sees no table at all)."""
    from matprobe.present.significance import markdown

    frame = pd.DataFrame({"I(Z;anatomy|modality) nats": ["0.010"], "accuracy": ["< 0.001"]},
                         index=pd.Index(["Related vs. Unrelated"], name="Comparison"))
    (table,) = _tables(markdown(frame))
    assert table["head"] == ["Comparison", "I(Z;anatomy|modality) nats", "accuracy"]
    assert table["rows"] == [["Related vs. Unrelated", "0.010", "< 0.001"]]


def test_pointwise_table_is_the_mean_of_the_checkpoints_summaries(report_run):
    """Issue 25: the per-stratum table holds, per condition, the mean over its checkpoints of the
    contributions recorded in their main MI files; each checkpoint's contributions add up to its term."""
    from matprobe.conditions import condition_name

    run = json.loads((report_run / "run.json").read_text())
    want: dict = {}
    for ck in run["checkpoints"]:
        doc = json.loads((report_run / ck["main_mi"]).read_text())
        for t in doc["terms"]:
            s = t["pointwise_summary"]
            total = sum(g["contribution"] for g in s["groups"])
            assert total == pytest.approx(s["mean"], abs=1e-9)
            if not t["clipped"]:
                assert s["mean"] == pytest.approx(t["estimate"], abs=1e-9)
            for g in s["groups"]:
                key = (t["term"], " / ".join(map(str, g["given"].values())), condition_name(ck["condition"]))
                want.setdefault(key, []).append(g["contribution"])
    md = (report_run / "report.md").read_text()
    section = md.split("## Where the information sits")[1].split("\n## ")[0]
    table = _tables(section)[0]
    conds = [h.split(", ", 1)[1] for h in table["head"] if h.startswith("contribution")]
    assert len(conds) == 2
    checked = 0
    for row in table["rows"]:
        cells = dict(zip(table["head"], row))
        for cond in conds:
            values = want[(cells["term"], cells["stratum or class"], cond)]
            assert float(cells[f"contribution (nats), {cond}"]) == pytest.approx(np.mean(values), abs=5e-4)
            checked += 1
    assert checked == 2 * len({k[:2] for k in want}) > 20


def test_summary_lists_the_chain_terms_in_the_chain_order(report_run):
    """The summary's "All chain terms" follow the chain (M, A|M, T|M,A, label|M,A,T), as each MI
    file orders them, not the alphabet (which put label before modality)."""
    run = json.loads((report_run / "run.json").read_text())
    doc = json.loads((report_run / run["checkpoints"][0]["main_mi"]).read_text())
    chain = list(dict.fromkeys(t["term"] for t in doc["terms"]))
    findings = json.loads((report_run / "findings.json").read_text())
    assert list(findings["most_encoded"]["all_terms"]) == chain
    line = next(x for x in (report_run / "report.md").read_text().splitlines() if "All chain terms" in x)
    positions = [line.index(f"{t} = ") for t in chain]
    assert positions == sorted(positions)


def test_fano_information_needed_is_never_negative(tmp_path):
    """Fano's H(Y|s) - φ(ε) is negative where the error is near chance: it then demands nothing, and
    the table says 0, not a negative amount of information; positive amounts are shown as they are."""
    run_dir = make_run(tmp_path / "run", extra_layer=False)
    run = json.loads((run_dir / "run.json").read_text())
    path = run_dir / run["checkpoints"][0]["check"]
    check = json.loads(path.read_text())
    first, second = check["strata"][0], check["strata"][1]
    first["fano_mi_lower"], first["fano_mi_lower_finite"] = -0.2, -0.35
    path.write_text(json.dumps(check))
    write_report(run_dir)
    fano = next(t for t in _tables((run_dir / "report.md").read_text()) if "ε respects floor" in t["head"])
    h = fano["head"]
    col = next(c for c in h if c.startswith("I needed at ε"))
    cells = {(r[h.index("checkpoint")], r[h.index("stratum")]): r[h.index(col)] for r in fano["rows"]}

    def key(s):
        g = s["given"]
        return run["checkpoints"][0]["name"], f"{g['modality']} / {g['anatomy']} / {g['task']}"

    assert cells[key(first)] == "0.000 / 0.000"
    assert cells[key(second)] == f"{max(second['fano_mi_lower'], 0):.3f} / {max(second['fano_mi_lower_finite'], 0):.3f}"
    assert not any(c.startswith("-") or " / -" in c for c in cells.values())


def test_fano_summary_says_no_floor_where_every_answer_was_merged(tmp_path):
    """Where each checkpoint's MI merged the answer's rare classes, no stratum has an error floor:
    the summary says that, not "respects the floor ... in 0, ... in 0, and not in 0"."""
    run_dir = make_run(tmp_path / "run", extra_layer=False)
    run = json.loads((run_dir / "run.json").read_text())
    for ck in run["checkpoints"]:
        path = run_dir / ck["check"]
        check = json.loads(path.read_text())
        check["merged_target"] = {"merged": ["B", "C"], "into": "B|C"}
        for s in check["strata"]:
            s["error_floor"] = s["error_floor_lenient"] = s["error_respects_floor"] = None
        path.write_text(json.dumps(check))
    write_report(run_dir)
    line = next(x for x in (run_dir / "report.md").read_text().splitlines() if "respect Fano" in x)
    assert "no cell has an error floor implied by Î" in line
    assert "in 0, only within" not in line


def _rebuilt_report(copy: Path, cwd: Path) -> str:
    """report.md of the run folder `copy`, written from `cwd` (its paths are relative to the run)."""
    os.chdir(cwd)
    try:
        write_report(copy)
    finally:
        os.chdir(ROOT)
    return (copy / "report.md").read_text()


def test_a_condition_with_fewer_seeds_is_paired_on_the_runs_both_have(tmp_path):
    """Related trained on three seeds, Unrelated on two (its last seed's runs removed from the
    committed demo's results): the run's significance pairs the runs both have (scipy's paired
    t-test on them), says which run was left out, and the summary's accuracy means are over those
    pairs, so their difference is the Δ it prints."""
    from types import SimpleNamespace

    from scipy import stats

    from matprobe.pipeline import significance_table

    copy = _committed_demo_copy(tmp_path)
    results = pd.read_csv(copy / "results.csv")
    dropped = sorted(results.loc[results.condition == "Unrelated", "seed"].unique())[-1]
    results = results[~((results.condition == "Unrelated") & (results.seed == dropped))]
    results.to_csv(copy / "results.csv", index=False)
    sig, untested = significance_table(results, SimpleNamespace(conditions=["related", "unrelated"]))
    assert untested == []
    sig.to_csv(copy / "significance.csv", index=False)
    acc = results[(results.metric == "accuracy") & results.item.isna()].pivot_table(
        index=["target", "seed"], columns="condition", values="value")
    paired = acc.dropna()
    assert len(paired) == len(acc) - 1  # the dropped seed's Related run has no partner
    row = sig[(sig.comparison == "Related vs. Unrelated") & (sig.metric == "accuracy")].iloc[0]
    assert row.n_pairs == len(paired)
    assert row.p == pytest.approx(stats.ttest_rel(paired.Related, paired.Unrelated).pvalue, rel=1e-9)
    assert f"seed '{dropped}': 'Related' only (no 'Unrelated' run)" in row.warning
    md = _rebuilt_report(copy, tmp_path)
    line = next(x for x in md.splitlines() if "Is the Related–Unrelated difference significant?" in x)
    assert (f"Related {paired.Related.mean():.3f}, Unrelated {paired.Unrelated.mean():.3f} "
            f"(chance 1/4 = 0.250; {len(paired)} seeds each, paired by seed; left out, unpaired (a run one condition "
            "lacks):") in line
    assert f"Δ = {paired.Related.mean() - paired.Unrelated.mean():.3f}" in line
    assert "Related vs. Unrelated: left out, unpaired (a run one condition lacks): target" in md  # under the tables
    # the segmentation target's cIoU line: its means over the same pairs
    ciou = results[results.metric == "cIoU"].pivot_table(index=["target", "seed"], columns="condition",
                                                         values="value").dropna()
    line = next(x for x in md.splitlines() if "Segmentation target" in x)
    assert (f"Related {ciou.Related.mean():.3f}, Unrelated {ciou.Unrelated.mean():.3f} ({len(ciou)} seeds each; "
            "left out, unpaired (a run one condition lacks):") in line
    # the MI lines too: their means over the units whose Δ they print (they were over every checkpoint,
    # on the other side of Δ in a user study): here two targets, each the mean of its seeds (the MI
    # is tested by target), recomputed from results.csv with pandas
    for metric, head in (("I(Z;task|modality,anatomy) nats", "**Did Related training raise I(Z;T|M,A) over "
                          "Unrelated?** "),
                         ("I(Z;Y|target) nats", "I(Z;Y | target), mean over their checkpoints: ")):
        assert sig[sig.metric == metric].unit.tolist() == ["target"]
        wide = results[results.metric == metric].pivot_table(index="target", columns="condition", values="value")
        assert len(wide) == 2
        assert f"{head}Related {wide.Related.mean():.3f} vs Unrelated {wide.Unrelated.mean():.3f} nats" in md, metric


def test_a_comparison_without_two_shared_runs_is_left_untested_not_the_whole_table():
    """A condition with one seed: its comparison is not tested (said), the others are; the
    `significance` defaults do the same, and the table with every run still pairs (no note)."""
    from types import SimpleNamespace

    from matprobe.pipeline import significance_table
    from matprobe.stats.significance import significance

    rng = np.random.default_rng(3)
    rows = [{"condition": c, "target": "CT,Lung,X", "seed": s, "metric": m, "value": float(rng.uniform())}
            for c, seeds in (("Related", (0, 1, 2)), ("Unrelated", (0, 1, 2)), ("Without Task", (0,)))
            for s in seeds for m in ("accuracy", "I(Z;Y|target) nats")]
    results = pd.DataFrame(rows)
    sig, untested = significance_table(results, SimpleNamespace(conditions=["related", "unrelated", "without-task"]))
    assert set(sig.comparison) == {"Related vs. Unrelated"} and (sig.n_pairs == 3).all()
    assert untested == ["Without Task vs. Related: not tested, 1 (target, seed) run(s) trained under both "
                        "conditions (a paired test needs two): train the same seeds for each condition"]
    res = significance(results)
    assert set(res.results.comparison) == {"Related vs. Unrelated"}
    assert any("Without Task vs. Related: not tested, 1 (target, seed) run(s)" in n for n in res.notes())
    assert not res.results.warning.str.contains("left out").any()


def test_summary_says_no_paired_test_where_conditions_share_one_run(tmp_path):
    """Unrelated left with one seed: the run tests nothing (said as a design warning), and the
    summary's I(Z;T|M,A) and I(Z;Y|target) lines say there was no paired test, not just two means."""
    from types import SimpleNamespace

    from matprobe.pipeline import significance_table

    copy = _committed_demo_copy(tmp_path)
    results = pd.read_csv(copy / "results.csv")
    kept = sorted(results.loc[results.condition == "Unrelated", "seed"].unique())[0]
    results = results[(results.condition == "Related") | (results.seed == kept)]
    # with the other targets' rows the chain terms still pair across targets; accuracy does not
    sig, untested = significance_table(results, SimpleNamespace(conditions=["related", "unrelated"]))
    assert "accuracy" not in set(sig.metric) and len(sig) and (sig.n_pairs >= 2).all()
    # the demo measures accuracy on its classification target and cIoU on its segmentation one
    assert results.loc[results.metric.isin(["accuracy", "intersection"]), "target"].nunique() == 2
    assert untested == ["Related vs. Unrelated: not tested on accuracy, cIoU, 1 (target, seed) run(s) trained under "
                        "both conditions (a paired test needs two): train the same seeds for each condition"]
    # the held-out target alone: nothing pairs
    results = results[results.target == results.loc[results.metric == "accuracy", "target"].iloc[0]]
    results.to_csv(copy / "results.csv", index=False)
    sig, untested = significance_table(results, SimpleNamespace(conditions=["related", "unrelated"]))
    n_shared = 1
    assert sig is None and untested == [
        f"Related vs. Unrelated: not tested, {n_shared} (target, seed) run(s) trained under both conditions (a "
        "paired test needs two): train the same seeds for each condition"]
    (copy / "significance.csv").unlink()
    run = json.loads((copy / "run.json").read_text())
    run.update(significance=None, data_warnings=untested)
    (copy / "run.json").write_text(json.dumps(run))
    md = _rebuilt_report(copy, tmp_path)
    said = f"(no paired test: {n_shared} (target, seed) run(s) under both conditions, a paired test needs two)"
    for question in ("Did Related training raise I(Z;T|M,A) over Unrelated?", "Information about Y"):
        assert said in next(x for x in md.splitlines() if question in x), question
    assert untested[0] in md and "Not computed" in md


def _refuse_constant(name):
    raise ValueError(f"bare {name} in JSON")


def test_findings_json_is_strict_json_with_null_where_a_number_is_undefined(tmp_path, monkeypatch):
    """A p-value or interval that could not be computed (one pair, every answer the same) is NaN
    in Python; findings.json writes it as null, which JavaScript's JSON.parse and a strict
    `json.loads` accept (a bare NaN made them fail on a user's run)."""
    from matprobe.report import render

    run_dir = make_run(tmp_path / "run", extra_layer=False)
    real = render.findings

    def with_undefined(data):
        found = real(data)
        found["undefined_for_the_test"] = {"t": float("nan"), "ci": [float("-inf"), np.float64("nan")], "n": 3}
        return found

    monkeypatch.setattr(render, "findings", with_undefined)
    write_report(run_dir)
    found = json.loads((run_dir / "findings.json").read_text(), parse_constant=_refuse_constant)
    assert found["undefined_for_the_test"] == {"t": None, "ci": [None, None], "n": 3}
    assert found["most_encoded"] == json.loads(json.dumps(real(render.load_run(run_dir))))["most_encoded"]


def test_items_table_leaves_out_items_of_a_one_class_stratum(tmp_path):
    """Results written before the summary left them out may list items of a stratum that is 0 by
    definition (one class, no critic) among a term's lowest: the items table ("read worst and best")
    lists the others only, though every checkpoint lists that item."""
    run_dir = make_run(tmp_path / "run")
    run = json.loads((run_dir / "run.json").read_text())
    kept = set()
    for ck in run["checkpoints"]:
        path = run_dir / ck["main_mi"]
        doc = json.loads(path.read_text())
        term = next(t for t in doc["terms"] if len(t["pointwise_summary"]["groups"]) >= 2)
        s = term["pointwise_summary"]
        fixed = s["groups"][0]
        fixed.update(mean=0.0, contribution=0.0, positive=0.0, q25=0.0, median=0.0, q75=0.0, all_zero=True)
        kept |= {e["id"] for e in s["lowest"] if e["given"] != fixed["given"]}
        s["lowest"] = [{"id": "zero-item", "given": fixed["given"], "value": 0.0}] + s["lowest"]
        path.write_text(json.dumps(doc))
    write_report(run_dir)
    md = (run_dir / "report.md").read_text()
    section = md.split("## Where the information sits")[1].split("\n## ")[0]
    items = _tables(section)[1]
    rows = [dict(zip(items["head"], row)) for row in items["rows"]]
    assert not [r for r in rows if r["item id"] == "zero-item"]
    assert {r["item id"] for r in rows if r["term"] == term["term"] and r["end"] == "lowest"} & kept
