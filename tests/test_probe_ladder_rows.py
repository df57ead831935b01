"""Issue 22 (speed): the ladder's non-linearity check fits on at most `ladder_rows` training rows
and stops after `ladder_patience` epochs without gain; a level it chooses is refitted on every
fitting row with the level's own patience; below the cap nothing else changes."""

from __future__ import annotations

import numpy as np
import torch

from matprobe.mi import make_estimator, probe
from matprobe.mi.groundtruth import mixture_task

torch.set_num_threads(1)


def _sample(n: int = 3000):
    task = mixture_task(k_classes=4, components=2, d=16, signal_dim=6, spread=1.6, seed=1)
    return task.sample(n, seed=1)


def test_check_on_a_subset_then_the_chosen_level_on_every_fitting_row(monkeypatch):
    z, f = _sample()
    fits = []
    original = probe._MLPLadder._fit

    def recording(self, params, rows, val_rows, seed, patience=None):
        fits.append((len(rows), int((~self.val).sum()), set(rows.tolist()) <= set(np.flatnonzero(~self.val).tolist()),
                     patience, type(self).__name__))
        return original(self, params, rows, val_rows, seed, patience)

    monkeypatch.setattr(probe._MLPLadder, "_fit", recording)
    # one base per fold (no map choice: its second ladder's fits would interleave with these; the
    # same `_fit_levels` fits both, tests/test_map_choice.py)
    res = make_estimator("probe", folds=5, seeds=1, pca=None, ladder_rows=500, map_choice=False).estimate(z, f["Y"])
    folds = res.diagnostics["folds"]
    levels = [d["level"] for d in folds]
    assert levels.count("nonlinear") >= 3  # the mixture needs the level (issue 12)
    i = 0
    for level, diag in zip(levels, folds):
        n_rows, n_fit, inside, patience, form = fits[i]
        assert (n_rows, inside) == (500, True) and n_fit > 500  # the check: a subset of the fitting rows
        assert patience == res.params["ladder_patience"] == 2  # ... with the check's shorter patience
        assert form == "_MLPLadder"
        i += 1
        if level == "nonlinear":
            assert fits[i][0] == fits[i][1]  # the chosen level: refitted on every fitting row
            assert fits[i][3] is None  # ... with the level's own patience (mlp_patience)
            # then the latent-cell and the elliptical levels, each fitted on every fitting row too,
            # with its own patience (None: the form's `patience`)
            assert fits[i + 1][0] == fits[i + 1][1] and fits[i + 1][3] is None
            assert fits[i + 1][4] == "_LatentCellLadder"
            assert fits[i + 2][0] == fits[i + 2][1] and fits[i + 2][3] is None
            assert fits[i + 2][4] == "_EllipticalLadder"
            # the lowest validation log-loss is kept, the earlier form on a tie
            losses = {"_MLPLadder": diag["val_loss_mlp"], "_LatentCellLadder": diag["val_loss_latent"],
                      "_EllipticalLadder": diag["val_loss_elliptical"]}
            chosen = {"mlp": "_MLPLadder", "latent cells": "_LatentCellLadder",
                      "elliptical": "_EllipticalLadder"}[diag["nonlinear_form"]]
            assert chosen == min(losses, key=losses.get)
            i += 3
            assert fits[i][0] < fits[i - 1][0]  # then the seed's half fit (learning curve), by the chosen form
            # and a quarter inside that half (the level's learning-curve rate, `nonlinear_rate`)
            assert fits[i + 1][0] < 0.6 * fits[i][0]
            assert fits[i][4] == fits[i + 1][4] == chosen
            i += 2
    assert i == len(fits)


def test_below_the_cap_the_estimate_is_unchanged_bit_for_bit():
    # the calibration benchmark's n = 2k and 5k draws have fewer fitting rows than the default
    # cap (4,096): the cap must not touch them (here 1,200 of 1,500 rows train, 960 fit)
    z, f = _sample(1500)
    a = make_estimator("probe", folds=5, seeds=1, pca=None).estimate(z, f["Y"])
    b = make_estimator("probe", folds=5, seeds=1, pca=None, ladder_rows=10**9).estimate(z, f["Y"])
    assert (a.value, a.ci_low, a.ci_high) == (b.value, b.ci_low, b.ci_high)
    assert a.params["ladder_rows"] == 4096


def test_the_check_stops_after_its_patience_and_a_level_fit_after_the_longer_one():
    # the validation curve of each fit: it ends `patience` epochs after its best epoch (or at
    # mlp_epochs); the check's curve is recorded in diagnostics["mlp_curve"] when the level is kept
    z, f = _sample()
    est = make_estimator("probe", folds=5, seeds=1, pca=None)
    lengths = {}
    original = probe._MLPLadder._fit

    def recording(self, params, rows, val_rows, seed, patience=None):
        best, curve = original(self, params, rows, val_rows, seed, patience)
        lengths.setdefault(patience, []).append(curve)
        return best, curve

    probe._MLPLadder._fit, saved = recording, original
    try:
        est.estimate(z, f["Y"])
    finally:
        probe._MLPLadder._fit = saved
    for patience, curves in lengths.items():
        p = est.mlp_patience if patience is None else patience
        for curve in curves:
            # the last epoch that improved by more than 1e-4 on the best before it
            best, best_epoch = curve[0], 0
            for e, v in enumerate(curve[1:], start=1):
                if v < best - 1e-4:
                    best, best_epoch = v, e
            assert len(curve) - 1 == min(best_epoch + p, est.mlp_epochs)
    assert set(lengths) == {2, None}


def test_every_check_fits_on_the_folds_one_set_of_check_rows(monkeypatch):
    # the radial, quadratic, second-moment and hinge checks fit their extra weights on the same rows of a
    # fold: at most `ladder_rows` of its fitting rows, drawn once (the radial check fitted every
    # fitting row: 4-6% of a 20k x 4,096 sweep cell, thirty-fourth session)
    z, f = _sample(3000)
    seen = []
    original = probe.ProbeEstimator._gain_beside

    def recording(self, plain, extra_tr, val, keep, dev, kind, *rest):
        seen.append((kind, keep.copy(), val.copy()))
        return original(self, plain, extra_tr, val, keep, dev, kind, *rest)

    monkeypatch.setattr(probe.ProbeEstimator, "_gain_beside", recording)
    make_estimator("probe", folds=5, seeds=1, pca=None, ladder_rows=500, map_choice=False).estimate(z, f["Y"])
    kinds = [k for k, _, _ in seen]
    per_fold = ["radial", "quadratic", "second-moment", "additive", "index", "calibration"]
    assert kinds == per_fold * 5
    for i in range(0, len(seen), len(per_fold)):
        fold = seen[i : i + len(per_fold)]
        keep, val = fold[0][1], fold[0][2]
        assert keep.sum() == 500 and not (keep & val).any() and (~val).sum() > 500
        assert all(np.array_equal(k, keep) and np.array_equal(v, val) for _, k, v in fold)


def test_a_check_made_on_its_own_rows_reads_what_all_rows_would_give(monkeypatch):
    # the quadratic, second-moment and hinge checks make their columns only for the rows they read
    # (the check rows and the validation split): gains and estimate as with the columns of every row
    z, f = _sample(2000)

    def run():
        res = make_estimator("probe", folds=3, seeds=1, pca=None, ladder_rows=300, map_choice=False).estimate(z, f["Y"])
        gains = [(d["quadratic_gain"], d["second_moment_gain"], d["additive_gain"], d["index_gain"],
                  d["calibration_gain"]) for d in res.diagnostics["folds"]]
        return res.value, res.ci_low, res.ci_high, gains

    made = []
    original = probe.ProbeEstimator._check_beside

    def counting(self, kind, name, fits, extra_tr, extra_ev, context, **kw):
        def rows_made(rows):
            made.append(len(rows))
            return extra_tr(rows)
        return original(self, kind, name, fits, rows_made, extra_ev, context, **kw)

    monkeypatch.setattr(probe.ProbeEstimator, "_check_beside", counting)
    own_rows = run()
    assert len(made) == 15 and max(made) < 0.5 * len(z)  # the check and validation rows, not every row

    def every_row(self, kind, name, fits, extra_tr, extra_ev, context, **kw):
        every = extra_tr(np.arange(len(context[0])))
        return original(self, kind, name, fits, lambda rows: every[rows], extra_ev, context, **kw)

    monkeypatch.setattr(probe.ProbeEstimator, "_check_beside", every_row)
    assert run() == own_rows


def test_check_columns_of_some_rows_are_those_rows_of_all_the_columns():
    from matprobe.mi.prep import quadratic_products, second_moment_basis, second_moment_features

    z, f = _sample(3000)
    c = f["Y"] % 2  # two strata
    rows = np.sort(np.random.default_rng(3).choice(len(z), 700, replace=False))
    cols = np.array([3, 0, 7])
    full = quadratic_products(z, c, cols)
    assert np.array_equal(quadratic_products(z[rows], c[rows], cols, centred_by=(z, c)), full[rows])
    basis = second_moment_basis(z[:1000], f["Y"][:1000], c[:1000], q=3)
    np.testing.assert_allclose(second_moment_features(z[rows], c[rows], basis),
                               second_moment_features(z, c, basis)[rows], rtol=1e-6, atol=0)
