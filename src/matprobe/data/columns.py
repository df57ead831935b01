"""Manifest column names: the expected ones, common aliases, and one refusal for the rest.

A manifest written by someone else names its columns its own way (`img`, `choices`,
`Modality`, `body_part`). Names that differ from the expected one only in case or
separators, and common aliases (`choices`, `image_path`, `body_part`, ...), are read as the
expected column when that column is absent; any other mapping is one option
(`--columns organ_site=anatomy`, `[data] columns` in a pipeline file). What still does
not fit is refused once, before any record is parsed: the unknown columns, the missing
expected ones, and the close matches between them.
"""

from __future__ import annotations

import difflib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from matprobe.errors import DataError

REQUIRED = ("id", "question", "options", "answer", "modality", "anatomy", "task")
OPTIONAL = ("image", "label", "subset", "split", "mask", "slice", "option_masks", "source")
# read as the column on the left when it is absent (first present alias wins; two present: refused)
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("sample_id", "uid", "item_id", "record_id", "qid", "question_id", "index"),
    "image": ("image_path", "img", "img_path", "image_file", "image_name", "img_name", "img_file",
              "image_filename", "filepath", "file_path", "path", "file", "images"),
    "question": ("prompt", "query", "question_text"),
    "options": ("choices", "option", "candidates", "answer_options", "answer_choices", "option_list"),
    "answer": ("answer_index", "answer_idx", "correct_answer", "correct", "answer_letter", "gt_answer",
               "ground_truth", "gt"),
    "modality": ("imaging_modality", "mod", "modality_type"),
    "anatomy": ("body_part", "bodypart", "body_region", "region", "organ", "anatomical_region"),
    "task": ("task_type", "question_type"),
    "label": ("class_name", "category", "diagnosis"),
    "mask": ("mask_path", "gt_mask", "seg_mask", "segmentation"),
    "slice": ("slice_index",),
    "option_masks": ("candidate_masks", "mask_options"),
    "source": ("source_dataset", "dataset", "dataset_name", "data_source", "origin"),
}
EXPECTED = REQUIRED + OPTIONAL
# what a refusal says the columns are, as README's "Data formats" does: `id` may be left out (rows
# are numbered), and `image` is the optional column whose loss is refused when a column resembles it
MANIFEST_COLUMNS = (f"A MAT manifest has columns image, {', '.join(c for c in REQUIRED if c != 'id')} "
                    f"(optional: id, numbered row-1, row-2, ... when absent; "
                    f"{', '.join(c for c in OPTIONAL if c != 'image')})")


# what an image column's cells end in (matprobe.data.images reads these), and how base64 PNG / JPEG
# cells (VLMEvalKit's TSVs) start: a column of them that no name maps to `image` is one
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm", ".dicom", ".nii",
                  ".nii.gz")
_BASE64_IMAGE = ("iVBORw0KGgo", "/9j/")


def _norm(name: str) -> str:
    return re.sub(r"[\s\-.]+", "_", str(name).strip()).casefold()


# where a pipeline file maps columns (`matprobe run`): a refusal reached from it names this table,
# its fix written in TOML, where a command's refusal names its option (`--columns`)
PIPELINE_COLUMNS = "[data] columns"


def _entry(theirs: str, ours: str, flag: str) -> str:
    """One mapping as the user writes it: `img=image` after an option, `img = "image"` in TOML (a
    key that is not bare, e.g. with a space, quoted)."""
    if flag.startswith("-"):
        return f"{theirs}={ours}"
    key = theirs if re.fullmatch(r"[A-Za-z0-9_-]+", theirs) else json.dumps(theirs)
    return f"{key} = {json.dumps(ours)}"


def column_fix(pairs: Mapping[str, str] | Iterable[tuple[str, str]], flag: str = "--columns") -> str:
    """The mappings `pairs` ({theirs: expected}, or (theirs, expected) pairs where a placeholder
    `THEIRS` stands for several columns) as the user gives them: `--columns img=image,q=question`
    on the command line, `[data] columns = {img = "image", q = "question"}` in a pipeline file
    (`flag` `PIPELINE_COLUMNS`, or any other that is not an option)."""
    entries = [_entry(str(t), str(o), flag) for t, o in (pairs.items() if isinstance(pairs, Mapping) else pairs)]
    if flag.startswith("-"):
        return f"{flag} {','.join(entries)}"
    return f"{flag} = {{{', '.join(entries)}}}"


def parse_column_map(spec: str | Mapping[str, str] | None, flag: str = "--columns") -> dict[str, str]:
    """`img=image,body_part=anatomy` (or a mapping) -> {theirs: expected}, expected names checked."""
    if not spec:
        return {}
    if isinstance(spec, Mapping):
        pairs = [(str(k), str(v)) for k, v in spec.items()]
    else:
        pairs = []
        for item in str(spec).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise DataError(f"{flag} {spec!r}: write THEIRS=EXPECTED pairs, e.g. "
                                f"{column_fix({'img': 'image', 'body_part': 'anatomy'}, flag)}")
            theirs, ours = (x.strip() for x in item.split("=", 1))
            pairs.append((theirs, ours))
    out: dict[str, str] = {}
    for theirs, ours in pairs:
        if ours not in EXPECTED:
            close = difflib.get_close_matches(ours, EXPECTED, n=1, cutoff=0.5)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DataError(f"{column_fix({theirs: ours}, flag)}: {ours!r} is not a manifest column; {hint}"
                            f"map onto one of {', '.join(EXPECTED)}")
        if ours in out.values():
            raise DataError(f"{flag}: two columns are mapped onto {ours!r}; map one column onto each name")
        out[theirs] = ours
    return out


# options spread over one column per letter, as benchmark files lay them out: `A`, `B`, ... (the
# VLMEvalKit / GMAI-MMBench TSVs), `option_A` (OmniMedVQA), `choice_a`, `optionB`
_OPTION_COLUMN = re.compile(r"^(?:option|choice|opt)?[_\s-]?([a-h])$", re.IGNORECASE)


def option_columns(columns: Iterable[str]) -> list[str]:
    """The columns that hold one option each, in letter order: a run from A of at least two
    letters, all named one way; [] when there is no such run."""
    by_letter: dict[str, list[str]] = {}
    for c in columns:
        m = _OPTION_COLUMN.match(str(c).strip())
        if m:
            by_letter.setdefault(m.group(1).upper(), []).append(str(c))
    run = []
    for letter in "ABCDEFGH":
        if len(by_letter.get(letter, ())) != 1:
            break
        run.append(by_letter[letter][0])
    styles = {c.strip()[:-1].lower() for c in run}  # option_A with option_B, not with optionB
    return run if len(run) >= 2 and len(styles) == 1 else []


def resolve_columns(columns: Iterable[str], mapping: Mapping[str, str] | None = None, source: str = "",
                    flag: str = "--columns", images: Iterable[str] = ()) -> tuple[dict[str, str], list[str], list[str]]:
    """Decide how the file's columns are read: ({theirs: expected} renames, notes, ignored columns).

    Refuses (one DataError naming every unknown column, every missing expected one and the
    close matches) when a required column is missing or an unknown column looks like an
    expected one that is absent (`img` with no `image` would drop every image silently).
    `images`: the columns that hold image files (`image_columns`), offered as `image` there.
    """
    present = list(dict.fromkeys(str(c) for c in columns))
    mapping = dict(mapping or {})
    where = f"{source}: " if source else ""
    absent_map = [c for c in mapping if c not in present]
    if absent_map:
        raise DataError(f"{where}{flag} maps {absent_map[0]!r}, which is not a column of the file; its columns: "
                        f"{', '.join(present)}")
    renames = {theirs: ours for theirs, ours in mapping.items() if theirs != ours}
    given = dict(renames)  # a fix below keeps what the user mapped: the option or the table is given whole
    notes = [f"column {t!r} read as {o!r} ({flag})" for t, o in renames.items()]
    taken = set(renames.values()) | {c for c in present if c in EXPECTED and c not in renames}
    for theirs, ours in list(renames.items()):
        if ours in present and ours not in renames:
            raise DataError(f"{where}{column_fix({theirs: ours}, flag)}: the file already has a column {ours!r}; map it away "
                            "first or drop the mapping")
    free = [c for c in present if c not in EXPECTED and c not in renames]
    # same name up to case and separators ('Modality', 'Body-Part' is still an alias below)
    for c in list(free):
        n = _norm(c)
        if n in EXPECTED and n not in taken:
            renames[c], _ = n, taken.add(n)
            free.remove(c)
            notes.append(f"column {c!r} read as {n!r}")
    for ours in EXPECTED:
        if ours in taken:
            continue
        hits = [c for c in free if _norm(c) in ALIASES.get(ours, ())]
        if len(hits) > 1:
            raise DataError(f"{where}columns {', '.join(map(repr, hits))} could each be {ours!r}; say which with "
                            f"{column_fix({**given, hits[0]: ours}, flag)}")
        if hits:
            renames[hits[0]] = ours
            taken.add(ours)
            free.remove(hits[0])
            notes.append(f"column {hits[0]!r} read as {ours!r}")
    if "options" not in taken and (spread := option_columns(free)):  # `apply_columns` gathers them
        taken.add("options")
        free = [c for c in free if c not in spread]
        notes.append(f"options read from the columns {', '.join(spread)} (one option each, empty cells left out)")
    # no id column: `apply_columns` numbers the rows (an item needs a name, not this column)
    missing = [c for c in REQUIRED if c not in taken and c != "id"]
    # of the optional columns only a lost image is refused (every item would be text-only);
    # an unknown column that resembles a missing required one is named as its close match below
    suspects = {}
    if "image" not in taken:
        for c in free:
            if difflib.get_close_matches(_norm(c), ["image"], n=1, cutoff=0.6):
                suspects[c] = "image"
                break
    if missing or suspects:
        if missing == ["options"] and "option_masks" in taken:
            missing = []  # segmentation items may leave options out (mask A, mask B, ...)
    if missing or suspects:
        parts = []
        if free:
            parts.append(f"unknown column(s) {', '.join(free)}")
        if missing:
            parts.append(f"missing {', '.join(missing)}")
        pairs = dict(suspects)
        pictures = next((c for c in free if c in set(images)), None)  # image files under another name
        if pictures is not None and "image" not in taken and "image" not in pairs.values():
            pairs[pictures] = "image"
        for m in missing:  # close matches for each missing name, among the unknown columns not matched yet
            if m not in pairs.values():
                left = [c for c in free if c not in pairs]
                close = difflib.get_close_matches(m, [_norm(c) for c in left], n=1, cutoff=0.6)  # 0.5 paired organ_site with answer (0.53)
                if close:
                    pairs[next(c for c in left if _norm(c) == close[0])] = m
        raise DataError(f"{where}{'; '.join(parts)}. {MANIFEST_COLUMNS}"
                        f"{_missing_fix(given, pairs, missing, free, flag)}")
    return renames, notes, free


def _missing_fix(given: Mapping[str, str], pairs: Mapping[str, str], missing: list[str], free: list[str],
                 flag: str) -> str:
    """The fix of a columns refusal, covering every missing name at once: the close matches
    (`pairs`, {theirs: expected}) and a `THEIRS` placeholder for each missing name no unknown
    column resembles, the unknown columns still unmatched named as its candidates; beside what
    the user mapped already (`given`). A missing name with no column left to map is to be added."""
    rest = [m for m in missing if m not in pairs.values()]
    left = [c for c in free if c not in pairs]
    hint = f"; close matches: {', '.join(f'{t} -> {o}' for t, o in pairs.items())}" if pairs else ""
    if rest and not left:  # every column of the file is read already: no mapping gives these
        hint += f"; no other column of the file can be {', '.join(rest)}: add {'it' if len(rest) == 1 else 'them'}"
        return hint + (f", and map the others with {column_fix({**given, **pairs}, flag)}" if pairs else "")
    if rest:
        hint += (f"; no close match for {', '.join(rest)} (unknown column(s) left: {', '.join(left)}); "
                 f"{'map them' if pairs else 'rename the columns or map them'} with "
                 f"{column_fix([*given.items(), *pairs.items(), *(('THEIRS', m) for m in rest)], flag)} "
                 f"(THEIRS: your column for {rest[0] if len(rest) == 1 else 'each'})")
        return hint
    return f"{hint}; map them with {column_fix({**given, **pairs}, flag)}"


def _gathered(rec: dict, spread: list[str]) -> list:
    """One record's options from its per-letter columns; an empty cell (None, NaN, '') ends
    nothing, it is just not an option (files pad items with fewer options)."""
    out = []
    for c in spread:
        v = rec.get(c)
        if v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip()):
            continue
        out.append(v)
    return out


def image_columns(records: Iterable[Mapping[str, Any]], columns: Iterable[str],
                  limit: int = 200) -> dict[str, str]:
    """{column: its first cell} for the columns among `columns` whose filled cells (in the first
    `limit` records) are all image files by their suffix, or base64 PNG / JPEG."""
    cells: dict[str, list[str]] = {c: [] for c in columns}
    for rec in itertools.islice(records, limit):
        for c in cells:
            v = rec.get(c) if isinstance(rec, Mapping) else None
            if v is not None and not (isinstance(v, float) and v != v) and str(v).strip():
                cells[c].append(str(v).strip())
    return {c: vs[0] for c, vs in cells.items()
            if vs and all(v.lower().endswith(IMAGE_SUFFIXES) or v.startswith(_BASE64_IMAGE) for v in vs)}


def _unmapped_image(renames: Mapping[str, str], hits: Mapping[str, str], mapping: Mapping[str, str],
                    where: str, flag: str) -> None:
    """Refuse a file whose image column is left unread: no column is (or is read as) `image` and
    columns left unused hold image files (`hits`, {column: its first cell}: `picture` with
    `--columns q=question`), which would give every item no image, said once per item by `data
    validate` and as missing images by `init`."""
    if not hits or "image" in renames.values():
        return
    first, cell = next(iter(hits.items()))
    shown = "base64 image data" if cell.startswith(_BASE64_IMAGE) else cell if len(cell) <= 60 else cell[:57] + "..."
    mapped = {t: o for t, o in mapping.items() if t != o}
    fix = column_fix({**mapped, first: "image"}, flag)
    which = (f"the column {first!r} holds image files ({shown}, ...)" if len(hits) == 1 else
             f"the columns {', '.join(map(repr, hits))} hold image files ({first}: {shown}, ...)")
    given = f"{flag} maps {', '.join(mapped)} and none onto 'image'; " if mapped else ""
    others = "".join(f" (or {_entry(c, 'image', flag)})" for c in list(hits)[1:])
    raise DataError(f"{where}no column is read as 'image': {given}{which}, so every item would have no image; "
                    f"map it with {fix}{others}")


def apply_columns(records: list[dict[str, Any]], mapping: Mapping[str, str] | None = None, source: str = "",
                  flag: str = "--columns") -> tuple[list[dict[str, Any]], list[str]]:
    """The records with their columns renamed to the expected names; plus notes on what was mapped."""
    seen: dict[str, None] = {}
    for rec in records:
        if isinstance(rec, dict):
            seen.update(dict.fromkeys(rec))
    # no column `image` as it stands: the columns of image files under other names
    images = (image_columns(records, [c for c in seen if c not in EXPECTED])
              if "image" not in seen or "image" in dict(mapping or {}) else {})
    renames, notes, ignored = resolve_columns(seen, mapping, source, flag, images)
    _unmapped_image(renames, {c: images[c] for c in ignored if c in images}, dict(mapping or {}),
                    f"{source}: " if source else "", flag)
    if ignored:
        notes.append(f"column(s) not used: {', '.join(ignored)}")
    out = [{renames.get(k, k): v for k, v in rec.items()} if isinstance(rec, dict) else rec for rec in records]
    spread = [] if "options" in set(renames.values()) | set(seen) else option_columns(seen)
    if spread:
        out = [{**{k: v for k, v in rec.items() if k not in spread}, "options": _gathered(rec, spread)}
               if isinstance(rec, dict) else rec for rec in out]
    if records and "id" not in set(renames.values()) | set(seen):
        # named by position: resume and compare check each item's content, so a reordered file is
        # refused (its items changed under their names), never silently mixed
        out = [{**rec, "id": f"row-{i + 1}"} if isinstance(rec, dict) else rec for i, rec in enumerate(out)]
        notes.append("no id column: each item is named by its row (row-1, row-2, ...); keep the rows in this "
                     "order for every command and run, or add an id column")
    return out, notes
