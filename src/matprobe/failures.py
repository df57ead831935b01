"""One line for every failure a user can reach: what failed, on which file, and the fix.

`MatprobeError` messages are already that line. Everything else that reaches the command
line (OS errors such as a full disk, a file-size limit or a permission, HDF5 errors, text
that is not UTF-8, running out of memory) is turned into one here, so the CLI has a single
error path (`matprobe.cli.run_user_errors`); ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
import re
import signal

from matprobe.errors import MatprobeError

# atomic_path's temporary names: ".<target>.<random><suffix>.tmp"
_TMP_NAME = re.compile(r"^\.(?P<target>.+?)\.[A-Za-z0-9_]{8}(\.[A-Za-z0-9]+)?\.tmp$")
_H5_NAME = re.compile(r"name = '([^']+)'")
_H5_ERRNO = re.compile(r"errno = (\d+)")

_FIXES = {
    errno.EFBIG: "the file-size limit was reached (ulimit -f); raise it (ulimit -f unlimited) and rerun",
    errno.ENOSPC: "the disk is full; free space (or write elsewhere) and rerun",
    errno.EDQUOT: "the disk quota is exceeded; free space (or write elsewhere) and rerun",
    errno.EACCES: "permission denied; make it (or its folder) writable/readable for you, or choose another path",
    errno.EPERM: "operation not permitted; choose a path you own",
    errno.EROFS: "the file system is read-only; write to another folder",
    errno.ENOENT: "no such file or directory; check the path",
    errno.EISDIR: "is a folder, not a file; give a file name",
    errno.ENOTDIR: "a part of the path is a file, not a folder; check the path",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and rerun",
    errno.EEXIST: "a file is in the way of a folder to create; choose another output path",
}


def ignore_file_size_signal() -> None:
    """Make a file-size limit an OSError (EFBIG) instead of a kill by SIGXFSZ, so it is reported."""
    if hasattr(signal, "SIGXFSZ"):
        try:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        except (ValueError, OSError):  # not in the main thread
            pass


def _display(name: str | None) -> str | None:
    """The file the user asked for, not the temporary name it is written under."""
    if not name:
        return None
    head, tail = os.path.split(str(name))
    m = _TMP_NAME.match(tail)
    return os.path.join(head, m.group("target")) if m else str(name)


def _os_message(exc: OSError) -> str:
    text = str(exc)
    code = exc.errno
    name = exc.filename
    if code is None:  # h5py puts errno and file name in its message
        m = _H5_ERRNO.search(text)
        code = int(m.group(1)) if m else None
        if code is None and "file too large" in text.lower():
            code = errno.EFBIG
        if code is None and "no space left" in text.lower():
            code = errno.ENOSPC
    if name is None:
        m = _H5_NAME.search(text)
        name = m.group(1) if m else None
    where = _display(name)
    if code is None and "filter returned failure" in text.lower():
        # a compressed HDF5 chunk that no longer decompresses: its bytes changed on disk
        return (f"{where or 'an HDF5 file'}: store corrupt, re-extract: compressed data does not decompress "
                "(the file changed after it was written: disk or copy error); rerun `matprobe extract` with "
                "--overwrite, or restore a good copy")
    fix = _FIXES.get(code) if code is not None else None
    if fix is None:
        detail = (exc.strerror or text).strip().splitlines()[0][:200] if (exc.strerror or text) else type(exc).__name__
        fix = f"{detail}; check the path, its permissions and free disk space, then rerun"
    if code in (errno.EFBIG, errno.ENOSPC, errno.EDQUOT):
        fix += " (files are written under a temporary name: nothing finished was damaged)"
    return f"{where}: {fix}" if where else f"cannot read or write a file: {fix}"


def user_message(exc: BaseException) -> str:
    """One line describing `exc` for the user (MatprobeError: its own message)."""
    if isinstance(exc, MatprobeError):
        return str(exc)
    if isinstance(exc, UnicodeDecodeError):
        return (f"an input file is not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                "save it as UTF-8 and rerun")
    if isinstance(exc, OSError):
        return _os_message(exc)
    if type(exc).__name__ == "JSONDecodeError":  # a reader without its own check: still the user's file
        return (f"a JSON input file is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); it is "
                "truncated or was edited: rewrite it (rerun the command that wrote it) and rerun")
    m = _H5_ERRNO.search(str(exc))
    if m:  # HDF5 reports a failed write (disk full, size limit) as RuntimeError/KeyError with errno
        name = getattr(exc, "filename", None) or (_H5_NAME.search(str(exc)) or [None, None])[1]
        return _os_message(OSError(int(m.group(1)), str(exc), name))
    if isinstance(exc, MemoryError):
        return "out of memory; use fewer samples, layers or a smaller --batch-size, or a machine with more memory"
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (f"unexpected {type(exc).__name__}{': ' + first if first else ''}; this is a matprobe bug or an "
            "unsupported input: rerun with --debug for the traceback and report it")
