"""Issue 22 (forty-second session): two shapes whose Bayes logits level off where a linear critic's
keep rising, and the checks that find them.

- Laplace classes: independent coordinates with Laplace noise, classes apart along a few of them.
  Each coordinate's log-likelihood ratio is a ramp between the class means and flat outside, so
  the logits are additive and piecewise linear in the coordinates. The linear critic read 13-20%
  low at n = 2k with narrow two-sided intervals (12 of 70 covered, five shapes). The additive check
  (`prep.hinge_features` of the strong leading columns, `ProbeEstimator._gain_beside` kind
  "additive") flags them, and fitting on the hinges where a fold gains brings the estimate within
  a few percent.
- Label noise: Y the argmax of a linear score, flipped to another class at random. The posterior
  is a step in the score. The linear critic read 20-30% low with two-sided intervals that
  missed; the index check (hinges of the critic's own scores along its leading directions,
  `_critic_directions`) flags them one-sided at K = 2, and the calibration check (hinges of the
  critic's own log-probabilities, `_critic_log_q`) at K = 5.

Truths by Monte Carlo on 400k rows from the exact densities (Laplace) or the exact posterior
(label noise), independent of the estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import make_estimator
from matprobe.mi.prep import hinge_features
from matprobe.mi.probe import _critic_directions, _strong_columns

torch.set_num_threads(1)

LAPLACE_B = 1 / np.sqrt(2)  # unit variance


def test_hinge_features_against_a_direct_computation():
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((60, 5)) * [1, 2, 3, 4, 5] + 3).astype(np.float32)
    c = rng.integers(0, 3, 60)
    columns = np.array([4, 1])
    qs = (0.2, 0.5, 0.8)
    got = hinge_features(x, c, columns, quantiles=qs)
    assert got.shape == (60, 6) and got.dtype == np.float32
    for i in range(60):
        own = x[c == c[i]]
        expected = [max(x[i, j] - np.quantile(own[:, j].astype(np.float64), q), 0.0) for j in columns for q in qs]
        np.testing.assert_allclose(got[i], expected, rtol=1e-5, atol=1e-5)


def test_held_out_hinges_take_the_training_rows_knots():
    rng = np.random.default_rng(6)
    x_tr = rng.standard_normal((40, 3)).astype(np.float32)
    x_ev = rng.standard_normal((10, 3)).astype(np.float32)
    c_tr = rng.integers(0, 2, 40)
    c_ev = np.r_[rng.integers(0, 2, 8), 9, 9]  # stratum 9 has no training rows: the overall knots
    got = hinge_features(x_ev, c_ev, knots_from=(x_tr, c_tr))
    assert got.shape == (10, 15)
    np.testing.assert_array_equal(hinge_features(x_tr, c_tr, knots_from=(x_tr, c_tr)), hinge_features(x_tr, c_tr))
    for i in range(10):
        own = c_tr == c_ev[i]
        ref = (x_tr[own] if own.any() else x_tr).astype(np.float64)
        knots = np.quantile(ref, (0.1, 0.3, 0.5, 0.7, 0.9), axis=0)  # [5, 3]
        np.testing.assert_allclose(got[i], np.maximum(x_ev[i][:, None] - knots.T, 0).ravel(), rtol=1e-5, atol=1e-5)


def test_strong_columns_keep_those_near_the_leader():
    w = np.array([0.1, 2.0, 0.6, 0.4, 1.9, 0.0])
    np.testing.assert_array_equal(_strong_columns(w, 8, 0.25), [1, 2, 4])  # 0.4 < 0.25 * 2.0 = 0.5
    np.testing.assert_array_equal(_strong_columns(w, 2, 0.0), [1, 4])  # at most q
    np.testing.assert_array_equal(_strong_columns(np.zeros(3), 8, 0.25), [0, 1, 2])  # all tie at 0
    np.testing.assert_array_equal(_strong_columns(np.array([0.0, 3.0, 0.0]), 8, 1.0), [1])


class _Stratum:  # what `_critic_directions` and `_critic_log_q` read of a stratum
    def __init__(self, rows_tr, x, cell_y, off):
        self.rows_tr, self.k = rows_tr, len(cell_y)
        self.x_tr = torch.as_tensor(np.c_[x, np.ones(len(x))], dtype=torch.float32)
        self.cell_y = torch.as_tensor(cell_y)
        self.off = torch.as_tensor(off, dtype=torch.float32)


class _Fit:  # what they read of a `_LevelFit`: by default one cell per label, equal priors, every row
    def __init__(self, x_tr, weights, cell_y=None, prior=None, strata=None):
        self.x_tr = x_tr
        self.path_solution = [torch.as_tensor(w, dtype=torch.float32) for w in weights]
        self.strata = strata or [
            _Stratum(np.arange(len(x_tr)), x_tr, np.arange(w.shape[1]) if cell_y is None else cell_y[i],
                     np.log(np.full(w.shape[1], 1.0 / w.shape[1]) if prior is None else prior[i]))
            for i, w in enumerate(weights)]


def test_critic_directions_are_the_scores_the_critic_varies_along():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((500, 6)) * [1, 3, 1, 1, 2, 1]).astype(np.float32)
    # two strata, two classes each: logits differ along a (stratum 0) and b (stratum 1); a
    # constant added to every class (the last row: the intercept, and a shared column) is no score
    a, b = np.array([1.0, 0, 0, 0, 0.5, 0]), np.array([0, 0.2, 0, 1.0, 0, 0])
    w0 = np.c_[a, -a] + 0.3
    w1 = np.c_[b, np.zeros(6)]
    fit = _Fit(x, [np.r_[w0, [[1.0, 2.0]]], np.r_[w1, [[0.0, 5.0]]]])
    p = x @ _critic_directions(fit, 2)
    assert p.shape == (500, 2)
    for score in (x @ a, x @ b):  # each stratum's score is in the span of the two projections
        coef, *_ = np.linalg.lstsq(p, score, rcond=None)
        np.testing.assert_allclose(p @ coef, score, atol=1e-4)
    assert _critic_directions(fit, 5).shape == (6, 2)  # rank 2: no more than two
    one = _critic_directions(_Fit(x, [np.r_[np.c_[a, -a], [[0.0, 0.0]]]]), 2)
    assert one.shape == (6, 1)
    np.testing.assert_allclose(np.corrcoef((x @ one)[:, 0], x @ a)[0, 1] ** 2, 1.0, atol=1e-6)


def test_with_sub_class_cells_the_directions_are_the_labels_scores():
    """Two labels, each split into two sub-classes along b (3 times a's size): the cells' weights
    lead along b, the labels' scores (their cells averaged by prior) along a alone."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((400, 5)).astype(np.float32)
    a, b = np.array([1.0, 0, 0, 0.5, 0]), np.array([0, 3.0, 0, 0, 0])
    w = np.c_[a + b, a - b, -a + 2 * b, -a - b]  # label 0: cells 0, 1; label 1: cells 2, 3
    prior = np.array([0.25, 0.25, 0.2, 0.3])
    fit = _Fit(x, [np.r_[w, [[0.0, 0.0, 0.0, 0.0]]]], cell_y=[np.array([0, 0, 1, 1])], prior=[prior])
    got = _critic_directions(fit, 2)
    assert got.shape == (5, 1)  # two labels: one score
    label_0 = (a + b) * 0.5 + (a - b) * 0.5
    label_1 = (-a + 2 * b) * 0.4 + (-a - b) * 0.6
    np.testing.assert_allclose(np.corrcoef((x @ got)[:, 0], x @ (label_0 - label_1))[0, 1] ** 2, 1.0, atol=1e-6)
    cells = _critic_directions(_Fit(x, [np.r_[w, [[0.0] * 4]]]), 1)  # read as four labels: b leads
    assert abs(np.corrcoef((x @ cells)[:, 0], x @ b)[0, 1]) > 0.9


def _laplace(draw: int, n: int):
    """Laplace classes: 2 balanced classes 1.0 apart along each of 4 of 32 coordinates."""
    shift = np.r_[np.ones(4), np.zeros(28)]
    rng = np.random.default_rng(100 + draw)
    y = rng.integers(0, 2, n)
    return (rng.laplace(0, LAPLACE_B, (n, 32)) + y[:, None] * shift).astype(np.float32), y


def _laplace_truth(m: int = 400_000) -> float:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, m)
    z = rng.laplace(0, LAPLACE_B, (m, 4)) + y[:, None]
    llr = ((np.abs(z) - np.abs(z - 1.0)) / LAPLACE_B).sum(1)  # log p(z | 1) - log p(z | 0)
    return float(np.log(2) - np.mean(np.logaddexp(0, -(2 * y - 1) * llr)))


def _label_noise(draw: int, n: int, k: int = 2, eps: float = 0.1, m: int = 400_000):
    """Gaussian rows in d = 32, Y the argmax of a random linear score, flipped to a uniform other
    class with probability eps: the posterior is 1 - eps on the argmax and eps / (k - 1) on each
    other class, so I(Z;Y) = H(Y) - H(1 - eps, eps / (k - 1), ...), with P(Y) by Monte Carlo."""
    a = np.random.default_rng(5000 + draw).standard_normal((32, k))
    rng = np.random.default_rng(100 + draw)
    z = rng.standard_normal((n, 32))
    y0 = np.argmax(z @ a, 1)
    y = np.where(rng.random(n) < eps, (y0 + rng.integers(1, k, n)) % k, y0)
    p0 = np.bincount(np.argmax(np.random.default_rng(0).standard_normal((m, 32)) @ a, 1), minlength=k) / m
    py = (1 - eps) * p0 + eps * (1 - p0) / (k - 1)
    h_y_given_z = -(1 - eps) * np.log(1 - eps) - eps * np.log(eps / (k - 1))
    return z.astype(np.float32), y, float(-(py * np.log(py)).sum() - h_y_given_z)


OFF = dict(additive_check=False, index_check=False, calibration_check=False)


def test_the_truths_two_ways():
    """The Monte-Carlo truths against a second computation: Laplace by quadrature of the
    one-coordinate ratio (independent coordinates: I = the 4-fold sum's, by a 4-dim grid would
    be slow, so the 1-coordinate case against its own quadrature); label noise's H(Y) with
    another Monte-Carlo sample."""
    from scipy import integrate

    def one_coordinate_mc(m=400_000):
        rng = np.random.default_rng(1)
        y = rng.integers(0, 2, m)
        z = rng.laplace(0, LAPLACE_B, m) + y
        llr = (np.abs(z) - np.abs(z - 1.0)) / LAPLACE_B
        return np.log(2) - np.mean(np.logaddexp(0, -(2 * y - 1) * llr))

    def density(z, mu):
        return np.exp(-np.abs(z - mu) / LAPLACE_B) / (2 * LAPLACE_B)

    def integrand(z):
        p0, p1 = density(z, 0.0), density(z, 1.0)
        m = 0.5 * (p0 + p1)
        return 0.5 * p0 * np.log(p0 / m) + 0.5 * p1 * np.log(p1 / m)

    quad = sum(integrate.quad(integrand, lo, hi)[0] for lo, hi in ((-40, 0), (0, 1), (1, 41)))
    assert abs(one_coordinate_mc() - quad) < 0.003
    assert 0.40 < _laplace_truth() < 0.43  # four coordinates: more than one's (0.153), below H = log 2
    _, _, t1 = _label_noise(0, 10, m=400_000)
    a = np.random.default_rng(5000).standard_normal((32, 2))
    p0 = np.bincount(np.argmax(np.random.default_rng(9).standard_normal((400_000, 32)) @ a, 1), minlength=2) / 400_000
    py = 0.9 * p0 + 0.1 * (1 - p0)
    assert abs(t1 - (-(py * np.log(py)).sum() - (-(0.9 * np.log(0.9)) - 0.1 * np.log(0.1)))) < 0.003


@pytest.mark.parametrize("draw", [0, 1])
def test_laplace_classes_are_flagged_and_fitted_on_the_hinges(draw):
    """Without the checks the interval is two-sided and misses, 10-20% low; with them the term is
    one-sided, its lower end holds, and the estimate is within half the distance to the truth."""
    z, y = _laplace(draw, 2000)
    truth = _laplace_truth()
    off = make_estimator("probe", seeds=2, **OFF).estimate(z, y)
    on = make_estimator("probe", seeds=2).estimate(z, y)
    assert off.bound != "lower" and off.ci_high < truth  # the miss the check is for
    assert on.bound == "lower" and "misspecified-linear" in on.flags and on.ci_low <= truth
    assert "hinges of its" in on.note
    assert truth - on.value < 0.5 * (truth - off.value)
    folds = [d for d in on.diagnostics["folds"] if d.get("seed", 0) == 0]
    gains = np.array([d["additive_gain"] for d in folds])
    ses = np.array([d["additive_gain_se"] for d in folds])
    assert gains.mean() > 2 * np.sqrt((ses**2).sum()) / len(ses)  # pooled as `_pooled_gain`
    for d in folds:  # kept exactly where it predicted the validation rows better
        if "val_loss_additive" in d:
            assert (d["representation"] == "additive hinges") == (d["val_loss_additive"] < d["val_loss_features"])


@pytest.mark.parametrize("draw", [1, 5])
def test_label_noise_is_flagged_by_the_index_check(draw):
    z, y, truth = _label_noise(draw, 2000)
    off = make_estimator("probe", seeds=2, **OFF).estimate(z, y)
    on = make_estimator("probe", seeds=2).estimate(z, y)
    assert off.bound != "lower" and off.ci_high < truth  # the miss the check is for
    assert on.bound == "lower" and on.ci_low <= truth
    folds = [d for d in on.diagnostics["folds"] if d.get("seed", 0) == 0]
    gains = np.array([d["index_gain"] for d in folds])
    ses = np.array([d["index_gain_se"] for d in folds])
    assert gains.mean() > 2 * np.sqrt((ses**2).sum()) / len(ses)


@pytest.mark.parametrize("draw", [0, 3])
def test_argmax_label_noise_is_flagged_by_the_calibration_check(draw):
    """K = 5 classes by the argmax of five random scores, 20% flipped: the critic's confidence
    should level off at 0.8 on every class. The calibration check alone (hinges of the critic's
    log-probabilities, a check only) flags it; the estimate is the same bits as without it."""
    z, y, truth = _label_noise(draw, 2000, k=5, eps=0.2)
    off = make_estimator("probe", seeds=2, **OFF).estimate(z, y)
    alone = make_estimator("probe", seeds=2, additive_check=False, index_check=False).estimate(z, y)
    assert off.bound != "lower" and off.ci_high < truth  # 25-35% low, two-sided
    assert alone.bound == "lower" and "misspecified-linear" in alone.flags and alone.ci_low <= truth
    assert "its own log-probabilities" in alone.note
    assert (alone.value, alone.ci_low) == (off.value, off.ci_low)  # it fits no representation
    folds = [d for d in alone.diagnostics["folds"] if d.get("seed", 0) == 0]
    gains = np.array([d["calibration_gain"] for d in folds])
    ses = np.array([d["calibration_gain_se"] for d in folds])
    assert gains.mean() > 2 * np.sqrt((ses**2).sum()) / len(ses)
    assert all(d["representation"] == "features" for d in folds)


def test_the_checks_are_recorded_in_the_fitting_settings():
    """Results made before the checks (without them in their settings) are recomputed, not reused."""
    from matprobe.mi.chain import estimator_fitting

    fitting = estimator_fitting("probe", 5, 5, 64, 0.95, 0)
    assert fitting["additive_check"] is True and fitting["index_check"] is True
    assert fitting["additive_columns"] == 8 and fitting["index_directions"] == 2
    assert "10/30/50/70/90% quantiles" in fitting["additive check"]
    assert fitting["calibration_check"] is True and "fits no representation" in fitting["calibration check"]
    assert estimator_fitting("probe", 5, 5, 64, 0.95, 0, index_check=False)["index_check"] is False


def test_the_calibration_check_reads_each_labels_summed_probability():
    """Cells that are sub-classes of a label are summed (log q(y|z, c) as the estimate reads it);
    where each label has one cell the columns are the cells' own log-probabilities."""
    from scipy.special import log_softmax, logsumexp

    from matprobe.mi.probe import _critic_log_q

    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, 3))
    rows = [np.arange(0, 18), np.arange(18, 30)]
    # stratum 0: labels 0, 0, 1, 2, 2 (sub-classes); stratum 1: labels 0 and 1, one cell each
    cell_y = [np.array([0, 0, 1, 2, 2]), np.array([0, 1])]
    weights = [rng.standard_normal((4, 5)), rng.standard_normal((4, 2))]
    offs = [np.log(np.array([0.1, 0.2, 0.3, 0.25, 0.15])), np.log(np.array([0.6, 0.4]))]
    fit = _Fit(x, weights, strata=[_Stratum(r, x[r], y, o) for r, y, o in zip(rows, cell_y, offs)])
    got = _critic_log_q(fit, 30)
    assert got.shape == (30, 3) and got.dtype == np.float32
    for r, y, w, o in zip(rows, cell_y, weights, offs):
        lq = log_softmax(np.c_[x[r], np.ones(len(r))] @ w + o, axis=1)
        want = np.stack([logsumexp(lq[:, y == lab], axis=1) for lab in np.unique(y)], axis=1)
        np.testing.assert_allclose(got[r, : want.shape[1]], want, atol=1e-5)
        assert (got[r, want.shape[1]:] == 0).all()


def test_a_chains_direct_term_and_first_term_each_check_their_own_labels():
    """I(Z;M) of a chain (its cells the (M, A) sub-classes) and the direct joint term share their
    cells and so their fits, but not their labels: each term's calibration and index checks are
    its own, and I(Z;M)'s are what they are without the direct term beside it."""
    from matprobe.mi.chain import chain_terms
    from matprobe.mi.groundtruth import chain_task

    task = chain_task((2, 3), separations=(1.0, 1.0), names=("M", "A"), d=12, signal_dim=4, noise_scale=0.5, seed=3)
    z, f = task.sample(1200, seed=0)
    kw = dict(seeds=1, folds=3, ci_level=0.95, difference=False)
    both = chain_terms(z, f, direct=True, **kw)
    with_direct, alone = dict(both.terms["probe"]), dict(chain_terms(z, f, direct=False, **kw).terms["probe"])

    def gains(e, kind):
        return [d[f"{kind}_gain"] for d in e.diagnostics["folds"]]

    for kind in ("calibration", "index"):  # both read the labels: the cells' log q, the labels' scores
        assert gains(with_direct["I(Z;M)"], kind) == gains(alone["I(Z;M)"], kind)
        assert gains(both.direct["probe"], kind) != gains(with_direct["I(Z;M)"], kind)
