"""Data model, entropies, manifest loader, images and splits."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from matprobe.data import (
    MATDataset,
    Sample,
    conditional_entropy,
    entropy,
    load_dataset,
    load_image,
    load_manifest,
    make_split,
    validate_dataset,
    write_manifest,
)
from matprobe.data.model import canonical_label
from matprobe.data.splits import relation, split_table, stratified_holdout
from matprobe.errors import DataError


def make_sample(i, m="CT", a="Lung", t="Classification", image=None, **kw):
    return Sample(id=f"s{i}", image=image, question=f"q{i}?", options=("Yes", "No", "Maybe", "None"),
                  answer_index=i % 4, modality=m, anatomy=a, task=t, **kw)


# ---------------------------------------------------------------- entropies
def test_entropy_matches_scipy_in_nats_and_bits():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=500)
    p = np.bincount(y) / len(y)
    assert entropy(y) == pytest.approx(scipy.stats.entropy(p), abs=1e-12)
    assert entropy(y, unit="bits") == pytest.approx(scipy.stats.entropy(p, base=2), abs=1e-12)


def test_conditional_entropy_by_definition():
    rng = np.random.default_rng(2)
    c1 = rng.integers(0, 3, size=2000)
    c2 = rng.integers(0, 2, size=2000)
    y = (c1 + rng.integers(0, 2, size=2000)) % 4
    # H(Y|C1,C2) = sum_c p(c) H(Y|C=c), computed independently with scipy
    expected = 0.0
    for a in range(3):
        for b in range(2):
            sel = (c1 == a) & (c2 == b)
            expected += sel.mean() * scipy.stats.entropy(np.bincount(y[sel], minlength=4) / sel.sum())
    assert conditional_entropy(y, [c1, c2]) == pytest.approx(expected, abs=1e-12)
    assert conditional_entropy(y, np.stack([c1, c2], 1)) == pytest.approx(expected, abs=1e-12)
    # a deterministic function of the condition has zero conditional entropy
    assert conditional_entropy(c1 * 2, c1) == 0.0
    assert conditional_entropy(y) == pytest.approx(entropy(y))
    # uniform over 4 classes independent of C: log 4
    u = np.tile(np.arange(4), 250)
    assert conditional_entropy(u, np.repeat([0, 1], 500)) == pytest.approx(math.log(4))


def test_vocabulary_codes_are_stable_under_reordering():
    a = MATDataset([make_sample(0, m="MRI"), make_sample(1, m="CT"), make_sample(2, m="X-ray")])
    b = MATDataset([make_sample(2, m="X-ray"), make_sample(0, m="MRI"), make_sample(1, m="CT")])
    assert a.vocabularies["modality"].labels == ("CT", "MRI", "X-ray")
    assert a.vocabularies["modality"].labels == b.vocabularies["modality"].labels
    assert a.codes("M").tolist() == [1, 0, 2] and b.codes("modality").tolist() == [2, 1, 0]


@pytest.mark.parametrize("raw,factor,canon", [
    ("X-Ray", "modality", "X-ray"), ("xray", "modality", "X-ray"), ("US", "modality", "Ultrasound"),
    ("ultrasound", "modality", "Ultrasound"), ("MR", "modality", "MRI"), ("ct", "modality", "CT"),
    ("chest", "anatomy", "Chest"), ("CHEST", "anatomy", "CHEST"), ("Lung", "anatomy", "Lung"),
])
def test_label_spellings_normalised(raw, factor, canon):
    assert canonical_label(factor, raw) == canon


def test_duplicate_id_names_both_records():
    with pytest.raises(DataError, match=r"record 2 has duplicate id 's0' \(first at record 1\)"):
        MATDataset([make_sample(0), make_sample(0)], source="x.jsonl")


# ---------------------------------------------------------------- manifest
def _png(path, value=128, size=(16, 12)):
    Image.fromarray(np.full(size[::-1] + (3,), value, dtype=np.uint8)).save(path)
    return path


def test_manifest_round_trip(tmp_path):
    _png(tmp_path / "a.png")
    samples = [
        make_sample(0, image=str(tmp_path / "a.png"), label="Yes", subset="1", split="train"),
        make_sample(1, m="MRI", a="Brain", t="Segmentation", image=str(tmp_path / "a.png"),
                    mask=str(tmp_path / "m.png")),  # relative mask paths resolve like images
        make_sample(2, m="X-ray", a="Chest", image=str(tmp_path / "a.png"), slice_index=3),
    ]
    ds = MATDataset(samples, source="mem")
    out = write_manifest(ds, tmp_path / "m.jsonl")
    back = load_manifest(out)
    assert [s.to_record() for s in back] == [
        {**s.to_record(), "label": s.label or s.options[s.answer_index]} for s in samples
    ]
    assert back.vocabularies["modality"].labels == ds.vocabularies["modality"].labels


def test_manifest_csv_with_letters_and_pipes(tmp_path):
    (tmp_path / "m.csv").write_text(
        "id,image,question,options,answer,modality,anatomy,task\n"
        "a,img.png,Is it?,Yes|No|Maybe|Unsure,B,x-ray,chest,classification\n"
        'b,img.png,Which?,"[""L"", ""R"", ""Both"", ""None""]",Both,CT,Lung,Classification\n'
    )
    ds = load_dataset(tmp_path / "m.csv")
    assert [s.answer_index for s in ds] == [1, 2]
    assert ds[0].triplet == ("X-ray", "Chest", "Classification")
    assert ds[1].options == ("L", "R", "Both", "None")
    assert ds[0].image == str(tmp_path / "img.png")


def test_manifest_csv_written_by_pandas_with_a_list_column(tmp_path):
    # `df.to_csv` writes a list cell as its Python repr (single quotes, or double quotes where an
    # option holds an apostrophe), the way most manifests made in a notebook arrive
    import pandas as pd

    rng = np.random.default_rng(11)
    pieces = ["left", "right", "it's", 'say "no"', "a, b", "x|y", "é ü", "[1]", "100%", "back\\slash"]
    records = []
    for i in range(40):
        options = [str(o) for o in rng.choice(pieces, size=int(rng.integers(2, 6)), replace=False)]
        records.append({"id": f"r{i}", "image": "img.png", "question": "Which?", "options": options,
                        "answer": int(rng.integers(0, len(options))), "modality": "CT", "anatomy": "Lung",
                        "task": "Classification"})
    pd.DataFrame(records).to_csv(tmp_path / "m.csv", index=False)
    assert "['" in (tmp_path / "m.csv").read_text()  # the cells are Python literals, not JSON
    ds = load_dataset(tmp_path / "m.csv")
    assert [list(s.options) for s in ds] == [r["options"] for r in records]
    assert [s.answer_index for s in ds] == [r["answer"] for r in records]
    # a cell that is neither JSON nor a Python list is one error naming the record and the cell
    (tmp_path / "bad.csv").write_text("id,image,question,options,answer,modality,anatomy,task\n"
                                      "a,img.png,Q?,\"['x', 'y'\",0,CT,Lung,Classification\n")
    with pytest.raises(DataError, match=r"record 1 \(id 'a'\): options \"\['x', 'y'\" is not a list"):
        load_dataset(tmp_path / "bad.csv")


@pytest.mark.parametrize("content,message", [
    ("", "the file is empty"),
    ('{"id": 1,\n', "line 1 is not valid JSON"),
    ('[{"id": 1}', "malformed JSON"),
    ('{"id": "a", "question": "q", "options": ["x", "y"], "answer": 0, "modality": "CT"}\n',
     "missing anatomy, task. A MAT manifest has columns"),  # absent from every record: one column error
    ('{"id": "a", "question": "q", "options": ["x", "y"], "answer": "E", "modality": "CT", '
     '"anatomy": "Lung", "task": "Cls"}\n', "answer 'E' is neither an option index"),
    # one past the last option: the hint for indices counted from 1; two past: no such hint
    ('{"id": "a", "question": "q", "options": ["x", "y", "z"], "answer": 3, "modality": "CT", '
     '"anatomy": "Lung", "task": "Cls"}\n',
     "answer index 3 out of range for 3 options; give 0..2 or a letter A..C (indices counted from 1? "
     "matprobe counts options from 0: subtract 1 from every answer index)"),
    ('{"id": "a", "question": "q", "options": ["x", "y", "z"], "answer": 4, "modality": "CT", '
     '"anatomy": "Lung", "task": "Cls"}\n', "answer index 4 out of range for 3 options; give 0..2 or a letter A..C$"),
])
def test_manifest_bad_input_messages(tmp_path, content, message):
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(DataError) as exc:
        load_dataset(f)
    assert str(f) in str(exc.value)
    if message.endswith("$"):  # the message ends there (nothing appended)
        assert str(exc.value).endswith(message[:-1]), str(exc.value)
    else:
        assert message in str(exc.value), str(exc.value)


def test_unknown_mat_label_against_declared_vocabulary(tmp_path):
    f = tmp_path / "v.jsonl"
    header = {"matprobe_manifest": 1, "vocabulary": {"modality": ["CT", "MRI", "X-ray"]}}
    rec = {"id": "r7", "question": "q", "options": ["a", "b"], "answer": 0, "modality": "PETCT",
           "anatomy": "Lung", "task": "Classification"}
    f.write_text(json.dumps(header) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"record 1 \(id 'r7'\): unknown modality label 'PETCT'; declared: CT, MRI, X-ray"):
        load_dataset(f)


def test_duplicate_id_in_manifest_file(tmp_path):
    f = tmp_path / "d.jsonl"
    rec = {"id": "x", "question": "q", "options": ["a", "b"], "answer": 0, "modality": "CT",
           "anatomy": "Lung", "task": "Classification"}
    f.write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=f"{f}: record 2 has duplicate id 'x'"):
        load_dataset(f)


def test_validate_collects_every_problem(tmp_path):
    _png(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"not a png at all")
    base = {"question": "q", "options": ["a", "b"], "answer": 0, "anatomy": "Lung", "task": "Classification"}
    recs = [
        {**base, "id": "1", "image": "ok.png", "modality": "CT"},
        {**base, "id": "2", "image": "missing.png", "modality": "CT"},
        {**base, "id": "3", "image": "corrupt.png", "modality": "MRI"},
        {**base, "id": "1", "image": "ok.png", "modality": "CT"},
        {"id": "5", "image": "ok.png"},
    ]
    f = tmp_path / "v.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    report = validate_dataset(f)
    text = "\n".join(report.problems)
    assert len(report.problems) == 4, text
    assert "missing.png not found" in text and "sample '2'" in text
    assert "corrupt.png cannot be read" in text and "sample '3'" in text
    assert "record 4 has duplicate id '1'" in text
    assert "record 5 (id '5'): missing field(s)" in text
    assert report.triplet_counts.set_index(["modality"])["n"].to_dict() == {"CT": 2, "MRI": 1}


def test_validate_says_many_missing_images_in_one_line(tmp_path):
    """A manifest copied away from its images (a user study: 180 "image ... not found" lines, one per
    item): more than five missing is one problem with the count, the first three items and the fix,
    as `extract` and `init` say it; every item stays in `report.missing_images`. Five or fewer: one
    line each, as before."""
    from typer.testing import CliRunner

    from matprobe.cli import app

    base = {"question": "q", "options": ["a", "b"], "answer": 0, "anatomy": "Lung", "task": "Classification"}
    _png(tmp_path / "ok.png")
    recs = [{**base, "id": f"s{i}", "image": f"imgs/{i}.png", "modality": "CT"} for i in range(8)]
    recs.append({**base, "id": "here", "image": "ok.png", "modality": "MRI"})
    f = tmp_path / "moved.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs))
    report = validate_dataset(f)
    expected = (f"{f}: 8 of 9 image(s) missing, first samples 's0': {tmp_path}/imgs/0.png, 's1': "
                f"{tmp_path}/imgs/1.png, 's2': {tmp_path}/imgs/2.png; fix the paths or pass --image-root DIR")
    assert report.problems == [expected]
    assert report.missing_images == [(f"s{i}", f"{tmp_path}/imgs/{i}.png") for i in range(8)]
    res = CliRunner().invoke(app, ["data", "validate", str(f)])
    assert res.exit_code == 1
    assert [line for line in res.output.splitlines() if line.startswith("problem:")] == [f"problem: {expected}"]
    assert "1 problem(s) found" in res.output
    # five missing: each its own line, as before
    f.write_text("".join(json.dumps(r) + "\n" for r in recs[3:]))
    report = validate_dataset(f)
    assert report.problems == [f"{f}: sample 's{i}': image {tmp_path}/imgs/{i}.png not found; check the path or pass "
                               "--image-root" for i in range(3, 8)]
    assert len(report.missing_images) == 5
    # the images given (here, the folder the paths are relative to): no problem
    (tmp_path / "imgs").mkdir()
    for i in range(8):
        _png(tmp_path / "imgs" / f"{i}.png")
    report = validate_dataset(f)
    assert report.ok and report.missing_images == []


# ---------------------------------------------------------------- images
def test_png_dicom_and_nifti_load_as_rgb(tmp_path):
    import pydicom
    from pydicom import examples

    png = load_image(make_sample(0, image=str(_png(tmp_path / "p.png", 77))))
    assert png.mode == "RGB" and np.asarray(png)[0, 0].tolist() == [77, 77, 77]

    ct = load_image(make_sample(1, image=str(examples.get_path("ct"))))
    raw = pydicom.dcmread(examples.get_path("ct")).pixel_array
    assert ct.mode == "RGB" and ct.size == (raw.shape[1], raw.shape[0])
    # windowing preserves the intensity order of the raw pixels
    arr = np.asarray(ct)[..., 0].astype(float)
    assert scipy.stats.spearmanr(arr.ravel(), raw.ravel())[0] > 0.99

    vol = np.zeros((8, 6, 5), dtype=np.float32)
    vol[2, 1, 3] = 100.0  # one bright voxel in slice 3 at x=2, y=1
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "v.nii.gz")
    sl = np.asarray(load_image(make_sample(2, image=str(tmp_path / "v.nii.gz"), slice_index=3)))[..., 0]
    assert sl.shape == (6, 8)
    assert np.unravel_index(sl.argmax(), sl.shape) == (6 - 1 - 1, 2)  # rows flipped: y=1 -> row 4
    with pytest.raises(DataError, match="slice 9 out of range"):
        load_image(make_sample(3, image=str(tmp_path / "v.nii.gz"), slice_index=9))


def test_wide_rasters_load_as_the_training_loaders_do_and_are_said(tmp_path):
    # a 12-bit CT/X-ray exported as a 16-bit grey PNG or TIFF, as some medical data sets ship. LLaVA's
    # training code, LLaMA-Factory and transformers' processors read it with Pillow's convert("RGB"),
    # which clips at 255: the model was fine-tuned on those pixels, so matprobe reads the same ones
    # and says what happened to them (data validate: a warning with the share at 255; extract: a note)
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.extract.runner import _check_images

    rng = np.random.default_rng(3)
    raw = rng.integers(0, 4096, (40, 30)).astype(np.uint16)
    files = {"ct16.png": raw, "ct16.tif": raw, "ct32.tif": raw.astype(np.int32), "ctf.tif": raw.astype(np.float32)}
    saturated = []
    for name, arr in files.items():
        Image.fromarray(arr).save(tmp_path / name)
        with Image.open(tmp_path / name) as im:
            pillow = np.asarray(im.convert("RGB"))
        got = np.asarray(load_image(make_sample(0, image=str(tmp_path / name))))
        assert np.array_equal(got, pillow), name
        saturated.append(pillow == 255)
    share = np.mean(np.concatenate([a.ravel() for a in saturated]))
    assert share > 0.9  # what the clipping does to a 12-bit image
    _png(tmp_path / "plain.png", 77)
    rows = [{"id": f"s{i}", "image": name, "question": "q?", "options": ["a", "b"], "answer": 0, "modality": "CT",
             "anatomy": "Lung", "task": "Classification"} for i, name in enumerate([*files, "plain.png"])]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "m.jsonl")])
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "no problems found" in out, res.output
    assert "warning:" in out and "4 image file(s) have more than 8 bits per pixel" in out, out
    assert "Pillow mode I;16 (2), I (1), F (1); first: sample 's0'" in out
    assert f"{share:.0%} of their pixels are at 255 after it" in out
    notes = _check_images(load_dataset(tmp_path / "m.jsonl").samples, "m.jsonl")
    assert len(notes) == 1 and "4 image file(s) have more than 8 bits per pixel" in notes[0]
    # 8-bit files only: nothing to say
    (tmp_path / "m8.jsonl").write_text(json.dumps(rows[-1]) + "\n")
    assert "more than 8 bits" not in CliRunner().invoke(app, ["data", "validate", str(tmp_path / "m8.jsonl")]).output
    assert _check_images(load_dataset(tmp_path / "m8.jsonl").samples, "m8.jsonl") == []


# ---------------------------------------------------------------- splits
CROSSMED = [
    ("X-ray", "Chest", "Classification"),
    ("X-ray", "Chest", "Segmentation"),
    ("MRI", "Brain", "Classification"),
    ("MRI", "Brain", "Segmentation"),
    ("CT", "Lung", "Classification"),
]
# Hand-enumerated from CrossMed §III/§V: shared components with each target.
EXPECTED_RELATIONS = {
    ("CT", "Lung", "Classification"): ["unrelated", "zero-overlap", "unrelated", "zero-overlap", "target"],
    ("X-ray", "Chest", "Classification"): ["target", "related", "unrelated", "zero-overlap", "unrelated"],
    ("MRI", "Brain", "Segmentation"): ["zero-overlap", "unrelated", "related", "target", "zero-overlap"],
}


@pytest.mark.parametrize("target", list(EXPECTED_RELATIONS))
def test_crossmed_split_table(target):
    table = split_table(CROSSMED, target)
    assert table["relation"].tolist() == EXPECTED_RELATIONS[target]
    rel = EXPECTED_RELATIONS[target]
    assert table["related"].tolist() == [r == "related" for r in rel]
    assert table["unrelated"].tolist() == [r in ("unrelated", "zero-overlap") for r in rel]
    assert table["zero-overlap"].tolist() == [r == "zero-overlap" for r in rel]
    assert table["leave-one-out"].tolist() == [r != "target" for r in rel]
    # the paper's own examples (§III, §V)
    assert relation(CROSSMED[0], CROSSMED[1]) == "related"
    assert relation(CROSSMED[3], CROSSMED[4]) == "zero-overlap"


def test_make_split_assigns_train_and_test():
    ds = MATDataset([make_sample(i, *CROSSMED[i % 5]) for i in range(20)])
    related = make_split(ds, "X-ray,Chest,Classification", "related")
    assert {s.triplet for s in related if s.split == "train"} == {CROSSMED[1]}
    assert {s.triplet for s in related if s.split == "test"} == {CROSSMED[0]}
    assert len(related) == 8
    unrel = make_split(ds, "xray, chest, classification", "unrelated")
    assert {s.triplet for s in unrel if s.split == "train"} == {CROSSMED[2], CROSSMED[3], CROSSMED[4]}
    assert related.vocabularies["modality"].labels == ds.vocabularies["modality"].labels
    with pytest.raises(DataError, match="no training triplet is related to CT,Lung,Classification"):
        make_split(ds, "CT,Lung,Classification", "related")
    with pytest.raises(DataError, match="target triplet CT,Brain,Classification has no samples"):
        make_split(ds, "CT,Brain,Classification", "related")


def test_first_unsplittable_is_the_first_split_make_split_refuses():
    # what run's preflight and init check of a design: in target-then-condition order, the first
    # (target, condition) make_split refuses, with make_split's own message
    from matprobe.data.splits import first_unsplittable

    ds = MATDataset([make_sample(i, *CROSSMED[i % 5]) for i in range(20)])
    x_ray, ct = CROSSMED[0], CROSSMED[4]
    assert first_unsplittable(ds, [x_ray], ["related", "unrelated"]) is None
    target, cond, exc = first_unsplittable(ds, [x_ray, ct], ["unrelated", "related"])
    assert (target, cond) == (ct, "related")  # CT/Lung/Classification has no related triplet
    with pytest.raises(DataError) as direct:
        make_split(ds, ct, "related")
    assert str(exc) == str(direct.value)
    target, _, exc = first_unsplittable(ds, [("CT", "Brain", "Classification"), ct], ["related"])
    assert target == ("CT", "Brain", "Classification") and "has no samples" in str(exc)


def test_stratified_holdout_is_seeded_and_stratified():
    ds = MATDataset([make_sample(i, subset=str(i % 3)) for i in range(90)])
    a = stratified_holdout(ds, 0.2, seed=3)
    b = stratified_holdout(ds, 0.2, seed=3)
    assert [s.split for s in a] == [s.split for s in b]
    for sub in "012":
        assert sum(s.split == "test" for s in a if s.subset == sub) == 6


def test_transparent_images_are_read_as_llava_reads_them_and_are_said(tmp_path):
    """An RGBA PNG with transparent pixels and a palette PNG with a transparent colour: matprobe reads
    them with Pillow's convert('RGB') (LLaVA's training code), which differs from transformers' own
    `convert_to_rgb` (composited onto white) exactly at the non-opaque pixels; `data validate` and
    `extract` say so, and an opaque RGB file gives no note."""
    from transformers.image_transforms import convert_to_rgb
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.extract.runner import _check_images

    rng = np.random.default_rng(4)
    rgba = rng.integers(0, 256, (20, 24, 4)).astype(np.uint8)
    rgba[:8, :, 3] = 0  # a transparent band
    rgba[8:, :, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    pal = Image.fromarray(rng.integers(0, 4, (20, 24)).astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 756)
    pal.save(tmp_path / "pal.png", transparency=0)
    for name in ("rgba.png", "pal.png"):
        got = np.asarray(load_image(make_sample(0, image=str(tmp_path / name))))
        with Image.open(tmp_path / name) as im:
            assert np.array_equal(got, np.asarray(im.convert("RGB"))), name
            white = np.asarray(convert_to_rgb(im, return_numpy=True))
            alpha = np.asarray(im.convert("RGBA"))[..., 3]
        differs = (got != white).any(axis=2)
        assert differs.any() and not differs[alpha == 255].any(), name  # only where not opaque
    _png(tmp_path / "plain.png", 77)
    rows = [{"id": f"s{i}", "image": name, "question": "q?", "options": ["a", "b"], "answer": 0, "modality": "CT",
             "anatomy": "Lung", "task": "Classification"} for i, name in enumerate(["rgba.png", "pal.png", "plain.png"])]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "m.jsonl")])
    out = " ".join(res.output.split())
    assert res.exit_code == 0 and "2 image file(s) carry transparency" in out and "first: sample 's0'" in out, out
    notes = _check_images(load_dataset(tmp_path / "m.jsonl").samples, "m.jsonl")
    assert len(notes) == 1 and "composite such images onto white" in notes[0]
    (tmp_path / "plain.jsonl").write_text(json.dumps(rows[-1]) + "\n")
    assert _check_images(load_dataset(tmp_path / "plain.jsonl").samples, "plain.jsonl") == []
    # files that could carry transparency but whose every pixel is opaque (an RGBA export with alpha
    # 255, a palette whose transparent colour no pixel uses) read the same both ways: no note
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque_rgba.png")
    pal_unused = Image.fromarray(rng.integers(1, 4, (20, 24)).astype(np.uint8), "P")
    pal_unused.putpalette([0, 0, 0, 200, 10, 10, 10, 200, 10, 10, 10, 200] + [0] * 756)
    pal_unused.save(tmp_path / "opaque_pal.png", transparency=0)
    opaque = []
    for i, name in enumerate(("opaque_rgba.png", "opaque_pal.png")):
        with Image.open(tmp_path / name) as im:
            assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(convert_to_rgb(im, return_numpy=True)))
            assert im.mode in ("RGBA", "P")  # the header alone would have said transparency
        opaque.append({**rows[-1], "id": f"o{i}", "image": name})
    (tmp_path / "opaque.jsonl").write_text("".join(json.dumps(r) + "\n" for r in opaque))
    assert _check_images(load_dataset(tmp_path / "opaque.jsonl").samples, "opaque.jsonl") == []
    res = CliRunner().invoke(app, ["data", "validate", str(tmp_path / "opaque.jsonl")])
    assert res.exit_code == 0 and "transparency" not in res.output, res.output


def test_single_factor_ablations_are_the_related_triplets_lacking_that_factor():
    # CrossMed §VI-E: "to evaluate the triplet (CT, Brain, Hemorrhage), the model is trained on
    # combinations like (CT, Task), (Brain, Task), or (CT, Brain) without exposing the full triplet";
    # Table IX compares each with Related. Hand-enumerated for that target:
    target = ("CT", "Brain", "Hemorrhage")
    triplets = {("MRI", "Brain", "Hemorrhage"): "without-modality", ("X-ray", "Brain", "Hemorrhage"): "without-modality",
                ("CT", "Spine", "Hemorrhage"): "without-anatomy", ("CT", "Brain", "Cancer"): "without-task",
                ("MRI", "Spine", "Hemorrhage"): None, ("MRI", "Brain", "Cancer"): None, ("CT", "Spine", "Cancer"): None}
    ds = MATDataset([make_sample(i, *t) for i, t in enumerate([target, *triplets] * 2)])
    for config in ("without-modality", "without-anatomy", "without-task"):
        split = make_split(ds, target, config)
        assert {s.triplet for s in split if s.split == "train"} == {t for t, c in triplets.items() if c == config}
        assert {s.triplet for s in split if s.split == "test"} == {target}
    # together they are the Related split
    related = {s.triplet for s in make_split(ds, target, "related") if s.split == "train"}
    assert related == {t for t, c in triplets.items() if c is not None}
