"""`--format csv` and `--format json` parse as what they are (a user study parsed every command's
machine-readable output with pandas / json).

The rule (`matprobe.present`): CSV on stdout is ONE rectangular table, the command's main one,
that `pandas.read_csv` parses; JSON holds every table. Numbers are numbers at full precision
(not display strings such as ``0.000 (0.000)``), information-valued columns have a `unit` column
beside them, MI intervals are ``ci_low`` / ``ci_high`` with their ``bound``, and ``--format csv``
has the columns of the file ``--out x.csv`` writes where a command writes one.

The study found: `check --format csv` three tables in one stream (read as one (19, 15) frame,
aggregate and PAC rows among the strata, Fano's bound as "0.000 (0.000)"); `store info --format
csv` several tables (ParserError); `mi --format csv` with interval_low/_high and no unit, flags or
n, unlike `mi --out x.csv`; `sweep --format csv` wide, without unit or bound.
"""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest
from typer.testing import CliRunner

from matprobe.cli import app

FAST = ["--seeds", "1", "--folds", "2", "--pca", "0"]


def _run(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def _csv(res) -> pd.DataFrame:
    """stdout as one frame: every line has the header's number of fields (no second table)."""
    lines = res.stdout.splitlines()
    assert lines and "" not in lines  # no blank line: no second table below the first
    return pd.read_csv(io.StringIO(res.stdout))


def _same(a, b) -> bool:
    """Equal to full precision (both missing counts as equal)."""
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A store with answers (one coordinate carries the modality: I(Z;M) is one-sided there) and the
    MI results of its chain M, A, T, Y written as JSON, so that check estimates nothing."""
    from conftest import synthetic_mat_store

    root = tmp_path_factory.mktemp("fmt")
    store = synthetic_mat_store(root / "s.h5", seed=3, n=160, d=4, signal=[("modality", "CT", 6.0)],
                                accuracy=0.7)
    _run("mi", store, "--factors", "M,A,T,Y", *FAST, "--out", root / "mi.json")
    return root, store


def test_mi_csv_is_the_results_table(work):
    root, store = work
    res = _run("mi", store, "--factors", "M,A", *FAST, "--format", "csv", "--out", root / "ma.csv")
    shown, written = _csv(res), pd.read_csv(root / "ma.csv")
    assert list(shown.columns) == list(written.columns)  # the same columns as `--out x.csv`
    assert {"ci_low", "ci_high", "bound", "unit", "flags", "n"} <= set(shown.columns)
    assert not {"interval_low", "interval_high"} & set(shown.columns)
    pd.testing.assert_frame_equal(shown, written)  # and the same numbers, to full precision
    assert set(shown["unit"]) == {"nats"}
    terms = shown[shown["term"].str.startswith("I(Z;")]
    assert terms.loc[terms["term"] == "I(Z;M)", "bound"].item() == "lower"  # one-sided: said in its column
    assert set(terms["bound"]) <= {"lower", "two-sided"}
    res = _run("mi", store, "--factors", "M,A", *FAST, "--format", "json", "--out", root / "ma.json")
    doc, results = json.loads(res.stdout), json.loads((root / "ma.json").read_text())
    assert [c["key"] for c in doc["columns"]] == list(written.columns)
    est = next(c for c in doc["columns"] if c["key"] == "estimate")
    assert est["unit"] == "nats"
    for term in results["terms"]:
        row = next(r for r in doc["rows"] if r["term"] == term["term"] and r["estimator"] == term["estimator"])
        for key in ("estimate", "ci_low", "ci_high", "bound", "n"):
            assert row[key] == term[key], key
        assert row["unit"] == results["unit"] == "nats"
        line = shown[shown["term"] == term["term"]].iloc[0]
        assert (line["estimate"], line["ci_low"], line["ci_high"]) == (term["estimate"], term["ci_low"],
                                                                       term["ci_high"])


def test_check_csv_is_the_strata_with_check_json_numbers(work):
    root, store = work
    res = _run("check", store, "--mi", root / "mi.json", "--out", root / "check.json", "--format", "csv")
    frame = _csv(res)
    doc = json.loads((root / "check.json").read_text())
    strata = doc["strata"]
    assert len(frame) == len(strata) == 8  # the strata alone: no aggregate or PAC rows among them
    assert "quantity" not in frame and "flag" not in frame
    for key in ("n", "errors", "error", "h_y", "fano_mi_lower", "fano_mi_lower_finite", "mi", "mi_ci_low",
                "mi_ci_high", "error_floor"):
        assert pd.api.types.is_numeric_dtype(frame[key]), key  # numbers, not "0.000 (0.000)"
    assert (frame["unit"] == "nats").all()
    for row, s in zip(frame.itertuples(), strata):
        assert (row.modality, row.anatomy, row.task) == (s["given"]["modality"], s["given"]["anatomy"],
                                                         s["given"]["task"])
        assert (row.fano_mi_lower, row.fano_mi_lower_finite, row.h_y) == (
            s["fano_mi_lower"], s["fano_mi_lower_finite"], s["h_y"])  # full precision, below 0 too
        assert (row.error, row.error_ci_low, row.error_ci_high) == (s["error"], *s["error_ci"])
        assert (row.mi, row.mi_ci_low, row.mi_ci_high) == (s["mi"]["estimate"], s["mi"]["ci_low"], s["mi"]["ci_high"])
        assert row.mi_bound == (s["mi"].get("bound") or "two-sided")
    assert min(s["fano_mi_lower_finite"] for s in strata) < 0  # what the display shows as 0.000
    assert "aggregate, pac" in res.stderr and "--format json" in res.stderr  # says where the rest is
    # JSON: every table, the strata's rows the same as the CSV's
    res = _run("check", store, "--mi", root / "mi.json", "--out", root / "check.json", "--format", "json")
    shown = json.loads(res.stdout)
    assert [t["name"] for t in shown] == ["strata", "aggregate", "pac"]
    assert [c["key"] for c in shown[0]["columns"]] == list(frame.columns)
    for row, line in zip(shown[0]["rows"], frame.to_dict("records")):
        assert all(_same(row[k], line[k]) for k in line if k not in ("mi_estimator",)), row
    agg = {r["quantity"]: r for r in shown[1]["rows"]}
    a = doc["aggregate"]
    assert agg["H(Y|M,A,T)"]["value"] == a["h_y_given_mat"] and agg["H(Y|M,A,T)"]["unit"] == "nats"
    assert (agg["ε (observed error)"]["ci_low"], agg["ε (observed error)"]["ci_high"]) == tuple(a["error_ci"])
    (term,) = a["terms"]
    mine = agg[f"{term['term']}: Î"]
    assert (mine["value"], mine["ci_low"], mine["ci_high"], mine["fano_mi_lower"]) == (
        term["mi"]["estimate"], term["mi"]["ci_low"], term["mi"]["ci_high"], term["fano_mi_lower"])
    assert mine["bound"] in ("lower", "two-sided")
    assert shown[2]["rows"][0]["value"] == doc["pac"]["test_set_bound"]


def test_check_csv_in_bits_says_bits(work):
    root, store = work
    res = _run("check", store, "--mi", root / "mi.json", "--out", root / "check_b.json", "--bits", "--format", "csv")
    frame = _csv(res)
    strata = json.loads((root / "check_b.json").read_text())["strata"]  # the file stays in nats
    assert (frame["unit"] == "bits").all()
    assert frame["h_y"].tolist() == pytest.approx([s["h_y"] / math.log(2) for s in strata], rel=1e-12)
    assert frame["fano_mi_lower"].tolist() == pytest.approx([s["fano_mi_lower"] / math.log(2) for s in strata],
                                                            rel=1e-12)
    assert frame["error"].tolist() == [s["error"] for s in strata]  # a probability: no unit conversion


def test_sweep_csv_is_the_sweep_table(work):
    root, store = work
    out = root / "sweep.csv"
    res = _run("sweep", store, "--out", out, "--factors", "M,A", "--layers", "4", "--pools", "last", *FAST,
               "--format", "csv")
    shown, written = _csv(res), pd.read_csv(out)
    assert list(shown.columns) == list(written.columns)  # long form: one row per (cell, term)
    pd.testing.assert_frame_equal(shown, written)
    assert {"estimate", "ci_low", "ci_high", "bound", "unit"} <= set(shown.columns)
    assert list(shown["term"]) == ["I(Z;M)", "I(Z;A|M)"] and set(shown["unit"]) == {"nats"}
    assert shown.loc[0, "bound"] == "lower"  # the high end is the entropy cap: one-sided, said
    res = _run("sweep", store, "--out", out, "--factors", "M,A", "--layers", "4", "--pools", "last", *FAST,
               "--format", "json")  # resumed: nothing estimated again
    doc = json.loads(res.stdout)
    assert [c["key"] for c in doc["columns"]] == list(written.columns)
    for row, line in zip(doc["rows"], written.to_dict("records")):
        for key in ("term", "estimate", "ci_low", "ci_high", "bound", "unit", "h_upper"):
            assert row[key] == line[key], key


def test_store_info_csv_is_one_table_and_json_all(work):
    from matprobe.store import EmbeddingStore

    _, store = work
    with EmbeddingStore.open(store) as st:
        info = st.info()
    res = _run("store", "info", store, "--format", "csv")
    frame = pd.read_csv(io.StringIO(res.stdout), dtype={"layer": str})
    assert list(frame.columns) == ["layer", "pool", "dim"]
    assert frame.to_dict("records") == [{k: f[k] for k in ("layer", "pool", "dim")} for f in info["features"]]
    assert "answers" in res.stderr and "--format json" in res.stderr
    doc = json.loads(_run("store", "info", store, "--format", "json").stdout)
    tables = {t["name"]: t for t in doc}
    assert list(tables) == ["features", "answers", "labels"]
    assert tables["answers"]["rows"] == info["by_triplet"]  # the names and numbers `--json` gives
    assert {r["column"]: r["labels"] for r in tables["labels"]["rows"]} == {
        k: [str(v) for v in vals] for k, vals in info["label_columns"].items()}
