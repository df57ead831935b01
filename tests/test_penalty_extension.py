"""The probe's penalty path goes on below its grid while a step still gains significantly on the
validation split (`ProbeEstimator.penalties_below`). Classes separated along a direction of
Z with 1/100 of the others' s.d. need large weights: at the grid's weakest penalty (1e-5) the
estimate sat 0.03-0.05 nats under the truth with a two-sided interval that missed it. Only where
the critic's cells hold more rows than its inputs (in small cells classes separate by chance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from matprobe.mi.chain import chain_terms
from matprobe.mi.probe import ProbeEstimator

torch.set_num_threads(1)


def _thin_direction_task(n: int, seed: int):
    """Class 0 sits 5 s.d. from classes 1 and 2 along a direction of s.d. 0.01 (the others 1),
    rotated at random; classes 1 and 2 coincide. Returns z, y and the exact MI by 200k-draw
    Monte Carlo of the known densities (numpy only)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    sd = np.array([1.0, 1.0, 1.0, 0.01])
    mus = np.zeros((3, 4))
    mus[0, 3] = -0.05
    y = rng.integers(0, 3, n)
    z = (mus[y] + rng.standard_normal((n, 4)) * sd) @ q.T
    mc = np.random.default_rng(seed + 1000)
    ym = mc.integers(0, 3, 200_000)
    u = mus[ym] + mc.standard_normal((200_000, 4)) * sd
    ll = -0.5 * (((u[:, None, :] - mus[None]) / sd) ** 2).sum(-1)
    truth = float(np.mean(ll[np.arange(len(ym)), ym] - logsumexp(ll, axis=1) + np.log(3)))
    return z, y, truth


def _term(z, y, **kw):
    (_, e), = chain_terms(z, {"Y": y}, seeds=1, folds=3, pca=None, gaussianize=False, **kw).terms["probe"]
    return e


def test_the_path_goes_below_the_grid_where_it_still_gains_and_the_interval_then_covers():
    covered_before = covered_after = 0
    for seed in range(3):
        z, y, truth = _thin_direction_task(1500, seed)
        # the penalty path alone: with the second-moment check on, the grid-only critic's
        # shortfall is seen by the check in 2 of these 3 draws (one-sided, holding)
        # (and the hinge checks of the forty-second session, which see it in all 3)
        old = _term(z, y, penalties_below=0, second_moment_check=False, additive_check=False, index_check=False, calibration_check=False)
        new = _term(z, y, second_moment_check=False, additive_check=False, index_check=False, calibration_check=False)
        covered_before += old.ci_low <= truth <= old.ci_high
        covered_after += new.ci_low <= truth <= new.ci_high
        # closer to the truth, from below (a held-out log-loss estimate)
        assert abs(new.value - truth) < abs(old.value - truth), seed
        assert min(f["penalty"] for f in new.diagnostics["folds"]) < 1e-5 <= min(f["penalty"] for f in old.diagnostics["folds"])
    assert covered_before == 0 and covered_after >= 2


def test_a_well_conditioned_task_fits_nothing_below_the_grid():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 600)
    z = 0.5 * np.eye(3)[y] + rng.standard_normal((600, 3))
    e, old = _term(z, y), _term(z, y, penalties_below=0)
    grid = [0.1, 0.01, 0.001, 0.0001, 1e-05]
    for f in e.diagnostics["folds"]:
        assert f["penalty_grid"] == pytest.approx(grid)  # the steps below were not fitted
    assert e.value == old.value and (e.ci_low, e.ci_high) == (old.ci_low, old.ci_high)


def test_penalties_below_is_a_whole_number():
    with pytest.raises(ValueError, match="penalties_below=-1: give a whole number of steps"):
        ProbeEstimator(penalties_below=-1)
    assert ProbeEstimator().get_params()["penalties_below"] == 3


def test_no_step_below_the_grid_where_cells_hold_fewer_rows_than_the_critic_has_inputs():
    # 3 classes of ~40 training rows in 60 dimensions: separable by chance, where weaker penalties
    # only grow the weights (the demo's 480-row stores read 0.218 for 0.543 when they were allowed)
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 180)
    z = 0.8 * np.eye(60)[y] + rng.standard_normal((180, 60))
    e = _term(z, y)
    assert all(min(f["penalty_grid"]) == 1e-5 for f in e.diagnostics["folds"])
