"""Issue 25: control tasks (Hewitt & Liang 2019) for chain terms: control labels drawn from the
target's frequencies per stratum and fixed per image; the selectivity interval contains 0 on null
tasks and the truth on ground-truth tasks (where the control's MI is 0: every image appears once)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import chain_terms
from matprobe.mi.controls import control_labels
from matprobe.mi.groundtruth import chain_task

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
