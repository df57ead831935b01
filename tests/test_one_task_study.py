"""A study of one task (every item a diagnosis question), as a user brings it: `init` and `run`.

Found on a hand-built study (RESULTS.md, issue 22 nineteenth session): `init` wrote
factors = [modality, anatomy, task, label] although the data has one task, `run` extracted every
checkpoint and then stopped at the MI step ("factor 'task' has one class"); with task dropped by
hand, `check` found no per-stratum I(Z;Y|stratum) (the chain's answer term is given modality and
anatomy, its strata matched only entries given all three), the report died drawing the empty
MI-vs-accuracy figure, and results.csv had no I(Z;Y|target). Here the whole path runs through
the CLI and its outputs are checked against their inputs.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app

TARGET = ("MRI", "Liver", "Diagnosis")


def build_one_task_study(root: Path) -> Path:
    """study/items.json (a JSON array) over CT/MRI x Brain/Liver, task Diagnosis only, and four tiny
    LLaVA checkpoints under study/ckpts/{related,unrelated}/s{0,1}."""
    from matprobe.extract.tiny import build_tiny_checkpoint

    study = root / "study"
    (study / "im").mkdir(parents=True)
    rng = np.random.default_rng(3)
    rows = []
    for mod in ("CT", "MRI"):
        for ana in ("Brain", "Liver"):
            for i in range(14):
                sid = f"{mod}-{ana}-{i}"
                Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(study / "im" / f"{sid}.png")
                rows.append({"id": sid, "image": f"im/{sid}.png", "question": f"Diagnosis of this {ana.lower()}?",
                             "options": ["normal", "benign", "malignant"], "answer": i % 3,
                             "modality": mod, "anatomy": ana, "task": "Diagnosis"})
    (study / "items.json").write_text(json.dumps(rows))
    for k, cond in enumerate(("related", "unrelated")):
        for seed in (0, 1):
            build_tiny_checkpoint(study / "ckpts" / cond / f"s{seed}", "llava", seed=500 + 2 * k + seed)
    return study


def test_init_and_run_on_a_study_of_one_task(tmp_path, monkeypatch):
    import torch

    from matprobe.mi.chain import ChainResult
    from matprobe.pipeline import load_pipeline
    from matprobe.preflight import check_pipeline

    torch.set_num_threads(1)
    build_one_task_study(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ckpts = [f"study/ckpts/{c}/s{s}" for c in ("related", "unrelated") for s in (0, 1)]
    res = runner.invoke(app, ["init", *ckpts, "--data", "study/items.json", "--target", ",".join(TARGET),
                              "--seeds", "1", "--folds", "2", "--out", "one.toml"])
    assert res.exit_code == 0, res.output
    text = Path("one.toml").read_text()
    assert tomllib.loads(text)["mi"]["factors"] == ["modality", "anatomy", "label"]
    assert "# task left out of factors: one class in the data ('Diagnosis')" in text

    # a file that lists task anyway is refused before anything is extracted, naming the key
    Path("with-task.toml").write_text(text.replace('factors = ["modality", "anatomy", "label"]',
                                                   'factors = ["modality", "anatomy", "task", "label"]'))
    with pytest.raises(Exception, match=r"\[mi\] factors: 'task' has one class .*\('Diagnosis'\).*drop 'task'"):
        check_pipeline(load_pipeline("with-task.toml"))
    res = runner.invoke(app, ["run", "with-task.toml"])
    assert res.exit_code == 2 and not Path("with-task-run").exists()

    res = runner.invoke(app, ["run", "one.toml"])
    assert res.exit_code == 0, res.output[-2000:]
    assert "one class in the data for task ('Diagnosis')" in res.output  # said before extracting
    run = tmp_path / "one-run"
    summary = json.loads((run / "run.json").read_text())
    results = pd.read_csv(run / "results.csv", keep_default_na=False)
    for ck in summary["checkpoints"]:
        mi = ChainResult.read(run / ck["main_mi"])
        label_term = dict(zip(mi.factors, mi.estimates()))["label"].estimate
        by_stratum = {(s.given["modality"], s.given["anatomy"]): s.estimate for s in label_term.strata}
        # check: every (M, A, T) stratum carries the chain's own I(Z;label|M,A) entry for it
        check = json.loads((run / ck["check"]).read_text())
        assert len(check["strata"]) == 4
        for s in check["strata"]:
            g = s["given"]
            assert s["mi"]["estimate"] == pytest.approx(by_stratum[(g["modality"], g["anatomy"])], abs=1e-12)
        # results.csv: I(Z;Y|target) is the target stratum's entry
        row = results[(results.metric == "I(Z;Y|target) nats") & (results.seed == ck["seed"])
                      & (results.condition == ck["condition"].capitalize())]
        assert float(row["value"].iloc[0]) == pytest.approx(by_stratum[TARGET[:2]], abs=1e-12)
    report = (run / "report.md").read_text()
    assert "figures/mi_vs_accuracy.png" in report and "I(Z;Y | target)" in report
    assert "one class in the data for task ('Diagnosis')" in report.split("## Design warnings")[1]

    # an item edited after the run: the rerun refuses the stale stores naming the user's manifest
    # (not the run's own copy of it) and what a run has for extract's --overwrite
    items = json.loads(Path("study/items.json").read_text())
    items[5]["answer"] = (items[5]["answer"] + 1) % 3
    Path("study/items.json").write_text(json.dumps(items))
    res = runner.invoke(app, ["run", "one.toml"])
    said = " ".join(res.output.split())
    assert res.exit_code == 2
    assert f"1 record(s) of {tmp_path / 'study' / 'items.json'} changed since the store was made" in said, said
    assert ("in `matprobe run` (which has no --overwrite): delete those store files to extract them again, or set "
            "another [run] out") in said  # every stale store at once (each store is named before it)


def test_report_without_any_stratum_mi_says_so(tmp_path):
    """A run whose MI results hold no per-stratum term for the answer (say factors modality, label
    while anatomy varies): the report says why the MI-vs-accuracy and Fano figures are missing
    instead of failing on an empty figure."""
    from matprobe.report.render import write_report
    from test_report import make_run

    run_dir = make_run(tmp_path / "run", extra_layer=False)
    run = json.loads((run_dir / "run.json").read_text())
    for ck in run["checkpoints"]:
        path = run_dir / ck["check"]
        check = json.loads(path.read_text())
        for s in check["strata"]:
            s["mi"] = None
        path.write_text(json.dumps(check))
    write_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "No (checkpoint, stratum) cell has an estimate of I(Z;Y | stratum)" in text
    assert "figures/mi_vs_accuracy.png" not in text and "figures/fano.png" not in text


def test_sweep_refuses_a_factor_with_one_class_before_any_cell(tmp_path):
    """`sweep` with its default factors M,A,T on a store of one task: every cell failed alike, with
    "rerun the sweep to retry" (a rerun fails the same way); it is refused first, once, naming the
    class and the factors that remain."""
    import matprobe as mp

    rng = np.random.default_rng(0)
    n = 60
    labels = {"modality": np.array(["CT", "MRI"])[np.arange(n) % 2],
              "anatomy": np.array(["Brain", "Liver", "Lung"])[np.arange(n) % 3], "task": np.array(["Diagnosis"] * n)}
    store = tmp_path / "one-task.h5"
    mp.EmbeddingStore.from_arrays(store, [f"s{i}" for i in range(n)], labels,
                                  {("3", "last"): rng.standard_normal((n, 4)).astype("float32")}).close()
    res = CliRunner().invoke(app, ["sweep", str(store), "--out", str(tmp_path / "sweep.csv")])
    assert res.exit_code == 2
    assert ("factor 'T' has one class ('Diagnosis'), so every term with T as the target is 0 by definition; drop it "
            "from --factors (--factors M,A)") in " ".join(res.output.split())
    assert not (tmp_path / "sweep.csv").exists()
    res = CliRunner().invoke(app, ["sweep", str(store), "--factors", "M,A", "--seeds", "1", "--folds", "2",
                                   "--out", str(tmp_path / "sweep.csv")])
    assert res.exit_code == 0, res.output


def test_run_progress_lines_are_not_read_as_markup(capsys):
    """`run`'s progress lines name pipeline keys ('[mi] rare_classes = "refuse" stops at them'):
    printed as written, not as rich markup (which swallowed "[mi]")."""
    from matprobe.cli import _run_with_status

    def fake_run(cfg, progress, progress_bars):
        progress('warning: merged; [mi] rare_classes = "refuse" stops at them instead')
        return Path("x")

    _run_with_status(fake_run, None)
    said = capsys.readouterr()
    # on stderr, as progress and notes are (README): stdout keeps "done in" and what the run wrote
    assert '[mi] rare_classes = "refuse" stops at them instead' in said.err
    assert "stops at them" not in said.out and said.out.startswith("done in")
