"""Atomic file output: write to a temporary name in the same folder, rename on success."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it to `target` only if the block succeeds.

    The rename is atomic on POSIX, so readers see either the old file or the complete new one,
    and a failure (or kill) leaves no half-written `target`.
    """
    target = Path(target)
    created = _make_parents(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix + ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; the result should be an ordinary file
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.filename is None:  # a full disk / file-size limit mid-write: say which output
            exc.filename = str(target)
        raise
    except RuntimeError as exc:  # h5py reports a failed write as RuntimeError("... errno = 27 ...")
        code = re.search(r"errno = (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), str(exc), str(target)) from exc
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if not target.exists():  # failed: folders made only for it go too (a sweep's pointwise/)
            for folder in created:
                try:
                    folder.rmdir()
                except OSError:
                    break  # not empty: something else was written there


def _make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; the folders it created, deepest first."""
    created = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        created.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    return created


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it replaces `target` as a whole.

    A failure (or kill) leaves `target` as it was and no temporary folder behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class _FailSoftFile:
    """A binary file for h5py's file-object driver that keeps its first OS error to itself.

    HDF5 (2.0 with h5py 3.16, measured here) crashes with SIGSEGV when it closes a file after a
    failed write (a full disk or `ulimit -f` during `extract`), after printing a traceback for
    every object it could not flush. So HDF5 never sees the failure: the first one is kept,
    later writes are dropped, HDF5 finishes and closes normally, and `atomic_h5` raises the kept
    error. The file is a temporary one that is then deleted, so the dropped bytes are never read.
    """

    def __init__(self, path: Path):
        self._f = open(path, "w+b", buffering=0)  # noqa: SIM115 (closed by atomic_h5)
        self.error: OSError | None = None

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        if self.error is None:
            try:
                done = 0
                while done < len(view):  # a write near the limit can be short before it fails
                    done += self._f.write(view[done:])
            except OSError as exc:
                self.error = exc
        return len(view)

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = self._f.readinto(view) or 0
        view[n:] = bytes(len(view) - n)  # past a dropped write: zeros, as in a sparse file
        return len(view)

    def read(self, size: int = -1) -> bytes:
        return self._f.read(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.error is None:
            try:
                return self._f.truncate(size)
            except OSError as exc:
                self.error = exc
        return size if size is not None else self._f.tell()

    def flush(self) -> None:
        pass  # unbuffered

    def close(self) -> None:
        self._f.close()


@contextlib.contextmanager
def atomic_h5(target: str | os.PathLike, suffix: str = ".h5") -> Iterator:
    """A new HDF5 file (h5py.File, mode "w") that replaces `target` only if the block succeeds.

    Like `atomic_path`, plus: a write that fails (disk full, file-size limit) is raised as an
    OSError naming `target` once HDF5 has closed the file, never inside HDF5 (see _FailSoftFile).
    """
    import h5py

    target = Path(target)
    with atomic_path(target, suffix=suffix) as tmp:
        fobj = _FailSoftFile(tmp)
        try:
            with h5py.File(fobj, "w") as h5:
                yield h5
                if fobj.error is None:
                    h5.flush()  # metadata written now, while a failure can still be kept
        except BaseException as exc:
            fobj.close()
            if fobj.error is not None:  # the block failed because a write did: say that
                raise _named(fobj.error, target) from exc
            raise
        fobj.close()
        if fobj.error is not None:
            raise _named(fobj.error, target)


def _named(exc: OSError, target: Path) -> OSError:
    return OSError(exc.errno, exc.strerror or str(exc), str(target))


def check_out_suffix(out: str | os.PathLike, kinds: dict[str, str], error: type[Exception] = ValueError) -> Path:
    """Refuse an output name of a file type the writer does not write, before any work is spent:
    `kinds` maps each suffix it writes to what that file holds ('' where there is nothing to say),
    e.g. {".json": "everything", ".csv": "the points"}."""
    out = Path(out)
    if out.suffix.lower() not in kinds:
        words = " or ".join(f"{ext} ({what})" if what else ext for ext, what in kinds.items())
        raise error(f"--out {out}: use a {words} file name")
    return out


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def numpy_to_json(o):
    """`json.dumps(default=...)` for numpy scalars and arrays; TypeError for anything else."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def strict_json_value(o):
    """`o` with every non-finite float (NaN, +-inf) replaced by None, through dicts, lists, tuples
    and numpy values: what strict JSON parsers (JavaScript's JSON.parse, `json.loads` with
    `parse_constant` raising) accept, where Python's `json.dumps` would write bare NaN.

    >>> import json
    >>> json.dumps(strict_json_value({"p": float("nan"), "t": [1.5, float("inf")], "n": np.int64(3)}))
    '{"p": null, "t": [1.5, null], "n": 3}'
    """
    if isinstance(o, dict):
        return {k: strict_json_value(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [strict_json_value(v) for v in o]
    if isinstance(o, np.ndarray):
        return strict_json_value(o.tolist())
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, float | np.floating):
        return float(o) if np.isfinite(o) else None
    return o
