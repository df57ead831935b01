"""Import layering (docs/ARCHITECTURE.md): data -> extract -> store -> mi -> theory -> stats -> report,
pipeline on top. mi/ imports nothing from the layers that use it (nor extract/, which loads models);
theory/ nothing above it; the estimator interface and the rank helpers are leaves."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import matprobe

SRC = Path(matprobe.__file__).parent
ABOVE_MI = ("matprobe.theory", "matprobe.extract", "matprobe.stats", "matprobe.report", "matprobe.pipeline",
            "matprobe.cli")
ABOVE_THEORY = ("matprobe.stats", "matprobe.report", "matprobe.pipeline", "matprobe.cli")


def imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (lazy imports inside functions included)."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return out


def offending(folder: str, banned: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((SRC / folder).glob("*.py")):
        hits = sorted(m for m in imports(path) if m.startswith(banned))
        if hits:
            bad[path.name] = hits
    return bad


def test_the_parser_sees_imports():
    # the check below can fail: it finds the imports that are there
    found = imports(SRC / "mi" / "chain.py")
    assert {"matprobe.mi.registry", "matprobe.store", "matprobe.data.entropy"} <= found
    assert "matprobe.mi.chain" in imports(SRC / "theory" / "relate.py")


@pytest.mark.parametrize("folder, banned", [("mi", ABOVE_MI), ("theory", ABOVE_THEORY)])
def test_layer_imports_nothing_above_it(folder, banned):
    assert offending(folder, banned) == {}


def test_leaf_modules():
    assert not [m for m in imports(SRC / "mi" / "interface.py") if m.startswith("matprobe")]
    assert {m for m in imports(SRC / "parallel.py") if m.startswith("matprobe")} <= {"matprobe.errors",
                                                                                      "matprobe.errors.LaunchError"}


def test_running_mi_loads_no_higher_layer():
    code = ("import sys, matprobe.mi.sweep, matprobe.mi.compare, matprobe.mi.registry as r; "
            "r.available_estimators(); print(' '.join(sorted(m for m in sys.modules if m.startswith('matprobe'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "matprobe.mi.probe" in loaded
    # `import matprobe` imports the packages named like API verbs (mp.extract, mp.report) so their
    # names can be bound to the verbs (matprobe/__init__.py); their __init__ files hold no code
    name_only = {"matprobe.extract", "matprobe.report"}
    for pkg in name_only:
        assert not imports(SRC / pkg.split(".")[1] / "__init__.py"), pkg
    assert [m for m in loaded if m.startswith(ABOVE_MI) and m not in name_only] == []
