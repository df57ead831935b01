"""The run directory contract: how run.json refers to the files of a run.

From run.json format 2 on, every path to a file inside the run directory is stored relative
to that directory, so a run directory can be copied or moved and re-reported. Paths to
things outside the run (your checkpoints, an external manifest) are stored absolute.
Format 1 runs stored paths as the pipeline saw them (relative to the working directory, e.g.
``reports/demo/mi/x.json``); `resolve_run_path` still reads them, wherever the run now is.
"""

from __future__ import annotations

import os
from pathlib import Path

RUN_FORMAT_VERSION = 2


def run_relative(path: str | os.PathLike, run: str | os.PathLike) -> str:
    """`path` relative to the run directory if it lies inside it, else absolute."""
    p, r = Path(path).resolve(), Path(run).resolve()
    return p.relative_to(r).as_posix() if p.is_relative_to(r) else str(p)


def resolve_run_path(run: str | os.PathLike, recorded: str, summary: dict | None = None) -> Path:
    """The file a run.json entry names, for a run directory that may have moved.

    Relative entries are relative to the run directory (format 2). For a format-1 run the
    entry was relative to the working directory of the original run, under the recorded
    ``config.out``: that prefix is replaced by the run directory's current location.
    """
    run = Path(run)
    path = Path(recorded)
    if summary is not None and summary.get("format_version", 1) < 2:
        candidates = []
        out = (summary.get("config") or {}).get("out")
        if out:  # re-root the entry under the run directory's present place, the copy first
            for prefix in (Path(out), Path(out).resolve()):
                if path.is_relative_to(prefix):
                    candidates.append(run / path.relative_to(prefix))
        candidates += [run / path, path] if not path.is_absolute() else [path]
        return next((c for c in candidates if c.exists()), candidates[0])
    return path if path.is_absolute() else run / path
