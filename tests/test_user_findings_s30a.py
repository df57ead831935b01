"""An outside user's first session with the Python API (2026-12-06): inputs that crashed with
Python internals, a Fano note that said "negative" of positive values, a table printed as its
repr. Each test fails on the code before the mend."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import matprobe as mp
from matprobe.errors import EstimationError
from matprobe.mi.chain import chain_terms, missing_labels


def _task(n=120, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 2, n)
    return m[:, None] + rng.standard_normal((n, 3)), m


@pytest.mark.parametrize("bad", [None, float("nan"), ""])
def test_a_missing_label_is_refused_naming_the_factor_the_count_and_the_first_row(bad):
    z, m = _task()
    labels = pd.Series(np.array(["CT", "MRI"], dtype=object)[m])
    labels.iloc[[7, 30, 31]] = bad  # was: TypeError '<' not supported between 'str' and 'float'
    with pytest.raises(EstimationError, match=r"factor 'M' has 3 missing labels \(None, NaN or empty; first: row 7\)"):
        chain_terms(z, {"M": labels}, seeds=1, folds=2)
    with pytest.raises(Exception, match="drop those rows from Z and every factor"):
        mp.mi(z, factors={"M": labels}, seeds=1, folds=2, progress=False)


def test_a_numeric_nan_label_is_missing_not_a_class_of_its_own():
    z, m = _task()
    labels = m.astype(float)
    labels[[3, 4, 5, 6]] = np.nan  # 4 rows: enough for a "nan" class of its own at 2 folds, as before
    with pytest.raises(EstimationError, match="has 4 missing labels"):
        chain_terms(z, {"M": labels}, seeds=1, folds=2)
    assert missing_labels(labels).sum() == 4 and not missing_labels(m).any()
    assert missing_labels(pd.Categorical(["a", None, "b"])).tolist() == [False, True, False]


@pytest.mark.parametrize("shape", [(120,), (120, 3, 2)])
def test_z_that_is_not_two_dimensional_is_refused_with_the_reshape(shape):
    _, m = _task()
    z = np.random.default_rng(1).standard_normal(shape)
    with pytest.raises(EstimationError, match=r"Z has shape \(" + ", ".join(map(str, shape)) + r",?\): give a 2-D"):
        chain_terms(z, {"M": m}, seeds=1, folds=2)


def test_an_array_z_with_factor_names_is_told_to_give_a_dict():
    z, m = _task()
    with pytest.raises(ValueError, match=r"Z is given as ndarray, not a store path: give factors as a dict"):
        mp.mi(z, factors="M,T", progress=False)


def test_fano_conditional_floor_says_negative_only_when_it_is():
    rows = {r["quantity"]: r for r in mp.bounds.fano(error=0.05, classes=4, entropy=1.3).rows}
    floor = rows["I(Z;Y|C) >= H(Y|C) - h(ε) - ε ln(K-1)"]
    # independently: H - h(ε) - ε ln(K-1)
    h = -(0.05 * math.log(0.05) + 0.95 * math.log(0.95))
    assert floor["value"] == pytest.approx(1.3 - h - 0.05 * math.log(3), rel=1e-12) and floor["value"] > 0
    assert "negative" not in floor["note"]
    low = {r["quantity"]: r for r in mp.bounds.fano(error=0.6, classes=4, entropy=0.5).rows}
    assert "negative here" in low["I(Z;Y|C) >= H(Y|C) - h(ε) - ε ln(K-1)"]["note"]
    # the note names no CLI flag (the Python call takes entropy=)
    assert all("--" not in r["note"] for r in mp.bounds.fano(error=0.05, classes=4, entropy=1.3).rows)
    # h(0) prints as 0, not -0
    assert math.copysign(1.0, rows_at_zero()) == 1.0


def rows_at_zero() -> float:
    return {r["quantity"]: r for r in mp.bounds.fano(error=0.0, classes=4).rows}["h(ε)"]["value"]


def test_a_printed_table_is_the_markdown_table_not_its_repr():
    z, m = _task()
    res = mp.mi(z, factors={"M": m}, seeds=1, folds=2, pca=None, progress=False)
    shown = str(res.to_table())
    assert shown == mp.to_markdown(res.to_table())
    assert "Column(" not in shown and "I(Z;M)" in shown
