"""One store, three entry points, the same numbers: `matprobe mi`, `matprobe.mi(...)` and the
pipeline's MI step all start from matprobe.defaults.DEFAULTS. Also the example notebook
(examples/quickstart.py, percent format) runs on a small store built here."""

from __future__ import annotations

import inspect
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import matprobe as mp
from matprobe.cli import app
from matprobe.defaults import DEFAULTS
from matprobe.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]


def _store(path: Path, n: int = 160, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    m = rng.choice(["CT", "MRI"], n)
    a = rng.choice(["Lung", "Brain"], n)
    t = rng.choice(["Cls", "Det"], n)
    y = rng.integers(0, 2, n)
    z = rng.normal(size=(n, 4)).astype("float32")
    z[:, 0] += 2.0 * (m == "CT")
    z[:, 1] += 1.0 * (a == "Lung")
    z[:, 2] += 2.0 * y
    pred = np.where(rng.random(n) < 0.8, y, 1 - y)
    EmbeddingStore.from_arrays(path, [f"s{i}" for i in range(n)],
                               {"modality": m, "anatomy": a, "task": t, "label": np.array(["no", "yes"])[y]},
                               {("2", "last"): z, ("5", "last"): z[:, ::-1].copy()},
                               answers={"pred": pred, "correct": (pred == y).astype("int8"),
                                        "probs": np.eye(2)[pred].astype("float32")}).close()
    return path


def test_signatures_share_the_defaults():
    from matprobe.api import mi as api_mi
    from matprobe.mi.chain import chain_terms
    from matprobe.mi.compare import compare_stores
    from matprobe.mi.sweep import run_sweep
    from matprobe.pipeline import PipelineConfig, mi_step
    from matprobe.theory.relate import relate

    for fn, names in ((chain_terms, ("seeds", "folds", "pca", "ci_level")), (api_mi, ("seeds", "folds", "pca", "level")),
                      (mi_step, ("seeds", "folds", "pca", "level")), (run_sweep, ("seeds", "folds", "pca", "ci_level")),
                      (compare_stores, ("seeds", "folds", "pca", "ci_level")),
                      (relate, ("seeds", "folds", "pca", "level"))):
        params = inspect.signature(fn).parameters
        got = tuple(params[n].default for n in names)
        assert got == (DEFAULTS.seeds, DEFAULTS.folds, DEFAULTS.pca, DEFAULTS.level), fn.__name__
    cfg = PipelineConfig()
    assert (cfg.mi_seeds, cfg.mi_folds, cfg.pca, cfg.mi_level) == (DEFAULTS.seeds, DEFAULTS.folds, DEFAULTS.pca,
                                                                   DEFAULTS.level)


def test_cli_api_and_pipeline_step_give_identical_numbers(tmp_path):
    import torch

    from matprobe.pipeline import mi_step

    torch.set_num_threads(1)
    store = _store(tmp_path / "s.h5")
    out = tmp_path / "mi.json"
    # every setting left at its default (probe, 5 seeds, 5 folds, PCA 64, 95%)
    r = CliRunner().invoke(app, ["mi", str(store), "--factors", "M,A", "--layer", "5", "--out", str(out)])
    assert r.exit_code == 0, r.output
    cli = {t["term"]: t for t in json.loads(out.read_text())["terms"]}
    api = mp.mi(store, factors="M,A").frame().set_index("term")  # layer 5 = the deepest stored
    step = mi_step(store, ["M", "A"], "5", "last").frame().set_index("term")
    assert set(cli) == {"I(Z;M)", "I(Z;A|M)"}
    for term, c in cli.items():
        for col in ("estimate", "ci_low", "ci_high", "ci_level"):
            assert api.loc[term, col] == c[col] == step.loc[term, col], (term, col)
    assert cli["I(Z;M)"]["ci_level"] == DEFAULTS.level
    assert json.loads(out.read_text())["settings"]["seeds"] == DEFAULTS.seeds


def test_quickstart_example_runs(tmp_path, monkeypatch, capsys):
    import torch

    torch.set_num_threads(1)
    store = _store(tmp_path / "quick.h5", n=200, seed=1)
    monkeypatch.setattr(sys, "argv", ["quickstart.py", str(store)])
    ns = runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    out = capsys.readouterr().out
    chain, checked = ns["chain"], ns["checked"]
    assert isinstance(checked, __import__("matprobe.theory.check", fromlist=["CheckResult"]).CheckResult)
    assert list(chain.frame().term[:3]) == ["I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)"]
    assert checked.target == "label" and all(s.mi is not None for s in checked.strata)
    # what it printed is what it computed
    for row in chain.frame().itertuples():
        if row.term.startswith("I(Z;M)"):
            assert f"| {row.term} | probe | {row.estimate:.3f} |" in out
    assert "Y = label" in out and "| h(ε) |" in out
    # the tiny model's answers are right on 80% of rows: the check's error matches the store's
    with EmbeddingStore.open(store) as st:
        correct = st.answers()["correct"]
    assert checked.aggregate.error == pytest.approx(1 - correct.mean())
