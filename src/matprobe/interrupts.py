"""Ctrl-C (SIGINT) and SIGTERM: one line saying what is kept and how to resume, outputs intact.

Every long command already keeps its finished work as it goes (extract marks rows done batch
by batch, sweep rewrites its table after each cell, run keeps each step's files, every file is
written under a temporary name and renamed when complete), so an interrupt only has to stop
cleanly: SIGTERM is turned into the same exception as Ctrl-C, worker processes leave the
signal to their parent (no traceback per worker), and the CLI prints `interrupted: ...`.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + signal number, as shells report it


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised where Python is when it arrives (as Ctrl-C raises KeyboardInterrupt)."""

    signum = signal.SIGTERM


def _raise_interrupted(signum, frame):
    raise Interrupted()


def install_handlers() -> None:
    """SIGTERM raises `Interrupted` in the main thread, so `finally` blocks close files as for Ctrl-C."""
    try:
        signal.signal(signal.SIGTERM, _raise_interrupted)
    except (ValueError, OSError):  # not the main thread (an embedding application): leave it be
        pass


class DeferredInterrupts:
    """Within the block, Ctrl-C and SIGTERM set a flag; `check()` raises them at a safe point.

    A signal's exception is raised wherever Python happens to be. Inside a finaliser (`__del__`,
    a weakref callback: torch, h5py and PIL run them during a batch) it is printed as "Exception
    ignored" and dropped, and the command then runs to its end as if never interrupted (the
    Ctrl-C-during-extract test saw exit 0 twice in about 40 runs). Deferred to `check()`, which a
    loop calls between units of work, the signal cannot be lost and always stops at a unit's
    boundary. A second signal raises at once (a unit that takes minutes can still be cut
    short). A signal still pending when the block ends raises there. Only signals with a Python
    handler are deferred, and `check()` runs that handler: outside the main thread, for a signal
    the process ignores (a shell's background job ignores SIGINT) or leaves at its default
    (SIGTERM outside the CLI ends the process), it does nothing.

    >>> import os
    >>> previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's Ctrl-C
    >>> with DeferredInterrupts() as interrupts:
    ...     os.kill(os.getpid(), signal.SIGINT)  # delivered, not raised
    ...     try:
    ...         interrupts.check()
    ...     except KeyboardInterrupt:
    ...         print("stopped at the check")
    stopped at the check
    >>> _ = signal.signal(signal.SIGINT, previous)
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.pending: int | None = None
        self._handlers: dict = {}  # the Python handler each deferred signal had (restored on exit)

    def _handle(self, signum, frame):
        if self.pending is not None:  # the second signal: stop now
            self._handlers[signum](signum, frame)
        self.pending = signum

    def check(self) -> None:
        """Run the pending signal's own handler now (Python's raises KeyboardInterrupt, the CLI's
        SIGTERM handler `Interrupted`; another program's handler does what it does)."""
        if self.pending is not None:
            signum, self.pending = self.pending, None
            self._handlers[signum](signum, None)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                old = signal.getsignal(sig)
                if callable(old):  # a Python handler; SIG_DFL and SIG_IGN are left alone
                    self._handlers[sig] = old
                    signal.signal(sig, self._handle)
        return self

    def __exit__(self, exc_type, exc, tb):
        for sig, old in self._handlers.items():
            signal.signal(sig, old)
        try:
            if exc_type is None:
                self.check()
        finally:
            self._handlers = {}
        return False


def ignore_in_worker() -> None:
    """Worker-process initializer: Ctrl-C reaches the whole process group; the parent handles it.
    A worker also ends with its parent (`end_with_parent`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    end_with_parent()


def end_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux `prctl(PR_SET_PDEATHSIG)`;
    elsewhere nothing). A `run` killed with SIGKILL, which no handler sees, left its pool's workers
    computing on, then idle on their pipe with 440 MB each, until killed by hand (a user study)."""
    import multiprocessing

    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl here: the workers end as before, with the pool
        return
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def stop_pool(pool) -> None:
    """Stop a ProcessPoolExecutor now: queued jobs cancelled, running workers terminated (their
    results were not going to be used; finished ones are already written)."""
    # the workers are read before shutdown: it sets the executor's `_processes` to None (Python
    # 3.11), and reading it afterwards turned a Ctrl-C into an AttributeError with the workers
    # left running
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        if proc.is_alive():
            proc.terminate()
    for proc in procs:
        proc.join(timeout=2)
    # a worker still alive 2 s after terminate() (seen on a loaded machine) is killed
    for proc in procs:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)


def exit_code(exc: BaseException) -> int:
    return EXIT_CODES.get(getattr(exc, "signum", signal.SIGINT), 130)


def rerun_line() -> str:
    """The command as the user typed it (to resume it)."""
    args = " ".join(shlex.quote(a) for a in sys.argv[1:])
    return f"matprobe {args}".strip()


def _store_left(out) -> bool:
    """Whether an interrupted `extract` left a store at `out`, or (under torchrun) a shard beside it
    (`extract.distributed.shard_path`: <out>.shards/rank<r>-of-<w>.h5)."""
    from pathlib import Path

    out = Path(out)
    shards = out.parent / f"{out.name}.shards"
    return out.exists() or (shards.is_dir() and any(shards.glob("rank*-of-*.h5")))


def interrupt_message(command: str, kwargs: dict, exc: BaseException) -> str:
    """One line for an interrupted `command` (the CLI function's name) with its arguments."""
    what = "SIGTERM" if isinstance(exc, Interrupted) else "Ctrl-C"
    again = f"`{rerun_line()}`"
    out = kwargs.get("out")
    if command == "extract_command" and out is not None and not _store_left(out):
        # stopped before its first batch was done (loading the model, say): the runner removes a store
        # with no finished row (`extract.runner._discard_if_empty`), so there is nothing to resume
        kept = (f"no batch was finished, so no store was written ({out} does not exist) and there is nothing "
                "to resume")
        how = f"rerun {again} to extract from the start"
    elif command == "extract_command":
        kept = f"{out} keeps every finished batch (rows are marked done as they are written)"
        how = f"rerun {again} to resume from the first unfinished row"
    elif command == "sweep_command":
        kept = f"{out} keeps every finished cell (the table is rewritten after each)"
        how = f"rerun {again} to resume with the remaining cells"
    elif command in ("run_command", "demo_command"):
        # `run` names its directory in the pipeline file: the caller passes it as `out`
        # what the run directory holds (a run stopped at 5 s said it kept "data, checkpoints, stores, MI
        # and check files" over one empty stores/ folder)
        held = [] if not out else [part for part in ("data", "checkpoints", "stores", "mi", "check")
                                   if (Path(out) / part).is_dir() and any((Path(out) / part).iterdir())]
        if out and not held:
            kept = f"{out} holds no finished step yet"
            how = f"rerun {again} to start again"
        else:
            kept = (f"{out or 'the run directory'} keeps every finished step"
                    + (f" (so far: {', '.join(held)})" if held else " (data, checkpoints, stores, MI and check files)"))
            how = f"rerun {again} to resume: finished steps are not redone"
    elif command == "mi_command":
        kept = f"nothing was written ({out} is written when every term is done)" if out else "nothing was written"
        how = f"rerun {again}"
    else:
        kept = "no file was left half-written (outputs are renamed into place only when complete)"
        how = f"rerun {again}"
    return f"interrupted ({what}): {kept}; {how}"
