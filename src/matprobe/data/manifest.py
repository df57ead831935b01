"""The generic MAT manifest (JSONL, CSV, TSV, Parquet or a Hugging Face `datasets` folder), for
CrossMed-style and custom data (Parquet and `datasets` folders: `matprobe.data.arrow`).

Columns: ``id, image, question, options, answer, modality, anatomy, task`` and optional
``label, subset, split, mask, slice, option_masks, source``.

Segmentation items (CrossMed §III, four candidate masks): ``option_masks`` lists one mask
file per option (PNG/JPEG, ``.npy`` or NIfTI, same slice rule as the image; a JSON list or
``|``-separated in CSV); ``options`` may then be left out (it becomes ``mask A`` ...
``mask D``); ``answer`` indexes the correct candidate; ``mask`` is the ground-truth mask
when it differs from that candidate. Masks are checked by `matprobe.data.masks`. ``options`` is a list (JSONL) or a JSON list or
``|``-separated string (CSV); ``answer`` is the option's index, its letter (A, B, ...)
or its text. Relative image paths resolve against the manifest's folder.

A JSONL manifest may start with a header line declaring the allowed labels:
``{"matprobe_manifest": 1, "vocabulary": {"modality": ["CT", "MRI", "X-ray"], ...}}``;
a record with a label outside a declared vocabulary is an error (an unknown MAT label).
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from matprobe.checks import check_distinct_options, check_vocabulary_header, text_key
from matprobe.data.columns import OPTIONAL, REQUIRED  # noqa: F401 (the column names and their aliases live there)
from matprobe.data.model import (
    FACTORS,
    OPTION_LETTERS,
    MATDataset,
    Sample,
    Vocabulary,
    canonical_label,
    check_id,
)
from matprobe.errors import DataError
from matprobe.io import atomic_path

MASK_OPTION_TEXT = "mask {letter}"
HEADER_KEY = "matprobe_manifest"


# delimited text tables by suffix: always a manifest (Med-MAT is JSON), read with this delimiter
DELIMITERS = {".csv": ",", ".tsv": "\t"}


def is_delimited(path: Path) -> bool:
    """A CSV or TSV file (by its suffix)."""
    return Path(path).suffix.lower() in DELIMITERS


# how a delimited file is read (by its suffix), and how Excel names the format that writes it so
SEPARATED = {",": ("comma", '"CSV UTF-8 (Comma delimited)"'), "\t": ("tab", '"Text (Tab delimited)"')}


def _check_delimiter(path: Path, text: str) -> None:
    """Refuse a table whose header line splits into more columns at ';' than at its suffix's delimiter:
    a semicolon-separated CSV, as Excel saves "CSV" where the decimal mark is a comma, would be read
    as one column named by the whole header line (matprobe has no delimiter option: the suffix says)."""
    delimiter = DELIMITERS[path.suffix.lower()]
    header = text.lstrip("\r\n").partition("\n")[0].rstrip("\r")
    try:
        ours, semi = (next(csv.reader([header], delimiter=d)) for d in (delimiter, ";"))
    except csv.Error:
        return  # the reader below names it
    if len(semi) <= len(ours):
        return
    kind, excel = SEPARATED[delimiter]
    shown = header if len(header) <= 60 else header[:57] + "..."
    raise DataError(f"{path}: the header line holds ';' and reads as {_columns(len(ours))} ({shown!r}): the file "
                    f"looks semicolon-separated ({len(semi)} columns at ';'), as Excel saves CSV where the decimal "
                    f"mark is a comma; matprobe reads a {path.suffix.lower()} file as {kind}-separated: save it "
                    f"{kind}-separated (in Excel: {excel}) and give that file")


def _columns(n: int) -> str:
    return "one column" if n == 1 else f"{n} columns"


def read_records(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Records of a JSON array, JSONL or CSV file, plus a JSONL header if present; a Parquet
    file or a Hugging Face `save_to_disk` folder is read by `matprobe.data.arrow`."""
    from matprobe.data.arrow import is_arrow_source, read_arrow_records

    if is_arrow_source(path):
        return read_arrow_records(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: the file is empty; give a JSON/JSONL/CSV/TSV file with one record per sample")
    header = None
    if is_delimited(path):
        # benchmark TSVs (VLMEvalKit's) carry base64 images of a few MB per cell
        csv.field_size_limit(2**31 - 1)
        _check_delimiter(path, text)
        try:
            records = list(csv.DictReader(text.splitlines(), delimiter=DELIMITERS[path.suffix.lower()]))
        except csv.Error as exc:
            raise DataError(f"{path}: malformed CSV ({exc})") from None
        if not records:
            raise DataError(f"{path}: the CSV has a header but no records")
        return records, None
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: malformed JSON at line {exc.lineno} ({exc.msg}); fix the file") from None
    else:
        records = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}: line {lineno} is not valid JSON ({exc.msg}); one JSON object per line"
                ) from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}: line {lineno} is not a JSON object")
            if HEADER_KEY in rec and not records and header is None:
                header = rec
                continue
            records.append(rec)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected a list of JSON objects (one per sample)")
    if not records:
        raise DataError(f"{path}: no records")
    return records, header


def _where(path: Path, index: int, rec: Mapping[str, Any]) -> str:
    rid = rec.get("id")
    return f"{path}: record {index + 1}" + (f" (id {rid!r})" if rid not in (None, "") else "")


def _list_field(raw: Any, where: str, name: str) -> Any:
    """A list-valued field as CSV cells carry it too: a JSON list string, `a|b|c`, or the
    Python list literal that `pandas.DataFrame.to_csv` writes for a list column
    (`['a', 'b']`, read with `ast.literal_eval`: literals only, nothing is executed)."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if not text.startswith("["):
        return [o.strip() for o in text.split("|")]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        value = None
    if isinstance(value, list):
        return value
    raise DataError(f"{where}: {name} {text[:60]!r} is not a list (JSON, or a Python list as pandas "
                    "writes it)") from None


def _parse_options(raw: Any, where: str) -> tuple[str, ...]:
    raw = _list_field(raw, where, "options")
    if not isinstance(raw, list) or len(raw) < 2 or not all(
            isinstance(o, (str, int, float)) and not isinstance(o, bool) and str(o).strip() for o in raw):
        raise DataError(f"{where}: options must be a list of at least two non-empty strings")
    options = tuple(str(o).strip() for o in raw)
    check_distinct_options(options, where)
    return options


# a letter as answer files write it: (A), A., A), A:, and 'B. no' (the letter, then its option's text)
_LETTER_FORM = re.compile(r"\(?([A-Za-z])\s*(?:[).:]\s*(.*))?")


def _loose_answer(raw: str, options: tuple[str, ...]) -> int | None:
    """An answer that names one option unambiguously though not verbatim: the option's text up to
    case and spaces ('Yes' for 'yes'), or a letter with punctuation ('(B)', 'B.', 'B. no' where B's
    text is 'no'); None otherwise (the caller refuses)."""
    folded = [text_key(o) for o in options]
    if folded.count(text_key(raw)) == 1:
        return folded.index(text_key(raw))
    m = _LETTER_FORM.fullmatch(raw.strip())
    if not m or m.group(1).upper() not in OPTION_LETTERS[: len(options)]:
        return None
    idx = OPTION_LETTERS.index(m.group(1).upper())
    return idx if not m.group(2) or text_key(m.group(2)) == folded[idx] else None


def _answer_readings_differ(raw: Any, options: tuple[str, ...], where: str) -> None:
    """Refuse an answer that is both an index or letter and, verbatim, another option's text: with
    options 1, 2, 3, 4 the answer 2 is option C by index and option B by text, and neither reading
    is safe to pick for a counting or grading question."""
    text = str(raw).strip()
    if text not in options:
        return
    as_text = options.index(text)
    if text.isdigit():
        as_code, kind = int(text), "an option index (from 0)"
    elif len(text) == 1 and text.upper() in OPTION_LETTERS[: len(options)]:
        as_code, kind = OPTION_LETTERS.index(text.upper()), "a letter"
    else:
        return
    if as_code == as_text or not 0 <= as_code < len(options):
        return
    fix = (f"the letter of the option meant ({OPTION_LETTERS[as_text]} or {OPTION_LETTERS[as_code]})"
           if text.isdigit() else f"the index from 0 of the option meant ({as_text} or {as_code})")
    raise DataError(
        f"{where}: answer {raw!r} is ambiguous: as {kind} it is option {OPTION_LETTERS[as_code]} "
        f"({options[as_code]!r}), as an option's text it is option {OPTION_LETTERS[as_text]} "
        f"({options[as_text]!r}); write the answer as {fix}")


def _parse_answer(raw: Any, options: tuple[str, ...], where: str) -> int:
    if isinstance(raw, bool):
        raw = str(raw)
    if isinstance(raw, (int, str)):
        _answer_readings_differ(raw, options, where)
    if isinstance(raw, int) or (isinstance(raw, str) and raw.strip().isdigit()):
        idx = int(raw)
    elif isinstance(raw, str) and raw.strip().upper() in OPTION_LETTERS[: len(options)] and len(raw.strip()) == 1:
        idx = OPTION_LETTERS.index(raw.strip().upper())
    elif isinstance(raw, str) and raw.strip() in options:
        idx = options.index(raw.strip())
    elif isinstance(raw, str) and (loose := _loose_answer(raw, options)) is not None:
        idx = loose
    else:
        raise DataError(
            f"{where}: answer {raw!r} is neither an option index, a letter "
            f"{'/'.join(OPTION_LETTERS[: len(options)])} nor one of the options"
        )
    if not 0 <= idx < len(options) and str(raw).strip() in options:
        idx = options.index(str(raw).strip())  # no such index, but an option's text ('4' of 1..4)
    if not 0 <= idx < len(options):
        # an index one past the last option is the mark of indices counted from 1
        one_based = (" (indices counted from 1? matprobe counts options from 0: subtract 1 from every "
                     "answer index)" if idx == len(options) else "")
        raise DataError(
            f"{where}: answer index {idx} out of range for {len(options)} options; give 0.."
            f"{len(options) - 1} or a letter {OPTION_LETTERS[0]}..{OPTION_LETTERS[len(options) - 1]}{one_based}"
        )
    return idx


def label_names_other_option(sample: Sample) -> int | None:
    """The option a sample's `label` names (its text up to case and spaces, `text_key`) where that is not
    the option its answer index points to; None where the label is the answer's option or no option's
    text (a class of its own, as 'abnormal' for the answer 'yes': no contradiction)."""
    if sample.label is None or sample.answer_index is None or not sample.options:
        return None
    keys = [text_key(o) for o in sample.options]
    key = text_key(sample.label)
    if key == keys[sample.answer_index] or key not in keys:
        return None
    return keys.index(key)


def _is_index(raw: Any) -> bool:
    """Whether an answer cell was read as a number (`_parse_answer`), not a letter or an option's text."""
    if isinstance(raw, str):
        return raw.strip().isdigit()
    return isinstance(raw, int) and not isinstance(raw, bool)


LABEL_CONFLICTS_SHOWN = 5


def label_answer_conflicts(path, items: list[tuple[int, Sample, Any]]) -> list[str]:
    """`data validate`'s warning for the items whose `label` names another option than their answer
    (`label_names_other_option`), with their records; `items` are (record number from 1, sample, the
    answer cell as written) of every item read. Where every such answer is a number and every label
    names the option just before it, the indices look counted from 1 (a study's 1-based answers that
    were in range passed silently, while the label and the scored answer disagreed on every row).
    An empty list where labels and answers agree (or the labels are classes of their own)."""
    from matprobe.data.model import OPTION_LETTERS

    found = [(n, s, raw, j) for n, s, raw in items if (j := label_names_other_option(s)) is not None]
    if not found:
        return []
    numbers = [str(n) for n, *_ in found]
    more = ", ..." if len(found) > LABEL_CONFLICTS_SHOWN else ""
    shown = ", ".join(numbers[:LABEL_CONFLICTS_SHOWN]) + more + f" ({len(found)} of the {len(items)} items read)"
    n, s, raw, j = found[0]
    a = s.answer_index
    written = str(raw).strip() if _is_index(raw) else repr(raw)
    example = (f"record {n} (id {s.id!r}) has answer {written}, option {OPTION_LETTERS[a]} {s.options[a]!r}, "
               f"but label {s.label!r}, option {OPTION_LETTERS[j]}")
    one_based = all(_is_index(raw) and j == s.answer_index - 1 for _, s, raw, j in found)
    if one_based:
        fix = ("on every one of them the answer is a number and the label is the option just before it: the "
               "indices look counted from 1, but matprobe counts options from 0 (0 is the first option, A); "
               "subtract 1 from every answer index")
    else:
        fix = ("fix the answer (an index counted from 0, a letter or the option's text) or the label (the "
               "answer's class Y) of each")
    return [f"{path}: {'record' if len(found) == 1 else 'records'} {shown}: the label names "
            f"another option than the answer ({example}). Accuracy is scored on the answer and the label is "
            f"the factor Y, so they disagree on these items; {fix}"]


def _parse_option_masks(raw: Any, where: str) -> tuple[str, ...] | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    raw = _list_field(raw, where, "option_masks")
    if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(m, str) and m.strip() for m in raw):
        raise DataError(f"{where}: option_masks must be a list of at least two mask file paths, "
                        f"one per option")
    return tuple(m.strip() for m in raw)


# what an image file starts with, to tell a base64-encoded image cell (VLMEvalKit's TSVs) from a path
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")


def _inline_image(cell: str) -> str | None:
    """The cached file of an image given inline as base64 (benchmark TSVs carry their images so),
    else None: a cell of base64 characters only (a path has a dot or other characters), that decodes to
    bytes an image file starts with (`data.arrow.cache_image_bytes`: written once under its sha256)."""
    if len(cell) < 32 or not _BASE64.fullmatch(cell[:1024]):
        return None
    import base64
    import binascii

    try:
        data = base64.b64decode("".join(cell.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    if not data.startswith(_IMAGE_MAGIC):
        return None
    from matprobe.data.arrow import cache_image_bytes

    return cache_image_bytes(data)


def _absolute(path: str | None, path_root: Path) -> str | None:
    if path is None:
        return path
    inline = _inline_image(path)  # first: a base64 JPEG starts with '/9j/', an absolute path to Path
    if inline is not None:
        return inline
    return path if Path(path).is_absolute() else str(path_root / path)


# what spreadsheets and pandas write for a value that is not there (pandas' default NA strings
# among them): as a modality, anatomy or task each would become a class of its own
MISSING_MARKS = frozenset({"na", "n/a", "nan", "none", "null", "nil", "-", "--", "?", "#n/a"})


def _blank(value: Any) -> bool:
    """No value: absent, empty text, or a float NaN (json.dump writes NaN for pandas' missing cells)."""
    return value is None or value == "" or (isinstance(value, float) and value != value)


def _refuse_missing_mark(value: Any, factor: str, where: str) -> None:
    if isinstance(value, str) and value.strip().casefold() in MISSING_MARKS:
        raise DataError(f"{where}: {factor} {value!r} marks a missing value, and it would become a "
                        f"{factor} class of its own; give the item's {factor} or drop the record")


def _opt(rec: Mapping[str, Any], key: str) -> str | None:
    v = rec.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return str(v).strip()


def parse_manifest_records(
    records: Iterable[Mapping[str, Any]],
    path: Path,
    vocabulary: Mapping[str, Iterable[str]] | None = None,
    image_root: str | os.PathLike | None = None,
) -> MATDataset:
    allowed = {k: {canonical_label(k, v) for v in vals} for k, vals in (vocabulary or {}).items()}
    samples = []
    for i, rec in enumerate(records):
        where = _where(path, i, rec)
        option_masks = _parse_option_masks(rec.get("option_masks"), where)
        required = [k for k in REQUIRED if not (k == "options" and option_masks)]
        missing = [k for k in required if _blank(rec.get(k))]
        if missing:
            raise DataError(
                f"{where}: missing field(s) {', '.join(missing)}; a MAT manifest needs "
                f"{', '.join(required)}"
            )
        if option_masks and rec.get("options") in (None, ""):
            options = tuple(MASK_OPTION_TEXT.format(letter=OPTION_LETTERS[k]) for k in range(len(option_masks)))
        else:
            options = _parse_options(rec["options"], where)
        if option_masks and len(option_masks) != len(options):
            raise DataError(
                f"{where}: {len(options)} options but {len(option_masks)} option_masks; give one "
                f"mask per option (or leave options out)"
            )
        answer = _parse_answer(rec["answer"], options, where)
        labels = {}
        for factor in FACTORS:
            _refuse_missing_mark(rec[factor], factor, where)
            value = canonical_label(factor, rec[factor])
            if factor in allowed and value not in allowed[factor]:
                raise DataError(
                    f"{where}: unknown {factor} label {rec[factor]!r}; declared: "
                    f"{', '.join(sorted(allowed[factor]))}. Fix the label or add it to the vocabulary"
                )
            labels[factor] = value
        slice_raw = rec.get("slice", rec.get("slice_index"))
        try:
            slice_index = None if slice_raw in (None, "") else int(slice_raw)
            if isinstance(slice_raw, float) and slice_raw != slice_index:  # 1.5 is no slice
                raise ValueError
        except (TypeError, ValueError, OverflowError):  # OverflowError: a slice of infinity
            raise DataError(f"{where}: slice {slice_raw!r} is not an integer") from None
        # absolute, so samples stay valid wherever the dataset is written again
        path_root = (Path(image_root) if image_root is not None else path.parent).resolve()
        image = _absolute(_opt(rec, "image"), path_root)
        mask = _absolute(_opt(rec, "mask"), path_root)
        if option_masks:
            option_masks = tuple(_absolute(m, path_root) for m in option_masks)
        samples.append(
            Sample(
                id=check_id(str(rec["id"]).strip(), where),
                image=image,
                question=str(rec["question"]),
                options=options,
                answer_index=answer,
                label=_opt(rec, "label") or options[answer],
                subset=_opt(rec, "subset"),
                split=_opt(rec, "split"),
                source=_opt(rec, "source"),
                mask=mask,
                slice_index=slice_index,
                option_masks=option_masks,
                **labels,
            )
        )
    vocabularies = {
        k: Vocabulary(k, tuple(sorted(v))) for k, v in allowed.items() if k in FACTORS
    }
    return MATDataset(samples, str(path), vocabularies)


def load_manifest(
    path: str | os.PathLike,
    vocabulary: Mapping[str, Iterable[str]] | None = None,
    image_root: str | os.PathLike | None = None,
) -> MATDataset:
    """Load a MAT manifest (JSONL, JSON array or CSV)."""
    from matprobe.data.columns import apply_columns

    path = Path(path)
    records, header = read_records(path)
    records, _ = apply_columns(records, None, str(path))
    vocab = check_vocabulary_header(header, path, FACTORS)
    vocab.update(vocabulary or {})
    return parse_manifest_records(records, path, vocab, image_root)


def require_jsonl_path(path: str | os.PathLike) -> Path:
    """`path` as a Path where it ends in .jsonl; otherwise a DataError naming the fix."""
    path = Path(path)
    if path.suffix.lower() != ".jsonl":
        raise DataError(f"{path}: a manifest is written as JSONL; give a path ending in .jsonl "
                         f"(e.g. {path.with_suffix('.jsonl').name})")
    return path


def write_manifest(dataset: MATDataset, path: str | os.PathLike, declare_vocabulary: bool = True) -> Path:
    """Write `dataset` as a JSONL manifest (atomically).

    Image paths inside the manifest's folder are written relative to it, others absolute.
    A path ending in another suffix (.csv, .tsv, .json, ...) is refused before anything is
    written: matprobe reads a file's format from its suffix, and JSONL under .csv could not be
    read back.
    """
    path = require_jsonl_path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            if declare_vocabulary:
                vocab = {k: list(dataset.vocabularies[k].labels) for k in FACTORS}
                fh.write(json.dumps({HEADER_KEY: 1, "vocabulary": vocab}) + "\n")
            here = path.parent.resolve()
            def rel(p: str | None) -> str | None:
                if p is not None and Path(p).is_absolute() and Path(p).is_relative_to(here):
                    return str(Path(p).relative_to(here))  # the folder stays relocatable
                return p

            for s in dataset:
                image = rel(s.image)
                rec = {
                    "id": s.id, "image": image, "question": s.question, "options": list(s.options),
                    "answer": s.answer_index, "modality": s.modality, "anatomy": s.anatomy,
                    "task": s.task, "label": s.label, "subset": s.subset, "split": s.split,
                    "mask": rel(s.mask), "slice": s.slice_index,
                    "option_masks": [rel(m) for m in s.option_masks] if s.option_masks else None,
                    "source": s.source,
                }
                fh.write(json.dumps({k: v for k, v in rec.items() if v is not None}) + "\n")
    return path
