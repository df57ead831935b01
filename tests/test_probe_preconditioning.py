"""The probe's L-BFGS works in centred, unit-RMS coordinates per stratum (issue 22 speed): the
fitted heads must be the minimisers of the original objective, mean cross-entropy / n_all +
lam |W|^2 with the intercept unpenalised, checked against scipy's BFGS on that objective written
out here in float64, on strata with offset means and columns on scales 0.05-20."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import log_softmax

from matprobe.mi.probe import ProbeEstimator, _prefix_mask, _Stratum, cell_layout

torch.set_num_threads(1)


def _objective(w_flat, x1, target, off, lam, n_all, d):
    w = w_flat.reshape(d + 1, -1)
    logp = log_softmax(x1 @ w + off, axis=1)
    ce = -logp[np.arange(len(target)), target].sum() / n_all
    return ce + lam * (w[:d] ** 2).sum()


@pytest.mark.parametrize("tolerance_change, max_gap, max_logp_diff", [
    # the default stop: within 1e-4 nats of the optimum (along flat directions the posteriors
    # may still differ by a few hundredths, which the objective does not see)
    (ProbeEstimator.tolerance_change, 1e-4, None),
    (1e-13, 1e-8, 5e-3),  # run to convergence: the optimum itself, up to the float32 products
])
@pytest.mark.parametrize("scales", [
    # before the preconditioning, these columns left L-BFGS 9e-4 above the optimum at the
    # default stop and 4e-5 above it after 300 iterations at any tolerance
    (20.0, 1.0, 0.05, 3.0, 0.5),
    # columns nearly constant within each stratum (as a massive coordinate that marks the
    # stratum): scaled by their RMS alone, the penalty became 1e10 times stiffer there and the
    # fit stopped at its start, 0.28 nats above the optimum
    (1e-5, 1.0, 0.05, 3.0, 0.5),
    (1e-3, 1e-4, 1.0, 1.0, 1e-7),
])
def test_preconditioned_fit_is_the_minimiser_of_the_original_objective(tolerance_change, max_gap, max_logp_diff,
                                                                         scales):
    rng = np.random.default_rng(0)
    d, lam = 5, 1e-2
    sizes = (420, 180)
    scales = np.array(scales)
    x, c, y = [], [], []
    for s, n_s in enumerate(sizes):
        ys = rng.integers(0, 3, n_s)
        centres = rng.standard_normal((3, d)) * 0.7
        x.append((centres[ys] + rng.standard_normal((n_s, d)) + 4.0 * s) * scales)
        c.append(np.full(n_s, s))
        y.append(ys)
    x, c, y = np.concatenate(x).astype(np.float32), np.concatenate(c), np.concatenate(y)
    ev = rng.random(len(y)) < 0.1
    x_tr, c_tr, y_tr, x_ev, c_ev, y_ev = x[~ev], c[~ev], y[~ev], x[ev], c[ev], y[ev]
    cell_tr, cell_c, cell_y, s_index, off = cell_layout(c_tr, y_tr, np.zeros_like(y_tr), c_ev, y_ev)
    dev = torch.device("cpu")
    strata = [_Stratum(np.flatnonzero(c_tr == s), np.flatnonzero(c_ev == s), x_tr, x_ev, cell_tr,
                       np.flatnonzero(cell_c == s), cell_y, off[s_index[s]], y_ev, dev) for s in (0, 1)]
    n_all = len(y_tr)
    est = ProbeEstimator()
    est.tolerance_change = tolerance_change
    fitted = est._train(strata, [torch.zeros(d + 1, st.k) for st in strata], lam, n_all, None,
                                     _prefix_mask(d, d, dev))
    for st, w in zip(strata, fitted):
        x1 = np.c_[x_tr[st.rows_tr].astype(np.float64), np.ones(len(st.rows_tr))]
        target, off_s = st.target.numpy(), st.off.numpy().astype(np.float64)
        ref = minimize(_objective, np.zeros((d + 1) * st.k), args=(x1, target, off_s, lam, n_all, d),
                       method="BFGS", options={"gtol": 1e-10, "maxiter": 20000})
        got = w.numpy().astype(np.float64).ravel()
        f_got, f_ref = (_objective(v, x1, target, off_s, lam, n_all, d) for v in (got, ref.x))
        assert f_got - f_ref < max_gap, (f_got, f_ref)
        # the same posterior on every training row (the intercept took the centring back)
        lp_got = log_softmax(x1 @ got.reshape(d + 1, -1) + off_s, axis=1)
        lp_ref = log_softmax(x1 @ ref.x.reshape(d + 1, -1) + off_s, axis=1)
        if max_logp_diff is not None:
            assert np.abs(lp_got - lp_ref).max() < max_logp_diff


@pytest.mark.parametrize("classes", [3, 20])
def test_the_gradients_one_hot_sparse_or_dense_gives_the_same_bits(monkeypatch, classes):
    # the linear fit subtracts its one-hot at the target cells alone from SPARSE_ONEHOT_CELLS cells
    # on, as a dense array below, and runs its broadcasts along the cells in torch from
    # TORCH_BROADCAST_ELEMENTS entries on, in numpy below: every way must give the same estimate
    # and interval, bit for bit
    import itertools

    import matprobe.mi.probe as probe

    rng = np.random.default_rng(classes)
    n, d = 600, 6
    y, c = rng.integers(0, classes, n), rng.integers(0, 3, n)
    z = (rng.standard_normal((classes, d))[y] + rng.standard_normal((n, d)) + c[:, None]).astype(np.float32)
    got = {}
    # every fit sparse or every fit dense, x every fit's broadcasts in torch or in numpy
    for cells, entries in itertools.product((1, 10**6), (1, 10**9)):
        monkeypatch.setattr(probe, "SPARSE_ONEHOT_CELLS", cells)
        monkeypatch.setattr(probe, "TORCH_BROADCAST_ELEMENTS", entries)
        est = probe.ProbeEstimator(seeds=1, folds=3, ladder=("linear",), pca=None).estimate(z, y, c)
        got[cells, entries] = (est.value, est.ci_low, est.ci_high)
    assert len(set(got.values())) == 1, got
    assert got[1, 1][0] > 0.1  # a real fit, not an empty one
