"""Segmentation items: mask options, their checks, renderings, intersection / union, cIoU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from matprobe.errors import DataError


def _disc(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def write_seg_manifest(folder: Path, n: int = 4, size=(40, 48), fmt: str = "png",
                       sizes=None) -> Path:
    """n segmentation items: a grey image, four disc masks at different places (answer cycles).
    `sizes` (one (h, w) per item) mixes image sizes; question lengths vary with the item."""
    folder = Path(folder)
    (folder / "m").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    centres = [(12, 12), (12, 34), (28, 14), (27, 33)]
    questions = ["Which mask outlines the lesion?", "Lesion?", "Which of the candidate masks covers the tumour?"]
    path = folder / "seg.jsonl"
    with open(path, "w") as fh:
        for i in range(n):
            h, w = sizes[i % len(sizes)] if sizes else size
            img = rng.integers(30, 200, (h, w), dtype=np.uint8)
            Image.fromarray(img).save(folder / f"img{i}.png")
            masks = []
            for k, (cy, cx) in enumerate(centres):
                m = _disc(h, w, cy, cx, 6 + (i + k) % 3)
                name = f"m/{i}_{k}.{fmt}"
                if fmt == "png":
                    Image.fromarray(m.astype(np.uint8) * 255).save(folder / name)
                else:
                    np.save(folder / name, m.astype(np.uint8))
                masks.append(name)
            fh.write(json.dumps(dict(
                id=f"seg{i}", image=f"img{i}.png", question=questions[0] if not sizes else questions[i % 3],
                option_masks=masks, answer=i % 4, modality="MRI", anatomy="Brain", task="Segmentation",
            )) + "\n")
    return path


# ------------------------------------------------------------------ manifest and checks
def test_manifest_mask_items_load_and_round_trip(tmp_path):
    from matprobe.data import load_manifest, write_manifest

    ds = load_manifest(write_seg_manifest(tmp_path, fmt="npy"))
    s = ds[1]
    assert s.is_segmentation and s.options == ("mask A", "mask B", "mask C", "mask D")
    assert s.answer_index == 1 and s.label == "mask B"
    assert all(Path(m).is_absolute() and Path(m).is_file() for m in s.option_masks)
    back = load_manifest(write_manifest(ds, tmp_path / "again.jsonl"))
    assert [x.to_record() for x in back] == [x.to_record() for x in ds]
    # the written file keeps the paths relative, so the folder can move
    rec = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()][1]
    assert rec["option_masks"][0] == "m/0_0.npy"


def test_load_mask_rules(tmp_path):
    from matprobe.data.masks import load_mask

    m = np.zeros((10, 12), dtype=np.uint8)
    m[2:5, 3:9] = 255
    Image.fromarray(m).save(tmp_path / "ok.png")
    arr, notes = load_mask(tmp_path / "ok.png", (10, 12))
    assert notes == [] and arr.sum() == 18 and arr[2:5, 3:9].all()
    # an anti-aliased edge: thresholded at 128 and said so
    soft = m.copy()
    soft[5, 3:9] = 100
    soft[1, 3:9] = 200
    Image.fromarray(soft).save(tmp_path / "soft.png")
    arr, notes = load_mask(tmp_path / "soft.png", (10, 12))
    assert arr.sum() == 24 and "thresholded at 128" in notes[0]
    # half resolution: nearest-neighbour upsampling, said so
    Image.fromarray(m[::2, ::2]).save(tmp_path / "half.png")
    arr, notes = load_mask(tmp_path / "half.png", (10, 12))
    assert arr.shape == (10, 12) and "resampled from 6x5 to 12x10" in notes[0]
    np.testing.assert_array_equal(arr, np.kron(m[::2, ::2] > 0, np.ones((2, 2), bool)))
    # probability map in [0, 1]
    np.save(tmp_path / "p.npy", np.linspace(0, 1, 120).reshape(10, 12))
    arr, notes = load_mask(tmp_path / "p.npy", (10, 12))
    assert arr.sum() == 60 and "thresholded at 0.5" in notes[0]
    # refused: label map, other aspect ratio, unreadable, missing
    np.save(tmp_path / "labels.npy", np.array([[0, 1], [2, 4]]))
    with pytest.raises(DataError, match=r"not binary \(values 0, 1, 2, 4\); save one label"):
        load_mask(tmp_path / "labels.npy", (2, 2))
    Image.fromarray(m[:, :10]).save(tmp_path / "narrow.png")
    with pytest.raises(DataError, match="mask is 10x10 .* image is 12x10"):
        load_mask(tmp_path / "narrow.png", (10, 12))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot be read"):
        load_mask(tmp_path / "bad.png", (10, 12))
    with pytest.raises(DataError, match="not found"):
        load_mask(tmp_path / "nope.png", (10, 12))


def test_nifti_mask_uses_the_image_slice_rule(tmp_path):
    import nibabel as nib

    from matprobe.data.images import read_nifti
    from matprobe.data.masks import load_mask

    vol = np.zeros((12, 10, 5), dtype=np.uint8)  # (x, y, z)
    vol[2:6, 1:4, 3] = 1
    vol[7:9, 6:9, 2] = 1
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "m.nii.gz")
    img = read_nifti(tmp_path / "m.nii.gz", 3)
    arr, notes = load_mask(tmp_path / "m.nii.gz", (img.size[1], img.size[0]), slice_index=3)
    # independent of matprobe: axial slice 3, rows = y flipped, columns = x
    np.testing.assert_array_equal(arr, vol[:, :, 3].T[::-1] > 0)
    assert notes == [] and arr.shape == (10, 12)
    arr2, _ = load_mask(tmp_path / "m.nii.gz", (10, 12), slice_index=None)  # default: middle (2)
    np.testing.assert_array_equal(arr2, vol[:, :, 2].T[::-1] > 0)


def _rewrite(path: Path, index: int, **changes) -> None:
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    recs[index].update(changes)
    path.write_text("".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in recs))


@pytest.mark.parametrize("case, expect", [
    ("missing", r"seg2.* option C \(2_2.png\): mask file .* not found; fix the path"),
    ("unreadable", r"seg2.* option C .* cannot be read .*replace the file"),
    ("not_binary", r"seg2.* option C .* not binary \(values 0, 1, 2\); save one label as a 0/1 mask"),
    ("size", r"seg2.* option C .* mask is 10x7 \(W x H\) but the image is 48x40; save the mask"),
    ("three_masks", r"record 3 \(id 'seg2'\): 4 options but 3 option_masks; give one mask per option"),
    ("answer", r"record 3 \(id 'seg2'\): answer index 7 out of range for 4 options; give 0..3"),
    ("empty_truth", r"seg2.*: the ground-truth mask is empty, so its IoU is undefined; give a mask"),
])
def test_bad_mask_input_one_line_each(tmp_path, case, expect):
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.data import validate_dataset

    path = write_seg_manifest(tmp_path)
    target = tmp_path / "m" / "2_2.png"
    if case == "missing":
        target.unlink()
    elif case == "unreadable":
        target.write_bytes(b"\x89PNG broken")
    elif case == "not_binary":
        Image.fromarray(np.array([[0, 1, 2]] * 3, dtype=np.uint8)).save(target)  # a label map
    elif case == "size":
        Image.fromarray(np.zeros((7, 10), np.uint8)).save(target)
    elif case == "three_masks":
        recs = [json.loads(line) for line in path.read_text().splitlines()]
        _rewrite(path, 2, option_masks=recs[2]["option_masks"][:3],
                 options=["mask A", "mask B", "mask C", "mask D"])
    elif case == "answer":
        _rewrite(path, 2, answer=7)
    elif case == "empty_truth":
        Image.fromarray(np.zeros((40, 48), np.uint8)).save(tmp_path / "empty.png")
        _rewrite(path, 2, mask="empty.png")
    report = validate_dataset(path)
    assert len(report.problems) == 1, report.problems
    assert __import__("re").search(expect, report.problems[0]), report.problems[0]
    assert "\n" not in report.problems[0]
    # extract refuses the same input with one error line and writes nothing
    res = CliRunner().invoke(app, ["extract", "--ckpt", str(tmp_path / "no-model"), "--data", str(path),
                                   "--out", str(tmp_path / "z.h5")])
    assert res.exit_code == 2
    assert res.output.count("error:") == 1
    assert not (tmp_path / "z.h5").exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".h5" or ".tmp" in p.name] == []


# ------------------------------------------------------------------ renderings
def test_overlay_for_option_b_is_candidate_b(tmp_path):
    """Decode the rendered images: the red pixels of panel / image B, filled, are exactly
    candidate B's mask (and not A's); the letter box shows white text on black."""
    from scipy.ndimage import binary_fill_holes

    from matprobe.data import load_manifest
    from matprobe.data.masks import load_item_masks
    from matprobe.extract.prompts import GRID_GAP, render_sample

    ds = load_manifest(write_seg_manifest(tmp_path))
    s = ds[1]
    cands = load_item_masks(s).candidates
    question = np.asarray(Image.open(s.image).convert("RGB"))

    def decode(rgb):
        red = (rgb[..., 0] == 255) & (rgb[..., 1] == 0) & (rgb[..., 2] == 0)
        return binary_fill_holes(red)

    multi = render_sample(s, "multi-image")
    assert len(multi.images) == 5
    np.testing.assert_array_equal(np.asarray(multi.images[0]), question)  # the question image, untouched
    for k in range(4):
        rgb = np.asarray(multi.images[1 + k])
        np.testing.assert_array_equal(decode(rgb), cands[k])
        # outside the contour and the letter box the pixels are the question image's
        box = np.zeros(cands[k].shape, bool)
        box[:8, :8] = True
        same = np.all(rgb == question, axis=-1)
        assert same[~cands[k] & ~box].all()
    assert not np.array_equal(decode(np.asarray(multi.images[2])), cands[0])

    (g,) = render_sample(s, "grid").images
    h, w = question.shape[:2]
    assert g.size == (2 * w + GRID_GAP, 2 * h + GRID_GAP)
    arr = np.asarray(g)
    top, left = 0, w + GRID_GAP  # panel B: row 0, column 1
    panel_b = arr[top:top + h, left:left + w]
    np.testing.assert_array_equal(decode(panel_b), cands[1])
    assert (arr[:, w:w + GRID_GAP] == 255).all()  # the white gap between A and B
    # letter boxes: black with some white (the letter) in each panel
    for k, (t, lft) in enumerate([(0, 0), (0, w + GRID_GAP), (h + GRID_GAP, 0), (h + GRID_GAP, w + GRID_GAP)]):
        corner = arr[t:t + 8, lft:lft + 8]
        assert (corner == 0).all(-1).any() and (corner.min(-1) > 128).any(), k


# ------------------------------------------------------------------ scores
def test_intersection_union_by_hand():
    from matprobe.data.masks import ciou, intersection_union

    a = np.zeros((4, 5), bool)
    a[0:2, 0:3] = True  # 6 pixels
    b = np.zeros((4, 5), bool)
    b[1:3, 1:4] = True  # 6 pixels, overlap rows 1, cols 1-2 = 2 pixels
    assert intersection_union(a, b) == (2, 10)
    assert intersection_union(a, a) == (6, 6)
    assert intersection_union(a, ~a) == (0, 20)
    # cIoU is a ratio of sums: (2 + 6) / (10 + 6) = 0.5, not the mean IoU (0.2 + 1) / 2 = 0.6
    assert ciou([2, 6, -1], [10, 6, -1]) == pytest.approx(0.5)
    assert ciou([2, 6], [10, 6]) != pytest.approx(np.mean([2 / 10, 6 / 6]))


def test_check_treats_segmentation_as_k_way_choice(tmp_path):
    """A segmentation stratum whose answers cover only 3 of the 4 candidates still has K = 4
    (the choice the model makes); a classification stratum keeps K = |support of Y|."""
    from matprobe.data import MATDataset, Sample
    from matprobe.store import EmbeddingStore
    from matprobe.theory import fano
    from matprobe.theory.check import run_check

    samples = []
    for i in range(24):
        seg = i < 12
        samples.append(Sample(
            id=f"x{i}", image="i.png", question="q", options=("mask A", "mask B", "mask C", "mask D") if seg
            else ("Yes", "No", "Maybe", "None"), answer_index=(i % 3) if seg else (i % 2),
            modality="MRI", anatomy="Brain", task="Segmentation" if seg else "Classification",
            option_masks=("a.png", "b.png", "c.png", "d.png") if seg else None,
        ))
    ds = MATDataset(samples)
    st = EmbeddingStore.create(tmp_path / "s.h5", ds, {"source": "test"}, {("0", "last"): 2}, n_options=4)
    pred = np.array([s.answer_index if i % 4 else (s.answer_index + 1) % 3 for i, s in enumerate(samples)])
    correct = (pred == np.array([s.answer_index for s in samples])).astype(np.int8)
    st.append(np.arange(24), {("0", "last"): np.zeros((24, 2))}, answers={"pred": pred, "correct": correct})
    st.finalize().close()
    res = run_check(tmp_path / "s.h5", target="answer").to_dict()
    by_task = {r["given"]["task"]: r for r in res["strata"]}
    seg, cls = by_task["Segmentation"], by_task["Classification"]
    assert seg["classes"] == 4 and seg["item_kind"] == "segmentation"
    assert cls["classes"] == 2 and cls["item_kind"] == "choice"
    # the bound uses K = 4: H(Y|s) - φ(ε, 4), with H of the three equiprobable answers
    eps = seg["errors"] / seg["n"]
    assert seg["h_y"] == pytest.approx(np.log(3))
    assert seg["fano_mi_lower"] == pytest.approx(np.log(3) - fano.fano_entropy_upper(eps, 4))


def test_results_with_run_level_ciou_and_item_parts():
    """The pipeline writes per-item I/U and the per-run cIoU: significance derives cIoU from the
    items (one column, not three), and refuses a run-level value that is not Σ I / Σ U."""
    import pandas as pd

    from matprobe.errors import StatsError
    from matprobe.stats.significance import (
        Comparison,
        available_metrics,
        compare_conditions,
        validate_results,
    )

    rng = np.random.default_rng(3)
    rows = []
    for cond, shift in (("Related", 30), ("Unrelated", 0)):
        for seed in range(4):
            inter = rng.integers(10, 60, 6) + shift
            union = inter + rng.integers(20, 80, 6)
            for k in range(6):
                rows += [dict(condition=cond, target="t", seed=seed, item=f"i{k}", metric="intersection",
                              value=inter[k]),
                         dict(condition=cond, target="t", seed=seed, item=f"i{k}", metric="union", value=union[k])]
            rows.append(dict(condition=cond, target="t", seed=seed, item="", metric="cIoU",
                             value=inter.sum() / union.sum()))
    frame = pd.DataFrame(rows)
    clean = validate_results(frame)
    assert available_metrics(clean) == ["cIoU"] and "cIoU" not in set(clean.metric)
    res = compare_conditions(frame, [Comparison("Related", "Unrelated")], unit="seed")
    runs = frame[frame.metric == "cIoU"].pivot_table(index="seed", columns="condition", values="value")
    assert res["mean_diff"].iloc[0] == pytest.approx((runs["Related"] - runs["Unrelated"]).mean())
    bad = frame.copy()
    bad.loc[bad.metric == "cIoU", "value"] = bad.loc[bad.metric == "cIoU", "value"] + 0.01
    with pytest.raises(StatsError, match="'cIoU' at row .* is not the sum of 'intersection'"):
        validate_results(bad)


def test_data_split_and_validate_keep_mask_items(tmp_path):
    """`data split` writes mask items with their masks (paths relative to the new file's
    folder when inside it), `data validate` passes them and notes a threshold it applied."""
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.data import load_manifest

    path = write_seg_manifest(tmp_path, n=4)
    with open(path, "a") as fh:  # a classification item of the related triplet
        fh.write(json.dumps(dict(id="cls0", image="img0.png", question="Grade?", options=["I", "II", "III", "IV"],
                                 answer=1, modality="MRI", anatomy="Brain", task="Classification")) + "\n")
    soft = np.asarray(Image.open(tmp_path / "m" / "1_3.png")).copy()
    soft[soft == 255] = 200
    soft[0, 0] = 90
    Image.fromarray(soft).save(tmp_path / "m" / "1_3.png")
    runner = CliRunner()
    res = runner.invoke(app, ["data", "validate", str(path)])
    assert res.exit_code == 0, res.output
    assert "note:" in res.output and "seg1" in res.output and "thresholded at 128" in res.output
    out = tmp_path / "split.jsonl"
    res = runner.invoke(app, ["data", "split", str(path), "--target", "MRI,Brain,Segmentation",
                              "--config", "related", "--out", str(out)])
    assert res.exit_code == 0, res.output
    back = {s.id: s for s in load_manifest(out)}
    orig = {s.id: s for s in load_manifest(path)}
    assert back["seg2"].split == "test" and back["cls0"].split == "train"
    assert back["seg2"].option_masks == orig["seg2"].option_masks and back["seg2"].answer_index == 2
