"""A stratum fitted at a penalty chosen on every stratum's rows: its own best penalty's validation
gain widens its upper end and the term's (`probe._LinearPath.stratum_gaps`, "penalty_gap" in
`base.CrossFitEstimator._aggregate`).

An outside study's family (issue 22, twenty-eighth session): I(Z;Y|C) with a 100-row stratum of
0.29 nats among strata of 300-1,000 rows with weak or no signal; the small stratum's interval
missed its truth in 4 of 5 draws (RESULTS.md, twenty-ninth session, for the coverage measured).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.data.entropy import conditional_entropy_upper, joint_codes
from matprobe.mi import probe as probe_module
from matprobe.mi.knn import KSGEstimator
from matprobe.mi.probe import ProbeEstimator, _LinearPath

torch.set_num_threads(1)


def test_stratum_gaps_exact():
    inf = np.inf
    # [dims, penalty, strata]: stratum 0 best at (1, 0), stratum 1 best at the chosen (0, 1)
    vs = np.array([[[0.70, 0.40], [0.60, 0.30], [inf, inf]],
                   [[0.50, 0.45], [0.65, 0.35], [0.66, inf]]])
    path = _LinearPath(strata=[None, None], problem=None, dim_grid=[1, 2], lams=[1.0, 0.1, 0.01],
                       val_ce=np.zeros((2, 3)), sols={}, stratum_val_ce=vs)
    np.testing.assert_allclose(path.stratum_gaps(0, 1), [0.60 - 0.50, 0.0], atol=1e-15)
    np.testing.assert_allclose(path.stratum_gaps(1, 0), [0.0, 0.45 - 0.30], atol=1e-15)
    # a stratum with no validation rows (inf everywhere) gets no gap
    vs2 = vs.copy()
    vs2[..., 1] = inf
    np.testing.assert_array_equal(_LinearPath([None, None], None, [1, 2], [1.0, 0.1, 0.01], np.zeros((2, 3)), {},
                                              vs2).stratum_gaps(0, 1), [0.60 - 0.50, 0.0])
    # one stratum: the shared cell is its own best, nothing to add
    one = _LinearPath([None], None, [1, 2], [1.0, 0.1, 0.01], np.zeros((2, 3)), {}, vs[..., :1])
    np.testing.assert_array_equal(one.stratum_gaps(0, 1), [0.0])


def _small_strong_stratum(seed: int, n: int = 1500, d: int = 16):
    """A 100-row stratum with separation 1.8 along its own axis, beside a 600-row null stratum and
    an 800-row weak one: the shared penalty suits the large strata."""
    rng = np.random.default_rng(seed)
    sizes, delta = [100, 600, n - 700], [1.8, 0.0, 0.5]
    c = np.repeat(np.arange(3), sizes)
    rng.shuffle(c)
    y = (rng.random(n) < 0.5).astype(np.int64)
    z = rng.normal(size=(n, d))
    for k in range(3):
        m = c == k
        z[m, 8 + k] += 2.0
        z[m, k] += (y[m] - 0.5) * delta[k]
    return z.astype(np.float32), y, c


def _run(z, y, c, monkeypatch=None):
    est = ProbeEstimator(seeds=2)
    plan = est.fold_plan(z, joint_codes([y, c]))
    return est.estimate(z, y, c, plan=plan), plan.fold


def test_gap_widens_upper_ends_by_the_recorded_gaps(monkeypatch):
    z, y, c = _small_strong_stratum(3)
    with_gap, fold = _run(z, y, c)
    gaps = {}  # (fold, stratum code) -> gap, as the folds recorded it
    for d in with_gap.diagnostics["folds"]:
        for code, g in d.get("penalty_gaps", []):
            gaps[(d["fold"], code)] = g
    assert gaps, "the shared penalty was every stratum's own best in every fold: no gap to test"
    monkeypatch.setattr(_LinearPath, "stratum_gaps", lambda self, a, b, cells=None: np.zeros(self.stratum_val_ce.shape[2]))
    without, fold2 = _run(z, y, c)
    np.testing.assert_array_equal(fold, fold2)
    # the points are the same bits: the gap only widens the upper end
    assert with_gap.value == without.value and with_gap.ci_low == without.ci_low
    n = len(y)
    added = 0.0
    for k, (s_with, s_without) in enumerate(zip(with_gap.strata, without.strata)):
        rows = np.flatnonzero(c == k)
        # the per-row gap's mean over the stratum's rows: each fold's gap times its share of them
        g = sum(gaps.get((f, k), 0.0) * np.mean(fold[rows] == f) for f in np.unique(fold))
        assert s_with.estimate == s_without.estimate and s_with.ci_low == s_without.ci_low
        if s_without.ci_high + g < s_with.h_upper:  # not capped at the stratum's entropy limit
            assert s_with.ci_high - s_without.ci_high == pytest.approx(g, abs=1e-12)
        added += g * len(rows) / n
    assert added > 0
    assert with_gap.ci_high - without.ci_high == pytest.approx(added, abs=1e-12)


def test_one_stratum_has_no_gap():
    z, y, c = _small_strong_stratum(4)
    m = c == 0
    r = ProbeEstimator(seeds=2).estimate(z[m], y[m])
    assert all("penalty_gaps" not in d for d in r.diagnostics["folds"])


def test_small_cells_note_names_no_critic_for_knn():
    # 8 classes x 3 strata of 10 rows against 17 inputs: every cell is small for both estimators
    rng = np.random.default_rng(0)
    n = 240
    c = np.repeat(np.arange(3), n // 3)
    y = np.tile(np.arange(8), n // 8)
    z = rng.normal(size=(n, 16)).astype(np.float32) + y[:, None] * 0.5
    knn = KSGEstimator(seeds=1).estimate(z, y, c)
    probe = ProbeEstimator(seeds=1).estimate(z, y, c)
    assert "small-cells" in knn.flags and "small-cells" in probe.flags
    assert "critic" not in knn.note and "(this estimator's 16 feature dimensions + 1)" in knn.note
    assert "the critic's (stratum, class[, sub-class]) cells with fewer than 20 rows (the critic's 17 inputs)" \
        in probe.note
    assert probe_module.ProbeEstimator.tags.critic_cells and not KSGEstimator.tags.critic_cells


def _strata_task(seed: int, spec, d: int = 8):
    """Strata of (rows, separation) with two balanced classes, each along its own axis."""
    rng = np.random.default_rng(seed)
    c = np.concatenate([np.full(n_s, k) for k, (n_s, _) in enumerate(spec)])
    y = np.concatenate([np.arange(n_s) % 2 for n_s, _ in spec]).astype(np.int64)
    z = rng.normal(size=(len(c), d))
    for k, (_, sep) in enumerate(spec):
        m = c == k
        z[m, k % d] += (y[m] - 0.5) * sep
    return z.astype(np.float32), y, c


def test_stratum_entries_one_sided_where_their_own_reasons_hold():
    # stratum 0 nearly separable (its estimate near log 2), stratum 1 of 30 rows (cells of 15 rows,
    # under the critic's 9 inputs' floor of 20 rows: 1.5% of the term's rows), stratum 2 weak
    z, y, c = _strata_task(0, [(400, 12.0), (30, 1.0), (1600, 0.8)])
    r = ProbeEstimator(seeds=1).estimate(z, y, c)
    assert r.bound == "two-sided" and "small-cells" not in r.flags and "near-saturated" not in r.flags
    s_sat, s_small, s_weak = r.strata
    assert s_sat.estimate >= 0.9 * s_sat.h_upper
    assert s_sat.bound == "lower" and f"near saturation, {s_sat.estimate / s_sat.h_upper:.0%} of H(Y|C=c)" in s_sat.note
    assert s_small.bound == "lower" and "100% of its rows in cells with fewer than 20 rows (9 critic inputs)" in s_small.note
    for s in (s_sat, s_small):  # the upper end is the stratum's entropy limit, not the bootstrap's
        ys = y[c == r.strata.index(s)]
        assert s.ci_high == pytest.approx(conditional_entropy_upper(ys, None, 0.95), abs=1e-12)
    assert s_weak.bound == "two-sided" and "lower bound" not in s_weak.note
    assert s_weak.ci_high < s_weak.h_upper


def test_a_wider_representation_needs_rows_for_its_inputs(monkeypatch):
    # every check "earns" its fit here; whether it is fitted is then up to the cells' rows
    monkeypatch.setattr(ProbeEstimator, "_earns_a_fit", lambda self, plain, gain, se: True)
    est = ProbeEstimator(seeds=1, pca=0)
    roomy = est.estimate(*_strata_task(1, [(1500, 1.0)], d=8)[:2])  # 600 training rows per class, 45 inputs
    # 32 training rows per class: room for the radial interaction's 8 + 8 + 1 + 1 inputs, not for
    # the 8 + 36 products + 1 of the quadratic critic
    cramped = est.estimate(*_strata_task(1, [(80, 1.0)], d=8)[:2])
    assert all("val_loss_quadratic" in d and "val_loss_radial" in d for d in roomy.diagnostics["folds"])
    assert all("val_loss_radial" in d and "val_loss_quadratic" not in d for d in cramped.diagnostics["folds"])


def test_mi_file_records_the_numerics_and_cpu_that_computed_it(tmp_path):
    import json

    from matprobe.mi.chain import run_store, write_results
    from matprobe.numerics import cpu_model
    from matprobe.store import EmbeddingStore

    z, y, c = _strata_task(2, [(60, 2.0), (60, 1.0)])
    store = tmp_path / "s.h5"
    EmbeddingStore.from_arrays(store, [f"s{i}" for i in range(len(z))],
                               {"modality": np.array(["CT", "MRI"])[c], "label": np.array(["a", "b"])[y]},
                               {("1", "last"): z}).close()
    result, meta = run_store(store, ["modality", "label"], seeds=1, folds=3, pca=0)
    write_results(result, tmp_path / "mi.json", numerics=meta["numerics"], store=meta["store"])
    doc = json.loads((tmp_path / "mi.json").read_text())
    expected = "unknown"
    with open("/proc/cpuinfo") as fh:  # Linux CI: the first "model name" line
        for line in fh:
            if line.startswith("model name"):
                expected = line.split(":", 1)[1].strip()
                break
    assert doc["numerics"]["cpu"] == cpu_model() == expected
    assert doc["numerics"]["portable"] is False and doc["numerics"]["torch_cpu_capability"]
