"""One `matprobe run` per run directory. A user study started two runs on one [run] out 1 s apart: both
exited 2, the first (legitimate) one because the second's worker held a store's lock, with a message
that advised deleting a file another process was using. The run now holds its directory's lock for
its whole length; a second run is refused at once, naming the holder, and the first goes on."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from matprobe.errors import InUseError, MatprobeError
from matprobe.pipeline import load_pipeline, run_lock
from matprobe.preflight import check_pipeline

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "demo" / "pipeline.toml"

HOLDER = r"""
import sys, time
from pathlib import Path
from matprobe.pipeline import run_lock
lock = run_lock(Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


@pytest.fixture
def held_run(tmp_path):
    """A run directory whose lock another process holds (as a running `matprobe run` does)."""
    run = tmp_path / "twin run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    yield run, holder.pid
    holder.kill()
    holder.wait()


def test_a_second_run_on_a_held_run_directory_is_refused_at_once(held_run):
    run, pid = held_run
    cfg = dataclasses.replace(load_pipeline(DEMO), out=str(run))
    message = f"{run}: in use by process {pid} (another `matprobe run` writes this run directory)"
    with pytest.raises(MatprobeError, match="in use by") as err:
        check_pipeline(cfg)  # the preflight, before anything is loaded
    assert str(err.value).startswith(message) and "give another [run] out / --out" in str(err.value)
    with pytest.raises(InUseError) as err:  # the race past the preflight: the lock itself refuses
        run_lock(run)
    assert str(err.value).startswith(message)


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lock = run_lock(run)
    probe = "import sys; from pathlib import Path; from matprobe.pipeline import run_lock; run_lock(Path(sys.argv[1]))"
    busy = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True)
    assert busy.returncode != 0 and "InUseError" in busy.stderr
    lock.release()
    free = subprocess.run([sys.executable, "-c", probe, str(run)], capture_output=True, text=True)
    assert free.returncode == 0, free.stderr


@pytest.mark.parametrize("given", ['"probe,ksg"', '["probe", "ksg"]'])
def test_a_pipeline_with_several_estimators_says_it_takes_one(tmp_path, given):
    """A study wrote estimator = "probe,ksg" (as `mi --estimator` takes it): told "unknown estimator
    'probe,ksg'", or for a list "'estimator' must be str"."""
    text = DEMO.read_text()
    assert '\nestimator = "probe"\n' in text
    toml = tmp_path / "p.toml"
    toml.write_text(text.replace('\nestimator = "probe"\n', f"\nestimator = {given}\n", 1))
    with pytest.raises(MatprobeError) as err:
        load_pipeline(toml)
    said = str(err.value)
    assert said.startswith(f"{toml}: estimator = ") and "a run uses one estimator" in said
    assert "estimator = 'probe'" in said and "`matprobe mi STORE --estimator probe,ksg`" in said
