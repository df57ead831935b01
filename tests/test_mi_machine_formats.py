"""`matprobe mi --unit bits` outputs (user study 4): notes' numbers in the output's unit, the online
code's unit in its header, selectivity as numbers in CSV/JSON, and the interval's `bound` there."""

from __future__ import annotations

import csv
import io
import json
import math
import re

import pytest

from matprobe.mi.chain import note_in_unit, run_store
from matprobe.present import render
from matprobe.present.views import chain_table


@pytest.fixture(scope="module")
def bits_result(tmp_path_factory):
    from conftest import synthetic_mat_store

    store = synthetic_mat_store(tmp_path_factory.mktemp("mi") / "s.h5", seed=6, n=240, d=6,
                                signal=[("modality", "CT", 6.0)], accuracy=0.7)
    result, _ = run_store(store, ["M", "A"], seeds=1, folds=3, pca=None, unit="bits", controls=True,
                          codelength=True, progress=False)
    return result


def test_note_numbers_are_in_bits(bits_result):
    e = bits_result.terms["probe"][0].estimate
    assert "near-saturated" in e.flags and "nats" in e.note  # the estimator writes its note in nats
    # I(Z;M) is unconditional: its cap is H(Y) (the thirty-second session; "H(Y|C)" before)
    h_nats = float(re.search(r"of H\(Y\) = ([0-9.]+) nats", e.note).group(1))
    row = bits_result.frame().iloc[0]
    shown = float(re.search(r"of H\(Y\) = ([0-9.]+) bits", row["note"]).group(1))
    assert "nats" not in row["note"]
    assert shown == pytest.approx(h_nats / math.log(2), abs=1e-4) and shown == round(e.h_upper, 4)
    assert note_in_unit(row["note"], "bits") == row["note"]  # converted once
    assert note_in_unit(e.note, "nats") == e.note
    assert note_in_unit("raw estimate 0.693147 nats exceeded H(Y|C) = 0.346574; clipped", "bits") == \
        f"raw estimate {0.693147 / math.log(2):.6f} bits exceeded H(Y|C) = {0.346574 / math.log(2):.6f}; clipped"
    assert note_in_unit("raw estimate 0.693147 nats exceeded H(Y) = 0.346574; clipped", "bits") == \
        f"raw estimate {0.693147 / math.log(2):.6f} bits exceeded H(Y) = {0.346574 / math.log(2):.6f}; clipped"
    assert note_in_unit("[0.6931, -0.3466] nats and 0.6931 +- 0.0693 nats", "bits") == \
        "[{:.4f}, {:.4f}] bits and {:.4f} +- {:.4f} bits".format(*(x / math.log(2) for x in (0.6931, -0.3466, 0.6931, 0.0693)))


def test_online_code_header_has_its_unit(bits_result):
    table = chain_table(bits_result)
    col = next(c for c in table.columns if c.key == "online_bits")
    assert col.header == "online code (bits)" and col.unit == "bits"
    assert "online code (bits)" in render(table, "markdown")


def test_machine_formats_carry_numbers_and_bound(bits_result):
    table = chain_table(bits_result)
    frame = bits_result.frame()
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    doc = json.loads(render(table, "json"))
    for i, r in enumerate(frame.itertuples()):
        if r.term.startswith("I(Z;") and r.term.count(";") == 1 and "," not in r.term.split(";")[1].split("|")[0]:
            for key in ("selectivity", "selectivity_low", "selectivity_high"):
                assert float(rows[i][key]) == getattr(r, key) and doc["rows"][i][key] == getattr(r, key)
        assert rows[i]["bound"] == (r.bound or "") and doc["rows"][i]["bound"] == (r.bound or None)
    assert frame["bound"].eq("lower").any()
    # the text formats show the interval's kind as "≥ x", not as a column
    assert "bound" not in table.for_text().headers() and "| bound |" not in render(table, "markdown")
    sel = next(c for c in table.columns if c.key == "selectivity")
    r0 = frame.iloc[0]
    # a one-sided term's selectivity states its lower end only, as the term does
    assert table.cells()[0][table.columns.index(sel)] == (
        f"{r0.selectivity:.3f} [≥ {r0.selectivity_low:.3f}]" if r0.bound == "lower" else
        f"{r0.selectivity:.3f} [{r0.selectivity_low:.3f}, {r0.selectivity_high:.3f}]")
