"""The Python API (`import matprobe as mp`): one function per CLI verb with the CLI's defaults
(read from the typer commands, not written down here), the same results as the CLI for the same
inputs, `mp.mi` an ordinary function, check reusing a Y term asked for up front, notebook progress."""

from __future__ import annotations

import doctest
import inspect
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

import matprobe as mp
from matprobe.cli import app
from matprobe.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

# CLI options that only choose how results are shown; the API returns typed results instead
DISPLAY_ONLY = {"fmt", "bits", "as_json", "verbose", "ctx"}
# commands whose --unit only converts the printed table (results stay in nats): `.to_table(unit)`
DISPLAY_UNIT = {("check",), ("bounds", "pac")}
# the command groups whose verbs live elsewhere in the API: `data validate` -> mp.validate,
# `bounds fano` -> mp.bounds.fano, `store info` -> mp.store_info
GROUPS = {"data": lambda name: getattr(mp, name), "bounds": lambda name: getattr(mp.bounds, name),
          "store": lambda name: getattr(mp, f"store_{name}")}


def _leaf_commands(group, prefix=()):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):  # a command group (typer vendors its own click)
            yield from _leaf_commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


COMMANDS = dict(_leaf_commands(typer.main.get_command(app)))


def api_function(path: tuple[str, ...]):
    if len(path) == 2:
        return GROUPS[path[0]](path[1].replace("-", "_"))
    return getattr(mp, path[0].replace("-", "_"))


def test_every_cli_verb_has_an_api_function():
    assert len(COMMANDS) >= 16
    missing = []
    for path in COMMANDS:
        try:
            fn = api_function(path)
        except AttributeError:
            missing.append(" ".join(path))
            continue
        assert callable(fn) and fn.__doc__, path
    assert not missing, f"no mp. function for: {missing}"


def _norm(value):
    return str(value) if isinstance(value, Path) else value


@pytest.mark.parametrize("path", sorted(COMMANDS), ids=" ".join)
def test_api_defaults_are_the_cli_defaults(path):
    """Every option of the command is a parameter of the API function, with the same default.
    Where the CLI requires a value the API may require it too, or resolve it (None); `out` may
    default to None in the API (it writes only when asked)."""
    params = inspect.signature(api_function(path)).parameters
    for p in COMMANDS[path].params:
        if p.name in DISPLAY_ONLY or (p.name == "unit" and path in DISPLAY_UNIT):
            continue
        assert p.name in params, f"{' '.join(path)}: the API has no parameter {p.name!r}"
        api_default = params[p.name].default
        if p.required:
            assert api_default in (inspect.Parameter.empty, None), (path, p.name)
            continue
        if p.name == "out" and api_default is None:
            continue
        cli_default = p.default if not callable(p.default) else p.default()
        assert _norm(api_default) == _norm(cli_default), \
            f"{' '.join(path)} {p.name}: API default {api_default!r}, CLI default {cli_default!r}"


def test_mp_mi_is_an_ordinary_function_and_the_package_still_imports():
    code = """
import importlib, inspect, pydoc, types
import matprobe as mp
import matprobe.mi.chain, matprobe.extract.runner, matprobe.report.render   # subpackages imported
from matprobe.mi import chain_terms, make_estimator
import matprobe.mi.registry as registry, matprobe.extract.runner as runner   # `import a.b.c as x` too
assert registry.make_estimator is make_estimator and runner.__name__ == "matprobe.extract.runner"
for verb in ("mi", "extract", "report"):
    fn = getattr(mp, verb)
    assert isinstance(fn, types.FunctionType), (verb, fn)
pkg = importlib.import_module("matprobe.mi")
assert hasattr(pkg, "__path__") and pkg.chain_terms is chain_terms
sig = inspect.signature(mp.mi)
print(list(sig.parameters)[:4], sig.parameters["seeds"].default)
print(pydoc.render_doc(mp.mi, renderer=pydoc.plaintext).splitlines()[2])
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    first, doc = proc.stdout.splitlines()[:2]
    assert first == f"['store', 'factors', 'layer', 'pool'] {mp.DEFAULTS.seeds}"
    assert "mi(store, factors" in doc  # help(mp.mi) shows the function, not the package


def test_docstring_examples_run(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the examples' mkdtemp() folders

    torch.set_num_threads(1)
    for fn in (mp.mi, mp.bounds.fano):
        finder = doctest.DocTestFinder()
        (test,) = finder.find(fn, fn.__name__, globs={})
        result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
        assert result.failed == 0 and result.attempted >= 2, fn


# --------------------------------------------------------------------------- same results as the CLI


def _store(path: Path, seed: int, shift: float) -> Path:
    """Two modalities x two anatomies x two tasks, a binary label Z carries by `shift`, answers."""
    rng = np.random.default_rng(seed)
    n = 320
    m, a, t, y = (rng.integers(0, 2, n) for _ in range(4))
    z = np.stack([m + 0.3 * rng.standard_normal(n), a + 0.3 * rng.standard_normal(n),
                  t + 0.5 * rng.standard_normal(n), shift * y + 0.5 * rng.standard_normal(n),
                  rng.standard_normal(n)], 1).astype(np.float32)
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    EmbeddingStore.from_arrays(
        path, [f"s{i}" for i in range(n)],
        {"modality": np.array(["CT", "MRI"])[m], "anatomy": np.array(["Brain", "Lung"])[a],
         "task": np.array(["Cls", "Seg"])[t], "label": np.array(["no", "yes"])[y], "answer_index": y},
        {("0", "last"): z, ("3", "last"): 2 * z + 1},
        answers={"pred": pred, "probs": np.eye(2)[pred].astype(np.float32)}).close()
    return path


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("api")
    return _store(root / "a.h5", 0, 1.5), _store(root / "b.h5", 0, 0.5)


FAST = {"seeds": 1, "folds": 2, "pca": 0}
FAST_CLI = ["--seeds", "1", "--folds", "2", "--pca", "0"]


def _invoke(args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _without(doc, *keys):
    return {k: v for k, v in doc.items() if k not in keys}


def test_mi_and_check_equal_the_cli(stores, tmp_path, monkeypatch):
    a, _ = stores
    _invoke(["mi", a, "--factors", "M,A,T,Y", "--layer", "0", *FAST_CLI, "--out", tmp_path / "cli.json"])
    res = mp.mi(a, factors="M,A,T,Y", layer="0", **FAST, progress=False, out=tmp_path / "api.json")
    cli_doc = json.loads((tmp_path / "cli.json").read_text())
    api_doc = json.loads((tmp_path / "api.json").read_text())
    assert _without(api_doc, "created") == _without(cli_doc, "created")
    frame = res.frame().set_index("term")
    for term in cli_doc["terms"]:
        assert frame.loc[term["term"], "estimate"] == term["estimate"]

    # asking for Y up front spares check a second estimate: it must not estimate anything
    import matprobe.theory.check as check_mod

    def refuse(*args, **kwargs):
        raise AssertionError("check estimated I(Z;Y|M,A,T) again")

    monkeypatch.setattr(check_mod, "estimate_target_term", refuse)
    chk = mp.check(a, mi=res, progress=False)
    assert chk.estimated_here is None and chk.target == "label"
    from matprobe.data.model import resolve_factor

    y_strata = {tuple(sorted((resolve_factor(k), v) for k, v in s["given"].items())): s["estimate"]
                for s in cli_doc["strata"] if resolve_factor(s["target"]) == "label"}
    assert len(y_strata) == 8
    for row in chk.strata:
        assert row.mi.estimate == y_strata[tuple(sorted(row.given.items()))]
    _invoke(["check", a, "--mi", tmp_path / "cli.json", "--out", tmp_path / "check.json"])
    cli_check = json.loads((tmp_path / "check.json").read_text())
    api_check = chk.to_dict()
    assert api_check["mi"] == "(in memory)"  # the only difference: where the MI results came from
    assert _without(api_check, "mi") == _without(cli_check, "mi")
    monkeypatch.undo()

    # without Y in the chain, check estimates it (once) on the same layer and settings
    chk2 = mp.check(a, mi=mp.mi(a, layer="0", **FAST, progress=False), progress=False)
    assert chk2.estimated_here is not None and chk2.estimated_here["layer"] == "0"


def test_default_layer_is_the_deepest_stored(stores):
    a, _ = stores
    res = mp.mi(a, factors="M", **FAST, progress=False)
    assert res.meta["layer"] == "3" and res.meta["pool"] == "last"


def test_compare_relate_sweep_equal_the_cli(stores, tmp_path):
    a, b = stores
    ksg = ["--estimator", "ksg"]
    _invoke(["compare", a, b, "--term", "Y|M,A,T", *ksg, *FAST_CLI, "--n-boot", "200",
             "--out", tmp_path / "cmp.json"])
    comp = mp.compare(a, b, term="Y|M,A,T", estimator="ksg", n_boot=200, **FAST, progress=False)
    cli = json.loads((tmp_path / "cmp.json").read_text())
    assert comp.difference.delta == cli["difference"]["delta"]
    assert comp.side_a["estimate"] == cli["side_a"]["estimate"]

    _invoke(["relate", a, b, *ksg, "--seeds", "1", "--pca", "0", "--out", tmp_path / "rel.csv"])
    rel = mp.relate([a, b], estimator="ksg", seeds=1, pca=0, progress=False)
    cli_points = pd.read_csv(tmp_path / "rel.csv")
    assert np.allclose(rel.points["mi"].to_numpy(float), cli_points["mi"].to_numpy(float), rtol=0, atol=1e-12)

    _invoke(["sweep", a, "--out", tmp_path / "cli.csv", "--factors", "M,A", "--layers", "0", *ksg, *FAST_CLI])
    sw = mp.sweep(a, tmp_path / "api.csv", factors="M,A", layers="0", estimator="ksg", **FAST, progress=False)
    cli_table = pd.read_csv(tmp_path / "cli.csv")
    assert list(sw.table["estimate"]) == list(cli_table["estimate"])
    assert list(sw.table["term"]) == list(cli_table["term"])


def test_significance_and_bounds_equal_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"condition": cond, "target": f"t{t}", "seed": s, "metric": "accuracy",
             "value": 0.5 + 0.05 * (cond == "Related") + 0.02 * rng.standard_normal()}
            for cond in ("Related", "Unrelated") for t in range(3) for s in range(4)]
    csv = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    _invoke(["significance", csv, "--out", tmp_path / "sig.csv"])
    api = mp.significance(csv).results
    cli = pd.read_csv(tmp_path / "sig.csv")
    for col in ("mean_diff", "p", "ci_low", "ci_high", "n_pairs"):
        assert np.allclose(api[col].to_numpy(float), cli[col].to_numpy(float), rtol=1e-12), col

    res = _invoke(["bounds", "pac", "--emp-risk", "0.1", "--n", "4500", "--params", "7e9", "--test-errors",
                   "757", "--test-n", "4500", "--format", "json"])
    assert json.loads(res.output) == json.loads(mp.to_json(
        mp.bounds.pac(emp_risk=0.1, n=4500, params=7e9, test_errors=757, test_n=4500).to_table("nats")))
    res = _invoke(["bounds", "fano", "--error", "0.2", "--classes", "4", "--entropy", "1.2", "--format", "json"])
    assert json.loads(res.output) == json.loads(mp.to_json(
        mp.bounds.fano(error=0.2, classes=4, entropy=1.2).to_table()))


def test_validate_and_split_equal_the_cli(tmp_path):
    from conftest import write_tiny_manifest

    manifest = write_tiny_manifest(tmp_path, n=24)
    report = mp.validate(manifest)
    res = _invoke(["data", "validate", manifest])
    for row in report.triplet_counts.itertuples(index=False):
        assert " ".join(map(str, row)) in " ".join(res.output.replace("│", " ").split())
    frame = pd.read_json(manifest, lines=True)
    target = ",".join(frame.loc[0, ["modality", "anatomy", "task"]])
    _invoke(["data", "split", manifest, "--target", target, "--config", "unrelated", "--out", tmp_path / "cli.jsonl"])
    split = mp.split(manifest, target, config="unrelated", out=tmp_path / "api.jsonl")
    assert (tmp_path / "api.jsonl").read_text() == (tmp_path / "cli.jsonl").read_text()
    assert len(split) == sum('"split"' in line for line in (tmp_path / "cli.jsonl").read_text().splitlines())
    res = runner.invoke(app, ["data", "split", str(manifest), "--target", target, "--config", "relatd",
                              "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "use one of related, unrelated" in res.output


def test_store_info_is_the_cli_json(stores):
    a, _ = stores
    res = _invoke(["store", "info", a, "--json"])
    assert json.loads(res.output) == json.loads(json.dumps(mp.store_info(a), default=str))


# --------------------------------------------------------------------------- progress in notebooks


def test_notebook_detection_without_ipython(monkeypatch):
    from matprobe import progress

    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert progress.in_notebook() is False
    fake = types.ModuleType("IPython")
    shell_cls = type("ZMQInteractiveShell", (), {})
    fake.get_ipython = lambda: shell_cls()
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress.in_notebook() is True
    fake.get_ipython = lambda: type("TerminalInteractiveShell", (), {})()  # plain `ipython` in a terminal
    assert progress.in_notebook() is False


def test_notebook_progress_uses_tqdm(monkeypatch, capsys):
    import tqdm.auto  # noqa: F401 (imported before IPython is faked: the text bar)

    from matprobe import progress

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    with progress.track("mi", 3, unit="terms") as bar:
        assert bar._tqdm is not None
        for i in range(3):
            bar.advance(description=f"term {i}")
    err = capsys.readouterr().err
    assert "mi: 100%" in err and "3/3" in err and "term 2" in err


def test_report_equals_the_cli(tmp_path):
    """The committed demo run, reported by the CLI and by the API in two copies: the same report."""
    import shutil

    for name in ("cli", "api"):
        shutil.copytree(ROOT / "reports" / "demo", tmp_path / name)
    _invoke(["report", tmp_path / "cli"])
    files = mp.report(tmp_path / "api")
    assert files.markdown == tmp_path / "api" / "report.md" and files.html.exists()
    assert files.markdown.read_text() == (tmp_path / "cli" / "report.md").read_text()
    assert (json.loads((tmp_path / "api" / "findings.json").read_text())
            == json.loads((tmp_path / "cli" / "findings.json").read_text()))


def test_errors_of_a_python_call_name_the_parameter_beside_the_flag(tmp_path):
    """A Python user read "--level 95 is outside (0, 1)" from mp.mi(level=95) and "map them with --columns"
    from mp.validate: the function's parameters are level= and columns=. The error type stays."""
    import json

    import numpy as np

    import matprobe as mp
    from matprobe.errors import MatprobeError

    with pytest.raises(MatprobeError) as err:
        mp.mi(np.random.default_rng(0).standard_normal((60, 3)), factors={"M": np.arange(60) % 2}, level=95)
    assert str(err.value).startswith("--level (level=) 95 is outside (0, 1)")
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "image": "x.png", "question": "q", "options": ["a", "b"], "answer": 0,
                                "modality": "CT", "organ": "Lung", "task": "cls"}) + "\n")
    report = mp.validate(path)  # a report, not an error: its problems say the parameter too
    assert any("pass --image-root (image_root=)" in p for p in report.problems), report.problems
    # a flag the function has no parameter for is left as it is
    from matprobe.api import _python_words

    def f(level=0.95):
        raise MatprobeError("--n-boot 0 and --level 95")

    with pytest.raises(MatprobeError, match=r"^--n-boot 0 and --level \(level=\) 95$"):
        _python_words(f)()
