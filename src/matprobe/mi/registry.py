"""Estimators by name: `register_estimator`, `make_estimator`, `available_estimators`.

The built-in estimators register themselves when their module is imported; those modules
(torch, sklearn) are imported on the first lookup, not when matprobe is. A package can add
estimators without touching matprobe by declaring an entry point in the group
``matprobe.estimators`` whose target module calls `register_estimator` on import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from matprobe.errors import EstimationError
from matprobe.mi.interface import EstimatorTags, MIEstimator

# the built-in estimators and the module whose import registers each (imported on the first
# lookup); help strings and listings read the names from here without importing torch
BUILTIN_ESTIMATORS = {"probe": "matprobe.mi.probe", "mine": "matprobe.mi.neural", "nwj": "matprobe.mi.neural",
                      "infonce": "matprobe.mi.neural", "smile": "matprobe.mi.neural", "ksg": "matprobe.mi.knn"}
BUILTIN_MODULES = tuple(dict.fromkeys(BUILTIN_ESTIMATORS.values()))
ENTRY_POINT_GROUP = "matprobe.estimators"


@dataclass(frozen=True)
class Registration:
    name: str
    factory: Callable[..., MIEstimator]
    tags: EstimatorTags
    summary: str = ""


_REGISTRY: dict[str, Registration] = {}
_loaded = False


def register_estimator(name: str, factory: Callable[..., MIEstimator], tags: EstimatorTags, *,
                       summary: str = "", replace: bool = False) -> Registration:
    """Make `factory(**params)` available as `name` to chain_terms, sweep, compare, relate and
    the CLI's --estimator. The factory receives the settings in `interface.COMMON_PARAMS`
    (it may ignore them) and any estimator-specific keywords the caller passes."""
    _load()  # built-ins first, so listings and messages show them first
    if not isinstance(tags, EstimatorTags):
        raise TypeError(f"tags for {name!r} must be an EstimatorTags, got {type(tags).__name__}")
    if not name or "," in name or name != name.strip():
        raise ValueError(f"estimator name {name!r}: use a non-empty name without commas or spaces at the ends")
    old = _REGISTRY.get(name)
    if old is not None and not replace and old.factory is not factory:
        raise ValueError(f"estimator {name!r} is already registered ({old.factory!r}); pass replace=True")
    reg = Registration(name, factory, tags, summary)
    _REGISTRY[name] = reg
    return reg


def unregister_estimator(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not hide the built-ins
            raise EstimationError(f"estimator plug-in {ep.name!r} ({ep.value}) failed to load: {exc}; "
                                  "fix or uninstall that package") from None


def available_estimators() -> list[str]:
    """Registered names: the default first (whichever module happened to be imported first, the
    list reads the same), then the others in registration order, built-ins before plug-ins."""
    from matprobe.defaults import DEFAULTS

    _load()
    return sorted(_REGISTRY, key=lambda name: name != DEFAULTS.estimator)  # stable: the rest keep their order


def registration(name: str) -> Registration:
    """The registration of `name`; an unknown name is one line listing the registered ones."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EstimationError(f"unknown estimator {name!r}; registered: {', '.join(available_estimators())}") from None


def estimator_help(several: bool = False) -> str:
    """The --estimator help text: the built-in names (no estimator module is imported)."""
    return (("Comma list of estimators: " if several else "Estimator: ") + ", ".join(BUILTIN_ESTIMATORS)
            + f", or a plug-in's name ({ENTRY_POINT_GROUP} entry points).")


def estimator_tags(name: str) -> EstimatorTags:
    return registration(name).tags


def make_estimator(name: str, **params: Any) -> MIEstimator:
    """A new estimator `name` built with `params` (common settings plus its own keywords)."""
    reg = registration(name)
    try:
        est = reg.factory(**params)
    except TypeError as exc:
        raise EstimationError(f"estimator {name!r} does not take these parameters ({exc}); "
                              "check the estimator's options") from None
    return est
