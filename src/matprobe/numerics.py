"""Portable numerics: the same bits whichever kernels one x86-64 CPU dispatches to.

The libraries under matprobe pick their kernels from the CPU they run on: torch's ATen
(default / AVX2 / AVX512 builds of every vectorised kernel; its random normal fill, softmax,
exp and reductions round differently in each), MKL (torch's matrix products), oneDNN
(torch's convolutions), OpenBLAS (numpy's and scipy's matrix products, a kernel per core
type), numpy's own SIMD loops (exp, log, ...) and glibc's libm (FMA variants of exp, log,
pow, sin). Each choice moves the last bits of a result, fine-tuning and the MI probes
amplify them, and the demo's numbers moved in the third decimal from one machine to the
next (docs/design.md, "Portable numerics").

`PORTABLE_ENV` pins every one of those choices to the code path that every x86-64 CPU has,
single-threaded. That makes a run independent of the kernels its CPU offers, not of the CPU:
the demo made on an AMD EPYC and on an Intel Xeon under these settings differed (docs/design.md,
"Not across CPU vendors"). Most of the settings are read once, when a library loads or first
computes (glibc reads GLIBC_TUNABLES before Python starts), so they cannot be switched on
inside a running process: `portable_environment()` builds the environment a fresh process
is started with (the pipeline runs the whole study in such a process,
`pipeline.run_pipeline`), and `portable_problems()` checks in that process and in each of
its workers that every setting is in force, the libraries' own answers included.
This module imports nothing from matprobe and no numeric library at import time.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

# Marker set in the environment of a process started with PORTABLE_ENV (and inherited by
# its workers): the pipeline and the worker initializer check the settings when it is set.
MARKER = "MATPROBE_PORTABLE_NUMERICS"

# glibc's libm picks an FMA/AVX2 (or AMD FMA4) variant of exp, log, pow, sin, ... when the
# CPU has one; these three switched off give the SSE2 variants every x86-64 CPU runs.
# Names as glibc >= 2.33 spells them (older glibc ignores them: see docs/design.md).
GLIBC_HWCAPS = "glibc.cpu.hwcaps=-AVX2,-FMA,-FMA4"

PORTABLE_ENV: dict[str, str] = {
    # torch: the scalar ("default") build of every ATen kernel; at demo size it costs no
    # measurable CPU time against AVX512 (experiments/benchmarks/RESULTS.md, issue 20)
    "ATEN_CPU_CAPABILITY": "default",
    # MKL: conditional numerical reproducibility, the code path of any SSE2 CPU, and STRICT
    # (results independent of memory alignment)
    "MKL_CBWR": "COMPATIBLE,STRICT",
    # oneDNN: the lowest ISA it generates code for; torch's use of it is also switched off
    # in-process (apply_portable), so convolutions go through MKL under MKL_CBWR
    "ONEDNN_MAX_CPU_ISA": "SSE41",
    # OpenBLAS (numpy's and scipy's copies): the SSE3 kernels every x86-64 CPU runs
    "OPENBLAS_CORETYPE": "Prescott",
    # numpy: no runtime-dispatched SIMD loops (its X86_V2 baseline only)
    "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
    # one thread everywhere: a reduction split over threads sums in a machine-dependent order
    # (the pipeline's parallelism is its worker processes)
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
}

# torch's name for the ATen level pinned above; the OpenBLAS core names the pin reports
# (threadpoolctl; OpenBLAS reports the Prescott table under its alias Katmai)
_ATEN_CAPABILITY = "DEFAULT"
_OPENBLAS_CORES = {"prescott", "katmai"}
# mkl_cbwr_get(MKL_CBWR_ALL): MKL_CBWR_COMPATIBLE (3) | MKL_CBWR_STRICT (0x10000)
_MKL_CBWR_EXPECTED = 3 | 0x10000


def supported_platform() -> bool:
    """Bit-identical results are promised on x86-64 Linux only (the settings are x86's)."""
    return sys.platform.startswith("linux") and platform.machine().lower() in ("x86_64", "amd64")


def _merge_tunables(current: str | None) -> str:
    """GLIBC_TUNABLES with our hwcaps entry, the user's other tunables kept."""
    keep = [t for t in (current or "").split(":") if t and not t.startswith("glibc.cpu.hwcaps=")]
    return ":".join([*keep, GLIBC_HWCAPS])


def portable_environment(base: Mapping[str, str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(environment for a portable process, notes naming each user setting it overrides).

    A variable the user set to another value is overridden, never silently: each override
    gets a note the caller prints."""
    env = dict(os.environ if base is None else base)
    notes = []
    for key, value in PORTABLE_ENV.items():
        if key in env and env[key] != value:
            notes.append(f"{key}={env[key]} replaced by {value}")
        env[key] = value
    tunables = _merge_tunables(env.get("GLIBC_TUNABLES"))
    user_hwcaps = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t.startswith("glibc.cpu.hwcaps=")]
    if user_hwcaps and user_hwcaps != [GLIBC_HWCAPS]:
        notes.append(f"GLIBC_TUNABLES {user_hwcaps[0]} replaced by {GLIBC_HWCAPS}")
    env["GLIBC_TUNABLES"] = tunables
    env[MARKER] = "1"
    return env, notes


def _start_environment() -> dict[str, str]:
    """The environment this process was started with (what the loader and the libraries read
    when they loaded), not os.environ as changed since."""
    try:
        raw = open("/proc/self/environ", "rb").read()
    except OSError:
        return dict(os.environ)
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def started_portable() -> bool:
    """Whether this process was started with every PORTABLE_ENV setting."""
    env = _start_environment()
    return (all(env.get(k) == v for k, v in PORTABLE_ENV.items())
            and GLIBC_HWCAPS in env.get("GLIBC_TUNABLES", "").split(":"))


def apply_portable() -> None:
    """The in-process half (torch must be importable): one torch thread, torch's oneDNN off."""
    import torch

    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False


def _mkl_cbwr() -> int | None:
    """MKL's reproducibility mode as MKL reports it (None when torch carries no MKL)."""
    import ctypes

    import torch

    lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    try:
        getter = ctypes.CDLL(lib).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return None
    getter.restype, getter.argtypes = ctypes.c_int, [ctypes.c_int]
    return int(getter(-1))  # MKL_CBWR_ALL


def portable_problems() -> list[str]:
    """What is not in force of the portable settings in this process (empty: all is).

    Checks the start environment and then asks each library: torch's ATen level, threads and
    oneDNN switch, MKL's reproducibility mode, numpy's active SIMD targets, OpenBLAS's core
    type and threads. Call it after apply_portable()."""
    problems = []
    env = _start_environment()
    for key, value in PORTABLE_ENV.items():
        if env.get(key) != value:
            problems.append(f"{key} is {env.get(key)!r} at process start, not {value!r}")
    if GLIBC_HWCAPS not in env.get("GLIBC_TUNABLES", "").split(":"):
        problems.append(f"GLIBC_TUNABLES lacks {GLIBC_HWCAPS} at process start")
    import numpy as np
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability != _ATEN_CAPABILITY:
        problems.append(f"torch dispatches {capability} kernels, not {_ATEN_CAPABILITY}")
    if torch.get_num_threads() != 1:
        problems.append(f"torch uses {torch.get_num_threads()} threads, not 1")
    if torch.backends.mkldnn.enabled:
        problems.append("torch's oneDNN is enabled")
    cbwr = _mkl_cbwr()
    if cbwr is not None and cbwr != _MKL_CBWR_EXPECTED:
        problems.append(f"MKL reproducibility mode is {cbwr}, not COMPATIBLE,STRICT ({_MKL_CBWR_EXPECTED})")
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    active = [f for f in __cpu_dispatch__ if __cpu_features__.get(f)]
    if active:
        problems.append(f"numpy dispatches {', '.join(active)} loops")
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, so it is checked too)
    from threadpoolctl import threadpool_info

    for lib in threadpool_info():
        name = os.path.basename(lib.get("filepath", ""))
        if lib.get("internal_api") == "openblas" and str(lib.get("architecture")).lower() not in _OPENBLAS_CORES:
            problems.append(f"{name} runs {lib.get('architecture')} kernels, not Prescott")
        if lib.get("user_api") == "blas" and lib.get("num_threads") != 1:
            problems.append(f"{name} uses {lib.get('num_threads')} threads, not 1")
    del np
    return problems


def ensure_portable_here() -> None:
    """In a process started with the portable environment (and its workers): apply the
    in-process settings and check them all; a failure is a matprobe bug, not a user's."""
    apply_portable()
    problems = portable_problems()
    if problems:
        raise RuntimeError("portable numerics not in force: " + "; ".join(problems))


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo's "model name"; elsewhere `platform.processor()`):
    without portable numerics a number reproduces to the bit only on the CPU model that made it
    (a reviewer could not tell which from a run's files)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Processor", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numerics_summary() -> dict:
    """What run.json and an MI results file record: whether this process ran with portable
    numerics, the CPU model and machine, and the kernels torch dispatched (when torch is loaded)."""
    out: dict = {"portable": started_portable(), "cpu": cpu_model(), "machine": platform.machine()}
    if out["portable"]:
        out["settings"] = {**PORTABLE_ENV, "GLIBC_TUNABLES": GLIBC_HWCAPS}
    torch = sys.modules.get("torch")
    if torch is not None:
        out["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return out


def call_portable(fn, *args, say=None, **kwargs):
    """`fn(*args, **kwargs)` computed under portable numerics, as a portable pipeline run computes:
    in a fresh Python process started with `portable_environment()` (the pipeline's
    `_run_portable` starts its run the same way), which checks every setting
    (`ensure_portable_here`) before it calls `fn`; its result (or exception) comes back pickled,
    its output and progress bars share this terminal. `fn` must be importable by name (a module's
    function) and its arguments and result picklable. Called in a process already started
    portable, `fn` runs here; on a platform the settings are not for, too, after one `say` line.

    say: where the notes go (a user's setting replaced, the platform), default stderr."""
    import pickle
    import subprocess
    import tempfile

    def note(line: str) -> None:
        (say or (lambda s: print(s, file=sys.stderr, flush=True)))(line)

    if not supported_platform():
        note("note: portable numerics are x86-64 Linux settings; on this platform the numbers may differ "
             "from a portable run's in the last digits")
        return fn(*args, **kwargs)
    if started_portable():
        ensure_portable_here()
        return fn(*args, **kwargs)
    env, overrides = portable_environment()
    for line in overrides:  # a user's setting is replaced, never silently
        note(f"note: {line} for this command (portable numerics: the same results on every x86-64 CPU; "
             "docs/design.md)")
    # the child imports this same matprobe, whatever put it on this process's path
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory(prefix="matprobe-portable-") as tmp:
        job, result = os.path.join(tmp, "job.pkl"), os.path.join(tmp, "result.pkl")
        with open(job, "wb") as fh:
            pickle.dump((fn, args, kwargs), fh)
        proc = subprocess.Popen([sys.executable, "-c", "from matprobe.numerics import _portable_call_child; "
                                 "_portable_call_child()", job, result], env=env)
        try:
            rc = proc.wait()
        except BaseException:
            stop_child(proc)
            raise
        try:
            with open(result, "rb") as fh:
                outcome, failed = pickle.load(fh)
        except FileNotFoundError:
            raise RuntimeError(f"the portable-numerics process exited with status {rc} without a result") from None
    if failed:
        raise outcome
    return outcome


def stop_child(proc) -> None:
    """What stops this process stops its portable child (a `subprocess.Popen`) too: Ctrl-C on a
    terminal reaches the child on its own; anything else (a signal sent to this process alone, an
    error) is passed on as SIGINT after a second, so the child never runs on alone."""
    import signal
    import subprocess

    try:
        proc.wait(timeout=1)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
    proc.wait()


def _portable_call_child() -> None:
    """Entry point of the process `call_portable` starts: argv = job pickle, result pickle."""
    import pickle
    import traceback

    job, result = sys.argv[1], sys.argv[2]
    with open(job, "rb") as fh:
        fn, args, kwargs = pickle.load(fh)
    try:
        ensure_portable_here()
        outcome, failed = fn(*args, **kwargs), False
    except BaseException as exc:  # noqa: BLE001  (handed to the caller, which raises it)
        if not type(exc).__module__.startswith("matprobe"):
            exc.add_note("in the portable-numerics process:\n" + "".join(traceback.format_exception(exc)))
        outcome, failed = exc, True
    try:
        data = pickle.dumps((outcome, failed))
    except Exception:  # noqa: BLE001  (a result or exception that does not pickle)
        data = pickle.dumps((RuntimeError(f"{type(outcome).__name__}: {outcome}"), True))
    with open(result, "wb") as fh:
        fh.write(data)
