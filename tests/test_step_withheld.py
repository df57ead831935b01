"""The learning-curve step withheld where the critic did not beat the label prior (`withhold_unsupported_steps`).

The probe's step I(n) + (I(n) - I(n/2)) reads the shortfall of a bound that is positive and falls
like 1/n. In a stratum whose held-out estimate before the step is at most 0 the half fit can overfit
far worse than 1/n predicts, and the step then measured that: on noise with one two-class stratum of
60 rows among one-class ones (a CrossMed-like I(Z;T|M,A)), 4 of 12 draws read at the term's cap.
Checked here: the per-row arithmetic against the definition (which strata, how much, the DV form
too); that the interval's upper end still reaches what the step would have said and its lower end
moves down only; and on noise of that layout, the point estimates.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi.base import DV, MEAN, CrossFitEstimator, stratum_values, withhold_unsupported_steps
from matprobe.mi.probe import ProbeEstimator

C = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
ACTIVE = np.array([True] * 8 + [False] * 2)  # stratum 2 has one class: no terms


def _per_seed(plain_means, steps, seeds=2, seed=0):
    """Per-seed arrays whose stratum s has un-stepped mean plain_means[s] and step steps[s]."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(seeds):
        plain, corr = np.zeros(10), np.zeros(10)
        for s, (m, st) in enumerate(zip(plain_means, steps)):
            idx = np.flatnonzero((C == s) & ACTIVE)
            noise = rng.normal(0, 0.05, len(idx))
            plain[idx] = m + noise - noise.mean()
            corr[idx] = st + rng.normal(0, 0.01, len(idx))
        out.append({"r": plain + corr, "corr": corr})
    return out


def _stratum_means(per_seed, key, s):
    idx = (C == s) & ACTIVE
    return np.mean([a[key][idx].mean() for a in per_seed])


@pytest.mark.parametrize("before, step, withheld", [
    (-0.02, 0.3, True),     # no evidence at n rows: no step
    (-0.02, -0.01, True),   # ... nor a negative one
    (0.01, 0.3, False),     # evidence at n rows: the step, however large (a 60-row stratum of truth 0.205 needed it)
    (0.05, 0.02, False),    # the 1/n regime
])
def test_the_step_is_taken_back_exactly_where_the_value_before_it_is_not_positive(before, step, withheld):
    per_seed = _per_seed([before, 0.05], [step, 0.02])
    orig = [{k: v.copy() for k, v in a.items()} for a in per_seed]
    got = withhold_unsupported_steps(MEAN, per_seed, C, ACTIVE)
    u = _stratum_means(orig, "r", 0) - _stratum_means(orig, "corr", 0)  # independently: the value before the step
    assert (u <= 0) == withheld
    assert got == ([0] if withheld else [])
    s0, s1 = (C == 0) & ACTIVE, (C == 1) & ACTIVE
    for a, b in zip(per_seed, orig):
        np.testing.assert_array_equal(a["r"][s1], b["r"][s1])  # a stratum with evidence keeps its step
        np.testing.assert_array_equal(a["corr"], b["corr"])  # the symmetric slack stays
        if withheld:
            np.testing.assert_array_equal(a["r"][s0], b["r"][s0] - b["corr"][s0])
            np.testing.assert_array_equal(a["step_withheld"][s0], b["corr"][s0])
            np.testing.assert_array_equal(a["step_withheld"][~s0], 0.0)
        else:
            np.testing.assert_array_equal(a["r"], b["r"])
            assert "step_withheld" not in a


def test_the_rule_reads_the_stratum_pooled_over_its_seeds():
    # seed 0 alone reads above 0 before the step, the two seeds together do not
    per_seed = _per_seed([0.0, 0.05], [0.2, 0.02])
    per_seed[0]["r"][:4] += 0.01
    per_seed[1]["r"][:4] -= 0.03
    assert withhold_unsupported_steps(MEAN, per_seed, C, ACTIVE) == [0]
    # ... and seed 1 alone reads below 0, the two together do not
    per_seed = _per_seed([0.0, 0.05], [0.2, 0.02])
    per_seed[0]["r"][:4] += 0.03
    per_seed[1]["r"][:4] -= 0.01
    assert withhold_unsupported_steps(MEAN, per_seed, C, ACTIVE) == []


def test_without_a_step_nothing_changes():
    per_seed = [{"r": np.full(10, -0.1)}]
    assert withhold_unsupported_steps(MEAN, per_seed, C, ACTIVE) == []
    assert set(per_seed[0]) == {"r"}


def test_the_dv_form_reads_its_bound_before_the_step():
    # DV: the stratum's bound is mean(a) - log mean exp(lb); the step is added to a
    rng = np.random.default_rng(3)
    a_plain, lb = rng.normal(0.0, 0.1, 10), rng.normal(0.0, 0.3, 10)
    corr = np.full(10, 0.25)
    idx = np.flatnonzero((C == 0) & ACTIVE)
    bound_plain = stratum_values(DV, {"a": a_plain[idx], "lb": lb[idx]}, np.ones((1, len(idx))))[0]
    per_seed = [{"a": a_plain + corr, "lb": lb, "corr": corr}]
    got = withhold_unsupported_steps(DV, per_seed, C, ACTIVE)
    # independently: the bound before the step is the DV form of a without corr
    assert (0 in got) == (bound_plain <= 0)
    kept = 0.0 if bound_plain <= 0 else 0.25
    np.testing.assert_allclose(per_seed[0]["a"][idx], a_plain[idx] + kept)
    # a stratum whose DV bound before the step is below 0
    per_seed = [{"a": a_plain - 1.0 + corr, "lb": lb, "corr": corr}]
    assert 0 in withhold_unsupported_steps(DV, per_seed, C, ACTIVE)
    np.testing.assert_allclose(per_seed[0]["a"][idx], a_plain[idx] - 1.0)


class _Fixed(CrossFitEstimator):
    """An estimator whose aggregation runs on given per-row arrays (no fitting)."""
    name, kind = "fixed", MEAN


def _aggregate(per_seed):
    est = _Fixed(seeds=len(per_seed), n_boot=400)
    info = [{"code": s, "single": s == 2} for s in range(3)]
    return est._aggregate(per_seed, None, C, ACTIVE, info, len(C))


@pytest.mark.parametrize("seed", range(5))
def test_the_interval_still_reaches_the_stepped_value_and_its_lower_end_only_moves_down(seed):
    per_seed = _per_seed([-0.03, 0.04], [0.4, 0.03], seed=seed)
    stepped = _aggregate([{k: v.copy() for k, v in a.items()} for a in per_seed])
    withhold_unsupported_steps(MEAN, per_seed, C, ACTIVE)
    held = _aggregate(per_seed)
    step0 = np.mean([a["step_withheld"][(C == 0) & ACTIVE].mean() for a in per_seed])
    assert held[0] == pytest.approx(stepped[0] - step0 * 4 / 10)  # the point drops the step, weighted by the stratum
    assert held[1] <= stepped[1]
    assert held[2] >= stepped[0]  # the upper end reaches the stepped point
    lo, hi = held[3][0][1:]
    assert hi >= stepped[3][0][0]  # and the stratum's own


def _noise_layout():
    """Eight (M, A, T) triplets x 30 rows: the (M, A) strata have one task each but one, of 60 rows."""
    trip = [("MR", "Brain", 0), ("MR", "Brain", 1), ("MR", "Knee", 0), ("CT", "Brain", 0), ("CT", "Chest", 1),
            ("X", "Chest", 1), ("X", "Knee", 0), ("CT", "Knee", 1)]
    codes = {}
    c = np.array([codes.setdefault((m, a), len(codes)) for m, a, _ in trip for _ in range(30)])
    y = np.array([t for *_, t in trip for _ in range(30)])
    return y, c


def test_noise_with_one_two_class_stratum_reads_near_zero():
    torch.set_num_threads(1)
    y, c = _noise_layout()
    values, held = [], 0
    for draw in range(6):
        z = np.random.default_rng([draw, 77]).standard_normal((len(y), 8)).astype(np.float32)
        e = ProbeEstimator().estimate(z, y, c)
        values.append(e.value)
        held += "learning-curve step withheld" in e.note
        assert e.ci_low == 0.0
    # with the step these draws read 0.011, 0.006, 0, 0.173 (the cap), 0.173, 0 (RESULTS.md)
    assert max(values) < 0.02, values
    assert held >= 4
