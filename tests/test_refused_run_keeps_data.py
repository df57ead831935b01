"""A refused `matprobe run` leaves the run's data/*.jsonl as they were (issue 22's own-study list).

`run` writes one manifest per (target, condition) under RUN/data/ (the whole data set, each item's
split marking that condition's training rows) and extracts every store from it. A rerun after the
user's manifest changed is refused by the extraction (the store's finished rows were computed from
other records), and had already rewritten RUN/data/*.jsonl from the new file: the run's copies no
longer said what its stores and results were made from. Now each manifest is written beside its
name and takes it only once the extraction accepted it; one equal to the file there is not written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from matprobe.errors import ProvenanceMismatch

TARGET = ("CT", "Chest", "Classification")


def _cfg(tmp_path: Path, manifest: Path, ckpt: Path):
    from matprobe.pipeline import PipelineConfig

    cks = [{"name": f"{c}-s0", "condition": c, "seed": 0, "ckpt": str(ckpt)} for c in ("related", "unrelated")]
    return PipelineConfig(out=str(tmp_path / "run"), data_file=str(manifest), target=TARGET,
                          conditions=("related", "unrelated"), checkpoints=cks, layers="-1", estimator="ksg",
                          mi_seeds=1, mi_folds=2, pca=None, workers=1, extract_batch_size=16)


def _extract_as_run_does(cfg):
    """The run's data and extraction steps (what a finished run leaves in RUN/data and RUN/stores)."""
    from matprobe.pipeline import _checkpoints, _extract_stores, _load_study_data, _training_ids

    run = Path(cfg.out)
    dataset, manifest = _load_study_data(cfg, run, lambda msg: None)
    ids = {tgt: _training_ids(dataset, cfg, tgt) for tgt in cfg.targets}
    cks = _checkpoints(cfg, run, manifest, ids, lambda msg: None, False)
    return _extract_stores(cfg, run, dataset, cks, ids, lambda msg: None, False)


def _folder(path: Path) -> dict[str, tuple[bytes, int]]:
    """Every file in `path`: its bytes and inode (a file written again, even with the same bytes,
    is a new inode: the manifests are written atomically, by rename)."""
    return {p.name: (p.read_bytes(), os.stat(p).st_ino) for p in sorted(path.iterdir())}


def test_a_refused_rerun_leaves_the_runs_data_files_as_they_were(tiny_ckpts, make_tiny_manifest, tmp_path):
    import torch

    from matprobe.pipeline import run_pipeline

    torch.set_num_threads(1)
    manifest = make_tiny_manifest(tmp_path / "study", n=60)
    cfg = _cfg(tmp_path, manifest, tiny_ckpts["llava"])
    _extract_as_run_does(cfg)
    data = tmp_path / "run" / "data"
    before = _folder(data)
    assert sorted(before) == ["related.jsonl", "unrelated.jsonl"]
    # the run's copy: the user's items, each with the split of that condition (s000 is the target's)
    first = json.loads(before["related.jsonl"][0].decode().splitlines()[1])
    assert first == {"id": "s000", "image": str((tmp_path / "study" / "img" / "0.png").resolve()),
                     "question": "What is shown?", "options": ["Normal", "Tumor", "Cyst", "Stone"], "answer": 0,
                     "modality": "CT", "anatomy": "Chest", "task": "Classification", "label": "Normal",
                     "split": "test"}

    # the user edits a question: the stores' finished rows were computed from the old text
    text = manifest.read_text()
    manifest.write_text(text.replace('"What is shown?"', '"What is seen?"'))
    with pytest.raises(ProvenanceMismatch) as refused:
        run_pipeline(cfg)
    stores = [tmp_path / "run" / "stores" / f"{c}-s0.h5" for c in ("related", "unrelated")]
    # named as the user's file, not the run's copy (nor a staged one beside it); both stores at once
    # (one per attempt took a study four rounds of delete-and-rerun)
    assert str(refused.value) == "2 of the run's 2 stores were made from other inputs than these: " + " | ".join(
        f"{store}: 20 record(s) of {manifest} changed since the store was made (first: id 's000'); pass "
        "--overwrite to recompute the store from the new file" for store in stores) + (
        "; in `matprobe run` (which has no --overwrite): delete those store files to extract them again, or set "
        "another [run] out")
    assert _folder(data) == before  # the same files, bytes and inodes: nothing written, nothing left beside

    # the user's file as it was: the rerun accepts it and writes nothing (every copy is the same already)
    manifest.write_text(text)
    _extract_as_run_does(cfg)
    assert _folder(data) == before


def test_an_accepted_change_is_written_once_the_extraction_took_it(tiny_ckpts, make_tiny_manifest, tmp_path):
    """The success path: a change the store takes (the manifest's split column, which nothing computed
    depends on) reaches RUN/data, with exactly the bytes of the run's own manifest writer."""
    import torch

    from matprobe.pipeline import condition_manifest

    torch.set_num_threads(1)
    manifest = make_tiny_manifest(tmp_path / "study", n=60)
    cfg = _cfg(tmp_path, manifest, tiny_ckpts["llava"])
    cfg.conditions, cfg.checkpoints = ("related",), cfg.checkpoints[:1]
    _extract_as_run_does(cfg)
    data = tmp_path / "run" / "data"
    before = _folder(data)
    # checkpoints trained elsewhere on the rows the manifest marks: every other item is `train` now
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({**r, "split": ["train", "test"][i % 2]}) + "\n"
                                for i, r in enumerate(rows)))
    from matprobe.data import load_dataset
    from matprobe.pipeline import _training_ids

    ds = load_dataset(manifest)
    expected = condition_manifest(ds, set(_training_ids(ds, cfg)["related"]), TARGET,
                                  tmp_path / "elsewhere" / "expected.jsonl")
    _extract_as_run_does(cfg)
    after = _folder(data)
    assert sorted(after) == ["related.jsonl"] and after["related.jsonl"][1] != before["related.jsonl"][1]
    written = after["related.jsonl"][0]
    assert written == expected.read_bytes() and written != before["related.jsonl"][0]
