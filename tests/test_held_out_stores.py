"""A store given for a target is scored on that target's rows as held-out accuracy. Its own split
column (what `run` writes per condition: train, test for the held-out target, unused) says which
triplet it holds out: a Med-MAT study that swapped two targets' store names got training accuracy
reported as held-out accuracy, and `init` refused the names `run` gives the first target's stores."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import matprobe as mp
from matprobe.cli import app
from matprobe.errors import InitError

TRIPLETS = [("CT", "Lung", "COVID"), ("X-ray", "Lung", "COVID"), ("MRI", "Brain", "Tumor"), ("CT", "Lung", "Cancer")]


def _related(a, b) -> bool:  # CrossMed's related: exactly two of the three factors shared
    return sum(x == y for x, y in zip(a, b)) == 2


def _study(root, n_per=12):
    """items.jsonl over four triplets and, per target of the first two, a related store whose split
    marks the target test, its related triplets train and the rest unused; named as `run` names a
    two-target run's stores (the first target's without its name)."""
    root.mkdir()
    mat = [t for t in TRIPLETS for _ in range(n_per)]
    n = len(mat)
    with open(root / "items.jsonl", "w") as fh:
        for i, (m, a, t) in enumerate(mat):
            print(json.dumps({"id": f"q{i}", "question": "Which?", "options": ["yes", "no"], "answer": i % 2,
                              "modality": m, "anatomy": a, "task": t}), file=fh)
    stores = {}
    for k, target in enumerate(TRIPLETS[:2]):
        split = ["test" if t == target else "train" if _related(t, target) else "unused" for t in mat]
        labels = {**dict(zip(("modality", "anatomy", "task"), np.array(mat).T)),
                  "label": np.array(["yes", "no"])[np.arange(n) % 2], "split": np.array(split)}
        name = "related-s0.h5" if k == 0 else "x-ray-lung-covid-related-s0.h5"
        path = root / name
        z = np.random.default_rng(k).normal(size=(n, 3)).astype("float32")
        mp.EmbeddingStore.from_arrays(path, [f"q{i}" for i in range(n)], labels, {("3", "last"): z},
                                      answers={"pred": np.arange(n) % 2, "correct": np.ones(n, dtype=int)}).close()
        stores[target] = path
    return stores


def test_init_reads_the_target_of_a_store_named_as_run_names_the_first_targets(tmp_path):
    stores = _study(tmp_path / "s")
    out = mp.init(data=tmp_path / "s" / "items.jsonl", target=["CT,Lung,COVID", "X-ray,Lung,COVID"],
                  store=list(stores.values()), out=tmp_path / "p.toml", seeds=1, folds=2)
    from matprobe.pipeline import load_pipeline

    entries = load_pipeline(out).checkpoints
    assert {e["store"]: tuple(e["target"]) for e in entries} == {str(p): t for t, p in stores.items()}


def test_a_store_named_for_another_target_is_refused_by_init_and_by_run(tmp_path):
    stores = _study(tmp_path / "s")
    swapped = tmp_path / "sw"
    swapped.mkdir()
    # the first target's name on the second target's store (whose split marks CT,Lung,COVID train:
    # related to X-ray,Lung,COVID) and the other way round (its split holds out CT,Lung,COVID)
    (swapped / "ct-lung-covid-related-s0.h5").symlink_to(stores[TRIPLETS[1]])
    (swapped / "x-ray-lung-covid-related-s0.h5").symlink_to(stores[TRIPLETS[0]])
    data = tmp_path / "s" / "items.jsonl"
    with pytest.raises(InitError) as err:
        mp.init(data=data, target=["CT,Lung,COVID", "X-ray,Lung,COVID"], store=sorted(swapped.iterdir()),
                out=tmp_path / "p.toml", seeds=1, folds=2)
    said = str(err.value)
    assert said.startswith(f"{swapped / 'ct-lung-covid-related-s0.h5'}: its split marks rows of the target "
                           "CT,Lung,COVID train: its checkpoint was trained on them") and \
        "(it holds out X-ray,Lung,COVID)" in said, said
    assert not (tmp_path / "p.toml").exists()
    # a pipeline file edited by hand the same way: `run` refuses it before any work
    good = mp.init(data=data, target=["CT,Lung,COVID", "X-ray,Lung,COVID"], store=list(stores.values()),
                   out=tmp_path / "good.toml", seeds=1, folds=2)
    text = good.read_text()
    a, b = str(stores[TRIPLETS[0]]), str(stores[TRIPLETS[1]])
    edited = tmp_path / "edited.toml"
    edited.write_text(text.replace(a, "@A@").replace(b, a).replace("@A@", b))
    res = CliRunner().invoke(app, ["run", str(edited)])
    said = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert (f"[[checkpoints]] 'ct-lung-covid-related-s0': store '{b}': its split marks rows of the target "
            "CT,Lung,COVID train") in said, said
    assert not (tmp_path / "edited-run" / "mi").exists() and not (tmp_path / "edited-run" / "results.csv").exists()


def test_the_check_reads_the_split_as_the_pipeline_writes_it_and_passes_stores_without_one(tmp_path):
    """The condition manifest `run` extracts from (pipeline.condition_manifest) marks the target test,
    the condition's training rows train and the rest unused: read back by the check, it holds out
    the target; a store of a manifest with no split column is taken as it is."""
    from matprobe.data import load_dataset
    from matprobe.data.splits import make_split
    from matprobe.pipeline import condition_manifest
    from matprobe.store_checks import held_out_problem, held_out_triplets

    stores = _study(tmp_path / "s")
    dataset = load_dataset(tmp_path / "s" / "items.jsonl")
    target = TRIPLETS[0]
    train = {s.id for s in make_split(dataset, target, "related") if s.split == "train"}
    written = load_dataset(condition_manifest(dataset, train, target, tmp_path / "related.jsonl"))
    by_split: dict = {}
    for s in written:
        by_split.setdefault(s.split, set()).add(s.triplet)
    assert by_split == held_out_triplets(stores[target])  # the same marks as the store built above
    assert held_out_problem(stores[target], target) is None
    assert "holds out another triplet than the target MRI,Brain,Tumor" in held_out_problem(stores[target],
                                                                                             TRIPLETS[2])
    bare = tmp_path / "bare.h5"
    mp.EmbeddingStore.from_arrays(bare, ["a", "b"], {"modality": np.array(["CT", "CT"]),
                                                     "anatomy": np.array(["Lung"] * 2),
                                                     "task": np.array(["COVID"] * 2)},
                                  {("3", "last"): np.zeros((2, 2), "float32")}).close()
    assert held_out_triplets(bare) is None and held_out_problem(bare, target) is None
