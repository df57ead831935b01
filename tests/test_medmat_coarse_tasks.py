"""Med-MAT's coarse tasks, its Unrelated split and the spelling of labels (a user study of a
Med-MAT folder written as the release ships it: ``medmat/Subset--NN-{train,test}.json``).

1. The README's Python route to the coarse tasks (``task_level="group"``) raised AttributeError, and no
   command could use them, though Med-MAT draws its Related and Unrelated splits by them.
2. Med-MAT's Unrelated (Baseline+) drops every subset sharing any element with the target: that is
   matprobe's ``zero-overlap``, not its ``unrelated`` (at most one shared).
3. "COVID" became "Covid" (an all-upper task was title-cased) and ``run`` refused the data's spelling.
4. An ``image`` given as a one-element list was "empty or not a path".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import DataError

README = Path(__file__).resolve().parents[1] / "README.md"
PAPER = Path("/work/shared/papers/med-mat.txt")

# subset -> (its Table 9 triplet at the subset level, its coarse task (Tables 3-7)); data-no from Tables 10-11
SUBSETS = {
    "03": (("CT", "Lung", "COVID-19 Classification"), "COVID", "4"),
    "04": (("CT", "Lung", "Lung Cancer Classification"), "Cancer", "5"),
    "05": (("CT", "Brain", "Brain Hemorrhage Classification"), "State", "7"),
    "24": (("Ultrasound", "Breast", "Breast Cancer Classification"), "Cancer", "48"),
    "28": (("X-ray", "Lung", "COVID-19 and Pneumonia Classification"), "COVID", "54"),
    "30": (("X-ray", "Lung", "Tuberculosis Classification"), "State", "59"),
}


def _record(rid: int, data_no: str, image="med-mat/img.png") -> dict:
    options = ["COVID", "Normal"]
    return {"id": rid, "caption": options[rid % 2], "image": image, "Question": "What is shown?",
            "Answer": f"{'AB'[rid % 2]}: {options[rid % 2]}",
            "Question-choice": [f"A: {options[0]}", f"B: {options[1]}"],
            "Answer-choice": "AB"[rid % 2], "data-no": data_no}


def medmat_folder(root: Path, n: int = 2) -> Path:
    folder = root / "medmat"
    folder.mkdir(parents=True)
    for subset, (_, _, data_no) in SUBSETS.items():
        for split in ("train", "test"):
            recs = [_record(i + 1, data_no) for i in range(n)]
            (folder / f"Subset--{subset}-{split}.json").write_text(json.dumps(recs), encoding="utf-8")
    return folder


def _split_rows(path: Path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if '"matprobe_manifest"' not in line]


def _flat(text: str) -> str:
    return " ".join(text.split())


# ---------------------------------------------------------------- 1. coarse tasks: Python and CLI
def test_the_readmes_python_calls_for_coarse_tasks_run_as_written(tmp_path, monkeypatch):
    import matprobe  # noqa: F401  (the README's call names the package)
    import matprobe.data

    calls = re.findall(r"`(matprobe\.data\.[A-Za-z_]+\([^`]*task_level=\"group\"[^`]*\))`",
                       _flat(README.read_text()))
    assert len(calls) == 2, calls  # load_medmat(path, ...); write_manifest(load_medmat("medmat/", ...), "coarse.jsonl")
    folder = medmat_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    coarse = sorted({(*trip[:2], group) for trip, group, _ in SUBSETS.values()})
    ds = eval(calls[0], {"matprobe": matprobe}, {"path": folder})  # noqa: S307
    assert sorted({s.triplet for s in ds}) == coarse
    assert len(ds) == 24 and "03-test-1" in ds.ids
    (tmp_path / "med-mat-root").mkdir()
    (tmp_path / "med-mat-root" / "img.png").write_bytes(b"")
    eval(calls[1], {"matprobe": matprobe}, {})  # noqa: S307
    written = matprobe.data.load_dataset(tmp_path / "coarse.jsonl")
    assert sorted({s.triplet for s in written}) == coarse and len(written) == 24
    assert {s.image for s in written} == {str(tmp_path / "med-mat-root" / "img.png")}  # found where run looks
    # one file too, by the same call
    one = matprobe.data.load_medmat(folder / "Subset--03-train.json", task_level="group")
    assert [s.triplet for s in one] == [("CT", "Lung", "COVID")] * 2


def test_data_split_takes_the_coarse_tasks_by_which_med_mat_draws_related(tmp_path):
    folder = medmat_folder(tmp_path)
    out_group, out_subset = tmp_path / "group.jsonl", tmp_path / "subset.jsonl"
    res = CliRunner().invoke(app, ["data", "split", str(folder), "--target", "CT,Lung,COVID", "--config", "related",
                                   "--task-level", "group", "--out", str(out_group)])
    assert res.exit_code == 0, res.output
    rows = _split_rows(out_group)
    assert sorted({(r["subset"], r["task"], r["split"]) for r in rows}) == [
        ("03", "COVID", "test"), ("04", "Cancer", "train"), ("28", "COVID", "train")]
    # Table 9's tasks (the default) share less: X-ray / Lung / COVID-19 and Pneumonia is not Related there
    res = CliRunner().invoke(app, ["data", "split", str(folder), "--target", "CT,Lung,COVID-19 Classification",
                                   "--config", "related", "--out", str(out_subset)])
    assert res.exit_code == 0, res.output
    assert sorted({(r["subset"], r["split"]) for r in _split_rows(out_subset)}) == [("03", "test"), ("04", "train")]


def test_data_validate_counts_the_coarse_triplets(tmp_path):
    folder = medmat_folder(tmp_path)
    res = CliRunner().invoke(app, ["data", "validate", str(folder), "--no-images", "--task-level", "group"])
    assert res.exit_code == 0, res.output
    assert "State" in res.output and "Hemorrhage" not in res.output
    res = CliRunner().invoke(app, ["data", "validate", str(folder), "--no-images"])
    assert res.exit_code == 0 and "Hemorrhage" in res.output


def test_task_level_on_a_manifest_is_refused(tmp_path):
    from matprobe.data.medmat import load_medmat_folder

    manifest = tmp_path / "m.jsonl"
    from matprobe.data import write_manifest

    write_manifest(load_medmat_folder(medmat_folder(tmp_path), task_level="group"), manifest)
    res = CliRunner().invoke(app, ["data", "split", str(manifest), "--target", "CT,Lung,COVID", "--task-level",
                                   "group", "--out", str(tmp_path / "s.jsonl")])
    assert res.exit_code == 2
    assert "--task-level applies to Med-MAT files" in _flat(res.output)
    res = CliRunner().invoke(app, ["data", "split", str(manifest), "--target", "CT,Lung,COVID", "--task-level",
                                   "coarse", "--out", str(tmp_path / "s.jsonl")])
    assert res.exit_code == 2 and "task_level 'coarse' is not known; use 'subset' or 'group'" in _flat(res.output)


def test_task_level_context_is_undone_after_its_block(tmp_path):
    from matprobe.data import load_dataset
    from matprobe.data.medmat import medmat_task_level

    folder = medmat_folder(tmp_path)
    with medmat_task_level("group"):
        assert {s.task for s in load_dataset(folder)} == {"COVID", "Cancer", "State"}
    assert "COVID" not in {s.task for s in load_dataset(folder)}
    with pytest.raises(DataError, match="not known"):
        with medmat_task_level("fine"):
            pass


# ---------------------------------------------------------------- 2. Med-MAT's Unrelated is zero-overlap
def test_med_mat_unrelated_is_zero_overlap_and_the_docs_say_so(tmp_path):
    from matprobe.data.medmat import load_medmat_folder
    from matprobe.data.splits import make_split

    ds = load_medmat_folder(medmat_folder(tmp_path), task_level="group")
    train = {cfg: sorted({s.subset for s in make_split(ds, ("CT", "Lung", "COVID"), cfg) if s.split == "train"})
             for cfg in ("unrelated", "zero-overlap")}
    # the paper's Baseline+ drops 05 (shares CT) and 30 (shares Lung): only 24 shares nothing
    assert train == {"unrelated": ["05", "24", "30"], "zero-overlap": ["24"]}

    quote = "we removed all datasets sharing any MAT-Triplet element with the Target data"
    if PAPER.is_file():  # the quote is the paper's own (§3.1.2), emphasis aside
        assert quote in PAPER.read_text(encoding="utf-8").replace("*", "")
    readme = _flat(README.read_text(encoding="utf-8"))
    assert quote in readme.replace("*", "")
    assert "Med-MAT's Unrelated (its Baseline+) is matprobe's `zero-overlap`" in readme
    res = CliRunner().invoke(app, ["data", "split", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "Med-MAT's Unrelated (Baseline+) is zero-overlap" in _flat(res.output)


def test_med_mat_all_related_is_any_overlap_every_subset_sharing_one_or_two_elements(tmp_path):
    """Med-MAT's Fig. 4 sets All Related against All Unrelated (the subsets sharing none of M, A, T:
    zero-overlap); its Table 4 trains on subsets each sharing one element. matprobe's `related` is
    CrossMed's (exactly two shared), so All Related is `any-overlap`: here counted by hand from the
    subsets' coarse triplets, and named Any-overlap as a condition."""
    from matprobe.conditions import condition_name, named_condition
    from matprobe.data.medmat import load_medmat_folder
    from matprobe.data.splits import make_split

    ds = load_medmat_folder(medmat_folder(tmp_path), task_level="group")
    target = ("CT", "Lung", "COVID")
    coarse = {sub: (trip[0], trip[1], group) for sub, (trip, group, _) in SUBSETS.items()}
    by_hand = sorted(sub for sub, t in coarse.items() if 1 <= sum(a == b for a, b in zip(t, target)) <= 2)
    got = sorted({s.subset for s in make_split(ds, target, "any-overlap") if s.split == "train"})
    assert got == by_hand == ["04", "05", "28", "30"]  # 24 (Ultrasound, Breast, Cancer) shares nothing
    zero = sorted({s.subset for s in make_split(ds, target, "zero-overlap") if s.split == "train"})
    assert set(got).isdisjoint(zero) and set(got) | set(zero) | {"03"} == set(SUBSETS)
    assert named_condition("any-overlap-s0") == "any-overlap" and named_condition("zero-overlap-s1") == "zero-overlap"
    assert condition_name("any-overlap") == "Any-overlap"
    res = CliRunner().invoke(app, ["data", "split", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert "its All Related (Fig. 4) is any-overlap" in _flat(res.output)


# ---------------------------------------------------------------- 3. acronyms keep their spelling
@pytest.mark.parametrize("factor,raw,canon", [
    ("task", "COVID", "COVID"), ("anatomy", "CHEST", "CHEST"), ("task", "covid", "Covid"),
    ("anatomy", "chest", "Chest"), ("task", "Cell Identification", "Cell Identification"),
    ("modality", "US", "Ultrasound"), ("modality", "x-ray", "X-ray"),
])
def test_labels_keep_acronyms(factor, raw, canon):
    from matprobe.data.model import canonical_label

    assert canonical_label(factor, raw) == canon


def test_a_coarse_manifest_keeps_covid_through_split_and_run_preflight(tmp_path):
    from matprobe.data import load_dataset, parse_triplet, write_manifest
    from matprobe.data.medmat import load_medmat_folder
    from matprobe.data.splits import first_unsplittable

    manifest = tmp_path / "coarse.jsonl"
    write_manifest(load_medmat_folder(medmat_folder(tmp_path), task_level="group"), manifest)
    assert parse_triplet("CT,Lung,COVID") == ("CT", "Lung", "COVID")
    ds = load_dataset(manifest)
    assert sorted(ds.vocabularies["task"].labels) == ["COVID", "Cancer", "State"]
    # run's preflight: the data's own spelling is accepted; another case is refused, naming it
    assert first_unsplittable(ds, [("CT", "Lung", "COVID")], ["related", "zero-overlap"]) is None
    _, _, exc = first_unsplittable(ds, [("CT", "Lung", "Covid")], ["related"])
    assert "is read as CT,Lung,COVID from the data" in str(exc)
    out = tmp_path / "split.jsonl"
    res = CliRunner().invoke(app, ["data", "split", str(manifest), "--target", "CT,Lung,COVID", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert {r["task"] for r in _split_rows(out) if r["split"] == "test"} == {"COVID"}
    assert "Covid" not in out.read_text(encoding="utf-8")


# ---------------------------------------------------------------- 4. an image given as a list
def test_an_image_in_a_one_element_list_is_read_and_several_are_refused(tmp_path):
    from matprobe.data.medmat import load_medmat

    path = tmp_path / "Subset--03-train.json"
    path.write_text(json.dumps([_record(1, "4", image=["med-mat/images/a.png"]), _record(2, "4")]))
    assert [s.image for s in load_medmat(path)] == ["med-mat/images/a.png", "med-mat/img.png"]
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "a.png").write_bytes(b"")
    path.write_text(json.dumps([_record(1, "4", image=["med-mat/images/a.png"])]))
    assert load_medmat(path, image_root=root)[0].image == str(root / "images" / "a.png")

    path.write_text(json.dumps([_record(1, "4"), _record(2, "4", image=["med-mat/a.png", "med-mat/b.png"])]))
    with pytest.raises(DataError) as err:
        load_medmat(path)
    assert str(err.value) == (
        f"{path}: record 2 (id 2): image is a list of 2 paths ('med-mat/a.png', 'med-mat/b.png'); a Med-MAT item "
        "takes one image: give one path (a string, or a list of one)")
    for bad in ([], [""], [3]):
        path.write_text(json.dumps([_record(1, "4", image=bad)]))
        with pytest.raises(DataError, match="image is empty or not a path"):
            load_medmat(path)


# ---------------------------------------------------------------- 5. [data] task_level in a pipeline
def _pipeline_file(tmp_path, data, task_level=None) -> Path:
    (tmp_path / "img.png").write_bytes(b"")  # the records' med-mat/img.png under the image root
    line = "" if task_level is None else f'task_level = "{task_level}"\n'
    path = tmp_path / "study.toml"
    path.write_text(f'[run]\nout = "{tmp_path / "run"}"\n[data]\nfile = "{data}"\nimage_root = "{tmp_path}"\n{line}'
                    '[design]\ntarget = ["CT", "Lung", "COVID"]\nconditions = ["related", "zero-overlap"]\n'
                    "[train]\nsteps = 1\nseeds = [0]\n", encoding="utf-8")
    return path


def test_a_pipeline_reads_med_mat_at_its_data_task_level_in_every_step(tmp_path):
    from matprobe import pipeline
    from matprobe.data.loaders import load_pipeline_data
    from matprobe.data.splits import make_split

    folder = medmat_folder(tmp_path)
    cfg = pipeline.load_pipeline(_pipeline_file(tmp_path, folder, "group"))
    assert cfg.task_level == "group"
    dataset, manifest = pipeline._load_study_data(cfg, tmp_path / "run", lambda *_: None)
    coarse = sorted({(*trip[:2], group) for trip, group, _ in SUBSETS.values()})
    assert sorted({s.triplet for s in dataset}) == coarse  # the run's data step
    # a fine-tuning worker reads the items through the same source, task level included
    worker = load_pipeline_data(*pipeline._study_source(cfg, manifest))
    assert [(s.id, s.triplet) for s in worker] == [(s.id, s.triplet) for s in dataset]
    # and Related is `data split --task-level group`'s: subsets 04 and 28, their train files
    out = tmp_path / "related.jsonl"
    res = CliRunner().invoke(app, ["data", "split", str(folder), "--target", "CT,Lung,COVID", "--config", "related",
                                   "--task-level", "group", "--out", str(out)])
    assert res.exit_code == 0, res.output
    split = make_split(dataset, ("CT", "Lung", "COVID"), "related", marked_only=True)
    assert sorted(s.id for s in split if s.split == "train") == sorted(
        r["id"] for r in _split_rows(out) if r["split"] == "train") == ["04-train-1", "04-train-2", "28-train-1",
                                                                        "28-train-2"]
    # without the key, Table 9's tasks, as before
    cfg = pipeline.load_pipeline(_pipeline_file(tmp_path, folder))
    assert cfg.task_level == "subset"
    dataset, _ = pipeline._load_study_data(cfg, tmp_path / "run", lambda *_: None)
    assert ("CT", "Lung", "COVID-19 Classification") in {s.triplet for s in dataset}


def test_a_pipeline_task_level_is_checked(tmp_path):
    from matprobe import pipeline
    from matprobe.data import write_manifest
    from matprobe.data.medmat import load_medmat_folder
    from matprobe.errors import MatprobeError

    folder = medmat_folder(tmp_path)
    with pytest.raises(MatprobeError, match=r"task_level = 'coarse': give \"subset\".*or \"group\""):
        pipeline.load_pipeline(_pipeline_file(tmp_path, folder, "coarse"))
    manifest = tmp_path / "m.jsonl"
    write_manifest(load_medmat_folder(folder, tmp_path, task_level="group"), manifest)
    cfg = pipeline.load_pipeline(_pipeline_file(tmp_path, manifest, "group"))
    with pytest.raises(DataError, match="task column is read as written"):
        pipeline._load_study_data(cfg, tmp_path / "run", lambda *_: None)


def test_a_coarse_target_at_the_subset_level_is_pointed_to_the_group_level_and_init_takes_it(tmp_path):
    """`--target "CT,Lung,COVID"` on Med-MAT files at the default (subset) level gave only the list of
    Table 9's triplets, and `init` had no --task-level at all. The refusal names the coarse task's
    subsets (the package's table: subset 03 is CT / Lung / COVID) and the flag; `init --task-level
    group` takes the target and writes the level into [data]; a manifest gets no such hint."""
    import tomllib

    import numpy as np

    import matprobe as mp

    folder = medmat_folder(tmp_path, n=6)  # 12 items per subset: every class has 2 per fold of 5
    res = CliRunner().invoke(app, ["data", "split", str(folder), "--target", "CT,Lung,COVID", "--config", "related",
                                   "--out", str(tmp_path / "s.jsonl")])
    said = " ".join(res.output.split())
    assert res.exit_code == 2 and ("'COVID' is one of Med-MAT's coarse tasks (subset 03 at that modality and "
                                   "anatomy): read the files with --task-level group") in said, said
    # stores of the coarse-level items, as a run at task_level = "group" extracts them
    from matprobe.data import load_dataset
    from matprobe.data.medmat import medmat_task_level

    with medmat_task_level("group"):
        dataset = load_dataset(folder)
    ids = [s.id for s in dataset]
    labels = {f: [getattr(s, f) for s in dataset] for f in ("modality", "anatomy", "task")}
    stores = []
    for name in ("related-s0", "unrelated-s0"):
        mp.EmbeddingStore.from_arrays(tmp_path / f"{name}.h5", ids, labels,
                                   {("3", "last"): np.zeros((len(ids), 2), "float32")}).close()
        stores.append(str(tmp_path / f"{name}.h5"))
    args = ["init", "--store", stores[0], "--store", stores[1], "--data", str(folder), "--target", "CT,Lung,COVID",
            "--out", str(tmp_path / "p.toml")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "read the files with --task-level group" in " ".join(res.output.split())
    res = CliRunner().invoke(app, [*args, "--task-level", "group"])
    assert res.exit_code == 0, res.output
    cfg = tomllib.loads((tmp_path / "p.toml").read_text())
    assert cfg["data"]["task_level"] == "group" and cfg["design"]["target"] == ["CT", "Lung", "COVID"]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "question": "Q?", "options": ["x", "y"], "answer": 0,
                                    "modality": "CT", "anatomy": "Lung", "task": "Cancer"}) + "\n")
    res = CliRunner().invoke(app, ["data", "split", str(manifest), "--target", "CT,Lung,COVID", "--out",
                                   str(tmp_path / "m2.jsonl")])
    assert res.exit_code == 2 and "coarse tasks" not in res.output
