"""Load Med-MAT VQA files as published (Cai et al. 2025, "On the Compositional
Generalization of Multimodal LLMs for Medical Imaging", github.com/FreedomIntelligence/Med-MAT).

A Med-MAT file is a JSON array (or JSON Lines) of records
``{"id", "caption", "image", "Question", "Answer", "Question-choice", "Answer-choice",
"data-no"}``. Records carry no MAT fields: the (modality, anatomy, task) triplet comes
from the subset number in the file name (``Subset--03-train.json``; paper Table 9) or,
failing that, from the original data-set number (``ori--07-train.json`` or the record's
``data-no``; paper Tables 10-11 mapped to Table 9). Both tables ship as package data in
``matprobe/data/tables/`` (see the README.md there for the transcription notes).

Sample fields produced:

- ``id``: ``"{subset}-{record id}"``, e.g. ``"03-17"`` (subset as two digits). Stable
  across runs and unique across subsets, whose files each number records from 1.
- ``image``: the record's path; with ``image_root`` the leading ``med-mat/`` is replaced
  by that folder (other paths are left as they are).
- ``question``: ``Question``; ``options``/``answer_index``: parsed from
  ``Question-choice`` lines ``A: text`` (also ``A. text``, ``A) text``) and the
  ``Answer-choice`` letter; ``label``: the correct option's text (``Answer`` without a letter it may carry); ``subset``: ``"03"``;
  ``split``: ``train``/``test``/``val`` when the file name has that word, else None.

Errors count records from 1 and, for JSON Lines, give the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pandas is imported where it is used: loading a manifest stays light
    import pandas as pd

from matprobe.checks import check_answer_agrees, check_distinct_options
from matprobe.data.model import OPTION_LETTERS, MATDataset, Sample, canonical_label, check_id
from matprobe.errors import DataError

# File-name spellings seen in the published release (docs/design.md §1): "Subset--01-train.json",
# "Subset-04-train.json", "ori--12-train.json".
SUBSET_FILE_RE = re.compile(r"[Ss]ubset-{1,2}(\d+)")
ORI_FILE_RE = re.compile(r"[Oo]ri-{1,2}(\d+)")
SPLIT_FILE_RE = re.compile(r"(?<![A-Za-z])(train|test|val)(?![A-Za-z])", re.IGNORECASE)

REQUIRED_FIELDS = ("id", "image", "Question", "Answer", "Question-choice", "Answer-choice")
# Keys no other supported format uses; enough to recognise a Med-MAT file.
SIGNATURE_FIELDS = ("Question-choice", "Answer-choice")
IMAGE_PREFIX = "med-mat/"

_OPTION_LINE_RE = re.compile(r"^\s*([A-Z])\s*[:.)]\s*(\S.*?)\s*$")
_TABLES = "tables"

# ------------------------------------------------------------------ task level
TASK_LEVELS = ("subset", "group")
TaskLevel = Literal["subset", "group"]
# the level a loader uses where its caller names none: `medmat_task_level` sets it for a block, so that every
# reader of Med-MAT files inside (load_dataset, validate_dataset, split_file, ...) tags tasks at that level
_TASK_LEVEL: ContextVar[str] = ContextVar("medmat_task_level", default="subset")


def check_task_level(task_level: str) -> str:
    if task_level not in TASK_LEVELS:
        raise DataError(f"task_level {task_level!r} is not known; use 'subset' or 'group' (subset: Table 9's "
                        "task of each subset; group: the coarse tasks of the paper's Tables 3-7)")
    return task_level


@contextmanager
def medmat_task_level(task_level: str) -> Iterator[str]:
    """Within the block, Med-MAT files read without a `task_level` of their own are tagged at
    `task_level` ("subset": Table 9's task, one per subset; "group": the coarse tasks of the paper's
    Tables 3-7, by which its Related and Unrelated splits are drawn), whichever loader reads them
    (`load_dataset`, `validate_dataset`, `split_file`: `data validate/split --task-level`)."""
    token = _TASK_LEVEL.set(check_task_level(task_level))
    try:
        yield task_level
    finally:
        _TASK_LEVEL.reset(token)


def task_level_for(file: str | Path, task_level: str):
    """`medmat_task_level(task_level)` for reading `file` (`data validate/split --task-level`); a level
    other than "subset" on a manifest, whose task column is read as written, is refused."""
    check_task_level(task_level)
    if task_level != "subset" and not is_medmat_source(file):
        raise DataError(f"{file}: --task-level applies to Med-MAT files (a file or a folder of them); a "
                        "manifest's task column is read as written: leave --task-level out")
    return medmat_task_level(task_level)


def is_medmat_source(file: str | Path) -> bool:
    """Whether `file` is Med-MAT files (a folder of them, or one whose records look like Med-MAT's), as
    `load_dataset` tells the formats apart."""
    from matprobe.data.arrow import is_arrow_source
    from matprobe.data.manifest import is_delimited, read_records

    path = Path(file)
    if path.is_dir():
        return not is_arrow_source(path)
    return not (is_delimited(path) or is_arrow_source(path)) and looks_like_medmat(read_records(path)[0])


# ------------------------------------------------------------------ package tables
@lru_cache(maxsize=1)
def _read_subset_table() -> pd.DataFrame:
    import pandas as pd  # lazily: loading a manifest stays light
    text = resources.files("matprobe.data").joinpath(_TABLES, "medmat_subsets.csv")
    with resources.as_file(text) as p:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    frame["multi_label"] = frame["multi_label"].map({"true": True, "false": False})
    return frame


@lru_cache(maxsize=1)
def _read_dataset_table() -> pd.DataFrame:
    import pandas as pd  # lazily: loading a manifest stays light
    text = resources.files("matprobe.data").joinpath(_TABLES, "medmat_datasets.csv")
    with resources.as_file(text) as p:
        frame = pd.read_csv(p, dtype=str, keep_default_na=False)
    frame["data_no"] = frame["data_no"].astype("int64")
    for col in frame.columns.drop("data_no"):
        frame[col] = frame[col].where(frame[col] != "", None)
    return frame


def medmat_subset_table() -> pd.DataFrame:
    """Med-MAT Table 9: one row per subset (``"01"``..``"53"``).

    Columns: subset, modality_abbrev (as printed), modality (canonical), anatomy, task
    (as printed), task_kind (Classification / Detection/Segmentation), task_group (the
    coarse task names of the paper's Tables 3-7, with task_group_basis saying where each
    comes from or ``inferred``), datasets_as_printed, data_nos (``;``-separated),
    dataset_names (`` | ``-separated), multi_label (bool).
    """
    return _read_subset_table().copy()


def medmat_dataset_table() -> pd.DataFrame:
    """Med-MAT Tables 10-11: one row per original data set (data-no 1..109).

    Columns: data_no (int), name, description, citation, subsets_listed (every Table 9
    subset naming it), subset (the one used; None for 43, 64, 83, which Table 9 leaves
    out), modality, anatomy, task (from that subset), note (transcription caveats).
    """
    return _read_dataset_table().copy()


def _subset_rows() -> dict[str, dict]:
    return {r["subset"]: r for r in _read_subset_table().to_dict("records")}


def _dataset_rows() -> dict[int, dict]:
    import pandas as pd  # lazily: loading a manifest stays light
    # pandas 3 string columns hold NaN for missing cells: turn them into None here.
    return {
        int(r["data_no"]): {k: (None if pd.isna(v) else v) for k, v in r.items()}
        for r in _read_dataset_table().to_dict("records")
    }


# ------------------------------------------------------------------ detection
def looks_like_medmat(records: list[dict]) -> bool:
    """True when the first records are objects and one of them has Med-MAT's
    ``Question-choice`` and ``Answer-choice`` keys (no other supported format has them).
    Never raises."""
    if not isinstance(records, list) or not records:
        return False
    head = records[:5]
    # One record with both keys is enough: a record missing one is then reported by the
    # Med-MAT loader as a missing field, not misread as another format.
    return all(isinstance(r, dict) for r in head) and any(
        all(k in r for k in SIGNATURE_FIELDS) for r in head
    )


# ------------------------------------------------------------------ reading
def _json_lines(path: Path, text: str) -> list[tuple[object, int]]:
    pairs = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            pairs.append((json.loads(line), lineno))
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: line {lineno}: malformed JSON ({exc.msg}, column {exc.colno}); "
                "put exactly one JSON record on each line"
            ) from None
    return pairs


def _read_records(path: Path) -> list[tuple[dict, int | None]]:
    """(record, JSONL line or None) pairs from a JSON array or JSON Lines file."""
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path to the Med-MAT JSON/JSONL file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}); pass a Med-MAT .json or .jsonl file"
        ) from None
    stripped = text.strip()
    if not stripped:
        raise DataError(
            f"{path}: file is empty; expected a JSON array or JSON Lines of Med-MAT records"
        )
    if stripped[0] == "[":
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise DataError(
                f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}; "
                "fix the JSON (a Med-MAT file is one array of records or one record per line)"
            ) from None
        pairs = [(rec, None) for rec in data]
    elif stripped[0] == "{":
        try:  # one pretty-printed object (a lone record, or a wrapper such as {"data": [...]})
            whole = json.loads(stripped)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and "\n" in stripped and not looks_like_medmat([whole]):
            keys = ", ".join(list(whole)[:5])
            raise DataError(
                f"{path}: is one JSON object (keys {keys}), not a list of records; a Med-MAT "
                "file is a JSON array of records or one record per line"
            )
        pairs = [(whole, 1)] if isinstance(whole, dict) else _json_lines(path, text)
    else:
        raise DataError(
            f"{path}: does not start with '[' or '{{'; expected a JSON array or JSON Lines "
            "of Med-MAT records"
        )
    if not pairs:
        raise DataError(f"{path}: contains no records; expected at least one Med-MAT record")
    for i, (rec, lineno) in enumerate(pairs, start=1):
        if not isinstance(rec, dict):
            where = f"record {i}" + (f" (line {lineno})" if lineno else "")
            raise DataError(
                f"{path}: {where} is a JSON {type(rec).__name__}, not an object; "
                "each Med-MAT record is an object with id, image, Question, Answer, ..."
            )
    return pairs


def _where(path: Path, i: int, lineno: int | None, rid: object = None) -> str:
    parts = [f"line {lineno}"] if lineno else []
    if rid is not None:
        parts.append(f"id {rid!r}")
    return f"{path}: record {i}" + (f" ({', '.join(parts)})" if parts else "")


def parse_options(question_choice: str | list) -> tuple[str, ...]:
    """Options of a ``Question-choice`` text: the last block of lines ``A: text``,
    ``B: text``, ... (``.`` or ``)`` also accepted after the letter), letters in order
    from A; or a JSON list of the options in order (each with or without its letter, as
    ``["COVID", "Normal"]`` or ``["A: COVID", "B: Normal"]``). Raises ValueError (with the
    reason) when no such block exists.

    >>> parse_options("Which?\\nA: COVID\\nB: Normal"), parse_options(["COVID", "B. Normal"])
    (('COVID', 'Normal'), ('COVID', 'Normal'))
    """
    if isinstance(question_choice, (list, tuple)):
        # a list (a study's reading of "the options from Question-choice"): one option per item
        texts = [str(x).strip() for x in question_choice]
        if len(texts) < 2 or not all(texts):
            raise ValueError(f"a list of {len(texts)} option(s), some empty; give two or more option texts")
        out = []
        for i, text in enumerate(texts):
            m = _OPTION_LINE_RE.match(text)
            out.append(" ".join((m.group(2) if m and m.group(1) == OPTION_LETTERS[i] else text).split()))
        return tuple(out)
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in str(question_choice).splitlines():
        if not line.strip():
            continue  # blank lines may separate options (paper Figure 8 template)
        m = _OPTION_LINE_RE.match(line)
        if m:
            current.append((m.group(1), m.group(2)))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    starting_at_a = [b for b in blocks if b[0][0] == "A"]
    if not starting_at_a:
        raise ValueError("no option lines of the form 'A: text'")
    block = starting_at_a[-1]
    letters = "".join(letter for letter, _ in block)
    expected = "".join(OPTION_LETTERS[: len(block)])
    if letters != expected:
        raise ValueError(f"option letters {', '.join(letters)} are not consecutive from A")
    return tuple(" ".join(text.split()) for _, text in block)


def _answer_letter(value: object) -> str:
    return str(value).strip().strip("()").rstrip(".:)").strip().upper()


def _split_from_name(name: str) -> str | None:
    m = SPLIT_FILE_RE.search(name)
    return m.group(1).lower() if m else None


def _remap_image(image: str, image_root: Path | None) -> str:
    path = image.replace("\\", "/").removeprefix("./")  # Windows-written paths too
    if image_root is not None and path.startswith(IMAGE_PREFIX):
        return str(image_root / path[len(IMAGE_PREFIX) :])
    return path


def image_root_slip(image: str | Path, max_up: int = 8) -> Path | None:
    """The image root a missing remapped path meant, where the root given was the folder that holds
    `med-mat/` rather than that folder itself: for ROOT/rest missing, ROOT/med-mat where
    ROOT/med-mat/rest is a file (ROOT one of the path's `max_up` nearest ancestors); else None.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     root = Path(tmp)
    ...     (root / "med-mat" / "03").mkdir(parents=True)
    ...     _ = (root / "med-mat" / "03" / "a.png").write_bytes(b"")
    ...     image_root_slip(root / "03" / "a.png") == root / "med-mat", image_root_slip(root / "03" / "b.png")
    (True, None)
    """
    path = Path(image)
    folder = IMAGE_PREFIX.rstrip("/")
    for depth, root in enumerate(path.parents):
        if depth >= max_up or root == root.parent:
            break
        if root.name == folder:  # the path is under a med-mat/ folder already
            return None
        try:
            found = (root / folder / path.relative_to(root)).is_file()
        except (OSError, ValueError):  # a name the system refuses (an image cell that is no path): no hint
            return None
        if found:
            return root / folder
    return None


def _image_path(image: object, where: str) -> str:
    """The record's one image path: a string, or a list of one (as some conversions write it)."""
    if isinstance(image, list) and len(image) > 1:
        shown = ", ".join(repr(x) for x in image[:3]) + (", ..." if len(image) > 3 else "")
        raise DataError(f"{where}: image is a list of {len(image)} paths ({shown}); a Med-MAT item takes one "
                        "image: give one path (a string, or a list of one)")
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if not isinstance(image, str) or not image.strip():
        raise DataError(f"{where}: image is empty or not a path; give the image's path")
    return image.strip()


def load_medmat(
    path: str | Path,
    image_root: str | Path | None = None,
    *,
    task_level: TaskLevel | None = None,
    check_images: bool = True,
) -> MATDataset:
    """Load one Med-MAT file (JSON array or JSON Lines) as a `MATDataset`; a folder of them
    is read by `load_medmat_folder` (ids ``"{subset}-{split}-{record id}"``).

    The subset comes from the file name (``[Ss]ubset-{1,2}NN``); else from an
    ``[Oo]ri-{1,2}NN`` file name or each record's ``data-no`` through Tables 10-11.
    ``image_root`` replaces the ``med-mat/`` prefix of image paths; when it is given,
    every remapped image must exist (a missing image is an error, never dropped) unless
    ``check_images=False`` (for a validator that checks and reports images itself).
    ``task_level="subset"`` tags the task as printed in Table 9 (one per subset);
    ``"group"`` uses the coarse task names of the paper's Tables 3-7 (State, Cancer, COVID, ...);
    None: the level `medmat_task_level` sets, else "subset".
    Raises `DataError` naming the file, the record and the fix for any bad input.
    """
    path = Path(path)
    task_level = check_task_level(_TASK_LEVEL.get() if task_level is None else task_level)
    if path.is_dir():
        return load_medmat_folder(path, image_root, task_level=task_level, check_images=check_images)
    root = Path(image_root) if image_root is not None else None
    if root is not None and not root.is_dir():
        raise DataError(
            f"{root}: image root is not a folder; pass the folder that replaces 'med-mat/'"
        )
    pairs = _read_records(path)
    subsets = _subset_rows()
    datasets = _dataset_rows()
    valid_subsets = f"{min(subsets)}-{max(subsets)}"

    file_subset: str | None = None
    file_no = None  # the data set number when the file name gives it (Ori-NN files)
    if m := SUBSET_FILE_RE.search(path.name):
        file_subset = f"{int(m.group(1)):02d}"
        if file_subset not in subsets:
            raise DataError(
                f"{path}: file name gives subset {m.group(1)}, which Med-MAT Table 9 lacks "
                f"(subsets {valid_subsets}); rename the file with its subset number"
            )
    elif m := ORI_FILE_RE.search(path.name):
        no = file_no = int(m.group(1))
        if no not in datasets:
            raise DataError(
                f"{path}: file name gives data-no {no}, which Med-MAT Tables 10-11 lack "
                f"(1-{max(datasets)}); rename the file with its data set number"
            )
        file_subset = datasets[no]["subset"]
        if file_subset is None:
            raise DataError(
                f"{path}: data set {no} ({datasets[no]['name']}) belongs to no subset in "
                "Med-MAT Table 9, so it has no MAT triplet; rename the file Subset-NN-... "
                "with the subset you assign it"
            )
    split = _split_from_name(path.name)

    samples: list[Sample] = []
    first_seen: dict[str, int] = {}
    missing_images: list[tuple[str, str]] = []  # (where, the remapped path)
    for i, (rec, lineno) in enumerate(pairs, start=1):
        rid = rec.get("id")
        where = _where(path, i, lineno, rid)
        absent = [k for k in REQUIRED_FIELDS if k not in rec or rec[k] is None]
        if absent:
            foreign = not any(k in rec for k in ("Question", *SIGNATURE_FIELDS))
            hint = " (this does not look like a Med-MAT record)" if foreign else ""
            raise DataError(
                f"{where}: missing field(s) {', '.join(absent)}{hint}; Med-MAT records need "
                f"{', '.join(REQUIRED_FIELDS)}"
            )
        if str(rid).strip() == "":
            raise DataError(f"{where}: empty id; give every record a unique id")
        check_id(str(rid).strip(), where)

        subset = file_subset
        if subset is None:
            raw_no = rec.get("data-no")
            if raw_no is None or str(raw_no).strip() == "":
                raise DataError(
                    f"{where}: no 'data-no' and the file name gives no subset; name the file "
                    "Subset-NN-train.json or add data-no to the record"
                )
            try:
                no = int(str(raw_no).strip())
            except ValueError:
                no = None
            if no not in datasets:
                raise DataError(
                    f"{where}: unknown data-no {raw_no!r}; Med-MAT Tables 10-11 number data "
                    f"sets 1-{max(datasets)}"
                )
            subset = datasets[no]["subset"]
            if subset is None:
                raise DataError(
                    f"{where}: data-no {no} ({datasets[no]['name']}) belongs to no subset in "
                    "Med-MAT Table 9; name the file Subset-NN-... with the subset you assign it"
                )

        sample_id = f"{subset}-{str(rid).strip()}"
        if sample_id in first_seen:
            raise DataError(
                f"{where}: duplicate id (subset {subset} already has it at record "
                f"{first_seen[sample_id]}); make record ids unique within a subset"
            )
        first_seen[sample_id] = i

        try:
            options = parse_options(rec["Question-choice"])
        except ValueError as exc:
            raise DataError(
                f"{where}: Question-choice options do not parse: {exc}; write each option on "
                "its own line as 'A: text', 'B: text', ..."
            ) from None
        letter = _answer_letter(rec["Answer-choice"])
        letters = OPTION_LETTERS[: len(options)]
        if letter not in letters:
            raise DataError(
                f"{where}: Answer-choice {rec['Answer-choice']!r} is not among the options "
                f"{', '.join(letters)}; give the letter of the correct option"
            )
        check_distinct_options(options, where)
        check_answer_agrees(rec["Answer"], options, letters.index(letter), where)

        image_path = _remap_image(_image_path(rec["image"], where), root)
        if check_images and root is not None and not Path(image_path).is_file():
            missing_images.append((where, image_path))

        row = subsets[subset]
        task = row["task"] if task_level == "subset" else row["task_group"]
        source = _source_name(datasets, file_no if file_no is not None else rec.get("data-no"))
        samples.append(
            Sample(
                id=sample_id,
                image=image_path,
                question=" ".join(str(rec["Question"]).split()),
                options=options,
                answer_index=letters.index(letter),
                modality=canonical_label("modality", row["modality"]),
                anatomy=canonical_label("anatomy", row["anatomy"]),
                task=task,  # as tabulated (Table 9 / Tables 3-7): "COVID", "Cell Identification"
                # the correct option's text: "Answer" may carry its letter ("A: COVID", "B. Normal"),
                # which made one diagnosis several label classes (a README-only study)
                label=canonical_label("label", options[letters.index(letter)]),
                subset=subset,
                split=split,
                source=source,
            )
        )

    if missing_images:
        first_where, first = missing_images[0]
        slip = image_root_slip(first)
        # the loader does not know its caller: both ways of giving the root are named
        where = "--image-root, or [data] image_root in a pipeline file"
        fix = (f"the images are under {slip}: give that folder as the image root ({where}); it replaces the "
               "'med-mat/' prefix, so it is the med-mat folder itself, not the folder that holds it"
               if slip is not None else f"check the image root ({where}): it replaces the 'med-mat/' prefix")
        raise DataError(
            f"{len(missing_images)} of {len(samples)} images missing under image root {root}; "
            f"first: {first_where}: {first}; {fix}"
        )
    return MATDataset(samples, source=str(path))


MEDMAT_SUFFIXES = (".json", ".jsonl")


def medmat_files(folder: str | Path) -> list[Path]:
    """The Med-MAT files (.json / .jsonl) under `folder`, sorted by path."""
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix.lower() in MEDMAT_SUFFIXES)


def load_medmat_folder(
    folder: str | Path,
    image_root: str | Path | None = None,
    *,
    task_level: TaskLevel | None = None,
    check_images: bool = True,
) -> MATDataset:
    """Every Med-MAT file under `folder` (Med-MAT ships one file per subset and split:
    ``Subset--03-train.json``, ``Subset--03-test.json``, ...) as one `MATDataset`.

    The files of one subset number their records from 1 in each split, so an id here is
    ``"{subset}-{split}-{record id}"`` (``"03-test-17"``) where the file name gives a split, and
    ``"{subset}-{record id}"`` otherwise (as `load_medmat` names a file's records). Two files
    giving the same id (one subset and split in two files) are refused, naming both.
    `task_level` as `load_medmat`'s.
    """
    folder = Path(folder)
    task_level = check_task_level(_TASK_LEVEL.get() if task_level is None else task_level)
    files = medmat_files(folder)
    if not files:
        raise DataError(f"{folder}: a folder with no .json/.jsonl files; pass a manifest, a `save_to_disk` "
                        "folder, or a folder of Med-MAT files (Subset--NN-train.json, ...)")
    samples: list[Sample] = []
    origin: dict[str, Path] = {}
    for path in files:
        for s in load_medmat(path, image_root=image_root, task_level=task_level, check_images=check_images):
            sample_id = f"{s.subset}-{s.split}-{s.id.split('-', 1)[1]}" if s.split else s.id
            if sample_id in origin:
                both = (path, origin[sample_id])
                # the release holds each record twice: per subset and per original data set (ori--NN)
                hint = (" (Med-MAT's release has the same records in its subset files and in its ori-- "
                        "files of the original data sets: pass the folder of one kind)"
                        if sum(bool(ORI_FILE_RE.search(p.name)) for p in both) == 1 else "")
                raise DataError(f"{path}: id {sample_id!r} is also in {origin[sample_id]} (subset {s.subset}"
                                + (f", split {s.split}" if s.split else "") + "); keep one file per subset and "
                                "split in the folder, or make the record ids unique across them" + hint)
            origin[sample_id] = path
            samples.append(replace(s, id=sample_id))
    return MATDataset(samples, source=str(folder))


def _source_name(datasets: dict, number) -> str | None:
    """The source data set's name from Med-MAT's data-no tables (Tables 10-11), or None."""
    try:
        no = int(str(number).strip())
    except (TypeError, ValueError):
        return None
    entry = datasets.get(no)
    return str(entry["name"]) if entry and entry.get("name") else None


def group_level_hint(source, target) -> str:
    """'' or the hint for a target that Med-MAT files at the subset level (Table 9's tasks, the
    default) lack but whose task is one of the paper's coarse tasks (COVID, Cancer, State, ...) for
    its modality and anatomy: read at `--task-level group` (Med-MAT draws Related and Unrelated by
    those); a Med-MAT study's `--target "CT,Lung,COVID"` got only the list of subset-level triplets."""
    if _TASK_LEVEL.get() != "subset" or target is None or len(target) != 3:
        return ""
    try:
        if not is_medmat_source(source):
            return ""
    except (OSError, ValueError, DataError):
        return ""
    m, a, t = (str(x).strip().lower() for x in target)
    table = _read_subset_table()
    rows = table[(table["modality"].str.lower() == m) & (table["anatomy"].str.lower() == a)
                 & (table["task_group"].str.lower() == t)]
    if rows.empty:
        return ""
    subsets = f"subset{'s' if len(rows) > 1 else ''} {', '.join(rows['subset'])}"
    return (f"; {target[2]!r} is one of Med-MAT's coarse tasks ({subsets} at that "
            "modality and anatomy): read the files with --task-level group (a pipeline file: [data] task_level "
            "= \"group\"), by which Med-MAT draws its Related and Unrelated")
