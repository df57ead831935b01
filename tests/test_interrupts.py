"""Deferred Ctrl-C / SIGTERM (interrupts.DeferredInterrupts): a signal that arrives while a
library's finaliser runs is kept and raised at the loop's next check, never dropped."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time

import pytest

from matprobe.interrupts import DeferredInterrupts, Interrupted, install_handlers


class _SignalsOnDelete:
    """A finaliser that receives a signal, as torch/h5py/PIL finalisers may during a batch."""

    def __init__(self, sig):
        self.sig = sig

    def __del__(self):
        os.kill(os.getpid(), self.sig)


@pytest.fixture
def restore_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_a_ctrl_c_inside_a_finaliser_is_lost_without_deferral_and_kept_with_it(restore_handlers, monkeypatch):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dropped = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: dropped.append(u.exc_type))
    # the failure mode: the KeyboardInterrupt is raised in __del__, reported as unraisable, dropped
    obj = _SignalsOnDelete(signal.SIGINT)
    del obj
    gc.collect()
    assert dropped == [KeyboardInterrupt]  # and nothing was raised here
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupts() as interrupts:
            obj = _SignalsOnDelete(signal.SIGINT)
            del obj
            gc.collect()
            assert interrupts.pending == signal.SIGINT  # delivered to the flag, not raised yet
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored


def test_sigterm_is_deferred_as_interrupted_when_the_cli_handler_is_installed(restore_handlers):
    install_handlers()
    cli_handler = signal.getsignal(signal.SIGTERM)
    with DeferredInterrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(Interrupted):
            interrupts.check()
        interrupts.check()  # raised once: nothing pending any more
    assert signal.getsignal(signal.SIGTERM) is cli_handler


def test_a_second_signal_stops_at_once_and_a_pending_one_raises_when_the_block_ends(restore_handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupts():
            os.kill(os.getpid(), signal.SIGINT)
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)  # the second one raises where it lands
            os.kill(os.getpid(), signal.SIGINT)  # pending again, never checked in the block
    reached_exit = []
    with pytest.raises(KeyboardInterrupt):
        with DeferredInterrupts():
            os.kill(os.getpid(), signal.SIGINT)
            reached_exit.append(True)
    assert reached_exit == [True]


def test_ignored_and_default_signals_are_left_alone(restore_handlers):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a shell's background job
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a library caller: SIGTERM ends the process
    with DeferredInterrupts() as interrupts:
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGINT)  # ignored
        interrupts.check()
    assert interrupts.pending is None


def test_another_programs_handler_runs_at_the_check(restore_handlers):
    # an embedding application's own SIGINT handler (one that counts instead of raising) is run
    # at the check, not replaced by a KeyboardInterrupt
    seen = []
    signal.signal(signal.SIGINT, lambda signum, frame: seen.append(signum))
    with DeferredInterrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGINT)
        assert seen == []
        interrupts.check()
        assert seen == [signal.SIGINT]
    assert seen == [signal.SIGINT]  # nothing pending at the exit


def _all_ended(procs, wait: float = 10.0) -> bool:
    """Whether every process has ended, within `wait` seconds: the executor's own thread reaps
    the workers too, and is_alive() can read True for a moment while it does."""
    deadline = time.monotonic() + wait
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(p.is_alive() for p in procs)


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_stop_pool_terminates_running_workers_and_does_not_raise():
    # Python 3.11's shutdown(wait=False) sets the executor's worker table to None; stop_pool read
    # it afterwards, so a Ctrl-C during `matprobe run` became an AttributeError with the workers
    # still running
    from concurrent.futures import ProcessPoolExecutor

    from matprobe.interrupts import ignore_in_worker, stop_pool

    pool = ProcessPoolExecutor(max_workers=2, initializer=ignore_in_worker)
    futures = [pool.submit(_sleep, 60.0) for _ in range(4)]
    deadline = time.monotonic() + 60
    while sum(f.running() for f in futures) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    procs = list(pool._processes.values())
    assert procs and all(p.is_alive() for p in procs)
    t0 = time.monotonic()
    stop_pool(pool)
    assert time.monotonic() - t0 < 30
    assert _all_ended(procs)


def test_stop_pool_stops_workers_that_have_not_run_their_initializer(restore_handlers):
    # with matprobe's deferring handlers installed (as in the CLI) and the workers just forked,
    # some maybe not yet through `ignore_in_worker`: stop_pool ends every one (terminate, then
    # kill where a worker outlives it)
    from concurrent.futures import ProcessPoolExecutor

    from matprobe.interrupts import ignore_in_worker, stop_pool

    install_handlers()
    pool = ProcessPoolExecutor(max_workers=2, initializer=ignore_in_worker)
    for _ in range(4):
        pool.submit(_sleep, 60.0)
    procs = list(pool._processes.values())
    stop_pool(pool)
    assert _all_ended(procs)


WORKER_SCRIPT = r"""
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from matprobe.interrupts import ignore_in_worker

def job(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(60)

if __name__ == "__main__":
    with ProcessPoolExecutor(max_workers=1, initializer=ignore_in_worker) as pool:
        pool.submit(job, sys.argv[1]).result()
"""


def test_pool_workers_end_with_a_parent_killed_by_sigkill(tmp_path):
    """A user study killed `run` with SIGKILL (no handler sees it): its workers computed on, then sat on
    their pipe for minutes. With the initializer every pool of matprobe uses, they end with the parent."""
    import subprocess
    import sys
    import time

    script, pid_file = tmp_path / "pool.py", tmp_path / "worker.pid"
    script.write_text(WORKER_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), str(pid_file)])
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        worker = int(pid_file.read_text())
        parent.kill()
        parent.wait()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            # a zombie (ended, its exit status not collected by init yet) counts as ended
            try:
                with open(f"/proc/{worker}/stat") as stat:
                    if stat.read().split(") ")[1].startswith("Z"):
                        break
            except FileNotFoundError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the pool's worker outlived its parent by 10 s")
    finally:
        if parent.poll() is None:
            parent.kill()
