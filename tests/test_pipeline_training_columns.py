"""`run` fine-tunes its tiny models on the user's manifest as its data step reads it: with the
pipeline file's [data] columns and image_root (a README-only user study: the data step mapped the
columns, the fine-tuning workers read the file without them and refused "unknown column(s) ...;
map them with --columns", an option `run` does not have)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matprobe.data.loaders import load_pipeline_data
from matprobe.pipeline import _finetune_job

torch.set_num_threads(1)


def _study(folder: Path) -> Path:
    """A CSV with its own column names, images under a root the manifest's paths are relative to."""
    (folder / "images" / "scans").mkdir(parents=True)
    rows = []
    for i in range(8):
        Image.fromarray(np.full((32, 32, 3), 30 * i, np.uint8)).save(folder / "images" / "scans" / f"{i}.png")
        rows.append({"uid": f"item {i}", "scan": f"scans/{i}.png", "q": "Which side?", "opts": "Left|Right",
                     "answer": i % 2, "kind": "X-Ray Film", "anatomy": ["Left Knee", "chest wall"][i % 2],
                     "job": "image orientation"})
    path = folder / "manifest.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_the_fine_tuning_workers_read_the_pipeline_file_s_columns_and_image_root(tmp_path, tiny_ckpts):
    manifest = _study(tmp_path)
    columns = {"uid": "id", "scan": "image", "q": "question", "opts": "options", "kind": "modality", "job": "task"}
    root = str(tmp_path / "images")
    items = load_pipeline_data(manifest, root, columns)  # what the data step reads
    assert [Path(s.image) for s in items] == [tmp_path / "images" / "scans" / f"{i}.png" for i in range(8)]
    ids = [s.id for s in items][:6]
    out = tmp_path / "related-s0"
    res = _finetune_job((str(tiny_ckpts["llava"]), (str(manifest), root, columns), ids, str(out), 2, 4, 1e-3, 0,
                         "multi-image"))
    assert res["out"] == str(out) and np.isfinite(res["final_loss"])
    assert json.loads((out / "config.json").read_text())["model_type"] == "llava"
