"""Advisory writer locks and the "never write over your own input" check.

A writer of a file (a store being extracted, a sweep table) holds an exclusive `fcntl.flock`
on a sidecar ``.<name>.lock`` beside it for as long as it writes. A second writer is refused
at once with the first one's process id ("in use by process N"), before it opens, truncates
or renames anything, so ``--overwrite`` cannot race a running writer either. The lock is
advisory (only matprobe writers take it) and released by the kernel when its holder exits,
even on ``kill -9``, so a stale lock file never blocks anyone. The holder removes the sidecar
before unlocking, and a writer that locked a file already removed retries on the new one, so
two writers never hold locks on two different files of the same name.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import inspect
import os
from pathlib import Path

from matprobe.errors import InUseError, MatprobeError


def lock_path(target: str | os.PathLike) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def holder_pid(target: str | os.PathLike) -> int | None:
    """Process id written by the current holder of `target`'s lock, if any is readable."""
    try:
        text = lock_path(target).read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def is_locked(target: str | os.PathLike) -> bool:
    path = lock_path(target)
    if not path.exists():
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class WriterLock:
    """An exclusive lock on `target` for this process; `release()` (or the context) frees it."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target)
        self.path = lock_path(self.target)
        self._fd: int | None = None
        self.depth = 0

    def acquire(self) -> WriterLock:
        if self._fd is not None:
            self.depth += 1
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    return self  # a folder we cannot write: nothing to lock (writing there fails on its own)
                if exc.errno == errno.EISDIR:
                    raise MatprobeError(
                        f"{self.path} is a folder where the lock file of {self.target} belongs (no matprobe "
                        "writer makes one); move or remove that folder, then rerun") from None
                raise
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if not isinstance(exc, BlockingIOError):
                    if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                        return self  # a file system without flock (some network mounts): unlocked, as before
                    raise
                pid = holder_pid(self.target)
                who = f"process {pid}" if pid else "another process"
                raise InUseError(
                    f"{self.target}: in use by {who} (a running matprobe writer); wait for it to finish, "
                    "or stop it, then rerun"
                ) from None
            try:  # the holder before us may have unlinked the file we locked: lock the current one
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self._fd = fd
        self.depth = 1
        _HELD[str(self.target.resolve())] = self
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        self.depth -= 1
        if self.depth > 0:
            return
        fd, self._fd = self._fd, None
        _HELD.pop(str(self.target.resolve()), None)
        try:  # removed while still held, so no one can lock the old file after us (see acquire)
            os.unlink(self.path)
        except OSError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# Locks this process holds, by resolved target: a writer that re-enters (finalize reopening
# the store it writes) shares its lock instead of being refused by itself.
_HELD: dict[str, WriterLock] = {}


def writer_lock(target: str | os.PathLike) -> WriterLock:
    """The lock for `target`: this process's if it already holds one, else a new one (unacquired)."""
    return _HELD.get(str(Path(target).resolve())) or WriterLock(target)


def locked_output(arg: str):
    """Decorator: hold `target`'s writer lock while the function runs; `arg` names the parameter."""

    def wrap(fn):
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def inner(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs)
            target = bound.arguments.get(arg)
            if target is None or not _is_rank_zero():
                return fn(*args, **kwargs)
            with writer_lock(target):
                return fn(*args, **kwargs)

        return inner

    return wrap


def _is_rank_zero() -> bool:
    # under torchrun each rank writes its own shard; rank 0 owns the final output
    return os.environ.get("RANK", "0") == "0"


def check_not_input(out: str | os.PathLike | None, *inputs: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse an output that is one of the command's own inputs (it would be replaced)."""
    if out is None:
        return
    out_p = Path(out)
    for src in inputs:
        if src is None:
            continue
        src_p = Path(src)
        same = False
        try:
            same = out_p.exists() and src_p.exists() and os.path.samefile(out_p, src_p)
        except OSError:
            same = False
        if same or out_p.resolve() == src_p.resolve():
            raise MatprobeError(
                f"{flag} {out} is also an input of this command ({src}); writing it would replace the "
                f"input: pass another {flag} file"
            )


def check_output_location(out: str | os.PathLike | None, flag: str = "--out") -> None:
    """Refuse, before any work, an output whose folder cannot be created or written."""
    if out is None:
        return
    folder = Path(out).absolute().parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise MatprobeError(f"{flag} {out}: {probe} is a file, not a folder; choose another output path")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise MatprobeError(f"{flag} {out}: folder {probe} is not writable for you; choose another output "
                            "folder or fix its permissions")
