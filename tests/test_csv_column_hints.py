"""A manifest's image column left unmapped, and a semicolon-separated CSV, are each one error naming
the column or the delimiter and the fix (issue 22's own-study list: `--columns` leaving the image
column unmapped gave an "image missing" line per item; a semicolon CSV got no delimiter hint)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.data import load_dataset
from matprobe.data.loaders import validate_dataset
from matprobe.errors import DataError

MODS, ANAS = ["CT", "MRI", "X-ray"], ["Chest", "Brain"]


def _rows(n: int = 6, image: str = "picture", suffix: str = ".png") -> list[dict]:
    """A study's rows as an export names them: `q` and `opts` for question and options, the image path
    in `image` (a column name that is neither `image` nor one of its aliases)."""
    return [{image: f"pics/{i}{suffix}", "q": "What is shown?", "opts": "Normal|Tumor", "answer": i % 2,
             "modality": MODS[i % 3], "anatomy": ANAS[i % 2], "task": "Classification"} for i in range(n)]


def _write(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    (path.parent / "pics").mkdir(parents=True, exist_ok=True)
    for i in range(len(rows)):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(path.parent / "pics" / f"{i}.png")
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_columns_mapping_others_but_not_the_image_is_one_error_naming_it(tmp_path):
    path = _write(tmp_path / "m.csv", _rows())
    expected = (f"{path}: no column is read as 'image': --columns maps q, opts and none onto 'image'; the column "
                "'picture' holds image files (pics/0.png, ...), so every item would have no image; map it with "
                "--columns q=question,opts=options,picture=image")
    with pytest.raises(DataError) as refused:
        load_dataset(path, columns="q=question,opts=options")
    assert str(refused.value) == expected
    # `data validate`: that one problem, not one "has no image" line per item
    report = validate_dataset(path, columns="q=question,opts=options")
    assert report.problems == [expected]
    res = CliRunner().invoke(app, ["data", "validate", str(path), "--columns", "q=question,opts=options"])
    assert res.exit_code == 1
    assert [line for line in res.output.splitlines() if line.startswith("problem:")] == [f"problem: {expected}"]
    # the fix it names loads every item with its image
    fixed = load_dataset(path, columns="q=question,opts=options,picture=image")
    assert [Path(s.image).relative_to(tmp_path).as_posix() for s in fixed] == [f"pics/{i}.png" for i in range(6)]


def test_an_unmapped_image_column_is_named_with_or_without_a_mapping(tmp_path):
    # every other column named as expected: the image column alone is refused, its fix the one pair
    rows = [{("question" if k == "q" else "options" if k == "opts" else k): v for k, v in r.items()} for r in _rows()]
    path = _write(tmp_path / "plain.csv", rows)
    with pytest.raises(DataError) as refused:
        load_dataset(path)
    assert str(refused.value) == (
        f"{path}: no column is read as 'image': the column 'picture' holds image files (pics/0.png, ...), so every "
        "item would have no image; map it with --columns picture=image")
    # two columns of image files (the question's and a mask's, say): both named, the first offered
    two = _write(tmp_path / "two.csv", [{**r, "seg": r["picture"].replace(".png", ".nii.gz")} for r in rows])
    with pytest.raises(DataError) as refused:
        load_dataset(two)
    assert str(refused.value) == (
        f"{two}: no column is read as 'image': the columns 'picture', 'seg' hold image files (picture: "
        "pics/0.png, ...), so every item would have no image; map it with --columns picture=image (or seg=image)")
    # other columns missing too: the one refusal of the columns offers the image column beside them, and a
    # placeholder for the missing column nothing resembles (`q`, left unmatched, named as its candidate)
    with pytest.raises(DataError) as refused:
        load_dataset(_write(tmp_path / "m.csv", _rows()))
    assert str(refused.value).endswith(
        "; close matches: picture -> image, opts -> options; no close match for question (unknown column(s) left: "
        "q); map them with --columns picture=image,opts=options,THEIRS=question (THEIRS: your column for question)")


def test_a_column_of_other_names_gives_one_problem_and_one_error(tmp_path):
    # the image column's cells carry no suffix: nothing says which column it is; one line naming the
    # columns not used, in `data validate` and where a checkpoint is to be extracted (init, run, extract)
    path = _write(tmp_path / "m.csv", _rows(suffix=""))
    report = validate_dataset(path, columns="q=question,opts=options")
    assert report.problems == [
        f"{path}: no item has an image: no column is read as 'image' (column(s) not used: picture); give each "
        "item's image file in a column named image, or map yours with --columns q=question,opts=options,"
        "picture=image"]
    from matprobe.data.images import missing_images_error

    dataset = load_dataset(path, columns="q=question,opts=options")
    assert missing_images_error(dataset, str(path), "pass --image-root DIR") == (
        f"{path}: no item of 6 names an image: no column is read as 'image'; give each item's image file in a "
        "column named image, or map yours with --columns THEIRS=image")
    assert missing_images_error(dataset, str(path), "set [data] image_root") == (
        f"{path}: no item of 6 names an image: no column is read as 'image'; give each item's image file in a "
        'column named image, or map yours with [data] columns = {THEIRS = "image"}')


def test_a_semicolon_separated_csv_is_named_with_its_fix(tmp_path):
    rows = [{("image" if k == "picture" else k): v for k, v in r.items()} for r in _rows()]
    path = _write(tmp_path / "excel.csv", rows, delimiter=";")
    expected = (f"{path}: the header line holds ';' and reads as one column ('image;q;opts;answer;modality;"
                "anatomy;task'): the file looks semicolon-separated (7 columns at ';'), as Excel saves CSV where "
                "the decimal mark is a comma; matprobe reads a .csv file as comma-separated: save it "
                'comma-separated (in Excel: "CSV UTF-8 (Comma delimited)") and give that file')
    with pytest.raises(DataError) as refused:
        load_dataset(path, columns="q=question,opts=options")
    assert str(refused.value) == expected
    res = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert res.exit_code == 2 and " ".join(res.output.split()) == f"error: {expected}"
    tsv = _write(tmp_path / "excel.tsv", rows, delimiter=";")
    with pytest.raises(DataError) as refused:
        load_dataset(tsv)
    assert str(refused.value).endswith("matprobe reads a .tsv file as tab-separated: save it tab-separated (in "
                                       'Excel: "Text (Tab delimited)") and give that file')
    # saved as it says: the same items as the comma-separated file; a ';' inside cells or a column's
    # name is no delimiter where the commas make more columns
    again = load_dataset(_write(tmp_path / "saved.csv", rows), columns="q=question,opts=options")
    assert [(s.question, s.options, s.triplet) for s in again] == [
        ("What is shown?", ("Normal", "Tumor"), (MODS[i % 3], ANAS[i % 2], "Classification")) for i in range(6)]
    semis = [{**r, "q": "Shown; or not?", "note;s": "a;b;c"} for r in rows]
    kept = load_dataset(_write(tmp_path / "cells.csv", semis), columns="q=question,opts=options")
    assert [s.question for s in kept] == ["Shown; or not?"] * 6


def _pipeline(path: Path, manifest: Path, columns: str) -> Path:
    """A pipeline file on `manifest` with `[data] columns` (TOML), its tiny models trained here: no
    checkpoint to check, so `run`'s preflight reaches the manifest at once."""
    path.write_text(f'[run]\nout = "{path.parent / "run"}"\n[data]\nfile = "{manifest.name}"\ncolumns = {columns}\n'
                    '[design]\ntarget = ["CT", "Chest", "Classification"]\n')
    return path


def test_a_pipeline_file_s_column_refusals_name_its_data_columns_table(tmp_path):
    """`matprobe run` reads the manifest's column map from the pipeline file's [data] columns, so its
    refusals of the columns name that table, their fix written in TOML (with what the table maps
    already); `--columns`, the option of `extract`, `data validate` and `init`, is not `run`'s."""
    import tomllib

    from matprobe.pipeline import load_pipeline
    from matprobe.preflight import check_pipeline

    # the image column left unmapped beside the columns that are mapped
    path = _write(tmp_path / "m.csv", _rows())
    toml = _pipeline(tmp_path / "p.toml", path, '{q = "question", opts = "options"}')
    fix = '[data] columns = {q = "question", opts = "options", picture = "image"}'
    expected = (f"{path}: no column is read as 'image': [data] columns maps q, opts and none onto 'image'; the column "
                f"'picture' holds image files (pics/0.png, ...), so every item would have no image; map it with {fix}")
    with pytest.raises(DataError) as refused:
        check_pipeline(load_pipeline(toml))
    assert str(refused.value) == expected
    res = CliRunner().invoke(app, ["run", str(toml)])
    assert res.exit_code == 2 and res.output == f"error: {expected}\n"
    # the table it gives is TOML that reads every item with its image
    columns = tomllib.loads(fix.removeprefix("[data] "))["columns"]
    assert [Path(s.image).name for s in load_dataset(path, columns=columns)] == [f"{i}.png" for i in range(6)]
    # a needed column missing, its close match a name TOML quotes
    spaced = _write(tmp_path / "s.csv", [{("the task" if k == "task" else k): v for k, v in r.items()}
                                         for r in _rows()])
    toml = _pipeline(tmp_path / "s.toml", spaced, '{q = "question", opts = "options", picture = "image"}')
    res = CliRunner().invoke(app, ["run", str(toml)])
    fix = '[data] columns = {q = "question", opts = "options", picture = "image", "the task" = "task"}'
    assert res.exit_code == 2 and res.output == (
        f"error: {spaced}: unknown column(s) the task; missing task. A MAT manifest has columns image, question, "
        "options, answer, modality, anatomy, task (optional: id, numbered row-1, row-2, ... when absent; label, "
        f"subset, split, mask, slice, option_masks, source); close matches: the task -> task; map them with {fix}\n")
    columns = tomllib.loads(fix.removeprefix("[data] "))["columns"]
    assert [s.task for s in load_dataset(spaced, columns=columns)] == ["Classification"] * 6
    # a column mapped onto a name no manifest has
    toml = _pipeline(tmp_path / "t.toml", path, '{q = "questoin", opts = "options", picture = "image"}')
    res = CliRunner().invoke(app, ["run", str(toml)])
    assert res.exit_code == 2 and res.output.startswith(
        "error: [data] columns = {q = \"questoin\"}: 'questoin' is not a manifest column; did you mean 'question'? ")
    # the commands' own loader keeps naming their option
    with pytest.raises(DataError) as refused:
        load_dataset(spaced, columns="q=question,opts=options,picture=image")
    assert str(refused.value).endswith(
        "; map them with --columns q=question,opts=options,picture=image,the task=task")
    with pytest.raises(DataError) as refused:
        load_dataset(path, columns="q=question,opts=options")
    assert str(refused.value).endswith("map it with --columns q=question,opts=options,picture=image")


# a user study's manifest (uid, img_path, prompt, choices, gt, mod, organ, task_name): every column read by
# alias but task_name; `gt`, the ground truth as a letter, is the answer
STUDY = ["uid", "img_path", "prompt", "choices", "gt", "mod", "organ", "task_name"]
MANIFEST_COLUMNS = ("A MAT manifest has columns image, question, options, answer, modality, anatomy, task (optional: "
                    "id, numbered row-1, row-2, ... when absent; label, subset, split, mask, slice, option_masks, "
                    "source)")


def _study(path: Path, names: list[str] = STUDY, drop: str = "") -> Path:
    rows = [dict(zip(names, (f"q{i:04d}", f"pics/{i}.png", "How many nodules?", "one|two|three|four", "ABCD"[i % 4],
                             MODS[i % 3], ANAS[i % 2], "Count"))) for i in range(6)]
    return _write(path, [{k: v for k, v in r.items() if k != drop} for r in rows])


def test_a_gt_column_is_read_as_the_answer(tmp_path):
    path = _study(tmp_path / "m.csv")
    with pytest.raises(DataError) as refused:
        load_dataset(path)
    assert str(refused.value) == (f"{path}: unknown column(s) task_name; missing task. {MANIFEST_COLUMNS}; close "
                                  "matches: task_name -> task; map them with --columns task_name=task")
    dataset = load_dataset(path, columns="task_name=task")
    assert [s.answer_index for s in dataset] == [0, 1, 2, 3, 0, 1]  # the letters A-D
    assert [s.task for s in dataset] == ["Count"] * 6
    res = CliRunner().invoke(app, ["data", "validate", str(path), "--columns", "task_name=task"])
    assert res.exit_code == 0 and "column 'gt' read as 'answer'" in res.output and "no problems found" in res.output
    # a file with an answer column keeps reading it; its gt column is left unused
    both = _study(tmp_path / "both.csv", [*STUDY[:4], "answer", *STUDY[5:7], "task"])
    assert [s.answer_index for s in load_dataset(both)] == [0, 1, 2, 3, 0, 1]


def test_the_first_column_refusal_gives_a_fix_for_every_missing_column(tmp_path):
    """Issue of the user study: the fix named only the close matches, so following it gave a second
    refusal; each missing name no column resembles now has a THEIRS placeholder in the same fix, the
    unknown columns left named as its candidates, in the option's form and in the pipeline file's."""
    import tomllib

    from matprobe.data.columns import PIPELINE_COLUMNS

    path = _study(tmp_path / "m.csv", [("truth" if c == "gt" else c) for c in STUDY])
    head = f"{path}: unknown column(s) truth, task_name; missing answer, task. {MANIFEST_COLUMNS}; "
    with pytest.raises(DataError) as refused:
        load_dataset(path)
    assert str(refused.value) == head + (
        "close matches: task_name -> task; no close match for answer (unknown column(s) left: truth); map them with "
        "--columns task_name=task,THEIRS=answer (THEIRS: your column for answer)")
    res = CliRunner().invoke(app, ["data", "validate", str(path)])
    assert res.exit_code == 1 and " ".join(res.output.split()).endswith(
        "map them with --columns task_name=task,THEIRS=answer (THEIRS: your column for answer) 1 problem(s) found")
    # the fix with THEIRS filled in is the only round trip
    assert [s.answer_index for s in load_dataset(path, columns="task_name=task,truth=answer")] == [0, 1, 2, 3, 0, 1]
    # `run`'s form: the same fix as a [data] columns table, TOML once THEIRS is filled in
    with pytest.raises(DataError) as refused:
        load_dataset(path, columns_flag=PIPELINE_COLUMNS)
    fix = '[data] columns = {task_name = "task", THEIRS = "answer"}'
    assert str(refused.value) == head + (
        "close matches: task_name -> task; no close match for answer (unknown column(s) left: truth); map them with "
        f"{fix} (THEIRS: your column for answer)")
    columns = tomllib.loads(fix.replace("THEIRS", "truth").removeprefix("[data] "))["columns"]
    assert [s.task for s in load_dataset(path, columns=columns, columns_flag=PIPELINE_COLUMNS)] == ["Count"] * 6
    # two names nothing resembles, no close match at all, the user's own map kept
    other = _study(tmp_path / "o.csv", ["uid", "img_path", "prompt", "opts", "truth", "scan", "organ", "kind"])
    with pytest.raises(DataError) as refused:
        load_dataset(other, columns="opts=options")
    assert str(refused.value).endswith(
        "missing answer, modality, task. " + MANIFEST_COLUMNS + "; no close match for answer, modality, task (unknown "
        "column(s) left: truth, scan, kind); rename the columns or map them with --columns opts=options,"
        "THEIRS=answer,THEIRS=modality,THEIRS=task (THEIRS: your column for each)")
    # no column left that could be the answer: add it
    lacking = _study(tmp_path / "l.csv", drop="gt")
    with pytest.raises(DataError) as refused:
        load_dataset(lacking)
    assert str(refused.value) == (
        f"{lacking}: unknown column(s) task_name; missing answer, task. {MANIFEST_COLUMNS}; close matches: task_name "
        "-> task; no other column of the file can be answer: add it, and map the others with --columns task_name=task")


def test_a_name_that_shares_letters_only_is_not_offered_as_a_close_match(tmp_path):
    """`organ_site` was offered for `answer` (difflib's ratio 0.53 of 'organsite' and 'answer') beside a
    `gold` answer column, and the fix mapped the anatomy column to the answer. A close match is offered
    only from 0.6 now; a misspelling (`anatomie`, 0.87) still is."""
    import difflib

    assert difflib.SequenceMatcher(None, "answer", "organsite").ratio() < 0.6 < \
        difflib.SequenceMatcher(None, "anatomy", "anatomie").ratio()
    rows = [{**{k: v for k, v in r.items() if k not in ("answer", "anatomy")}, "gold": r["answer"],
             "organ_site": r["anatomy"]} for r in _rows()]
    with pytest.raises(DataError) as err:
        load_dataset(_write(tmp_path / "a.csv", rows), columns={"picture": "image", "q": "question", "opts": "options"})
    said = str(err.value)
    assert "organ_site -> answer" not in said and "organ_site=answer" not in said, said
    rows = [{**{k: v for k, v in r.items() if k != "anatomy"}, "anatomie": r["anatomy"]} for r in _rows()]
    with pytest.raises(DataError, match="close matches: anatomie -> anatomy"):
        load_dataset(_write(tmp_path / "b.csv", rows), columns={"picture": "image", "q": "question", "opts": "options"})
