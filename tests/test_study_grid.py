"""`matprobe run` and `matprobe report` on a generated grid of studies that are not the demo.

Each cell is a MAT dataset built here: classification items only, segmentation items only, or
both; one or two held-out targets; one or two seeds; with or without `split` and `label`
columns. The 6 cells cover every pair of those settings (a pairwise design). Each runs the
real `run_pipeline` on `[[checkpoints]]` entries; only the model is replaced: extraction writes
each store with `EmbeddingStore.create`/`append` from the condition manifest the pipeline
wrote, with features that carry M, A, T and the answer plus noise, and answers drawn here
(recorded, so the results are checked against them, not against the pipeline's own numbers).
MI (ksg, the cheap estimator), check, results.csv, significance and the report are the real
code. Figures are drawn but not rasterised (`figures._save` writes a stub): rendering PNG and
SVG costs ~8 s a report; tests/test_report.py and the own-study test render them for real.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.report import render

SEG_TASKS = {"Organ", "Lesion"}
TASKS = {"cls": ["Orientation", "Artifact"], "seg": ["Organ", "Lesion"], "both": ["Orientation", "Organ"]}
# kind, targets, seeds, split column, label column: every pair of values appears in some cell
GRID = [("cls", 1, 1, False, False), ("cls", 2, 2, True, True), ("seg", 1, 2, True, False),
        ("seg", 2, 1, False, True), ("both", 1, 1, True, True), ("both", 2, 2, False, False)]
N_BLOCKS = 4


def build_study(folder: Path, kind: str, split: bool, label: bool, n_per: int = 12) -> Path:
    """A manifest over M {CT, MRI} x A {Brain, Chest} x two tasks, n_per items per triplet."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / "img" / "x.png")
    for k in range(4):
        m = np.zeros((8, 8), np.uint8)
        m[k:k + 4, k:k + 4] = 255
        Image.fromarray(m).save(folder / "img" / f"m{k}.png")
    rows = []
    for mod in ("CT", "MRI"):
        for ana in ("Brain", "Chest"):
            for task in TASKS[kind]:
                for i in range(n_per):
                    rec = {"id": f"{mod}-{ana}-{task}-{i}", "image": "img/x.png", "question": f"{task}?",
                           "modality": mod, "anatomy": ana, "task": task, "answer": i % 4}
                    if task in SEG_TASKS:
                        rec["option_masks"] = [f"img/m{k}.png" for k in range(4)]
                    else:
                        rec["options"] = ["left", "right", "up", "down"]
                    if label:
                        rec["label"] = f"class-{i % 4}"
                    if split:
                        rec["split"] = ["train", "test"][i % 2]
                    rows.append(rec)
    path = folder / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fake_extract_factory(record: dict):
    """An `extract` that writes the store a model would, from the manifest it is given."""

    def fake_extract(cfg, progress=False):
        from matprobe.data import load_dataset
        from matprobe.extract.runner import ExtractResult
        from matprobe.store import EmbeddingStore

        ds = load_dataset(cfg.data)
        n = len(ds)
        rng = np.random.default_rng(zlib.crc32(Path(cfg.ckpt).name.encode()))
        ans = np.array([s.answer_index for s in ds])
        signal = np.stack([ds.codes(f) for f in ("M", "A", "T")] + [ans], 1).astype(float)
        layers = [str(N_BLOCKS + int(x)) if x.startswith("-") else x for x in cfg.layers.split(",")]
        pools = cfg.pools.split(",")
        feats = {(lay, p): np.concatenate([signal + rng.normal(scale=0.7, size=(n, 4)),
                                           rng.normal(size=(n, 2))], 1).astype(np.float32)
                 for lay in layers for p in pools}
        pred = np.where(rng.random(n) < 0.6, ans, rng.integers(0, 4, n))
        probs = np.full((n, 4), 0.1, np.float32)
        probs[np.arange(n), pred] = 0.7
        seg = np.array([s.is_segmentation for s in ds])
        union = np.where(seg, rng.integers(20, 40, n), -1)
        inter = np.where(seg, np.where(pred == ans, union, rng.integers(0, 10, n)), -1)
        answers = {"pred": pred, "correct": (pred == ans).astype(np.int8), "probs": probs}
        if seg.any():
            answers.update(intersection=inter, union=union)
        st = EmbeddingStore.create(cfg.out, ds, {"checkpoint": cfg.ckpt, "num_decoder_layers": N_BLOCKS},
                                   {k: 6 for k in feats}, 4, overwrite=True)
        st.append(np.arange(n), feats, answers=answers)
        st.finalize()
        st.close()
        record[Path(cfg.ckpt).name] = {"ids": [s.id for s in ds], "triplets": [s.triplet for s in ds],
                                       "correct": pred == ans, "inter": inter, "union": union}
        return ExtractResult(out=Path(cfg.out), n_total=n, n_computed=n, n_resumed=0, seconds=0.0,
                             layers=layers, pools=pools)

    return fake_extract


def _stub_save(fig, path: Path) -> None:
    """figures._save without rasterising: the figure was built from the run's data; a stub file."""
    import matplotlib.pyplot as plt

    for p in (path, path.with_suffix(".svg")):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\x89PNG stub")
    plt.close(fig)


def _md_tables(md: str) -> list[dict]:
    tables, lines = [], md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            head = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("| "):
                    break
                rows.append([c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]])
            tables.append({"head": head, "rows": rows})
    return tables


@pytest.mark.parametrize("kind, n_targets, n_seeds, split, label", GRID,
                         ids=[f"{k}-t{t}-s{s}-{'split' if sp else 'nosplit'}-{'label' if lb else 'nolabel'}"
                              for k, t, s, sp, lb in GRID])
def test_run_and_report_on_any_study(tmp_path, monkeypatch, kind, n_targets, n_seeds, split, label):
    import torch

    import matprobe.extract.runner as runner
    from matprobe.pipeline import PipelineConfig, run_pipeline
    from matprobe.report import figures

    torch.set_num_threads(1)
    record: dict = {}
    monkeypatch.setattr(runner, "extract", fake_extract_factory(record))
    monkeypatch.setattr(figures, "_save", _stub_save)
    manifest = build_study(tmp_path / "data", kind, split, label)
    tasks = TASKS[kind]
    targets = [("MRI", "Brain", tasks[0]), ("CT", "Chest", tasks[1])][:n_targets]
    cks = [{"name": f"{'-'.join(t)}-{c}-{s}", "condition": c, "seed": s, "ckpt": str(tmp_path / "ck" / f"{'-'.join(t)}-{c}-{s}"),
            "target": list(t)} for t in targets for c in ("related", "unrelated") for s in range(n_seeds)]
    cfg = PipelineConfig(out=str(tmp_path / "run"), data_file=str(manifest), target=targets[0],
                         extra_targets=tuple(targets[1:]), checkpoints=cks, estimator="ksg", mi_seeds=1,
                         mi_folds=2, pca=None, workers=1, layers="1,-1" if (kind, n_targets) == ("both", 1) else "-1")
    run = run_pipeline(cfg)

    # every checkpoint's row of results.csv against the answers its store was written with
    results = pd.read_csv(run / "results.csv", keep_default_na=False)
    for ck in cks:
        rec = record[Path(ck["ckpt"]).name]
        on_target = np.array([t == tuple(ck["target"]) for t in rec["triplets"]])
        rows = results[(results["seed"] == ck["seed"]) & (results["target"] == ",".join(ck["target"]))
                       & (results["condition"] == ck["condition"].capitalize())]
        got = dict(zip(rows["metric"], rows["value"]))
        if ck["target"][2] in SEG_TASKS:
            ciou = rec["inter"][on_target].sum() / rec["union"][on_target].sum()
            assert float(got["cIoU"]) == pytest.approx(ciou, abs=1e-12)
            assert (rows["metric"] == "intersection").sum() == on_target.sum()
        else:
            assert float(got["accuracy"]) == pytest.approx(rec["correct"][on_target].mean(), abs=1e-12)
    # a report for every study, every column explained by its own entry, no empty column
    md = (run / "report.md").read_text()
    assert (run / "report.html").stat().st_size > 1000
    tables = _md_tables(md)
    glossary = tables[-1]
    assert glossary["head"] == ["column", "meaning"]
    assert [r[0] for r in glossary["rows"] if r[1] == render.UNEXPLAINED] == []
    for t in tables:
        for j, name in enumerate(t["head"]):
            assert any(r[j] for r in t["rows"]), f"empty column {name!r}"
    assert "| item |" not in md or kind != "cls"
    # the MI table shows the main layer's estimates of each checkpoint, as its MI file holds them
    doc = json.loads((run / "run.json").read_text())
    for ck in doc["checkpoints"]:
        mi = json.loads((run / ck["main_mi"]).read_text())
        assert mi["layer"] == str(N_BLOCKS - 1)  # the default layer: the last block
        for term in mi["terms"]:
            assert f"| {ck['name']} | {ck['condition'].capitalize()} | {term['term']} | {term['estimate']:.3f} |" \
                in md.replace("\\|", "|")
    if (kind, n_targets, n_seeds) == ("cls", 1, 1):
        # a column the report has no words for, and one with no value, in the run's results.csv:
        # the report is still written, the first explained as such, the second left out
        results["operator"], results["empty"] = "A. Reader", ""
        results.to_csv(run / "results.csv", index=False)
        render.write_report(run)
        tables = _md_tables((run / "report.md").read_text())
        assert ["operator", render.UNEXPLAINED] in tables[-1]["rows"]
        assert not any("empty" in t["head"] for t in tables)
    # significance with no options on the results table this run wrote
    res = CliRunner().invoke(app, ["significance", str(run / "results.csv")])
    if n_seeds == 1 and n_targets == 1:  # no pairs at all: one line that says what is needed
        assert res.exit_code == 2 and res.output.count("error:") == 1 and "two seeds" in res.output
    else:
        assert res.exit_code == 0, res.output


def test_summary_says_when_every_paired_difference_is_the_same(tmp_path, monkeypatch):
    """Two conditions whose checkpoints give identical stores: Δ = 0 in every pair, and the
    summary says the t-test is undefined instead of printing t = nan, p = nan."""
    import torch

    import matprobe.extract.runner as runner
    from matprobe.pipeline import PipelineConfig, run_pipeline
    from matprobe.report import figures

    torch.set_num_threads(1)
    fake = fake_extract_factory({})

    def same_model(cfg, progress=False):  # every checkpoint answers and embeds alike
        from dataclasses import replace

        return fake(replace(cfg, ckpt=str(Path(cfg.ckpt).parent / "one")), progress)

    monkeypatch.setattr(runner, "extract", same_model)
    monkeypatch.setattr(figures, "_save", _stub_save)
    manifest = build_study(tmp_path / "data", "cls", True, True)
    target = ("MRI", "Brain", "Orientation")
    cks = [{"name": f"{c}-{s}", "condition": c, "seed": s, "ckpt": str(tmp_path / "ck" / f"{c}-{s}"),
            "target": list(target)} for c in ("related", "unrelated") for s in range(2)]
    run = run_pipeline(PipelineConfig(out=str(tmp_path / "run"), data_file=str(manifest), target=target,
                                      checkpoints=cks, estimator="ksg", mi_seeds=1, mi_folds=2, pca=None,
                                      workers=1))
    summary = (run / "report.md").read_text().split("## Summary", 1)[1].split("## Dataset", 1)[0]
    assert "nan" not in summary
    assert "Δ = 0.000 nats, the same in every pair, so the t-test is undefined" in summary
