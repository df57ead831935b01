"""Issue 25: control tasks (Hewitt & Liang 2019) for chain terms: control labels drawn from the
target's frequencies per stratum and fixed per image; the selectivity interval contains 0 on null
tasks and the truth on ground-truth tasks (where the control's MI is 0: every image appears once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import chain_terms
from matprobe.mi.controls import control_labels, control_task
from matprobe.mi.groundtruth import chain_task
from matprobe.mi.interface import MIEstimate

torch.set_num_threads(1)
FAST = dict(seeds=2, folds=3, pca=None)


def test_control_labels_follow_each_stratum_and_are_fixed_per_group():
    rng = np.random.default_rng(0)
    n = 6000
    c = rng.integers(0, 2, n)
    y = np.where(c == 0, rng.choice([0, 1], n, p=[0.8, 0.2]), rng.choice([1, 2, 3], n, p=[0.2, 0.3, 0.5]))
    groups = rng.integers(0, 1500, n)
    groups = groups * 2 + c  # an image belongs to one stratum
    ctrl = control_labels(y, c, np.random.default_rng(1), groups)
    for g in np.unique(groups)[:200]:
        assert len(set(ctrl[groups == g])) == 1  # one label per image
    assert set(ctrl[c == 0]) <= {0, 1} and set(ctrl[c == 1]) <= {1, 2, 3}  # only the stratum's classes
    # frequencies per stratum: one draw per image from the stratum's label frequencies
    first = {g: i for i, g in reversed(list(enumerate(groups)))}
    per_image = np.array(list(first.values()))
    for s, p in ((0, {0: 0.8}), (1, {1: 0.2, 3: 0.5})):
        rows = per_image[c[per_image] == s]
        for label, want in p.items():
            got = np.mean(ctrl[rows] == label)
            assert abs(got - want) < 4 * np.sqrt(want * (1 - want) / len(rows)) + 0.02
    # the same seed, the same labels; rows without groups each draw their own
    assert np.array_equal(ctrl, control_labels(y, c, np.random.default_rng(1), groups))
    assert len(np.unique(control_labels(y, c, np.random.default_rng(1))[:50])) > 1


def test_selectivity_contains_zero_on_null_tasks():
    covered = 0
    for rep in range(8):
        rng = np.random.default_rng(100 + rep)
        n = 600
        m = rng.integers(0, 2, n)
        a = rng.integers(0, 3, n)  # independent of Z given M
        z = np.stack([m + 0.5 * rng.standard_normal(n), rng.standard_normal(n), rng.standard_normal(n)], 1)
        res = chain_terms(z.astype(np.float32), {"M": m, "A": a}, direct=False, difference=False, controls=True,
                          seed=rep, **FAST)
        ctrl = res.terms["probe"][1][1].diagnostics["control"]
        covered += ctrl["ci_low"] <= 0.0 <= ctrl["ci_high"]
    assert covered >= 7  # a 95% interval misses 2 of 8 with probability 0.05


@pytest.mark.slow
def test_selectivity_interval_covers_the_truth_on_ground_truth_chains():
    # every row is its own image: the control labels are independent of Z given the strata, so the
    # control's MI is 0 and the selectivity's truth is the term's MI
    covered, cells = 0, 0
    for draw in range(6):
        task = chain_task((2, 3, 3), d=8, signal_dim=4, seed=200 + draw)
        z, f = task.sample(2000, seed=draw)
        truth = task.truth(100_000)
        res = chain_terms(z, f, order=list(task.names), direct=False, difference=False, controls=True, seeds=3,
                          folds=5, pca=None, seed=draw)
        for term, e in res.terms["probe"]:
            t, se = truth[term]
            ctrl = e.diagnostics["control"]
            cells += 1
            covered += ctrl["ci_low"] - 2 * se <= t <= ctrl["ci_high"] + 2 * se
    assert covered >= cells - 2, (covered, cells)


def test_mi_cli_writes_the_control_task(tmp_path):
    from conftest import mi_cli_on_synthetic_store

    res, doc, _ = mi_cli_on_synthetic_store(tmp_path, "--controls", seed=4, n=300)
    ctrl = [t["control"] for t in doc["terms"]]
    assert ctrl[0]["ci_low"] > 0.1  # modality is in Z, the control labels are not
    assert ctrl[1]["ci_low"] <= 0 <= ctrl[1]["ci_high"]  # anatomy is noise here
    assert "selectivity" in res.output


@pytest.mark.parametrize("suffix", ["csv", "json"])
def test_sweep_writes_baseline_columns_and_resumes_them(tmp_path, suffix):
    import pandas as pd

    from conftest import synthetic_mat_store
    from matprobe.mi.sweep import BASELINE_COLUMNS, read_table, run_sweep

    store = synthetic_mat_store(tmp_path / "s.h5", seed=6, n=240, d=6, signal=[("modality", "CT", 2.0)],
                                accuracy=0.7)
    out = tmp_path / f"sweep.{suffix}"
    kw = dict(factors=["M", "A"], seeds=1, folds=3, pca=None, pointwise=False)
    res = run_sweep([store], out, controls=True, codelength=True, permutations=2, **kw)
    table = read_table(out)
    assert set(BASELINE_COLUMNS) <= set(table.columns) and len(table) == 2
    m = table[table["term"] == "I(Z;M)"].iloc[0]
    assert m["selectivity_low"] > 0 and m["compression"] > 1 and m["p_perm"] == pytest.approx(1 / 3)
    assert res.n_computed == 1
    again = run_sweep([store], out, controls=True, codelength=True, permutations=2, **kw)
    assert again.n_computed == 0 and again.n_resumed == 1  # same settings: resumed with its columns
    pd.testing.assert_frame_equal(read_table(out), table)
    plain = run_sweep([store], tmp_path / f"plain.{suffix}", **kw)  # without baselines: no such columns
    assert not set(BASELINE_COLUMNS) & set(plain.table.columns)
    from matprobe.errors import EstimationError

    with pytest.raises(EstimationError, match="written with other settings"):  # never mixed into one table
        run_sweep([store], out, **kw)


def _estimate(raw_rows, cap, ci_low=0.0):
    """An estimate from per-row terms, clipped to [0, cap] as the probe reports it."""
    raw = float(np.mean(raw_rows))
    return MIEstimate(value=min(max(raw, 0.0), cap), ci_low=ci_low, ci_high=cap, ci_level=0.95, unit="nats",
                      n_train=0, n_eval=0, estimator="fake", params={},
                      diagnostics={"raw": (raw, ci_low, cap), "pointwise": {"values": np.asarray(raw_rows)[None, :]}})


def test_selectivity_claims_nothing_the_terms_own_estimate_contradicts():
    # study4 (issue 26): I(Z;label|M,A,T) read 0.000 (raw -0.217) against a control at raw -0.772, and the
    # selectivity, raw minus raw, read 0.555 [0.024, 1.085]: an interval excluding 0 for a term that reads 0
    rng = np.random.default_rng(0)
    n, cap = 208, 1.193
    term_rows = -0.217 + 0.3 * rng.standard_normal(n)
    ctrl_rows = -0.772 + 0.3 * rng.standard_normal(n)
    observed = _estimate(term_rows, cap)
    y, c = np.arange(n) % 2, np.arange(n) % 3
    res = control_task(lambda yy, sub, pointwise=True: _estimate(ctrl_rows, cap), y, c, observed=observed)
    assert res.ci_low_raw > 0  # the raw paired interval excludes 0 (what the report showed) ...
    assert res.selectivity_raw == pytest.approx(np.mean(term_rows) - np.mean(ctrl_rows))
    assert res.control_raw == pytest.approx(np.mean(ctrl_rows))
    # ... but the reported selectivity is estimate minus control on the reported scale, and its interval
    # contains 0 with p no smaller than 1 - level
    assert res.selectivity == 0.0 and res.control == 0.0
    assert res.ci_low <= 0.0 <= res.ci_high <= cap and res.p_value >= 0.05
    assert "bounded to it" in res.notes[-1]


def test_selectivity_is_never_above_the_terms_cap():
    # I(Z;modality) near its cap: a control far below 0 must not lift the selectivity above the cap
    rng = np.random.default_rng(1)
    n, cap = 208, 1.090
    term_rows = 1.026 + 0.2 * rng.standard_normal(n)
    ctrl_rows = -0.6 + 0.2 * rng.standard_normal(n)
    observed = _estimate(term_rows, cap, ci_low=0.916)
    res = control_task(lambda yy, sub, pointwise=True: _estimate(ctrl_rows, cap), np.arange(n) % 3, None,
                       observed=observed)
    assert res.selectivity_raw > cap  # raw minus raw: more than the term can hold
    assert res.selectivity == pytest.approx(observed.value) and res.selectivity <= cap
    assert res.ci_high <= cap and res.ci_low <= observed.ci_low and res.ci_low <= res.selectivity <= res.ci_high
    assert res.ci_low > 0  # a real finding stays one: the term's own interval excludes 0


def test_a_sweep_resumed_with_other_settings_is_told_what_differs(tmp_path):
    """Two README-only studies resumed a sweep with --unit bits and with --seeds 3: the refusal said
    "estimator, seeds, folds, pca, seed, factors or baselines differ", and not the unit."""
    from conftest import synthetic_mat_store
    from matprobe.errors import EstimationError
    from matprobe.mi.sweep import run_sweep

    store = synthetic_mat_store(tmp_path / "s.h5", seed=6, n=240, d=6, signal=[("modality", "CT", 2.0)],
                                accuracy=0.7)
    out = tmp_path / "sweep.csv"
    kw = dict(factors=["M", "A"], seeds=1, folds=3, pca=None, pointwise=False)
    run_sweep([store], out, **kw)
    cases = [({"unit": "bits"}, "unit nats in the table, bits asked"),
             ({"level": 0.9}, "level 0.95 in the table, 0.9 asked"),
             ({"factors": ["A", "M"]}, "factors M,A in the table, A,M asked"),
             ({"controls": True}, "controls off in the table, on asked"),
             ({"seeds": 2}, "seeds 1 in the table, 2 asked")]
    for change, said in cases:
        args = {**kw, **change}
        if "level" in args:
            args["ci_level"] = args.pop("level")
        with pytest.raises(EstimationError) as err:
            run_sweep([store], out, **args)
        assert f"{out} was written with other settings ({said}" in str(err.value), (change, str(err.value))
