"""Issue 24: result files are read through their typed readers (`ChainResult.read` / `from_json` for
MI results, `CheckResult.from_dict` / `load_check` for check results, `PointwiseSummary` for a
term's pointwise summary, `rundir.RunSummary` for run.json), and their consumers use attributes. This test parses every consumer
module (the report, the pipeline, the CLI and the API) and fails on a subscript or `.get` with a key
that exists only in a result document's layout, so a consumer cannot go back to reading a file by
key. Tidy frames (one column per quantity) are results too and are read by column, so keys that are
also frame columns are not listed. The per-stratum entries of an `MIEstimate` are typed
(`StratumEstimate`, converted from a plug-in's dicts by the term loop: the last test)."""

from __future__ import annotations

import ast
from pathlib import Path

import matprobe

SRC = Path(matprobe.__file__).parent
CONSUMERS = [*sorted((SRC / "report").rglob("*.py")), SRC / "pipeline.py", SRC / "cli.py", SRC / "api.py"]
# keys of the MI results document (results_json) and the check document (CheckResult.to_dict) that
# name its structure: a consumer that subscripts one of these is reading the file by hand
DOCUMENT_KEYS = {"terms", "direct", "direct_all", "agreement", "pointwise_summary", "aggregate", "pac", "bounds",
                 "test_set_bound", "error_ci", "heldout", "estimated_here", "lowest", "highest", "groups", "strata"}
# run.json (rundir.RunSummary): the report reads it back typed; the pipeline, which writes it, keeps its
# checkpoint records as dicts while it runs, so these keys are checked in report/ only
RUN_KEYS = {"checkpoints", "main_mi", "source_mi", "composition", "train_sizes", "train_sizes_by_target",
            "environment", "seconds", "source_warnings", "n_samples", "manifest", "significance"}
# the report's own findings (findings.json, written by the report) share keys with the check file and run.json
ALLOWED = {("report/render.py", "summary_lines", "strata"), ("report/render.py", "summary_lines", "significance"),
           ("report/render.py", "findings", "significance")}


def keyed_reads(path: Path, keys: set[str] = DOCUMENT_KEYS) -> list[tuple[str, str, int]]:
    """(innermost function, key, line) for each subscript or .get(...) with a literal key in `keys`."""
    found = []

    def visit(node, func: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            func = node.name
        key = None
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key = node.slice.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and isinstance(node.args[0], ast.Constant)):
            key = node.args[0].value
        if isinstance(key, str) and key in keys:
            found.append((func, key, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, func)

    visit(ast.parse(path.read_text()), "<module>")
    return found


def test_no_consumer_reads_a_result_document_by_key():
    bad = [f"{path.relative_to(SRC).as_posix()}:{line} {func}: [{key!r}]"
           for path in CONSUMERS
           for func, key, line in keyed_reads(path, DOCUMENT_KEYS | (RUN_KEYS if "report" in path.parts else set()))
           if (path.relative_to(SRC).as_posix(), func, key) not in ALLOWED]
    assert bad == [], "read these through the typed result:\n" + "\n".join(bad)


def test_the_key_scan_finds_a_consumer_reading_by_key(tmp_path):
    """The scan can fail: a consumer written the old way is caught, key by key."""
    old = tmp_path / "old_render.py"
    old.write_text("def load(check, doc):\n"
                   "    p = check['pac']\n"
                   "    for t in doc.get('terms', []):\n"
                   "        pass\n"
                   "    return p['bounds'], check['strata']\n")
    assert sorted((k, line) for _, k, line in keyed_reads(old)) == [
        ("bounds", 5), ("pac", 2), ("strata", 5), ("terms", 3)]


def test_stratum_entries_are_typed_even_from_a_plugin_that_gives_dicts():
    # the contract lets an estimator return per-stratum dicts; the term loop converts them, so
    # every consumer reads attributes (issue 24)
    import numpy as np

    from matprobe.mi.chain import TermSpec, estimate_terms
    from matprobe.mi.interface import EstimatorTags, MIEstimate, StratumEstimate

    class DictStrata:
        name, tags = "dict-strata", EstimatorTags(conditional=True)

        def params(self):
            return {}

        def estimate(self, z, y, c=None, *, sub=None, plan=None, names=None, pointwise=False):
            strata = [{"given": str(s), "n": int((c == s).sum()), "estimate": 0.1 * s, "ci_low": 0.0,
                       "ci_high": 0.2 * s, "h_upper": 1.0, "note": "", "extra": "ignored"} for s in np.unique(c)]
            return MIEstimate(value=0.1, ci_low=0.0, ci_high=0.2, ci_level=0.95, unit="nats", n_train=len(y),
                              n_eval=len(y), estimator=self.name, strata=strata)

    codes = {"M": np.arange(12) % 2, "A": np.arange(12) % 3}
    e = estimate_terms(DictStrata(), DictStrata.tags, np.zeros((12, 2)), codes, [TermSpec(("A",), ("M",))])[0]
    assert [type(s) for s in e.strata] == [StratumEstimate, StratumEstimate]
    assert [(s.given, s.n, s.estimate, s.ci_high) for s in e.strata] == [("0", 6, 0.0, 0.0), ("1", 6, 0.1, 0.2)]
