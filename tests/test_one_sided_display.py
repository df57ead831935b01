"""One-sided intervals read as "at least" wherever they are printed (issue 22: where the
estimator's bias cannot be bounded, the interval says so).

A user study found `sweep` and `compare` printing one-sided intervals as [lo, hi], whose upper
end is only the entropy cap (the report already wrote "≥ lo (one-sided)"), and the sweep's CSV
without a column saying which rows are one-sided. The MI results here are the committed demo's
own files (every term one-sided there), not made up for the test.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matprobe.mi.chain import ChainResult
from matprobe.mi.interface import ONE_SIDED
from matprobe.mi.sweep import COLUMNS, SweepResult, read_table, write_table
from matprobe.present import Column, OneSided, interval_cell, to_csv, to_markdown
from matprobe.present.views import ONE_SIDED_FOOTNOTE, chain_table, comparison_table, sweep_table

DEMO_MI = Path(__file__).resolve().parents[1] / "reports" / "demo" / "mi" / "related-s0__3__last.json"


def test_one_sided_cells_show_only_their_lower_end_and_keep_both_in_raw_output():
    col = Column("i", fmt=".3f")
    assert col.format(OneSided((0.41249, 0.3801, 1.0986))) == "0.412 [≥ 0.380]"
    assert col.format(OneSided((0.3801, 1.0986))) == "≥ 0.380"
    assert col.format((0.3801, 1.0986)) == "[0.380, 1.099]"  # two-sided: as before
    assert interval_cell((1, 2), "lower") == OneSided((1, 2)) and type(interval_cell((1, 2), "two-sided")) is tuple
    with pytest.raises(ValueError, match="got 4 values"):
        OneSided((1, 2, 3, 4))


def test_mi_table_of_a_one_sided_run_says_at_least():
    res = ChainResult.read(DEMO_MI)
    terms = res.estimates("probe")
    assert {e.estimate.bound for e in terms} == {"lower"}  # the demo's terms are all one-sided
    table = chain_table(res)
    text = to_markdown(table)
    raw = pd.read_csv(__import__("io").StringIO(to_csv(table)))
    for term in terms:
        e = term.estimate
        assert f"≥ {e.ci_low:.3f}" in text
        assert f"[{e.ci_low:.3f}, {e.ci_high:.3f}]" not in text  # the cap is not shown as an upper limit
        row = raw[raw["term"] == term.term].iloc[0]
        # CSV carries the results' own columns (ci_low / ci_high with their bound, as `mi --out x.csv`)
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((e.ci_low, e.ci_high), abs=1e-12)
        assert row["bound"] == "lower" and row["unit"] == res.unit
    assert ONE_SIDED_FOOTNOTE in table.footnotes
    assert (res.frame().dropna(subset=["ci_low"])["bound"] == "lower").all()


def _sweep_frame(bound_column: bool) -> pd.DataFrame:
    """A sweep table of the demo's terms (one-sided) and one two-sided row, as `estimate_cell` writes."""
    res = ChainResult.read(DEMO_MI)
    rows = []
    for term in res.estimates("probe"):
        e = term.estimate
        rows.append({"checkpoint": "related-s0", "store": "s.h5", "fingerprint": "f", "layer": "3", "pool": "last",
                     "term": term.term, "target": "", "given": "", "estimator": "probe", "estimate": e.value,
                     "ci_low": e.ci_low, "ci_high": e.ci_high, "bound": e.bound, "ci_level": 0.95, "unit": "nats",
                     "n": 480, "h_upper": e.h_upper, "clipped": False, "degenerate": False, "note": e.note,
                     "seconds": 0.0, "settings": "x", "flags": "", "pca": 64})
    rows.append({**rows[0], "layer": "2", "estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6, "bound": "two-sided",
                 "note": ""})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame if bound_column else frame.drop(columns="bound")


def test_sweep_table_and_csv_say_which_rows_are_one_sided(tmp_path):
    frame = _sweep_frame(True)
    write_table(frame, tmp_path / "s.csv")
    back = read_table(tmp_path / "s.csv")
    assert list(back["bound"]) == ["lower"] * 4 + ["two-sided"]
    text = to_markdown(sweep_table(SweepResult(back, tmp_path / "s.csv", 2, 2, 0, 0.0)))
    first = frame.iloc[0]
    assert f"{first.estimate:.3f} [≥ {first.ci_low:.3f}]" in text
    assert f"{first.estimate:.3f} [{first.ci_low:.3f}, {first.ci_high:.3f}]" not in text
    assert "0.500 [0.400, 0.600]" in text and ONE_SIDED_FOOTNOTE in text


def test_a_sweep_table_written_before_the_bound_column_gets_it_from_the_notes(tmp_path):
    old = _sweep_frame(False)
    assert all(ONE_SIDED in n or "one-sided" in n for n in old["note"][:4])  # how those rows said it
    failed = {**old.iloc[4].to_dict(), "layer": "1", "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
              "note": "estimation failed (ValueError: x); rerun the sweep to retry", "flags": "failed"}
    old = pd.concat([old, pd.DataFrame([failed])], ignore_index=True)
    old.to_csv(tmp_path / "old.csv", index=False)
    assert list(read_table(tmp_path / "old.csv")["bound"]) == ["lower"] * 4 + ["two-sided", ""]


def test_compare_table_marks_a_one_sided_side():
    from matprobe.mi.compare import Comparison
    from matprobe.mi.paired import PairedDifference

    side = {"store": "a.h5", "layer": "3", "pool": "last", "estimate": 0.61, "ci_low": 0.39, "ci_high": 0.65,
            "bound": "lower"}
    comp = Comparison("I(Z;T|M,A)", side, {**side, "store": "b.h5", "bound": "two-sided", "ci_high": 0.64},
                      PairedDifference(0.0, -0.1, 0.1, 0.95, 1.0, 0.05, 480, "nats"), "probe", 3, 5)
    text = to_markdown(comparison_table(comp))
    assert "≥ +0.3900" in text and "[+0.3900, +0.6400]" in text and ONE_SIDED_FOOTNOTE in text


def test_mi_table_says_its_terms_are_estimated_within_its_chain():
    """Two README-only studies read I(Z;T|M,A) 0.397 with --factors M,A,T and 0.254 with M,A,T,label on
    one store and took it for an error: the table now says each term is estimated within its chain."""
    res = ChainResult.read(DEMO_MI)
    said = [f for f in chain_table(res).footnotes if f.startswith("every term is estimated within this chain")]
    assert said == [f"every term is estimated within this chain ({', '.join(res.factors)}): one fold plan "
                    "stratified by all its factors, the later factors the critic's sub-classes; the same term in "
                    "another chain (--factors) is another estimate of the same MI"]
    res.factors = res.factors[:1]
    res.terms = {k: v[:1] for k, v in res.terms.items()}
    res.difference = {k: v[:1] for k, v in res.difference.items()}
    assert not any(f.startswith("every term is estimated") for f in chain_table(res).footnotes)


def test_a_sparse_stratum_is_named_by_its_labels_in_the_note():
    """A study's note read "sparse strata (n < 30): {'M': 'Ultrasound', 'A': 'Abdomen'}: 25 rows"."""
    import torch

    from matprobe.mi.chain import chain_terms

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    m = np.r_[np.zeros(200, int), np.ones(40, int)]
    a = np.r_[rng.integers(0, 2, 200), np.zeros(25, int), np.ones(15, int)]
    t = rng.integers(0, 2, 240)
    z = rng.standard_normal((240, 3)) + t[:, None]
    res = chain_terms(z, {"M": m, "A": a, "T": t}, seeds=1, folds=2, pca=None, direct=False, difference=False,
                      labels={"M": ("Ultrasound", "CT"), "A": ("Abdomen", "Chest"), "T": ("yes", "no")},
                      max_iter=15, penalties=(1e-3,))
    note = res.estimates()[2].estimate.note
    assert "sparse strata (n < 30): CT / Abdomen: 25 rows, CT / Chest: 15 rows" in note, note
    assert "{" not in note


def test_a_pointwise_csv_says_where_its_items_average_to_a_clipped_terms_raw_estimate(tmp_path):
    """A study's pw.csv averaged 0.769 for I(Z;A|M), which read 0.732 (clipped at its cap), unsaid."""
    import torch

    from matprobe.mi.chain import chain_terms

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    m, a = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    z = rng.standard_normal((200, 2)) + 3 * np.c_[m, a]
    res = chain_terms(z, {"M": m, "A": a}, seeds=1, folds=2, pca=None, direct=False, difference=False,
                      pointwise=True, max_iter=15, penalties=(1e-3,))
    first = res.write_pointwise_csv(tmp_path / "pw.csv")
    assert len(first) <= sum(bool(e.clipped) for _, e in res.estimates())  # only clipped terms are said
    frame = pd.read_csv(tmp_path / "pw.csv")
    term, e = res.estimates()[1]
    raw = float(frame.loc[frame.term == term, "pointwise"].mean())
    e.clipped, e.value = True, raw - 0.037  # as the estimator reports a raw value above the cap
    notes = res.write_pointwise_csv(tmp_path / "pw.csv")
    assert notes == [f"{term} (probe): its items average {raw:.4f} nats, the raw estimate; the term reads "
                     f"{raw - 0.037:.4f}, clipped to [0, its cap]"]


def test_mi_table_with_controls_shows_the_control_and_a_one_sided_selectivity():
    """A study's `mi --controls` showed no control estimate, a two-sided selectivity 0.142 [0.035, 0.193]
    beside a one-sided term (cap 0.154), and an unexplained "I(Z;Y,C) - I(Z;C)" column."""
    res = ChainResult.read(DEMO_MI)
    frame = res.frame()
    table = chain_table(res)
    heads = table.headers()
    cells = {r[0]: r for r in table.cells()}
    for r in frame[frame["selectivity"].notna()].itertuples():
        row = cells[r.term]
        assert row[heads.index("control Î")] == f"{r.control:.3f}"
        assert r.bound == "lower" and row[heads.index("selectivity")] == (
            f"{r.selectivity:.3f} [≥ {r.selectivity_low:.3f}]")
    said = any(f.startswith("I(Z;Y,C) - I(Z;C): the term as the difference of two estimates") for f in table.footnotes)
    assert said == bool(frame["chain_difference"].notna().any())  # said where the column has numbers
    csv = pd.read_csv(io.StringIO(to_csv(table)))  # the machine form keeps both ends and the control
    assert {"control", "selectivity_low", "selectivity_high"} <= set(csv.columns)


def test_the_chain_difference_column_is_explained_where_it_has_numbers():
    import torch

    from matprobe.mi.chain import chain_terms

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    m, a = rng.integers(0, 2, 200), rng.integers(0, 3, 200)
    z = rng.standard_normal((200, 2)) + 2 * np.c_[m, a]
    res = chain_terms(z, {"M": m, "A": a}, seeds=1, folds=2, pca=None, max_iter=15, penalties=(1e-3,))
    assert res.frame()["chain_difference"].notna().any()
    assert ("I(Z;Y,C) - I(Z;C): the term as the difference of two estimates (the chain rule), a cross-check of the "
            "estimate; each part is estimated on its own, so it can pass the term's cap") in chain_table(res).footnotes
