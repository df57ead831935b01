"""One entry point for every dataset format, and `matprobe data validate`.

`load_dataset` reads Med-MAT JSON/JSONL as published or a MAT manifest (JSONL/CSV/TSV, Parquet,
or a Hugging Face `save_to_disk` folder whose image column holds the image bytes),
telling them apart by their fields. `validate_dataset` goes through every record and
image and collects every problem instead of stopping at the first.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported where it is used: loading a manifest stays light
    import pandas as pd

from matprobe.checks import check_vocabulary_header
from matprobe.data.arrow import is_arrow_source
from matprobe.data.images import load_image
from matprobe.data.manifest import is_delimited, label_answer_conflicts, parse_manifest_records, read_records
from matprobe.data.model import FACTORS, MATDataset
from matprobe.errors import DataError


def _is_medmat(records: list[dict]) -> bool:
    from matprobe.data.medmat import looks_like_medmat

    return looks_like_medmat(records)


def detect_format(path: str | os.PathLike) -> str:
    """'medmat' or 'manifest'."""
    path = Path(path)
    if path.is_dir() and not is_arrow_source(path):
        return "medmat"  # a folder of Med-MAT files
    if is_delimited(path) or is_arrow_source(path):
        return "manifest"
    records, _ = read_records(path)
    return "medmat" if _is_medmat(records) else "manifest"


def load_dataset(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    vocabulary: Mapping[str, Iterable[str]] | None = None,
    columns: str | Mapping[str, str] | None = None,
    columns_flag: str = "--columns",
) -> MATDataset:
    """Load Med-MAT JSON/JSONL or a MAT manifest into a `MATDataset`.

    `columns`: {their column: expected name} (or "img=image,..."), beside the common aliases
    that are read without it (`matprobe.data.columns`). `columns_flag`: where the caller's user
    gives that map, as a refusal of the columns names it (`--columns`; a pipeline file's
    `columns.PIPELINE_COLUMNS`, its fix then written in TOML)."""
    from matprobe.data.columns import apply_columns, parse_column_map

    path = Path(path)
    mapping = parse_column_map(columns, columns_flag)
    if path.is_dir() and not is_arrow_source(path):  # a folder of Med-MAT files (one per subset and split)
        from matprobe.data.medmat import load_medmat_folder

        return load_medmat_folder(path, image_root=image_root)
    records, header = read_records(path)
    if not is_delimited(path) and path.is_file() and not is_arrow_source(path) and _is_medmat(records):
        from matprobe.data.medmat import load_medmat

        return load_medmat(path, image_root=image_root)
    records, _ = apply_columns(records, mapping, str(path), columns_flag)  # unknown columns: one error, first
    vocab = check_vocabulary_header(header, path, FACTORS)
    vocab.update(vocabulary or {})
    return parse_manifest_records(records, path, vocab, image_root)


@dataclass
class ValidationReport:
    path: str
    format: str
    n_records: int
    triplet_counts: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    # what was applied rather than refused (mask thresholds, resampling): data/masks.py
    notes: list[str] = field(default_factory=list)
    # designs the data cannot answer (factor fixed by others, one answer per stratum): data/design.py
    warnings: list[str] = field(default_factory=list)
    # every item whose image file is absent, (id, path as loaded; None: none named): `problems` lists more than
    # `MISSING_LISTED` of them in one line
    missing_images: list[tuple[str, str | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_pipeline_data(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                       columns: Mapping[str, str] | None = None, task_level: str = "subset") -> MATDataset:
    """`load_dataset` as a pipeline file gives the data: its [data] file, image_root, columns and
    task_level (Med-MAT files: "subset", Table 9's tasks, or "group", the coarse tasks by which Med-MAT
    draws Related and Unrelated; refused on a manifest, `medmat.task_level_for`), a column refusal
    naming that table (`columns.PIPELINE_COLUMNS`, its fix in TOML). `run`'s preflight, its data step
    and its fine-tuning workers read the manifest through this one call."""
    from matprobe.data.columns import PIPELINE_COLUMNS
    from matprobe.data.medmat import task_level_for

    with task_level_for(path, task_level):
        return load_dataset(path, image_root=image_root, columns=columns or None, columns_flag=PIPELINE_COLUMNS)


# missing image files listed one problem each up to this many; more are one problem (as `extract` and
# `init` say them): the count, the first few items and the fix
MISSING_LISTED = 5
MISSING_SHOWN = 3


def validate_dataset(
    path: str | os.PathLike,
    image_root: str | os.PathLike | None = None,
    check_images: bool = True,
    max_problems: int = 1000,
    columns: str | Mapping[str, str] | None = None,
) -> ValidationReport:
    """Counts per (M, A, T) triplet and every problem found (records, duplicates, images)."""
    import pandas as pd  # lazily: loading a manifest stays light

    from matprobe.data.columns import apply_columns, parse_column_map

    path = Path(path)
    mapping = parse_column_map(columns)
    folder = path.is_dir() and not is_arrow_source(path)  # a folder of Med-MAT files
    records, header = ([], None) if folder else read_records(path)
    problems: list[str] = []
    column_notes: list[str] = []
    fmt = "medmat" if folder else "manifest" if is_delimited(path) or is_arrow_source(path) or \
        not _is_medmat(records) else "medmat"
    samples = []
    answered: list = []  # (record number, sample, answer cell as written) of each manifest item read
    if fmt == "medmat":
        from matprobe.data.medmat import load_medmat, load_medmat_folder

        try:  # images are checked below, all of them, not only up to the first missing one
            samples = list(load_medmat_folder(path, image_root=image_root, check_images=False) if folder
                           else load_medmat(path, image_root=image_root, check_images=False))
        except DataError as exc:
            # a Med-MAT file is read record by record and stops at the first bad one: said, so that one
            # problem is not read as the only one (a study's 210 records all had the same defect)
            problems.append(f"{exc} (Med-MAT records are checked up to the first bad one: fix it and rerun "
                            "to see any after it)")
    else:
        vocab = check_vocabulary_header(header, path, FACTORS)
        seen: dict[str, int] = {}
        try:  # column names first: a misnamed column is one problem, not one per record
            records, column_notes = apply_columns(records, mapping, str(path))
        except DataError as exc:
            problems.append(str(exc))
            records_to_parse = []
        else:
            records_to_parse = records
        for i, rec in enumerate(records_to_parse):
            try:
                (sample,) = parse_manifest_records([rec], path, vocab, image_root).samples
            except DataError as exc:
                problems.append(str(exc).replace(f"{path}: record 1", f"{path}: record {i + 1}", 1))
                continue
            if sample.id in seen:
                problems.append(
                    f"{path}: record {i + 1} has duplicate id {sample.id!r} (first at record "
                    f"{seen[sample.id] + 1}); make ids unique"
                )
                continue
            seen[sample.id] = i
            samples.append(sample)
            answered.append((i + 1, sample, rec.get("answer")))
    notes: list[str] = [f"{path}: {n}" for n in column_notes]
    wide_note = alpha_note = None
    missing: list = []  # samples whose image file is absent (or who name none)
    if check_images:
        import numpy as np

        from matprobe.data.images import (
            WIDE_RASTER_MODES,
            image_root_hint,
            is_file,
            missing_images_error,
            raster_header,
            shown_path,
            transparency_note,
            wide_raster_note,
        )
        from matprobe.data.masks import load_item_masks

        wide: dict[str, list[str]] = {}  # Pillow mode: ids (as `data.images.image_notes` collects them)
        transparent: list[str] = []
        at_255, wide_pixels = 0, 0
        first_missing = None
        if fmt == "manifest" and samples and not any(s.image for s in samples):
            # one line, not one per item: the file gives no item an image (`columns` refuses a column
            # of image files left unmapped; this is a column of other names, or none at all)
            problems.append(_no_images_problem(path, records, mapping))
            samples_to_check = []
        else:
            samples_to_check = samples
        missing = [s for s in samples_to_check if not s.image or not is_file(s.image)]
        if len(missing) > MISSING_LISTED:  # one line, not one per item: a folder moved, a root not given
            problems.append(missing_images_error(samples_to_check, str(path), "pass --image-root DIR", MISSING_SHOWN))
            gone = {id(s) for s in missing}
            samples_to_check = [s for s in samples_to_check if id(s) not in gone]
        for s in samples_to_check:
            if len(problems) >= max_problems:
                break
            try:
                image = load_image(s)
            except DataError as exc:
                problems.append(f"{path}: {exc}")
                if first_missing is None and s.image and not is_file(s.image):
                    first_missing = s
                continue
            mode, alpha = raster_header(s.image)
            if alpha:
                transparent.append(s.id)
            if mode in WIDE_RASTER_MODES:  # and how much the RGB conversion clipped
                wide.setdefault(mode, []).append(s.id)
                pixels = np.asarray(image)
                at_255, wide_pixels = at_255 + int((pixels == 255).sum()), wide_pixels + pixels.size
            if s.is_segmentation:
                try:
                    notes.extend(f"{path}: {n}" for n in load_item_masks(s, image.size[::-1]).notes)
                except DataError as exc:
                    problems.append(f"{path}: {exc}")
        if wide_pixels:
            wide_note = wide_raster_note(wide, saturated=at_255 / wide_pixels)
        alpha_note = transparency_note(transparent)
        if first_missing is not None and (found := image_root_hint(first_missing.image, path)) is not None:
            notes.append(f"{path}: missing images, first {first_missing.image}: {found[1]} is in "
                         f"{shown_path(found[0])}; pass --image-root {shown_path(found[0])}")
    frame = pd.DataFrame([s.triplet for s in samples], columns=list(FACTORS))
    counts = (
        frame.groupby(list(FACTORS)).size().rename("n").reset_index()
        if len(frame) else pd.DataFrame(columns=[*FACTORS, "n"])
    )
    from matprobe.data.design import design_warnings

    # a label that names another option than the answer first: the design warnings below read the label
    warnings = label_answer_conflicts(path, answered) + [f"{path}: {w}" for w in design_warnings(samples)] + [
        f"{path}: {note}" for note in (wide_note, alpha_note) if note]
    n_records = len(samples) if folder else len(records)  # a folder's files: one record per sample read
    return ValidationReport(str(path), fmt, n_records, counts, collapse_repeats(problems)[:max_problems], notes,
                            warnings, [(s.id, s.image) for s in missing])


def _no_images_problem(path: Path, records: list[dict], mapping: Mapping[str, str]) -> str:
    """The one problem of a manifest none of whose items names an image, with its unused columns."""
    from matprobe.data.columns import EXPECTED, column_fix

    present = list(dict.fromkeys(k for r in records if isinstance(r, dict) for k in r))
    unused = [c for c in present if c not in EXPECTED]
    why = "its image column is empty" if "image" in present else "no column is read as 'image'"
    mapped = {t: o for t, o in mapping.items() if t != o}
    fix = column_fix({**mapped, (unused[0] if len(unused) == 1 else "THEIRS"): "image"})
    return (f"{path}: no item has an image: {why}" + (f" (column(s) not used: {', '.join(unused)})" if unused else "")
            + f"; give each item's image file in a column named image, or map yours with {fix}")


_RECORD = re.compile(r"^(?P<head>.*?): record (?P<n>\d+)(?: \(id '[^']*'\))?: (?P<msg>.*)$")


def collapse_repeats(problems: list[str]) -> list[str]:
    """One line per distinct problem: the same message on 312 records is listed once with its records."""
    groups: dict[tuple[str, str], list[str]] = {}
    order: list[tuple[str, str] | str] = []
    first: dict[tuple[str, str], str] = {}
    for p in problems:
        m = _RECORD.match(p)
        if not m:
            order.append(p)
            continue
        key = (m["head"], m["msg"])
        if key not in groups:
            groups[key] = []
            order.append(key)
            first[key] = p
        groups[key].append(m["n"])
    out = []
    for key in order:
        if isinstance(key, str):
            out.append(key)
            continue
        head, msg = key
        recs = groups[key]
        if len(recs) == 1:
            out.append(first[key])
        else:
            shown = ", ".join(recs[:5]) + (f", ... ({len(recs)} records)" if len(recs) > 5 else "")
            out.append(f"{head}: records {shown}: {msg}")
    return out
