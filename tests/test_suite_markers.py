"""The `slow` marker (tests/conftest.py) names real tests, is registered, and leaves every part of the
pipeline with fast tests in `make test-fast`."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from conftest import SLOW

TESTS = Path(__file__).parent
# one fast test file at least per layer of the pipeline (docs/ARCHITECTURE.md)
AREAS = {
    "data": ["test_data_model.py", "test_medmat.py", "test_data_arrow.py"],
    "extract": ["test_extract_checkpoints.py", "test_extract_equivalence.py", "test_architectures.py"],
    "store": ["test_store.py", "test_provenance.py"],
    "mi": ["test_mi.py", "test_groundtruth.py", "test_estimator_contract.py"],
    "theory": ["test_fano.py", "test_pac.py", "test_check.py"],
    "stats": ["test_significance.py", "test_significance_summary.py", "test_significance_output.py"],
    "report": ["test_report.py", "test_present.py"],
    "cli": ["test_cli_foundation.py", "test_newcomer_cli.py"],
}


def test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


test_functions.__test__ = False


def test_every_slow_name_is_a_test():
    stale = {}
    for file, names in SLOW.items():
        path = TESTS / file
        found = test_functions(path) if path.is_file() else set()
        missing = sorted(n for n in names if n.split("[")[0] not in found)
        if missing:
            stale[file] = missing
    assert stale == {}, "renamed or removed tests are still listed in conftest.SLOW"


def test_the_marker_is_registered():
    ini = tomllib.loads((TESTS.parent / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("slow:") for m in ini["markers"])


def test_every_area_keeps_fast_tests():
    for area, files in AREAS.items():
        fast = {f: test_functions(TESTS / f) - SLOW.get(f, set()) for f in files}
        assert sum(len(v) for v in fast.values()) >= 3, (area, fast)
