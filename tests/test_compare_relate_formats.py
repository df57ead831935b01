"""`compare` and `relate` follow the machine-format rule (`matprobe.present`): `--format csv` is ONE
rectangular table of raw numbers that pandas.read_csv parses, MI intervals as ci_low / ci_high with
their bound and a `unit` column, the `--out` CSV's columns where the command writes one (relate's
points); JSON holds the same rows. Their CSV had interval_low/_high (compare) and mi_low/_high
(relate), no unit and (relate) no bound.

relate's text formats print a one-sided stratum interval as ``≥ x`` as `mi` and `check` do (it printed
``[0.000, 1.386]``, the upper end the entropy cap's confidence limit above the stratum's H(Y|s)), and
its column of sparse strata says what it is: left out of ρ (its header "left out" read, in a
held-out-target study, as "held-out triplet").
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.mi.compare import compare_stores
from matprobe.mi.interface import NEAR_SATURATION
from matprobe.present.views import comparison_table, relation_table
from matprobe.store import EmbeddingStore
from matprobe.theory.relate import relate

torch.set_num_threads(1)

FAST = ["--seeds", "1", "--pca", "0"]


def _run(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _csv(res, **kwargs) -> pd.DataFrame:
    """stdout as one frame (no blank line: no second table below the first)."""
    lines = res.stdout.splitlines()
    assert lines and "" not in lines
    return pd.read_csv(io.StringIO(res.stdout), **kwargs)


def _same(a, b) -> bool:
    """Equal to full precision (both missing counts as equal; CSV reads an empty text as missing)."""
    missing = [x is None or x == "" or (isinstance(x, float) and math.isnan(x)) for x in (a, b)]
    return all(missing) if any(missing) else a == b


# ---------------------------------------------------------------------------------------- compare


def _compare_stores(root, sep_a=8.0, sep_b=0.2, n=300, seed=3):
    """Two stores of the same n samples (`conftest.two_term_stores`): A separable (at its entropy cap:
    one-sided), B weak (two-sided)."""
    from conftest import two_term_stores

    return two_term_stores(root, sep_a, sep_b, n, seed)


def test_compare_csv_and_json_are_the_comparisons_numbers(tmp_path):
    a, b = _compare_stores(tmp_path)
    args = ["compare", a, b, "--term", "T|M", *FAST, "--folds", "2", "--n-boot", "200"]
    comp = compare_stores(a, b, "T|M", seeds=1, folds=2, pca=None, n_boot=200)  # the CLI's settings
    d = comp.difference
    assert comp.side_a["bound"] == "lower" and comp.side_b["bound"] == "two-sided" and d.p_value is not None
    frame = _csv(_run(*args, "--format", "csv"), dtype={"layer": str})  # the layer key "3", not 3.0
    assert frame.shape[0] == 3 and list(frame["side"]) == ["A", "B", "A - B"]
    assert {"estimate", "ci_low", "ci_high", "bound", "ci_level", "h_upper", "p", "n", "unit"} <= set(frame.columns)
    assert not {"interval_low", "interval_high"} & set(frame.columns)
    for key in ("estimate", "ci_low", "ci_high", "h_upper", "p", "n"):
        assert pd.api.types.is_numeric_dtype(frame[key]), key  # numbers, not display strings
    assert (frame["unit"] == "nats").all() and (frame["term"] == comp.term).all()
    for row, side in zip(frame.itertuples(), (comp.side_a, comp.side_b)):
        assert (row.store, row.layer, row.pool) == (side["store"], side["layer"], side["pool"])
        assert (row.estimate, row.ci_low, row.ci_high, row.h_upper) == (  # full precision
            side["estimate"], side["ci_low"], side["ci_high"], side["h_upper"])
        assert row.bound == side["bound"] and math.isnan(row.p) and row.n == d.n
    diff = frame.iloc[2]
    assert (diff["estimate"], diff["ci_low"], diff["ci_high"], diff["p"]) == (d.delta, d.ci_low, d.ci_high, d.p_value)
    assert diff["bound"] == "two-sided" and diff["n"] == d.n and math.isnan(diff["h_upper"])
    # JSON: the same table (its columns and rows), with units per column
    doc = json.loads(_run(*args, "--format", "json").stdout)
    assert doc["name"] == "comparison" and [c["key"] for c in doc["columns"]] == list(frame.columns)
    assert {c["key"]: c["unit"] for c in doc["columns"]}["estimate"] == "nats"
    for row, line in zip(doc["rows"], frame.to_dict("records")):
        assert all(_same(row[k], line[k]) for k in line), row
    assert doc["rows"][2]["p"] == d.p_value and doc["rows"][0]["p"] is None
    # the typed result gives the same rows (a Python user found no .frame() or .to_table() on it)
    typed = comp.frame()
    assert list(typed.columns) == list(frame.columns) and list(typed["side"]) == ["A", "B", "A - B"]
    for key in ("estimate", "ci_low", "ci_high", "n"):
        assert typed[key].tolist() == frame[key].tolist(), key
    assert comp.to_table().headers() == comparison_table(comp).headers()


# ---------------------------------------------------------------------------------------- relate

TRIPLETS = [("CT", "Lung", "cls"), ("CT", "Lung", "vqa"), ("MR", "Brain", "cls"), ("MR", "Brain", "vqa")]


@pytest.fixture(scope="module")
def relation(tmp_path_factory):
    """Two checkpoints over 4 strata; Y ~ Bernoulli(1/2), Z_1 = mu (2Y - 1) + N(0, 1), the model answers
    sign(Z_1). "sat" (mu 5, 40 rows a stratum) sits at its entropy cap: its term is one-sided; "weak"
    (mu 0.8) two-sided, but for a stratum of 20 rows (sparse under --min-stratum 30) at its cap."""
    root = tmp_path_factory.mktemp("relate_formats")
    rng = np.random.default_rng(4)
    paths = []
    for name, mu, sizes in (("sat", 5.0, (40, 40, 40, 40)), ("weak", 0.8, (150, 150, 150, 20))):
        s = np.repeat(np.arange(4), sizes)
        y = rng.integers(0, 2, len(s))
        z = rng.standard_normal((len(s), 3)).astype(np.float32)
        z[:, 0] += mu * (2 * y - 1)
        pred = (z[:, 0] > 0).astype(np.int64)
        labels = {"modality": [TRIPLETS[i][0] for i in s], "anatomy": [TRIPLETS[i][1] for i in s],
                  "task": [TRIPLETS[i][2] for i in s], "label": [f"y{v}" for v in y]}
        path = root / f"{name}.h5"
        EmbeddingStore.from_arrays(path, [f"{name}-{i}" for i in range(len(s))], labels, {("4", "last"): z},
                                   answers={"pred": pred, "correct": (pred == y).astype(np.int8)},
                                   provenance={"checkpoint": name}).close()
        paths.append(path)
    rel = relate(paths, seeds=1, pca=None, min_stratum=30)  # the CLI's settings (its folds and n_boot: defaults)
    return root, paths, rel


def _one_sided(points) -> list[bool]:
    """Where a stratum's interval is one-sided: its entry says so (the term is one-sided), or the estimate
    is at NEAR_SATURATION of H(Y|s) (the rule `check` holds a stratum to)."""
    return [("lower bound" in str(r.note)) or r.mi >= NEAR_SATURATION * r.h for r in points.itertuples()]


def test_relate_csv_is_the_points_file_with_unit_and_bound(relation):
    root, paths, rel = relation
    out = root / "points.csv"
    args = ["relate", *paths, *FAST, "--min-stratum", "30"]
    frame, written = _csv(_run(*args, "--format", "csv", "--out", out)), pd.read_csv(out)
    # the --out CSV is the --format csv table: its columns (the MI interval's bound and the unit among
    # them) and numbers
    pd.testing.assert_frame_equal(frame, written)
    assert {"mi_ci_low", "mi_ci_high", "mi_bound", "unit"} <= set(frame.columns)
    assert not {"mi_low", "mi_high", "accuracy_low", "accuracy_high"} & set(frame.columns)
    assert (frame["unit"] == "nats").all()
    points = rel.points
    for key in ("n", "mi", "mi_ci_low", "mi_ci_high", "h", "accuracy", "acc_ci_low", "acc_ci_high", "fano_acc_max"):
        assert frame[key].tolist() == points[key].tolist(), key  # the typed result's, to full precision
    assert frame["sparse"].tolist() == points["sparse"].tolist() == [False] * 7 + [True]
    one_sided = _one_sided(points)
    assert frame["mi_bound"].tolist() == ["lower" if o else "two-sided" for o in one_sided]
    assert one_sided == [True] * 4 + [False] * 3 + [True]  # both kinds, and a saturated stratum of a two-sided term
    # JSON: the same rows, units per column
    doc = json.loads(_run(*args, "--format", "json").stdout)
    assert doc["name"] == "points" and [c["key"] for c in doc["columns"]] == list(frame.columns)
    units = {c["key"]: c["unit"] for c in doc["columns"]}
    assert units["mi"] == units["h"] == "nats" and units["accuracy"] == "probability"
    for row, line in zip(doc["rows"], frame.to_dict("records")):
        assert all(_same(row[k], line[k]) for k in line), row
    assert any(f"rho(MI, accuracy) = {rel.spearman:.3f}" in f for f in doc["footnotes"])
    # the typed result gives the same rows
    pd.testing.assert_frame_equal(rel.frame().reset_index(drop=True).fillna({"note": ""}),
                                  frame.fillna({"note": ""}), check_dtype=False)  # CSV reads "" as NaN
    assert rel.to_table().headers() == relation_table(rel).headers()


@pytest.mark.parametrize("fmt", ["markdown", "table"])
def test_relate_text_prints_one_sided_strata_as_at_least(relation, fmt):
    _, paths, rel = relation
    text = _run("relate", *paths, *FAST, "--min-stratum", "30", "--format", fmt).stdout
    for r, one_sided in zip(rel.points.itertuples(), _one_sided(rel.points)):
        if one_sided:  # the upper end is the entropy cap's limit: not shown as an interval's end
            assert f"{r.mi:.3f} [≥ {r.mi_ci_low:.3f}]" in text
            assert f"{r.mi:.3f} [{r.mi_ci_low:.3f}, {r.mi_ci_high:.3f}]" not in text
        else:
            assert f"{r.mi:.3f} [{r.mi_ci_low:.3f}, {r.mi_ci_high:.3f}]" in text
    assert "≥ x: a one-sided interval" in text
    # the sparse strata's column says what it is (not "left out", read as a held-out triplet)
    assert "sparse (left out of ρ)" in text and "left out |" not in text and "left out ┃" not in text
