"""Issue 25: a factor fixed by the source data set is flagged (data validate, the pipeline's run.json,
the report's design warnings) and stays quiet when the sources mix; the manifest's `source` column
(and its aliases) and Med-MAT's data-no name the source."""

from __future__ import annotations

import json

import numpy as np
import pytest

from matprobe.data.design import design_warnings, source_warnings
from matprobe.data.manifest import load_manifest


def _columns(rng, n, *, modality_by_source: bool, anatomy_by_source: bool = False):
    source = rng.choice(["ds1", "ds2", "ds3", "ds4"], n)
    if modality_by_source:
        modality = np.where(np.isin(source, ["ds1", "ds2"]), "CT", "MRI")
    else:
        modality = rng.choice(["CT", "MRI"], n)
    anatomy = np.array([{"ds1": "Lung", "ds2": "Brain", "ds3": "Lung", "ds4": "Brain"}[s] for s in source]) \
        if anatomy_by_source else rng.choice(["Lung", "Brain"], n)
    return {"modality": modality.tolist(), "anatomy": anatomy.tolist(), "task": ["Cls"] * n,
            "source": source.tolist()}


@pytest.mark.parametrize("draw", range(10))
def test_the_flag_fires_exactly_when_a_factor_is_fixed_by_the_source(draw):
    rng = np.random.default_rng(draw)
    fixed = source_warnings(_columns(rng, 200, modality_by_source=True))
    assert len(fixed) == 1 and fixed[0].startswith("modality is fixed by the source data set (H(M|source) = 0")
    assert "--factors M,source" in fixed[0]
    both = source_warnings(_columns(rng, 200, modality_by_source=True, anatomy_by_source=True))
    assert [w.split(" ")[0] for w in both] == ["modality", "anatomy"]
    # every source holds both modalities (and both anatomies): quiet
    assert source_warnings(_columns(rng, 200, modality_by_source=False)) == []


def test_quiet_without_two_sources_or_with_unknown_sources():
    cols = {"modality": ["CT", "MRI"] * 10, "anatomy": ["Lung"] * 20, "task": ["Cls"] * 20}
    assert source_warnings({**cols, "source": ["ds1"] * 20}) == []  # one source: nothing to confound
    assert source_warnings(cols) == []  # no source column
    assert source_warnings({**cols, "source": ["ds1", "ds2"] * 9 + [None, None]}) == []  # partly unknown
    # task has one class: no flag for it (that is fixed_factor_warnings' business)
    assert source_warnings({**cols, "source": ["ds1", "ds2"] * 10}) == [
        w for w in source_warnings({**cols, "source": ["ds1", "ds2"] * 10}) if w.startswith("modality")]


def _manifest(tmp_path, source_column: str, modality_by_source: bool):
    from PIL import Image

    rng = np.random.default_rng(3)
    cols = _columns(rng, 60, modality_by_source=modality_by_source)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "img.png")
    lines = []
    for i in range(60):
        lines.append(json.dumps({"id": f"s{i}", "image": "img.png", "question": "Which?", "options": ["yes", "no"],
                                 "answer": int(rng.integers(0, 2)), "modality": cols["modality"][i],
                                 "anatomy": cols["anatomy"][i], "task": "Cls",
                                 source_column: cols["source"][i]}))
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path, cols


@pytest.mark.parametrize("column", ["source", "dataset", "source_dataset"])
def test_manifest_source_column_and_aliases_are_read_and_written(tmp_path, column):
    from matprobe.data.manifest import write_manifest

    path, cols = _manifest(tmp_path, column, True)
    ds = load_manifest(path)
    assert [s.source for s in ds] == cols["source"]
    assert any(w.startswith("modality is fixed by the source") for w in design_warnings(ds))
    out = write_manifest(ds, tmp_path / "again.jsonl")
    assert [s.source for s in load_manifest(out)] == cols["source"]


def test_data_validate_prints_the_flag_only_when_it_holds(tmp_path):
    from typer.testing import CliRunner

    from matprobe.cli import app

    fixed, _ = _manifest(tmp_path, "source", True)
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["data", "validate", str(fixed)])
    assert res.exit_code == 0, res.output
    assert "modality is fixed by the source data set" in res.output
    mixed_dir = tmp_path / "mixed"
    mixed_dir.mkdir()
    mixed, _ = _manifest(mixed_dir, "source", False)
    res = CliRunner(env={"COLUMNS": "300"}).invoke(app, ["data", "validate", str(mixed)])
    assert res.exit_code == 0 and "fixed by the source" not in res.output


def test_medmat_records_name_their_source_data_set(tmp_path):
    from matprobe.data.medmat import load_medmat, medmat_dataset_table

    names = medmat_dataset_table().set_index("data_no")["name"]
    recs = [{"id": 1, "caption": "a", "image": "med-mat/x/1.jpg", "Question": "Q?", "Answer": "a",
             "Question-choice": "Q?\nA: a\nB: b\nAnswer with the option's letter.", "Answer-choice": "A",
             "data-no": no} for no in ("2", "54")]
    (tmp_path / "m.json").write_text(json.dumps(recs))
    ds = load_medmat(tmp_path / "m.json")
    assert [s.source for s in ds] == [names.loc[2], names.loc[54]]


def test_pipeline_records_the_flag_and_the_report_lists_it(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from matprobe.pipeline import PipelineConfig, StepTimer, _run_summary
    from matprobe.report.design import design_warnings as report_warnings
    from matprobe.rundir import RunSummary

    path, _ = _manifest(tmp_path, "source", True)
    ds = load_manifest(path)
    cfg = PipelineConfig()
    summary = _run_summary(cfg, tmp_path, ds, path, {tuple(cfg.target): {}}, [], None, StepTimer())
    assert len(summary["source_warnings"]) == 1
    data = SimpleNamespace(terms=pd.DataFrame({"term": [], "degenerate": []}), strata=pd.DataFrame(),
                           summary=RunSummary.from_dict(summary))  # as the report reads run.json back
    assert report_warnings(data, lambda p: p) == summary["source_warnings"]
    mixed_dir = tmp_path / "mixed"
    mixed_dir.mkdir()
    path, _ = _manifest(mixed_dir, "source", False)
    quiet = _run_summary(cfg, tmp_path, load_manifest(path), path, {tuple(cfg.target): {}}, [], None, StepTimer())
    assert "source_warnings" not in quiet  # run.json unchanged for studies without the flag


@pytest.mark.parametrize("confounded", [True, False])
def test_run_estimates_modality_against_source_and_the_report_shows_it(tmp_path, monkeypatch, confounded):
    import torch

    import matprobe.extract.runner as runner
    from matprobe.pipeline import PipelineConfig, run_pipeline
    from matprobe.report import figures, render
    from test_study_grid import (
        _md_tables,
        _no_checkpoint_folders,
        _stub_save,
        build_study,
        fake_extract_factory,
    )

    torch.set_num_threads(1)
    monkeypatch.setattr(runner, "extract", fake_extract_factory({}))
    _no_checkpoint_folders(monkeypatch)
    monkeypatch.setattr(figures, "_save", _stub_save)
    manifest = build_study(tmp_path / "data", "cls", split=False, label=False)
    rows = [json.loads(x) for x in manifest.read_text().splitlines()]
    for i, r in enumerate(rows):  # two sources per modality, or every source holding both modalities
        r["source"] = f"{r['modality']}-site{i % 2}" if confounded else f"site{i % 3}"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    target = ("MRI", "Brain", "Artifact")
    cks = [{"name": f"{c}-{s}", "condition": c, "seed": s, "ckpt": str(tmp_path / "ck" / f"{c}-{s}")}
           for c in ("related", "unrelated") for s in range(2)]
    cfg = PipelineConfig(out=str(tmp_path / "run"), data_file=str(manifest), target=target, checkpoints=cks,
                         estimator="ksg", mi_seeds=1, mi_folds=2, pca=None, workers=1, layers="-1")
    run = run_pipeline(cfg)
    summary = json.loads((run / "run.json").read_text())
    assert bool(summary.get("source_warnings")) == confounded
    md = (run / "report.md").read_text()
    section = md.split("## Modality and source data set", 1)[1].split("\n## ", 1)[0]
    for ck in summary["checkpoints"]:
        docs = {k: json.loads((run / p).read_text()) for k, p in ck["source_mi"].items()}
        m_given_source = docs["source,modality"]["terms"][1]
        source_given_m = docs["modality,source"]["terms"][1]
        assert m_given_source["term"] == "I(Z;modality|source)" and source_given_m["term"] == "I(Z;source|modality)"
        assert m_given_source["degenerate"] == confounded  # every source one modality: not identifiable
        line = next(x for x in section.splitlines() if x.startswith(f"| {ck['name']} | I(Z;modality\\|source)"))
        assert ("not identifiable" in line) == confounded
        line = next(x for x in section.splitlines() if x.startswith(f"| {ck['name']} | I(Z;source\\|modality)"))
        assert f"{source_given_m['estimate']:.3f}" in line
    glossary = _md_tables(md)[-1]
    assert [r[0] for r in glossary["rows"] if r[1] == render.UNEXPLAINED] == []
