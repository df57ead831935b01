"""Issue 24: an estimator's recorded parameters are read off its constructors (scikit-learn's
get_params), for every registered estimator, so the record cannot drift from the code; the
common settings' defaults come from matprobe.defaults.DEFAULTS only."""

from __future__ import annotations

import inspect

import pytest

from matprobe.defaults import DEFAULTS
from matprobe.mi import make_estimator
from matprobe.mi.registry import available_estimators, registration


def _keyword_defaults(cls) -> dict:
    """Every keyword parameter of cls.__init__ and its bases' with its default (most derived wins),
    found here independently of matprobe.mi.base.init_parameter_names."""
    out = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.default is not p.empty:
                out[p.name] = p.default
    return out


@pytest.mark.parametrize("name", available_estimators())
def test_recorded_parameters_are_exactly_the_constructor_parameters(name):
    est = make_estimator(name)
    cls = type(est)
    expected = _keyword_defaults(cls)
    got = est.get_params()
    assert set(got) == set(expected)
    # every parameter given to the constructor is what the record says (each changed from its default)
    changed = {}
    for key, default in expected.items():
        if isinstance(default, bool):
            changed[key] = not default
        elif isinstance(default, int) and key not in ("folds", "seeds"):
            changed[key] = default + 3
        elif isinstance(default, float):
            changed[key] = default / 2 if key != "ci_level" else 0.8
    est2 = registration(name).factory(**changed)
    got2 = est2.get_params()
    for key, value in changed.items():
        assert got2[key] == value, key
    rec = est2.params()
    for key in expected:
        value = got2[key]
        assert rec[key] == (list(value) if isinstance(value, tuple) else value), key


def test_common_defaults_come_from_DEFAULTS():
    est = make_estimator("probe")
    p = est.get_params()
    assert (p["folds"], p["seeds"], p["pca"], p["ci_level"], p["seed"], p["n_boot"], p["min_stratum"]) == (
        DEFAULTS.folds, DEFAULTS.seeds, DEFAULTS.pca, DEFAULTS.level, DEFAULTS.seed, DEFAULTS.mi_n_boot,
        DEFAULTS.min_stratum)


def test_builtin_table_matches_what_the_modules_register():
    # help strings read BUILTIN_ESTIMATORS without importing torch: it must be what the modules register
    import importlib

    from matprobe.mi.registry import BUILTIN_ESTIMATORS, estimator_help

    for name, module in BUILTIN_ESTIMATORS.items():
        importlib.import_module(module)
        assert registration(name).factory.__module__ == module or name in available_estimators()
    registered_builtins = [n for n in available_estimators()
                           if registration(n).factory.__module__.startswith("matprobe.mi.")]
    assert sorted(registered_builtins) == sorted(BUILTIN_ESTIMATORS)
    assert available_estimators()[0] == DEFAULTS.estimator
    assert all(n in estimator_help() for n in BUILTIN_ESTIMATORS)


def test_every_command_with_an_estimator_option_lists_the_registered_names():
    from typer.main import get_command

    from matprobe.cli import app
    from matprobe.mi.registry import BUILTIN_ESTIMATORS

    group = get_command(app)
    seen = 0
    for name, cmd in group.commands.items():
        for param in getattr(cmd, "params", []):
            if "--estimator" in getattr(param, "opts", []):
                seen += 1
                assert param.default == DEFAULTS.estimator, name
                assert all(n in param.help for n in BUILTIN_ESTIMATORS), name
    assert seen >= 4  # mi, sweep, compare, relate
