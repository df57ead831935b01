"""Issue 24: one error module. Every error a user can fix (a `MatprobeError` subclass) is declared in
`matprobe.errors`, so one file lists what matprobe can refuse and the CLI's one-line handling covers
them all; the modules that raise them import them from there."""

from __future__ import annotations

import importlib
import pkgutil

import matprobe
from matprobe import errors


def _all_subclasses(cls) -> set[type]:
    out = set()
    for sub in cls.__subclasses__():
        out |= {sub} | _all_subclasses(sub)
    return out


def test_every_matprobe_error_is_declared_in_the_error_module():
    skipped = []
    for info in pkgutil.walk_packages(matprobe.__path__, "matprobe."):
        if info.name.endswith("__main__"):  # running it is the CLI
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # an optional dependency (e.g. the distributed launcher's)
            skipped.append(f"{info.name}: {exc}")
    assert len(skipped) <= 2, skipped
    found = _all_subclasses(errors.MatprobeError)
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in found
                     if c.__module__ != "matprobe.errors" and c.__module__.startswith("matprobe"))
    assert outside == []
    # the ones modules used to declare themselves are there, under their old names too
    for module, name in [("matprobe.pipeline", "PipelineError"), ("matprobe.report.render", "ReportError"),
                         ("matprobe.checks", "ConfigError"), ("matprobe.store", "StoreUnavailable"),
                         ("matprobe.stats.significance", "TooFewPairs"), ("matprobe.locks", "InUseError"),
                         ("matprobe.scaffold", "InitError"), ("matprobe.parallel", "LaunchError")]:
        assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_the_scan_sees_an_error_declared_elsewhere():
    class StrayError(errors.MatprobeError):
        """Declared in a test module: the scan must see it."""

    stray = [c for c in _all_subclasses(errors.MatprobeError) if c.__module__ != "matprobe.errors"]
    assert StrayError in stray
