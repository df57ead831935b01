"""The docstring examples of matprobe's modules run as tests (numpydoc "Examples" sections).

Every module whose source holds a `>>>` example is found here, so an example added anywhere runs
in `make test` and `make test-fast` without being listed (`pytest --doctest-modules src/matprobe`
runs the same examples).
"""

from __future__ import annotations

import doctest
import importlib
import re
import tempfile
from pathlib import Path

import pytest

import matprobe

SRC = Path(matprobe.__file__).parent
# whitespace in printed tables and the spacing numpy puts in arrays are not what an example is about
FLAGS = doctest.NORMALIZE_WHITESPACE


def modules_with_examples() -> list[str]:
    out = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "__main__.py" and re.search(r"^\s*>>> ", path.read_text(), re.M):
            parts = path.relative_to(SRC.parent).with_suffix("").parts
            out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


EXAMPLES = modules_with_examples()


def _finder_tests(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module, name) if t.examples]


def run_examples(name: str, only: str | None = None) -> tuple[doctest.TestResults, str]:
    """Run the examples of module `name` (or only those of its object `only`, a qualified name)."""
    import torch

    torch.set_num_threads(1)
    out: list[str] = []
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _finder_tests(name):
        if only is None or test.name == only:
            runner.run(test, out=out.append)
    return runner.summarize(verbose=False), "".join(out)


# one test per documented object, so an example that builds a model or runs a study can be
# marked slow (conftest.SLOW) without taking the quick ones out of `make test-fast`
EXAMPLE_OBJECTS = [(module, test.name) for module in EXAMPLES for test in _finder_tests(module)]


def test_examples_are_found():
    # the finder can fail: these modules hold examples
    assert {"matprobe.data.entropy", "matprobe.theory.fano", "matprobe.theory.pac",
            "matprobe.stats.summary", "matprobe.stats.significance"} <= set(EXAMPLES)
    documented = {name for _, name in EXAMPLE_OBJECTS}
    assert {"matprobe.api.extract", "matprobe.api.mi", "matprobe.api.run"} <= documented


@pytest.mark.parametrize("module, name", EXAMPLE_OBJECTS, ids=[name for _, name in EXAMPLE_OBJECTS])
def test_docstring_examples(module, name, tmp_path, monkeypatch):
    # the examples make their folders with tempfile.mkdtemp(), as a reader would; here those land in
    # the test's own folder, which pytest removes (they had piled up in /tmp, 16 per run)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    results, report = run_examples(module, only=name)
    assert results.attempted > 0, f"{name}: `>>>` in the source but no example found"
    assert results.failed == 0, report


def test_a_wrong_example_fails(tmp_path, monkeypatch):
    # the runner above reports a mismatch (it is not a no-op)
    (tmp_path / "wrong_example.py").write_text('def f():\n    """\n    >>> 1 + 1\n    3\n    """\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    results, report = run_examples("wrong_example")
    assert (results.failed, results.attempted) == (1, 1)
    assert "Expected:\n    3\nGot:\n    2" in report
