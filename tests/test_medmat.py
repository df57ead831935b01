"""Med-MAT loader and its Table 9-11 package data.

Fixtures are written here after the published record schema (docs/design.md §1; the record
``{"id":1,"caption":"Cyst","image":"med-mat/CT_Kindney_Dataset/...","Question":...,
"Answer":"Cyst","Question-choice":"...\\nA: Stone\\nB: Cyst...","Answer-choice":"B",
"data-no":"2"}``). Expected triplets are typed from the paper's Table 9 independently of
the CSV files.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from matprobe.data.medmat import (
    load_medmat,
    looks_like_medmat,
    medmat_dataset_table,
    medmat_subset_table,
    parse_options,
)
from matprobe.data.model import canonical_label
from matprobe.errors import DataError

TAIL = "Answer with the option's letter from the given choices directly."


def record(rid, options, answer_letter, *, data_no="2", image=None, question="What is shown?"):
    letters = "ABCDEFGH"
    choice = "\n".join([question] + [f"{letters[i]}: {o}" for i, o in enumerate(options)] + [TAIL])
    answer = options[letters.index(answer_letter)]
    return {
        "id": rid,
        "caption": answer,
        "image": image or f"med-mat/Some_Dataset/img-{rid}.jpg",
        "Question": question,
        "Answer": answer,
        "Question-choice": choice,
        "Answer-choice": answer_letter,
        "data-no": data_no,
    }


def write_json(path: Path, records) -> Path:
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# (file name, data-no, expected (modality, anatomy, task)) from Table 9, typed by hand.
SUBSET_CASES = [
    ("Subset--02-train.json", "2", ("CT", "Kidney", "Kidney Diseases Classification")),
    ("Subset-03-train.jsonl", "4", ("CT", "Lung", "COVID-19 Classification")),
    ("subset--07-train.json", "10", ("Dermoscopy", "Skin", "Melanoma Type Classification")),
    (
        "Subset--09-train.json",
        "16",
        ("Digital Photography", "Mouth", "Teeth Condition Classification"),
    ),
    (
        "Subset--15-train.jsonl",
        "68",
        ("Fundus", "Fundus", "Multiple-labels Eye Diseases Classification"),
    ),
    ("Subset--28-test.json", "56", ("X-ray", "Lung", "COVID-19 and Pneumonia Classification")),
    ("Subset--01-train.json", "1", ("Colposcopy", "Cervix", "Cervical Picture Quality Evaluation")),
    ("Subset--18-train.json", "39", ("Microscopy", "Cell", "Cell Type Classification")),
    ("Subset--24-train.json", "48", ("Ultrasound", "Breast", "Breast Cancer Classification")),
]


@pytest.mark.parametrize("name,data_no,triplet", SUBSET_CASES)
def test_subset_file_gets_table9_triplet(tmp_path, name, data_no, triplet):
    recs = [
        record(i, ["Alpha", "Beta", "Gamma", "Delta"], "ABCD"[i % 4], data_no=data_no)
        for i in range(1, 5)
    ]
    path = tmp_path / name
    (write_jsonl if name.endswith("jsonl") else write_json)(path, recs)
    ds = load_medmat(path)
    subset = name.split("-")[-2]
    assert len(ds) == 4
    assert {s.triplet for s in ds} == {triplet}
    assert [s.subset for s in ds] == [subset] * 4
    assert ds.ids == [f"{subset}-{i}" for i in range(1, 5)]
    assert {s.split for s in ds} == {"test" if "test" in name else "train"}
    assert ds.source == str(path)


def test_options_answer_index_and_label(tmp_path):
    kidney = record(1, ["Stone", "Cyst", "Normal", "Tumor"], "B")
    kidney["Question-choice"] = (
        "Look at this kidney CT.\nA: Stone\nB: Cyst\nC: Normal\nD: Tumor\n" + TAIL
    )
    two = record(2, ["Hemorrhage", "Normal"], "A")
    two["Question-choice"] = "Is there a bleed?\n\nA. Hemorrhage\n\nB. Normal\n\n" + TAIL
    multi = record(3, ["Centrosome, cytosol", "Cytosol", "Intermediate filaments"], "C")
    multi["Answer-choice"] = "(c)."
    ds = load_medmat(write_json(tmp_path / "Subset--02-train.json", [kidney, two, multi]))
    assert ds[0].options == ("Stone", "Cyst", "Normal", "Tumor")
    assert ds[0].answer_index == 1 and ds[0].answer == "Cyst" and ds[0].label == "Cyst"
    assert ds[0].question == "What is shown?"
    assert ds[1].options == ("Hemorrhage", "Normal") and ds[1].answer_index == 0
    assert ds[2].options == ("Centrosome, cytosol", "Cytosol", "Intermediate filaments")
    assert ds[2].answer_index == 2 and ds[2].label == "Intermediate filaments"


def test_parse_options_takes_last_block_starting_at_a():
    text = "A. note in the stem\nLook at the image.\nA: Drusen\nB: Normal\nAnswer with ..."
    assert parse_options(text) == ("Drusen", "Normal")
    with pytest.raises(ValueError, match="not consecutive"):
        parse_options("Q\nA: x\nC: y")


def test_data_no_fallback_and_ori_file_names(tmp_path):
    recs = [
        record(1, ["a", "b"], "A", data_no="2"),
        record(1, ["a", "b"], "B", data_no=54),
        record(2, ["a", "b"], "B", data_no="44"),
    ]
    ds = load_medmat(write_jsonl(tmp_path / "medmat_mixed.jsonl", recs))
    assert ds.ids == ["02-1", "28-1", "22-2"]
    assert [s.triplet for s in ds] == [
        ("CT", "Kidney", "Kidney Diseases Classification"),
        ("X-ray", "Lung", "COVID-19 and Pneumonia Classification"),
        ("MRI", "Brain", "Head Diseases Classification"),
    ]
    assert ds[0].split is None
    # ori--NN names a data set (Tables 10-11); 47 is Retinal OCT-C8 in subset 23.
    ori = load_medmat(
        write_json(tmp_path / "ori--47-train.json", [record(1, ["a", "b"], "A", data_no="")])
    )
    assert ori[0].triplet == ("OCT", "Retina", "Retina Diseases Classification")
    assert ori.ids == ["23-1"]


def test_task_group_level(tmp_path):
    path = write_json(tmp_path / "Subset--03-train.json", [record(1, ["a", "b"], "A")])
    assert load_medmat(path, task_level="group")[0].task == "COVID"
    path9 = write_json(tmp_path / "Subset--09-train.json", [record(1, ["a", "b"], "A")])
    assert load_medmat(path9, task_level="group")[0].task == "State"  # paper Table 4


def test_image_root_remaps_prefix(tmp_path):
    root = tmp_path / "images"
    (root / "CT_Kindney_Dataset").mkdir(parents=True)
    (root / "CT_Kindney_Dataset" / "Cyst- (561).jpg").write_bytes(b"\xff\xd8")
    rec = record(1, ["Stone", "Cyst"], "B", image="med-mat/CT_Kindney_Dataset/Cyst- (561).jpg")
    other = record(
        2, ["Stone", "Cyst"], "A", image=str(root / "CT_Kindney_Dataset" / "Cyst- (561).jpg")
    )
    path = write_json(tmp_path / "Subset--02-train.json", [rec, other])
    assert load_medmat(path)[0].image == "med-mat/CT_Kindney_Dataset/Cyst- (561).jpg"
    ds = load_medmat(path, image_root=root)
    assert ds[0].image == str(root / "CT_Kindney_Dataset" / "Cyst- (561).jpg")
    assert ds[1].image == str(root / "CT_Kindney_Dataset" / "Cyst- (561).jpg")


def test_vocabularies_codes_over_subsets(tmp_path):
    recs = [
        record(1, ["a", "b"], "A", data_no="2"),
        record(2, ["a", "b"], "A", data_no="56"),
        record(3, ["a", "b"], "A", data_no="5"),
    ]
    ds = load_medmat(write_jsonl(tmp_path / "mixed.jsonl", recs))
    assert ds.vocabularies["modality"].labels == ("CT", "X-ray")
    assert ds.codes("M").tolist() == [0, 1, 0]
    assert ds.codes("A").tolist() == [0, 1, 1]  # Kidney, Lung, Lung


def test_looks_like_medmat():
    assert looks_like_medmat([record(1, ["a", "b"], "A")])
    manifest = {
        "id": "x",
        "image": "a.png",
        "question": "q",
        "options": ["a"],
        "answer": "a",
        "modality": "CT",
        "anatomy": "Lung",
        "task": "Classification",
    }
    assert not looks_like_medmat([manifest])
    assert not looks_like_medmat([])
    assert not looks_like_medmat([1, 2])
    assert not looks_like_medmat({"Question-choice": 1, "Answer-choice": 2})


# ------------------------------------------------------------------ bad input
def error_of(path, **kw) -> str:
    with pytest.raises(DataError) as info:
        load_medmat(path, **kw)
    return str(info.value)


def test_error_empty_and_malformed_files(tmp_path):
    empty = tmp_path / "Subset--02-train.json"
    empty.write_text("  \n", encoding="utf-8")
    msg = error_of(empty)
    assert str(empty) in msg and "empty" in msg and "JSON array or JSON Lines" in msg

    empty_array = write_json(tmp_path / "Subset--03-train.json", [])
    assert "contains no records" in error_of(empty_array)

    broken = tmp_path / "Subset--04-train.json"
    broken.write_text('[\n {"id": 1},\n {"id": 2,,}\n]', encoding="utf-8")
    msg = error_of(broken)
    assert str(broken) in msg and "malformed JSON at line 3" in msg and "fix the JSON" in msg

    lines = tmp_path / "Subset--05-train.jsonl"
    ok = json.dumps(record(1, ["a", "b"], "A"))
    lines.write_text(f"{ok}\n{ok.replace(': 1,', ': 2,')}\n{{not json\n", encoding="utf-8")
    msg = error_of(lines)
    assert (
        str(lines) in msg
        and "line 3: malformed JSON" in msg
        and "one JSON record on each line" in msg
    )

    scalar = tmp_path / "Subset--06-train.json"
    scalar.write_text("42", encoding="utf-8")
    assert "does not start with '[' or '{'" in error_of(scalar)

    not_objects = write_json(tmp_path / "Subset--08-train.json", [record(1, ["a", "b"], "A"), "x"])
    assert "record 2 is a JSON str, not an object" in error_of(not_objects)

    assert "no such file" in error_of(tmp_path / "absent.json")


def test_error_missing_field_and_wrong_schema(tmp_path):
    rec = record(7, ["a", "b"], "A")
    del rec["Answer-choice"]
    path = write_jsonl(tmp_path / "Subset--02-train.jsonl", [record(1, ["a", "b"], "A"), rec])
    msg = error_of(path)
    assert f"{path}: record 2 (line 2, id 7): missing field(s) Answer-choice" in msg
    assert "Med-MAT records need id, image, Question" in msg
    assert "does not look like" not in msg

    manifest = {"id": "x", "image": "a.png", "question": "q", "options": ["a"], "answer": "a"}
    msg = error_of(write_json(tmp_path / "Subset--03-train.json", [manifest]))
    assert "record 1 (id 'x')" in msg and "does not look like a Med-MAT record" in msg


def test_error_options_and_answer_letter(tmp_path):
    bad = record(3, ["a", "b"], "A")
    bad["Question-choice"] = "Which one? Stone or Cyst. " + TAIL
    msg = error_of(write_json(tmp_path / "Subset--02-train.json", [bad]))
    assert "record 1 (id 3): Question-choice options do not parse" in msg
    assert "own line as 'A: text'" in msg

    gap = record(4, ["a", "b"], "A")
    gap["Question-choice"] = "Q\nA: Stone\nC: Cyst\n" + TAIL
    assert "option letters A, C are not consecutive" in error_of(
        write_json(tmp_path / "Subset--02-train.json", [gap])
    )

    wrong = record(5, ["Stone", "Cyst", "Normal", "Tumor"], "D")
    wrong["Answer-choice"] = "E"
    msg = error_of(write_json(tmp_path / "Subset--02-train.json", [wrong]))
    assert "record 1 (id 5): Answer-choice 'E' is not among the options A, B, C, D" in msg
    assert "give the letter of the correct option" in msg


def test_error_unknown_subset_and_data_no(tmp_path):
    rec = record(1, ["a", "b"], "A")
    msg = error_of(write_json(tmp_path / "Subset--60-train.json", [rec]))
    assert "file name gives subset 60" in msg and "subsets 01-53" in msg and "rename" in msg

    msg = error_of(write_json(tmp_path / "ori--200-train.json", [rec]))
    assert "data-no 200" in msg and "1-109" in msg

    msg = error_of(write_json(tmp_path / "plain.json", [record(9, ["a", "b"], "A", data_no="999")]))
    assert "record 1 (id 9): unknown data-no '999'" in msg and "1-109" in msg

    msg = error_of(write_json(tmp_path / "plain.json", [record(9, ["a", "b"], "A", data_no="43")]))
    assert "data-no 43 (LC25000) belongs to no subset" in msg and "Subset-NN" in msg

    no_number = record(9, ["a", "b"], "A")
    del no_number["data-no"]
    msg = error_of(write_json(tmp_path / "plain.json", [no_number]))
    assert "no 'data-no' and the file name gives no subset" in msg


def test_error_duplicate_id(tmp_path):
    recs = [record(1, ["a", "b"], "A"), record(2, ["a", "b"], "A"), record("2", ["a", "b"], "B")]
    path = write_json(tmp_path / "Subset--02-train.json", recs)
    msg = error_of(path)
    assert f"{path}: record 3 (id '2'): duplicate id (subset 02 already has it at record 2)" in msg
    assert "make record ids unique" in msg


def test_error_missing_image_and_bad_root(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.jpg").write_bytes(b"\xff\xd8")
    recs = [
        record(1, ["a", "b"], "A", image="med-mat/a.jpg"),
        record(2, ["a", "b"], "A", image="med-mat/missing.jpg"),
    ]
    path = write_json(tmp_path / "Subset--02-train.json", recs)
    msg = error_of(path, image_root=root)
    assert "1 of 2 images missing" in msg and "record 2 (id 2)" in msg
    assert str(root / "missing.jpg") in msg and "--image-root" in msg
    assert "is not a folder" in error_of(path, image_root=tmp_path / "nope")
    unchecked = load_medmat(path, image_root=root, check_images=False)
    assert unchecked[1].image == str(root / "missing.jpg")


# ------------------------------------------------------------------ package tables
def test_subset_table_matches_paper_table9():
    t = medmat_subset_table()
    assert t["subset"].tolist() == [f"{i:02d}" for i in range(1, 54)]
    # Paper §1/B.1: 11 modalities; 14 anatomical areas among the classification subsets.
    assert set(t["modality_abbrev"]) == {
        "Co",
        "CT",
        "Der",
        "DP",
        "End",
        "FP",
        "Mic",
        "MRI",
        "OCT",
        "US",
        "X-ray",
    }
    cls = t[t["subset"] <= "37"]
    assert set(cls["anatomy"]) == {
        "Cervix",
        "Kidney",
        "Lung",
        "Brain",
        "Skin",
        "Mouth",
        "Intestine",
        "Bladder",
        "Fundus",
        "Cell",
        "Retina",
        "Breast",
        "Bones",
        "Chest",
    }
    assert set(t.loc[t["multi_label"], "subset"]) == {"15", "20", "31", "33", "37"}
    for abbrev, modality in zip(t["modality_abbrev"], t["modality"]):
        assert canonical_label("modality", abbrev) == modality
    row = t.set_index("subset")
    assert row.loc["08", "data_nos"] == "9;11;12;13;14;15;71;72;74"  # "9, 11-15, 71, 72, 74"
    assert row.loc["18", "data_nos"] == "33;36;37;38;39;40;41;44;65;70"
    assert row.loc["46", ["modality", "anatomy", "task"]].tolist() == [
        "MRI",
        "Liver",
        "Liver Det/Seg",
    ]
    assert row.loc["31", "task"] == "Multiple-labels Chest Classification"
    assert (t["task_kind"] == "Classification").sum() == 37


def test_dataset_table_matches_paper_tables_10_11():
    d = medmat_dataset_table().set_index("data_no")
    assert d.index.tolist() == list(range(1, 110))
    assert d.loc[2, "name"] == "CT Kindney Dataset" and d.loc[2, "subset"] == "02"
    assert d.loc[84, "name"] == "Human Protein Atlas" and d.loc[84, "subset"] == "33"
    assert d.loc[98, ["modality", "anatomy"]].tolist() == ["Ultrasound", "Thyroid"]
    assert d.loc[44, "subsets_listed"] == "18;22" and d.loc[44, "subset"] == "22"
    assert d.loc[[43, 64, 83], "subset"].isna().all()
    # Every data set's triplet equals its subset's (the tables agree with each other).
    t = medmat_subset_table().set_index("subset")
    for no, r in d.dropna(subset=["subset"]).iterrows():
        assert (r["modality"], r["anatomy"], r["task"]) == tuple(
            t.loc[r["subset"], ["modality", "anatomy", "task"]]
        )
        assert str(no) in t.loc[r["subset"], "data_nos"].split(";")


def test_canonical_label_spellings():
    expected = {
        "FP": "Fundus",
        "Mic": "Microscopy",
        "Co": "Colposcopy",
        "DP": "Digital Photography",
        "Der": "Dermoscopy",
        "End": "Endoscopy",
        "US": "Ultrasound",
        "X-Ray": "X-ray",
        "x_ray": "X-ray",
        "MRI": "MRI",
        "Microscopy Images": "Microscopy",
    }
    for raw, canon in expected.items():
        assert canonical_label("modality", raw) == canon


def test_single_object_files(tmp_path):
    one = tmp_path / "Subset--02-train.json"
    one.write_text(json.dumps(record(5, ["Stone", "Cyst"], "B"), indent=2), encoding="utf-8")
    ds = load_medmat(one)  # a lone pretty-printed record is a one-record file
    assert ds.ids == ["02-5"] and ds[0].answer == "Cyst"
    wrapper = tmp_path / "Subset--03-train.json"
    wrapper.write_text(json.dumps({"data": [record(1, ["a", "b"], "A")]}, indent=2), "utf-8")
    msg = error_of(wrapper)
    assert str(wrapper) in msg and "one JSON object (keys data), not a list of records" in msg


def test_looks_like_medmat_tolerates_one_incomplete_record():
    partial = record(2, ["a", "b"], "A")
    del partial["Answer-choice"]
    assert looks_like_medmat([partial, record(1, ["a", "b"], "A")])


def test_a_folder_of_medmat_files_is_one_dataset(tmp_path):
    """Med-MAT ships one file per subset and split, each numbering its records from 1: a folder of
    them loads as one dataset (ids carry the split where the file name gives one), validates, and
    two files of one subset and split are refused naming both."""
    from typer.testing import CliRunner

    from matprobe.cli import app
    from matprobe.data import load_dataset

    folder = tmp_path / "medmat"
    (folder / "ct").mkdir(parents=True)
    write_json(folder / "Subset--02-train.json", [record(str(i), ["Stone", "Cyst"], "A") for i in (1, 2, 3)])
    write_json(folder / "Subset--02-test.json", [record(str(i), ["Stone", "Cyst"], "B") for i in (1, 2)])
    write_jsonl(folder / "ct" / "Subset--03-train.jsonl", [record("1", ["COVID", "Normal"], "A", data_no="4")])
    ds = load_dataset(folder)
    assert sorted(ds.ids) == ["02-test-1", "02-test-2", "02-train-1", "02-train-2", "02-train-3", "03-train-1"]
    by_id = {s.id: s for s in ds}
    assert by_id["02-test-2"].split == "test" and by_id["02-test-2"].label == "Cyst"
    assert by_id["03-train-1"].triplet == ("CT", "Lung", "COVID-19 Classification")
    # each file alone keeps the ids `load_medmat` gives it
    assert load_dataset(folder / "Subset--02-test.json").ids == ["02-1", "02-2"]
    res = CliRunner().invoke(app, ["data", "validate", str(folder), "--no-images"])
    assert res.exit_code == 0 and "medmat, 6 records" in res.output and "no problems found" in res.output, res.output
    write_json(folder / "Subset-02-train-more.json", [record("3", ["Stone", "Cyst"], "A")])
    with pytest.raises(DataError, match=r"id '02-train-3' is also in .*Subset--02-train.json") as err:
        load_dataset(folder)
    assert "ori--" not in str(err.value)
    (folder / "Subset-02-train-more.json").unlink()
    write_json(folder / "ori--02-train.json", [record("1", ["Stone", "Cyst"], "A")])  # data set 2: subset 02
    with pytest.raises(DataError, match="same records in its subset files and in its ori-- files"):
        load_dataset(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="a folder with no .json/.jsonl files"):
        load_dataset(empty)


@pytest.mark.parametrize("spelled", ["{letter}: {text}", "{letter}. {text}", "{text}"])
def test_the_label_is_the_correct_options_text_whatever_answer_carries(tmp_path, spelled):
    """A README-only study wrote "Answer": "A: COVID" (the form of the options): the label kept the letter,
    so one diagnosis was "A: COVID" where it was option A and "B: COVID" where it was B, and a two-class
    target read H(Y|s) = 1.33 nats (more than ln 2)."""
    recs = []
    for i in range(8):
        options = ["COVID", "Normal"] if i % 2 else ["Normal", "COVID"]
        letter = "A" if i % 3 else "B"
        r = record(i + 1, options, letter, data_no="4")
        r["Answer"] = spelled.format(letter=letter, text=options["AB".index(letter)])
        recs.append(r)
    ds = load_medmat(write_json(tmp_path / "Subset--03-train.json", recs))
    assert [s.label for s in ds] == [s.options[s.answer_index] for s in ds]
    assert {s.label for s in ds} == {"COVID", "Normal"}


def test_question_choice_as_a_list_of_options_is_read(tmp_path):
    """A study gave "Question-choice": ["COVID", "Normal"] (README: "the options from Question-choice")
    and every record was refused."""
    recs = []
    for i, (options, letter) in enumerate([(["COVID", "Normal"], "A"), (["A: Normal", "B: COVID"], "B")]):
        r = record(i + 1, [o.split(": ")[-1] for o in options], letter, data_no="4")
        r["Question-choice"] = options
        recs.append(r)
    ds = load_medmat(write_json(tmp_path / "Subset--03-train.json", recs))
    assert [s.options for s in ds] == [("COVID", "Normal"), ("Normal", "COVID")]
    assert [s.label for s in ds] == ["COVID", "COVID"]
    with pytest.raises(ValueError, match="a list of 1 option"):
        parse_options(["COVID"])


def test_validate_says_a_medmat_file_is_checked_up_to_its_first_bad_record(tmp_path):
    """A study's 210 Med-MAT records shared one defect and `data validate` said "1 problem(s) found"."""
    from matprobe.data.loaders import validate_dataset

    recs = [record(i + 1, ["a", "b"], "A", data_no="4") for i in range(3)]
    for r in recs:
        r["Question-choice"] = "no option lines here"
    report = validate_dataset(write_json(tmp_path / "Subset--03-train.json", recs), check_images=False)
    assert len(report.problems) == 1
    assert report.problems[0].endswith("(Med-MAT records are checked up to the first bad one: fix it and rerun to "
                                       "see any after it)")
    assert "record 1" in report.problems[0]
