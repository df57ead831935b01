"""The run directory contract: how run.json refers to the files of a run.

From run.json format 2 on, every path to a file inside the run directory is stored relative
to that directory, so a run directory can be copied or moved and re-reported. Paths to
things outside the run (your checkpoints, an external manifest) are stored absolute.
Format 1 runs stored paths as the pipeline saw them (relative to the working directory, e.g.
``reports/demo/mi/x.json``); `resolve_run_path` still reads them, wherever the run now is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

RUN_FORMAT_VERSION = 2


def run_relative(path: str | os.PathLike, run: str | os.PathLike) -> str:
    """`path` relative to the run directory if it lies inside it, else absolute."""
    p, r = Path(path).resolve(), Path(run).resolve()
    return p.relative_to(r).as_posix() if p.is_relative_to(r) else str(p)


def _known(cls, d: dict) -> tuple[dict, dict]:
    """(the entries of `d` that are fields of `cls`, the rest)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}, {k: v for k, v in d.items() if k not in names}


@dataclass
class RunCheckpoint:
    """One checkpoint of a run (run.json's `checkpoints`): its files, relative to the run directory
    from format 2 on (`mi`: layer/pool -> MI results file; `main_mi`: the one every command picks)."""

    name: str
    condition: str
    seed: int
    mi: dict = field(default_factory=dict)
    main_mi: str = ""
    check: str = ""
    store: str | None = None
    ckpt: str | None = None
    source_mi: dict = field(default_factory=dict)  # "modality,source" / "source,modality" -> MI file
    extra: dict = field(default_factory=dict, repr=False)  # other recorded entries, kept as written

    @classmethod
    def from_dict(cls, d: dict) -> "RunCheckpoint":
        known, extra = _known(cls, d)
        known["source_mi"] = known.get("source_mi") or {}
        return cls(**known, extra=extra)


@dataclass
class RunSummary:
    """run.json as a typed object (the pipeline writes it; the report reads it back with `read`)."""

    target: list
    checkpoints: list[RunCheckpoint]
    results: str
    kind: str = "matprobe.run"
    format_version: int = 1
    config: dict = field(default_factory=dict)  # the pipeline settings as recorded
    targets: list = field(default_factory=list)
    manifest: str | None = None
    n_samples: int = 0
    composition: list = field(default_factory=list)  # rows {modality, anatomy, task, n}
    train_sizes: dict = field(default_factory=dict)
    train_sizes_by_target: dict = field(default_factory=dict)
    # how the training rows were taken (pipeline.training_rows_basis); runs before it: equalised
    train_rows: str = "equalised"
    significance: str | None = None
    environment: dict | None = None
    seconds: dict = field(default_factory=dict)
    # every `run` in this directory, this one included: their step times summed, and their number
    # (a rerun reuses finished steps, so `seconds` alone is not what the study cost)
    seconds_all_runs: dict = field(default_factory=dict)
    runs: int = 1
    source_warnings: list = field(default_factory=list)
    # what the data does to what is measured: image files the RGB conversion changes
    # (data.images.image_notes) and classes the MI step merges (pipeline._rare_class_note)
    data_warnings: list = field(default_factory=list)
    # sha256 of results.csv and significance.csv as the run wrote them: a report then tells a
    # results.csv replaced after the run from the significance.csv computed on the old one
    tables_sha256: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, d: dict) -> "RunSummary":
        known, extra = _known(cls, d)
        known["checkpoints"] = [RunCheckpoint.from_dict(c) for c in known.get("checkpoints", [])]
        for key in ("config", "seconds", "seconds_all_runs", "train_sizes", "train_sizes_by_target",
                    "tables_sha256"):
            known[key] = known.get(key) or {}
        for key in ("composition", "targets", "source_warnings", "data_warnings"):
            known[key] = known.get(key) or []
        return cls(**known, extra=extra)


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 of a file's bytes (run.json's `tables_sha256`)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def stale_significance(summary: RunSummary, results: Path, significance: Path | None) -> str | None:
    """Why the run's significance.csv is not the one computed from its results.csv, or None: a
    results.csv replaced after the run (its digest is not the recorded one) beside the significance.csv
    the run wrote (its digest still is). Runs before the digests were recorded: None."""
    want = summary.tables_sha256
    if not want or significance is None or "results.csv" not in want or "significance.csv" not in want:
        return None
    if not results.is_file() or not significance.is_file():
        return None
    if file_sha256(results) != want["results.csv"] and file_sha256(significance) == want["significance.csv"]:
        return (f"{results} changed after the run computed {significance.name} from it, so the report's comparisons "
                f"would not be those of its table; recompute them: matprobe significance {results} --out "
                f"{significance} (or rerun the pipeline)")
    return None


def resolve_run_path(run: str | os.PathLike, recorded: str, summary: RunSummary | None = None) -> Path:
    """The file a run.json entry names, for a run directory that may have moved.

    Relative entries are relative to the run directory (format 2). For a format-1 run the
    entry was relative to the working directory of the original run, under the recorded
    ``config.out``: that prefix is replaced by the run directory's current location.
    """
    run = Path(run)
    path = Path(recorded)
    if summary is not None and summary.format_version < 2:
        candidates = []
        out = summary.config.get("out")
        if out:  # re-root the entry under the run directory's present place, the copy first
            for prefix in (Path(out), Path(out).resolve()):
                if path.is_relative_to(prefix):
                    candidates.append(run / path.relative_to(prefix))
        candidates += [run / path, path] if not path.is_absolute() else [path]
        return next((c for c in candidates if c.exists()), candidates[0])
    return path if path.is_absolute() else run / path
