"""A training item whose image is a held-out item's (Med-MAT's subsets 30 and 47 are both NLM-TB:
a Related split of one trains on the other's images) makes the held-out accuracy a training accuracy.
`data split` and `run` say so: by path, or by bytes under another name; a file of the same size and
other bytes is not taken for one."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.data.splits import shared_image_pairs, split_file

torch.set_num_threads(1)
TARGET = ("X-ray", "Lung", "State")


def _study(root, n=8):
    """Target X-ray/Lung/State, related X-ray/Lung/Det (items 0-1 name a target image file, 2-3 are byte
    copies of target images under other names, 4 a raw file of the same size and other bytes), and
    unrelated CT/Brain/Grade."""
    (root / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []

    def raw(name, seed):  # raw bytes of a fixed size: equal sizes, other contents
        (root / "img" / name).write_bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(root / "img" / f"t{i}.png")
        rows.append(("t", i, f"img/t{i}.png", TARGET))
    for i in range(n):
        if i < 2:
            image = f"img/t{i}.png"
        elif i < 4:
            shutil.copy(root / "img" / f"t{i}.png", root / "img" / f"copy{i}.png")
            image = f"img/copy{i}.png"
        else:
            Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(root / "img" / f"r{i}.png")
            image = f"img/r{i}.png"
        rows.append(("r", i, image, ("X-ray", "Lung", "Det")))
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(root / "img" / f"u{i}.png")
        rows.append(("u", i, f"img/u{i}.png", ("CT", "Brain", "Grade")))
    with open(root / "items.jsonl", "w") as fh:
        for kind, i, image, (m, a, t) in rows:
            print(json.dumps({"id": f"{kind}{i}", "image": image, "question": "Which?", "options": ["yes", "no"],
                              "answer": i % 2, "modality": m, "anatomy": a, "task": t}), file=fh)
    return root / "items.jsonl"


def test_split_finds_training_items_sharing_a_held_out_image_by_path_or_bytes(tmp_path):
    manifest = _study(tmp_path)
    notes: list[str] = []
    split = split_file(manifest, ",".join(TARGET), "related", notes=notes)
    train = [s.id for s in split if s.split == "train"]
    test = [s.id for s in split if s.split == "test"]
    pairs = shared_image_pairs(split, train, test)
    assert sorted((a, b) for a, b, _ in pairs) == [("r0", "t0"), ("r1", "t1"), ("r2", "t2"), ("r3", "t3")]
    # a file of the size of a held-out one and other bytes is read, and not taken for one
    (tmp_path / "img" / "t7.png").write_bytes(b"\x00" * 64)
    (tmp_path / "img" / "r7.png").write_bytes(b"\x01" * 64)
    assert sorted(a for a, _, _ in shared_image_pairs(split, train, test)) == ["r0", "r1", "r2", "r3"]
    assert len(notes) == 1 and notes[0].startswith("4 of the 8 training items use the image file of a held-out "
                                                   "item (e.g. training item 'r0' and held-out item 't0'")
    unrelated: list[str] = []
    split_file(manifest, ",".join(TARGET), "zero-overlap", notes=unrelated)
    assert unrelated == []
    res = CliRunner().invoke(app, ["data", "split", str(manifest), "--target", ",".join(TARGET), "--config",
                                   "related", "--out", str(tmp_path / "related.jsonl")])
    assert res.exit_code == 0 and "4 of the 8 training items use the image file of a held-out item" in \
        " ".join(res.output.split()), res.output


@pytest.mark.slow
def test_run_warns_before_training_and_the_report_keeps_it(tmp_path):
    manifest = _study(tmp_path)
    pipe = tmp_path / "p.toml"
    pipe.write_text(f'[run]\nout = "{tmp_path / "run"}"\nworkers = 1\n[data]\nfile = "{manifest}"\n'
                    f'[design]\ntarget = {json.dumps(list(TARGET))}\nconditions = ["related", "zero-overlap"]\n'
                    '[train]\nsteps = 2\nbatch_size = 4\nseeds = [0, 1]\n[mi]\nseeds = 1\nfolds = 2\n'
                    'factors = ["modality", "anatomy", "task"]\ncontrols = false\n')
    res = CliRunner().invoke(app, ["run", str(pipe)])
    said = " ".join(res.output.split())
    assert res.exit_code == 0, res.output
    assert "4 of the 8 related training items for X-ray,Lung,State use the image file of a held-out item" in said, said
    assert "zero-overlap training items" not in said
    report = " ".join((tmp_path / "run" / "report.md").read_text().split())
    assert "4 of the 8 related training items for X-ray,Lung,State use the image file of a held-out item" in report, report
