"""One progress helper for everything that takes more than a few seconds.

On a terminal: a rich progress bar on stderr. In a Jupyter notebook: a tqdm.auto bar (a
widget where ipywidgets is installed, else a text bar that redraws in place). Off a terminal
(pipes, cluster logs): a plain line now and then (at most every `interval`
seconds, 10 unless the environment sets MATPROBE_PROGRESS_INTERVAL, and at the end), so logs
show the work moving without a line per step.
Silent when quiet (`matprobe --quiet`, `set_quiet(True)`) or when disabled. `matprobe --quiet` also
sets QUIET_ENV in the environment, so the processes a command starts (portable numerics, a sweep's
workers) start quiet too.

    with track("mi", total=4) as bar:
        for term in terms:
            bar.update(description=term)
            ...
            bar.advance()

`say(msg)` prints one status line the same way (stderr, nothing when quiet).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

QUIET_ENV = "MATPROBE_QUIET"  # "1": a process started by `matprobe --quiet` is quiet from the start
_QUIET = os.environ.get(QUIET_ENV) == "1"


def set_quiet(quiet: bool = True) -> None:
    global _QUIET
    _QUIET = bool(quiet)


def is_quiet() -> bool:
    return _QUIET


def _stderr() -> TextIO:
    return sys.stderr


def _is_tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def say(message: str) -> None:
    """One status line on stderr (nothing when quiet)."""
    if _QUIET:
        return
    stream = _stderr()
    stream.write(message.rstrip("\n") + "\n")
    stream.flush()


def in_notebook() -> bool:
    """True inside a Jupyter (IPython kernel) session; never imports IPython itself."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:  # an IPython too old or a stand-in without get_ipython
        return False
    # ZMQInteractiveShell: Jupyter's kernel; "Shell": Google Colab's subclass of it
    return shell is not None and type(shell).__name__ in ("ZMQInteractiveShell", "Shell")


ANNOUNCE_AFTER_S = 1.0  # off a terminal: the start line waits this long


class Progress:
    """A counted task: `advance()`, `update(description=...)`; use as a context manager."""

    def __init__(self, label: str, total: int | None = None, completed: int = 0,
                 enabled: bool = True, interval: float | None = None, unit: str = ""):
        self.label = label
        self.total = total
        self.completed = completed
        self.description = ""
        self.unit = unit
        self.interval = default_interval() if interval is None else interval
        self.enabled = enabled and not _QUIET
        self._rich = None
        self._tqdm = None
        self._task = None
        self._t0 = time.perf_counter()
        self._last = self._t0
        self._start_done = completed
        self._stream = _stderr()
        self._announcer = None
        self._announced = False
        import threading

        self._lock = threading.Lock()

    # -- lifecycle
    def __enter__(self) -> "Progress":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._failed = exc[0] is not None
        self.stop()

    def start(self) -> "Progress":
        if not self.enabled:
            return self
        if _is_tty(self._stream):
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            cols = [TextColumn(f"[bold]{self.label}[/]"), BarColumn()]
            cols += [MofNCompleteColumn(), TimeRemainingColumn()] if self.total else [TimeElapsedColumn()]
            if self.unit:
                cols.append(_rate_column(self.unit))
            cols.append(TextColumn("{task.description}"))
            self._rich = RichProgress(*cols, console=Console(file=self._stream), transient=False)
            self._rich.start()
            self._task = self._rich.add_task("", total=self.total, completed=self.completed)
        elif in_notebook():
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=self.total, initial=self.completed, desc=self.label, unit=f" {self.unit}"
                              if self.unit else "it", file=self._stream, dynamic_ncols=True)
        else:
            # announced after a moment, so an input refused at once prints its error line alone
            import threading

            self._announcer = threading.Timer(ANNOUNCE_AFTER_S, self._announce)
            self._announcer.daemon = True
            self._announcer.start()
        return self

    def _announce(self) -> None:
        with self._lock:
            if self._announced or not self.enabled:
                return
            self._announced = True
            todo = f"{self.total - self._start_done} {self.unit or 'steps'} to do" if self.total else "started"
            done = f" ({self._start_done} already done)" if self._start_done else ""
            self._stream.write(f"{self.label}: {todo}{done}\n")
            self._stream.flush()

    def stop(self) -> None:
        if self._announcer is not None:
            self._announcer.cancel()
            if self.completed > self._start_done:
                self._announce()
        if self._rich is not None:
            self._rich.stop()
            self._rich = None
        elif self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.enabled and self.completed > self._start_done:
            self._line(final=True)
        self.enabled = False

    # -- updates
    def update(self, description: str | None = None, completed: int | None = None) -> None:
        if description is not None:
            self.description = description
        if completed is not None:
            self.completed = completed
        if self._rich is not None:
            kw = {"description": self.description}
            if completed is not None:
                kw["completed"] = completed
            self._rich.update(self._task, **kw)
        elif self._tqdm is not None:
            if completed is not None:
                self._tqdm.n = completed
            self._tqdm.set_postfix_str(self.description, refresh=True)

    def advance(self, n: int = 1, description: str | None = None) -> None:
        self.completed += n
        if description is not None:
            self.description = description
        if not self.enabled:
            return
        if self._rich is not None:
            self._rich.update(self._task, advance=n, description=self.description)
            return
        if self._tqdm is not None:
            if description is not None:
                self._tqdm.set_postfix_str(self.description, refresh=False)
            self._tqdm.update(n)
            return
        self._announce()
        now = time.perf_counter()
        if now - self._last >= self.interval:
            self._line()

    def _line(self, final: bool = False) -> None:
        now = time.perf_counter()
        self._last = now
        elapsed = now - self._t0
        count = f"{self.completed}/{self.total}" if self.total else f"{self.completed}"
        eta = ""
        done_here = self.completed - self._start_done
        if self.total and done_here > 0 and not final:
            left = (self.total - self.completed) * elapsed / done_here
            eta = f", about {left:.0f} s left"
        what = f" {self.unit}" if self.unit else ""
        if self.unit and done_here > 0 and elapsed > 0:
            what += f" ({done_here / elapsed:.2f} {self.unit}/s)"
        desc = f" ({self.description})" if self.description and not final else ""
        # "done" only for work that finished: a study read "sweep: done 13/16 cells" before "interrupted"
        finished = not getattr(self, "_failed", False) and (not self.total or self.completed >= self.total)
        verb = ("done" if finished else "stopped at") if final else "at"
        self._stream.write(f"{self.label}: {verb} {count}{what} after {elapsed:.0f} s{eta}{desc}\n")
        self._stream.flush()


def _rate_column(unit: str):
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"-- {unit}/s" if speed is None else f"{speed:.2f} {unit}/s")

    return RateColumn()


def default_interval() -> float:
    """Seconds between plain progress lines off a terminal: MATPROBE_PROGRESS_INTERVAL when it is a
    positive number (a cluster log may want fewer lines, a test an early one), else 10."""
    import os

    try:
        value = float(os.environ.get("MATPROBE_PROGRESS_INTERVAL", ""))
    except ValueError:
        return 10.0
    return value if value > 0 else 10.0


def track(label: str, total: int | None = None, completed: int = 0, enabled: bool = True,
          interval: float | None = None, unit: str = "") -> Progress:
    """A Progress for `label` (see the module docstring)."""
    return Progress(label, total, completed, enabled, interval, unit)
