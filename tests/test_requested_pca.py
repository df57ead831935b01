"""Issue 22 (fifteenth session): where a fold plan raised its PCA, the requested size's features
stay an alternative representation of each fold's rows.

On Student-t classes with massive coordinates (d = 4,096, n = 20k) the residual test raised the
PCA from 64 to 256 components; at 262 inputs the critic's non-linear level no longer gained, the
linear one read 19-20% low with a two-sided interval that missed, while on the 70 inputs of the
requested size the non-linear level gained and the misspecification check flagged (RESULTS.md).
`FoldPlan.settle_reduction` keeps the requested features (`requested_features`) and their
residual tests (`requested_tests`); the estimators get them as `alternatives`; the probe admits
them only where their ladder chose the non-linear level and the raised features' did not, and
keeps the lower validation log-loss. A term read by folds that kept them carries their residual
test's verdict.

The tests hold the probe's choice to fits of each representation alone (bit for bit), and a
term whose every fold kept the requested features to a run that never raised the PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import chain_terms
from matprobe.mi.base import REQUESTED_PCA, FoldPlan, make_plan
from matprobe.mi.groundtruth import LatentMixtureTask
from matprobe.mi.prep import label_free_reduction
from matprobe.mi.probe import ProbeEstimator

torch.set_num_threads(1)


def _ring(n, seed, radius=(1.0, 2.2)):
    """Two classes on two rings in the plane (class by radius): no linear critic reads them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    angle = rng.uniform(0, 2 * np.pi, n)
    r = np.where(y == 0, radius[0], radius[1]) + 0.25 * rng.standard_normal(n)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], 1).astype(np.float32), y


def _probe():
    # the checks off, so each representation is one `_fit_levels` and its outputs can be compared
    return ProbeEstimator(radial_check=False, quadratic_check=False, second_moment_check=False, radial_damping=False,
                          additive_check=False, index_check=False, calibration_check=False)


def _fold(x, y, n_tr):
    zeros = np.zeros(len(y), dtype=np.int64)
    return (x[:n_tr], y[:n_tr], zeros[:n_tr], zeros[:n_tr], x[n_tr:], y[n_tr:], zeros[n_tr:])


def _same(a, b):
    assert a.arrays.keys() == b.arrays.keys()
    for key in a.arrays:
        np.testing.assert_array_equal(a.arrays[key], b.arrays[key])


@pytest.fixture(scope="module")
def rings():
    x_alt, y = _ring(3000, 0)
    noise = np.random.default_rng(1).standard_normal((3000, 6)).astype(np.float32)
    return x_alt, noise, y


def test_an_alternative_whose_ladder_bends_is_kept_where_it_predicts_better(rings):
    """Main features without label information (linear level), the alternative the rings (its
    non-linear level gains): the fold keeps the alternative, and its outputs are those of a fit on
    the alternative alone."""
    x_alt, noise, y = rings
    n_tr = 2400
    with_alt = _probe().fit_fold_seeds(*_fold(noise, y, n_tr), [0],
                                       alternatives={REQUESTED_PCA: (x_alt[:n_tr], x_alt[n_tr:])})[0]
    alone = _probe().fit_fold_seeds(*_fold(x_alt, y, n_tr), [0])[0]
    plain = _probe().fit_fold_seeds(*_fold(noise, y, n_tr), [0])[0]
    assert plain.diagnostics["level"] == "linear" and alone.diagnostics["level"] == "nonlinear"
    assert with_alt.diagnostics["representation"] == REQUESTED_PCA
    assert with_alt.diagnostics["val_loss_requested_pca"] < with_alt.diagnostics["val_loss_features"]
    _same(with_alt, alone)


def test_an_alternative_is_not_admitted_where_the_features_bend_too_or_it_stays_linear(rings):
    """The rule's two other sides: the features' own ladder bends (the rings beside noise), or the
    alternative's does not (a linear read of noise): the fold keeps the features, bit for bit."""
    x_alt, noise, y = rings
    n_tr = 2400
    both = np.concatenate([x_alt, noise[:, :2]], 1)
    for main, alt in ((both, x_alt), (x_alt, noise)):
        with_alt = _probe().fit_fold_seeds(*_fold(main, y, n_tr), [0],
                                           alternatives={REQUESTED_PCA: (alt[:n_tr], alt[n_tr:])})[0]
        alone = _probe().fit_fold_seeds(*_fold(main, y, n_tr), [0])[0]
        assert with_alt.diagnostics["representation"] == "features"
        assert "val_loss_requested_pca" in with_alt.diagnostics  # fitted and reported, not admitted
        _same(with_alt, alone)


def _under_noise(seed):
    # the signal under noise of s.d. 3 (d = 256): PCA-64 keeps noise only, and the plan raises
    return LatentMixtureTask(k_classes=4, d=256, signal_dim=8, separation=1.0, noise_scales=3.0, seed=seed)


def test_the_plan_keeps_the_requested_features_and_tests_where_it_raised():
    task = _under_noise(7)
    z, f = task.sample(4400, seed=1)
    plan: FoldPlan = make_plan(z, f["Y"], 5, 64, True, 0)
    plan.raise_pca = True
    record = plan.settle_reduction(z, [(f["Y"], None)])
    assert record.used is None  # every coordinate
    np.testing.assert_array_equal(plan.requested_features, label_free_reduction(z, 64, True, seed=0).features)
    (test,) = plan.requested_tests.values()
    assert test.kept == 64 and test.dropped and test.z == record.steps[0]["max_z"]
    # not raised: nothing kept
    kept = make_plan(z, f["Y"], 5, 64, True, 0)
    kept.settle_reduction(z, [(f["Y"], None)])  # raise_pca off
    assert kept.requested_features is None and kept.requested_tests == {}


class _KeepsRequested(ProbeEstimator):
    """A probe that fits every fold on the alternative it is given (as if it always predicted
    better), to hold the estimate's handling of such folds to a run that never raised."""

    def fit_fold_seeds(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seeds, alternatives=None):
        if not alternatives:
            return super().fit_fold_seeds(x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seeds)
        a_tr, a_ev = alternatives[REQUESTED_PCA]
        outs = super().fit_fold_seeds(a_tr, y_tr, c_tr, sub_tr, a_ev, y_ev, c_ev, seeds)
        for out in outs:
            out.diagnostics["representation"] = REQUESTED_PCA
        return outs


def test_a_term_read_on_the_requested_features_carries_their_residual_verdict():
    """Every fold on the requested features: the value and lower end are the unraised run's, bit
    for bit (the alternative's rows are the folds' own), and the flag and one-sided interval of
    the requested size's residual test come with them."""
    task = _under_noise(7)
    z, f = task.sample(4400, seed=1)
    y = f["Y"]
    raised = _KeepsRequested(seeds=1, folds=5).estimate(z, y)
    never = ProbeEstimator(seeds=1, folds=5, raise_pca=False).estimate(z, y)
    assert raised.diagnostics["reduction"]["used"] is None  # the plan did raise
    assert "pca-dropped-signal" in never.flags and never.bound == "lower"
    assert (raised.value, raised.ci_low, raised.ci_high) == (never.value, never.ci_low, never.ci_high)
    assert "pca-dropped-signal" in raised.flags and raised.bound == "lower"
    assert "5 of 5 folds kept the requested 64 components' features" in raised.note
    requested_test = raised.diagnostics["requested_reduction_residual"]
    assert requested_test["kept"] == 64 and requested_test["z"] == never.diagnostics["reduction_residual"]["z"]
    assert raised.diagnostics["reduction_residual"] is None  # every coordinate: nothing reduced
    # the default probe on the same rows keeps the raised features (the requested ones hold no signal)
    default = dict(chain_terms(z, f, order=["Y"], seeds=1, folds=5, direct=False, difference=False)
                   .terms["probe"])["I(Z;Y)"]
    assert all(d["representation"] != REQUESTED_PCA for d in default.diagnostics["folds"])
    assert default.value > 3 * raised.value
