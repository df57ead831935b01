"""Manifests as Parquet files and Hugging Face `datasets` folders load to the same MATDataset
as the equivalent JSONL.

The JSONL is the demo dataset builder's (real medical images from pydicom / scikit-image /
nibabel) plus one DICOM record; the Parquet and `save_to_disk` files are written by pyarrow and
by the `datasets` library itself (when installed), with the image bytes inside, the way
medical VQA sets are published on the hub.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.data import load_dataset, load_image, validate_dataset
from matprobe.data.demo import DemoSpec, build_demo_dataset
from matprobe.errors import DataError


@pytest.fixture(autouse=True)
def image_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("MATPROBE_IMAGE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def jsonl(tmp_path_factory) -> Path:
    import pydicom.examples

    folder = tmp_path_factory.mktemp("arrow_data")
    build_demo_dataset(folder, DemoSpec(n_per_triplet=4, image_size=32, seed=3))
    path = folder / "manifest.jsonl"
    lines = path.read_text().splitlines()
    ct = Path(pydicom.examples.get_path("ct"))
    (folder / "ct.dcm").write_bytes(ct.read_bytes())
    lines.append(json.dumps({"id": "dicom-1", "image": "ct.dcm", "question": "What degrades this image?",
                             "options": ["nothing", "blur", "noise", "low contrast"], "answer": "A",
                             "modality": "CT", "anatomy": "Chest", "task": "Quality", "split": "test"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _records(path: Path) -> tuple[list[dict], dict]:
    header, records = None, []
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if "matprobe_manifest" in rec:
            header = rec
        else:
            records.append(rec)
    return records, header


def _with_bytes(records: list[dict], folder: Path, keep_name: bool) -> list[dict]:
    out = []
    for r in records:
        data = (folder / r["image"]).read_bytes()
        # mask files stay where the manifest put them: absolute paths from the Arrow file's folder
        masks = {"option_masks": [str(folder / m) for m in r["option_masks"]]} if r.get("option_masks") else {}
        if r.get("mask"):
            masks["mask"] = str(folder / r["mask"])
        out.append({**r, **masks, "image": {"bytes": data, "path": Path(r["image"]).name if keep_name else None}})
    return out


def _same_dataset(got, expected) -> None:
    """Equal samples except where the image lives; equal pixels; equal vocabularies."""
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert replace(a, image=None) == replace(b, image=None)
        assert hashlib.sha256(Path(a.image).read_bytes()).digest() == \
            hashlib.sha256(Path(b.image).read_bytes()).digest()
        assert np.array_equal(np.asarray(load_image(a)), np.asarray(load_image(b)))
    for name in ("modality", "anatomy", "task", "label", "split"):
        assert got.vocabularies[name].labels == expected.vocabularies[name].labels, name


def _table(records: list[dict]) -> pa.Table:
    cols = sorted({k for r in records for k in r})
    return pa.Table.from_pylist([{k: r.get(k) for k in cols} for r in records])


def test_parquet_with_image_bytes_loads_like_the_jsonl(jsonl, tmp_path, image_cache):
    records, _ = _records(jsonl)
    # answers as in the JSONL (index or letter): parquet needs one type per column, so as text
    rows = [{**r, "answer": str(r["answer"])} for r in _with_bytes(records, jsonl.parent, keep_name=False)]
    pq.write_table(_table(rows), tmp_path / "mat.parquet")
    expected = load_dataset(jsonl)
    got = load_dataset(tmp_path / "mat.parquet")
    # no header here, so no declared vocabulary: compare against the JSONL read without its header
    _same_dataset(got, expected)
    dicom = next(s for s in got if s.id == "dicom-1")
    assert dicom.image.endswith(".dcm") and Path(dicom.image).is_relative_to(image_cache)
    assert validate_dataset(tmp_path / "mat.parquet").ok


def test_datasets_save_to_disk_folder(jsonl, tmp_path):
    datasets = pytest.importorskip("datasets")
    records, header = _records(jsonl)
    vocab = header["vocabulary"]
    features = datasets.Features({
        "id": datasets.Value("string"), "question": datasets.Value("string"),
        "options": datasets.List(datasets.Value("string")), "answer": datasets.Value("string"),
        # not decoded to PIL: the set holds a DICOM, which PIL cannot open
        "image": datasets.Image(decode=False),
        # a factor as a ClassLabel, as hub datasets often store labels
        "modality": datasets.ClassLabel(names=vocab["modality"]),
        "anatomy": datasets.Value("string"), "task": datasets.Value("string"),
        "label": datasets.Value("string"), "split": datasets.Value("string"),
        # segmentation items: candidate masks and ground truth, as paths to files beside the manifest
        "option_masks": datasets.List(datasets.Value("string")), "mask": datasets.Value("string"),
    })
    cols = {k: [] for k in features}
    for r in records:
        for k in features:
            v = r.get(k)
            if k == "image":
                v = str(jsonl.parent / v)  # `datasets` embeds the file's bytes on save_to_disk
            elif k == "modality":
                v = vocab["modality"].index(v)
            elif k == "answer":
                v = str(v)
            elif k == "option_masks" and v:
                v = [str(jsonl.parent / m) for m in v]
            elif k == "mask" and v:
                v = str(jsonl.parent / v)
            cols[k].append(v)
    ds = datasets.Dataset.from_dict(cols, features=features)
    ds.save_to_disk(str(tmp_path / "hf"))
    arrow_files = list((tmp_path / "hf").glob("*.arrow"))
    with pa.memory_map(str(arrow_files[0])) as src:  # the images really are inside the folder
        image_col = pa.ipc.open_stream(src).read_all().column("image").to_pylist()
    assert all(isinstance(v["bytes"], bytes) and len(v["bytes"]) > 100 for v in image_col)
    got = load_dataset(tmp_path / "hf")
    _same_dataset(got, load_dataset(jsonl))
    # the ClassLabel declares the modality vocabulary, as the JSONL header does
    assert got.vocabularies["modality"].labels == tuple(sorted(vocab["modality"]))

    # a Parquet file written by `datasets` carries the ClassLabel in its schema metadata
    ds.to_parquet(str(tmp_path / "hf.parquet"))
    _same_dataset(load_dataset(tmp_path / "hf.parquet"), load_dataset(jsonl))

    # a DatasetDict without a split column: each split folder names its samples' split
    plain = ds.remove_columns("split")
    halves = {"train": plain.select(range(12)), "test": plain.select(range(12, len(plain)))}
    datasets.DatasetDict(halves).save_to_disk(str(tmp_path / "hfdict"))
    both = load_dataset(tmp_path / "hfdict")
    by_id = {s.id: s for s in load_dataset(jsonl)}
    assert sorted(both.ids) == sorted(by_id)
    assert [s.split for s in both] == ["train"] * 12 + ["test"] * (len(plain) - 12)
    for s in both:
        assert replace(s, image=None, split=None) == replace(by_id[s.id], image=None, split=None)


def test_cli_validates_a_parquet_manifest(jsonl, tmp_path):
    records, _ = _records(jsonl)
    rows = [{**r, "answer": str(r["answer"])} for r in _with_bytes(records, jsonl.parent, keep_name=True)]
    pq.write_table(_table(rows), tmp_path / "mat.parquet")
    res = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "mat.parquet")])
    assert res.exit_code == 0, res.output
    assert "Chest" in res.output and "no problems found" in res.output
    assert f"{len(records)} records" in res.output.replace("\n", " ")


def test_bad_arrow_input_is_one_error(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"id": "a", "question": "q", "options": ["x", "y"],
                                          "modality": "CT", "anatomy": "Chest", "task": "T"}]),
                   tmp_path / "noanswer.parquet")
    # a column no record has is one column error (issue 20), not a missing field per record
    with pytest.raises(DataError, match=r"noanswer.parquet: missing answer\. A MAT manifest has columns image, question, "):
        load_dataset(tmp_path / "noanswer.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="broken.parquet: cannot be read as parquet"):
        load_dataset(tmp_path / "broken.parquet")
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    res = CliRunner().invoke(app, ["data", "validate", str(folder)])
    assert res.exit_code == 2
    assert "data-00000-of-00001.arrow, which is missing" in res.output
