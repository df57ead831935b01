"""A paired ΔI between two terms at their entropy caps has no p (user study 4): the difference of two
caps is their rounding, not the checkpoints'. ΔI and its interval stay; p is n/a (None in Python,
null in JSON, empty in CSV) with a note that says why. A pair below the caps keeps its p."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch

from matprobe.mi.compare import SATURATED_NOTE, compare_arrays, compare_stores, near_saturated
from matprobe.mi.interface import NEAR_SATURATION
from matprobe.present import render
from matprobe.present.views import comparison_table

torch.set_num_threads(1)

FAST = dict(penalties=(1e-4,), max_iter=15)


def _stores(root, sep_a, sep_b, n=400, seed=3):
    """Two stores of the same n samples (`conftest.two_term_stores`)."""
    from conftest import two_term_stores

    return two_term_stores(root, sep_a, sep_b, n, seed)


def test_both_sides_at_their_caps_give_no_p(tmp_path):
    a, b = _stores(tmp_path, 8.0, 9.0)
    comp = compare_stores(a, b, "T|M", seeds=1, folds=2, pca=None, n_boot=200, gaussianize=False, **FAST)
    for side in (comp.side_a, comp.side_b):
        assert side["estimate"] >= NEAR_SATURATION * side["h_upper"] and near_saturated(side)
    d = comp.difference
    assert d.p_value is None
    assert np.isfinite(d.delta) and d.ci_low <= d.delta <= d.ci_high  # ΔI keeps its interval
    note = SATURATED_NOTE.format(share=f"{NEAR_SATURATION:.0%}")
    assert note in comp.note and "the term cannot separate the checkpoints" in note
    table = comparison_table(comp)
    assert table.cells()[-1][-1] == "n/a" and any(note in f for f in table.footnotes)
    doc = json.loads(render(table, "json"))
    assert doc["rows"][-1]["p"] is None and doc["rows"][-1]["estimate"] == d.delta
    rows = list(csv.DictReader(io.StringIO(render(table, "csv"))))
    assert rows[-1]["p"] == "" and float(rows[-1]["ci_low"]) == d.ci_low
    assert json.loads(json.dumps(comp.to_dict(), default=float))["difference"]["p_value"] is None


def test_a_pair_below_the_caps_keeps_its_p(tmp_path):
    a, b = _stores(tmp_path, 0.6, 0.2)
    comp = compare_stores(a, b, "T|M", seeds=1, folds=2, pca=None, n_boot=200, gaussianize=False, **FAST)
    assert not near_saturated(comp.side_a) and not near_saturated(comp.side_b)
    assert isinstance(comp.difference.p_value, float) and comp.difference.p_value < 0.05
    assert "entropy caps" not in comp.note
    assert comparison_table(comp).cells()[-1][-1] == f"{comp.difference.p_value:.3g}"


@pytest.mark.parametrize("seps, saturated", [((8.0, 9.0), True), ((8.0, 0.2), False)])
def test_compare_arrays_drops_p_only_when_both_saturate(seps, saturated):
    rng = np.random.default_rng(5)
    n = 300
    y = rng.integers(0, 2, n)
    za, zb = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    za[:, 0] += seps[0] * (2 * y - 1)
    zb[:, 0] += seps[1] * (2 * y - 1)
    sa, sb, d = compare_arrays(za, zb, y, seeds=1, pca=None, gaussianize=False, n_boot=200, **FAST)
    assert (d.p_value is None) == saturated
    assert near_saturated(sa) and near_saturated(sb) == saturated


def test_a_clipped_side_says_that_delta_is_the_raw_estimates_difference(tmp_path):
    """A README-only study: A 0.3967, B 0.3967 (both clipped at the cap) and ΔI +0.0742 in the headline,
    unexplained. The note now says ΔI is the difference of the raw (per-row) estimates, with both numbers."""
    for seps in ((8.0, 9.0), (8.0, 0.2), (0.6, 0.2)):
        a, b = _stores(tmp_path, *seps)
        comp = compare_stores(a, b, "T|M", seeds=1, folds=2, pca=None, n_boot=200, gaussianize=False, **FAST)
        clipped = [tag for tag, side in (("A", comp.side_a), ("B", comp.side_b)) if side["clipped"]]
        said = f"raw estimate exceeded its entropy cap and is shown clipped: ΔI {comp.difference.delta:+.4f} nats"
        assert (said in comp.note) == bool(clipped), (seps, comp.note)
        if clipped:
            # as a reader subtracts the shown (4-decimal) estimates, as the table's footnote does (a
            # user read "+0.0165" in the footnote and "+0.0164" in this note for 0.6352 - 0.6187)
            shown = float(f"{comp.side_a['estimate']:.4f}") - float(f"{comp.side_b['estimate']:.4f}")
            assert f"the shown estimates differ by {shown:+.4f}" in comp.note
            assert f"{' and '.join(clipped)}'s raw estimate" in comp.note
        else:  # nothing clipped: ΔI is the difference of the shown estimates
            assert comp.difference.delta == pytest.approx(comp.side_a["estimate"] - comp.side_b["estimate"], abs=1e-9)


def test_the_clipped_note_quotes_the_raw_and_the_shown_difference(tmp_path, monkeypatch):
    """The clipped branch on a side the estimator clipped (here made so: A's estimate set to its cap,
    as `MIEstimate` clips a raw value above it), B as estimated."""
    import matprobe.mi.compare as compare_module

    real = compare_module.compare_chain_arrays

    def clipped_a(*args, **kwargs):
        side_a, side_b, diff, merged = real(*args, **kwargs)
        side_a = {**side_a, "clipped": True, "estimate": side_a["h_upper"]}
        return side_a, side_b, diff, merged

    monkeypatch.setattr(compare_module, "compare_chain_arrays", clipped_a)
    a, b = _stores(tmp_path, 8.0, 0.2)
    comp = compare_stores(a, b, "T|M", seeds=1, folds=2, pca=None, n_boot=200, gaussianize=False, **FAST)
    shown = float(f"{comp.side_a['h_upper']:.4f}") - float(f"{comp.side_b['estimate']:.4f}")
    assert (f"A's raw estimate exceeded its entropy cap and is shown clipped: ΔI {comp.difference.delta:+.4f} nats "
            f"is the difference of the raw estimates (the per-row terms'), the shown estimates differ by "
            f"{shown:+.4f}") in comp.note
