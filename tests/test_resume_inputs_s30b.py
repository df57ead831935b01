"""A reproducibility study's findings (2026-12-06): a resume reused a store after the
checkpoint's chat template or image processor settings were edited (they shape every input but
were not in any fingerprint), and after a same-size edit in the middle of an image larger than
128 KB (its digest read only the first and last 64 KB). Stores made before either record are
still resumed, by what they recorded."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import ProvenanceMismatch
from matprobe.provenance import RECORD_DIGEST_SCHEME, changed_processing_files, record_digests
from matprobe.store import EmbeddingStore


def _one_line(res) -> str:
    assert res.exit_code != 0, res.output
    return " ".join(res.output.split())


@pytest.mark.parametrize("edit", ["chat_template.jinja", "processor_config.json"])
def test_a_resume_refuses_an_edited_chat_template_or_processor_and_names_it(edit, tiny_ckpts, make_tiny_manifest,
                                                                           tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data", n=4)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpts["llava"], ckpt)
    out = tmp_path / "z.h5"
    args = ["extract", "--ckpt", str(ckpt), "--data", str(manifest), "--out", str(out), "--layers", "0",
            "--pool", "last", "--batch-size", "4"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    with EmbeddingStore.open(out) as st:
        assert f"ckpt/{edit}" in st.provenance["processing_files"]
    # an unchanged rerun reuses the store
    assert runner.invoke(app, args).exit_code == 0
    path = ckpt / edit
    if edit.endswith(".json"):
        doc = json.loads(path.read_text())
        doc["image_mean"] = [0.25, 0.25, 0.25]  # what the study edited
        path.write_text(json.dumps(doc))
    else:
        path.write_text(path.read_text().replace("USER", "PATIENT"))
    text = _one_line(runner.invoke(app, args))
    assert f"processor, tokenizer or chat template files changed since the store was made (ckpt/{edit})" in text
    assert "--overwrite" in text


def test_a_store_made_before_the_processing_record_is_still_resumed(tiny_ckpts, make_tiny_manifest, tmp_path):
    manifest = make_tiny_manifest(tmp_path / "data", n=4)
    out = tmp_path / "z.h5"
    args = ["extract", "--ckpt", str(tiny_ckpts["llava"]), "--data", str(manifest), "--out", str(out),
            "--layers", "0", "--pool", "last", "--batch-size", "4"]
    assert CliRunner().invoke(app, args).exit_code == 0
    with h5py.File(out, "r+") as h5:  # as an older matprobe wrote it
        prov = json.loads(h5.attrs["provenance"])
        del prov["processing_files"]
        h5.attrs["provenance"] = json.dumps(prov)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert changed_processing_files(None, {"a/x": "1"}) == []  # nothing recorded: nothing to compare


def _big_image_frame(tmp_path):
    """A 300 x 300 RGB BMP (270 KB, uncompressed: an edit in place keeps its size)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "scan.bmp"
    Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(path)
    return path, pd.DataFrame({"id": ["s0"], "image": [str(path)], "question": ["q"], "modality": ["CT"]})


def test_a_same_size_edit_in_the_middle_of_a_large_image_changes_its_record_digest(tmp_path):
    path, frame = _big_image_frame(tmp_path)
    before = {scheme: record_digests(frame, scheme=scheme) for scheme in (1, 2)}
    data = bytearray(path.read_bytes())
    assert len(data) > 2 * 65536 + 1000
    middle = len(data) // 2
    data[middle:middle + 300] = bytes(255 - b for b in data[middle:middle + 300])  # rows inverted in place
    path.write_bytes(bytes(data))
    assert RECORD_DIGEST_SCHEME == 2
    assert record_digests(frame, scheme=2)[0] != before[2][0]  # every byte is read now
    assert record_digests(frame, scheme=1)[0] == before[1][0]  # what the old digest missed


def test_an_older_store_is_checked_by_its_own_digest_scheme(tmp_path):
    from matprobe.provenance import check_records_unchanged

    path, frame = _big_image_frame(tmp_path)
    store = tmp_path / "s.h5"
    EmbeddingStore.create(store, frame, {"checkpoint": "x"}, {("0", "last"): 3}, None).close()
    with EmbeddingStore.open(store) as st:
        assert st.record_digest_scheme == 2
    with h5py.File(store, "r+") as h5:  # an older store: first/last 64 KB digests, no scheme attribute
        del h5["content"].attrs["record_digest_scheme"]
        h5["content/record_digest"][...] = record_digests(frame, scheme=1)
    with EmbeddingStore.open(store) as st:
        assert st.record_digest_scheme == 1
        check_records_unchanged(st, frame, "data.jsonl")  # not refused for its older digests
    with EmbeddingStore.open(store, mode="a") as st:
        st.append([0], {("0", "last"): np.zeros((1, 3), dtype="float32")})
    frame2 = frame.assign(question=["another question"])
    with EmbeddingStore.open(store) as st, pytest.raises(ProvenanceMismatch, match="1 record"):
        check_records_unchanged(st, frame2, "data.jsonl")


def test_a_reordered_manifest_is_said_to_be_the_same_samples_in_another_order():
    from matprobe.extract.preflight import sample_list_difference

    assert sample_list_difference(["a", "b", "c"], ["c", "a", "b"]).startswith("holds the same 3 samples in another order")
    assert "different sample list" in sample_list_difference(["a", "b"], ["a", "x"])


def test_an_interrupted_run_says_what_its_directory_holds(tmp_path):
    from matprobe.interrupts import interrupt_message

    run = tmp_path / "run"
    (run / "stores").mkdir(parents=True)  # what a run stopped at 5 s left: one empty folder
    said = interrupt_message("run_command", {"out": run}, KeyboardInterrupt())
    assert f"{run} holds no finished step yet" in said and "keeps every finished step" not in said
    (run / "data").mkdir()
    (run / "data" / "related.jsonl").write_text("{}\n")
    (run / "stores" / "a.h5").write_bytes(b"")
    said = interrupt_message("run_command", {"out": run}, KeyboardInterrupt())
    assert f"{run} keeps every finished step (so far: data, stores); rerun" in said


def test_run_help_names_every_pipeline_key_a_study_sets():
    said = " ".join(CliRunner().invoke(app, ["run", "--help"], terminal_width=100).output.split())
    for key in ("portable_numerics", "rare_classes", "controls", "codelength", "permutations", "max_pixels",
                "task_level", "columns"):
        assert key in said, key
    assert "A rerun into the same [run] out resumes" in said
