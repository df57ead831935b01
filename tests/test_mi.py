"""MI estimators against exact ground truth, conditional terms, and bad inputs.

Tolerances: a held-out estimate Î of I is accepted when
    I - (Î - ci_low) - allowance - 3 se_mc  <=  Î  <=  I + (ci_high - Î) + 3 se_mc,
i.e. within its own interval, widened by 3 Monte Carlo standard errors of the truth and, on
the low side only, by the finite-sample allowance p / (2 n_train) nats: the expected excess
held-out log-loss of a fitted p-parameter model (AIC/Takeuchi asymptotics), with p the
parameter count of the exact posterior (per stratum: (cells - 1) (d + 1)). Variational
bounds may fall short by that much; none may exceed the truth beyond sampling noise.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from matprobe.data.entropy import joint_codes
from matprobe.errors import EstimationError
from matprobe.mi import chain_terms, make_estimator
from matprobe.mi.base import DV, MEAN, CrossFitEstimator, FoldOutput, stratum_values
from matprobe.mi.groundtruth import chain_task, single_factor_task

torch.set_num_threads(1)

SINGLE = single_factor_task(3, d=4, separation=1.2, signal_dim=4, imbalance=0.3, seed=3)


def within(est, truth, se, p, n_train):
    allowance = p / (2 * n_train)
    lo = truth - (est.value - est.ci_low) - allowance - 3 * se
    hi = truth + (est.ci_high - est.value) + 3 * se
    assert lo <= est.value <= hi, (est.estimator, est.value, truth, lo, hi)


@pytest.fixture(scope="module")
def single_data():
    z, f = SINGLE.sample(4000, seed=1)
    truth, se = SINGLE.truth(200_000)["I(Z;Y)"]
    return z, f["Y"], truth, se


@pytest.mark.parametrize("name", ["probe", "mine", "nwj", "infonce", "smile", "ksg"])
def test_estimator_recovers_single_factor_mi(name, single_data):
    z, y, truth, se = single_data
    est = make_estimator(name, seeds=2, folds=3, pca=None, gaussianize=False)
    res = est.estimate(z, y)
    assert res.unit == "nats" and res.ci_low <= res.value <= res.ci_high
    assert res.n_eval == 4000 and res.h_upper == pytest.approx(SINGLE.entropies()["H(Y)"], abs=0.03)
    within(res, truth, se, p=(3 - 1) * (4 + 1), n_train=res.n_train)
    if name != "ksg":
        assert len(res.diagnostics["folds"]) == 6  # 2 seeds x 3 folds, each with a held-out curve
        assert res.diagnostics["train_heldout_gap"] is not None


def test_dv_and_mean_bounds_are_exact_at_the_optimal_critic():
    # with g* = log p(y|z)/p(y), DV and the probe bound both equal the MC truth on the same draws
    task = single_factor_task(2, d=2, signal_dim=2, separation=1.0, seed=4)
    cells, prob, mean = task._structure
    rng = np.random.default_rng(0)
    idx = rng.choice(len(cells), size=100_000, p=prob)
    zs = mean[idx] + rng.standard_normal((100_000, 2))
    ld = task._log_densities(zs) + np.log(prob)
    log_post = ld - np.logaddexp.reduce(ld, axis=1, keepdims=True)
    g = log_post - np.log(prob)
    a = g[np.arange(len(idx)), idx]
    lb = np.logaddexp.reduce(g + np.log(prob), axis=1)  # = log sum_y p(y|z) = 0
    w = np.ones((1, len(idx)))
    expected = np.mean(a)  # E[log p(y|z)/p(y)] on these draws
    assert stratum_values(DV, {"a": a, "lb": lb}, w)[0] == pytest.approx(expected, abs=1e-9)
    assert stratum_values(MEAN, {"r": a}, w)[0] == pytest.approx(expected, abs=1e-12)
    truth, se = task.truth(400_000)["I(Z;Y)"]
    assert expected == pytest.approx(truth, abs=4 * (se + np.std(a) / np.sqrt(len(a))))


def test_ksg_matches_sklearn_ross_estimator_in_one_dimension():
    from sklearn.feature_selection import mutual_info_classif

    task = single_factor_task(3, d=1, signal_dim=1, separation=1.5, seed=6)
    z, f = task.sample(3000, seed=2)
    ours = make_estimator("ksg", k=3, pca=None, gaussianize=False).estimate(z, f["Y"]).value
    ref = mutual_info_classif(z, f["Y"], discrete_features=False, n_neighbors=3, random_state=0)[0]
    # same Ross (2014) formula; they differ only by tie-breaking jitter
    assert ours == pytest.approx(ref, abs=5e-3)


@pytest.fixture(scope="module")
def chain_setup():
    task = chain_task((2, 3, 3), d=12, signal_dim=6, separations=(1.0, 1.0, 1.0), imbalance=0.3,
                      degenerate=True, seed=2)
    z, f = task.sample(6000, seed=3)
    truth = task.truth(200_000)
    res = chain_terms(z, f, order=["M", "A", "T"], estimators=["probe"], seeds=2, folds=4, pca=None)
    return task, z, f, truth, res


def test_conditional_chain_terms_match_truth(chain_setup):
    task, z, f, truth, res = chain_setup
    items = res.terms["probe"]
    names = ["I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)"]
    # exact-posterior parameter counts: cells per stratum x (d+1), strata as given
    p = [(2 * 9 - 1) * 13, 2 * (9 - 1) * 13, 6 * (3 - 1) * 13]
    for (term, est), name, p_j in zip(items, names, p):
        assert term == name
        within(est, truth[name][0], truth[name][1], p=p_j, n_train=est.n_train)
    # the degenerate stratum (M=0, A=0) of I(Z;T|M,A) is exactly 0 and says so
    t_est = items[2][1]
    deg = [s for s in t_est.strata if s.given == {"M": 0, "A": 0}]
    assert len(deg) == 1 and deg[0].estimate == 0.0 and "exactly 0" in deg[0].note
    assert "H(Y|C=c) = 0" in t_est.note
    # chain-rule difference cross-check and direct term agree with the exact chain
    d = res.direct["probe"]
    within(d, truth["I(Z;M,A,T)"][0], truth["I(Z;M,A,T)"][1], p=(17 - 1) * 13, n_train=d.n_train)
    diff = res.difference["probe"]
    assert diff[1] == pytest.approx(truth["I(Z;A|M)"][0], abs=0.1)
    frame = res.frame()
    assert set(frame["term"]) >= {"I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)", "sum of terms", "I(Z;M,A,T)"}
    # the sum row says its gap to the joint term, which the chain rule makes 0 in truth
    total = sum(e.value for _, e in items)
    [note] = frame.loc[frame["term"] == "sum of terms", "note"]
    assert f"the sum differs by {total - d.value:+.4f} nats" in note and f"at {d.value:.4f} nats" in note
    assert ("inside its interval" in note) == (d.ci_low <= total and (d.bound == "lower" or total <= d.ci_high))


def test_the_sum_rows_note_says_when_the_sum_lies_outside_the_joint_terms_interval():
    from matprobe.mi.chain import chain_rule_note
    from matprobe.mi.interface import MIEstimate

    joint = MIEstimate(value=1.0, ci_low=0.9, ci_high=1.1, ci_level=0.95, unit="nats", n_train=0, n_eval=100,
                       estimator="probe")
    assert chain_rule_note(1.05, joint, "M,A").endswith("inside its interval ([0.9000, 1.1000])")
    far = chain_rule_note(1.25, joint, "M,A")
    assert "differs by +0.2500 nats, outside its interval ([0.9000, 1.1000])" in far
    assert "I(Z;M,A)" in far and chain_rule_note(1.0, None, "M,A") == ""
    lower = MIEstimate(value=1.0, ci_low=0.9, ci_high=2.0, ci_level=0.95, unit="nats", n_train=0, n_eval=100,
                       estimator="probe", bound="lower")
    assert "outside its interval (at least 0.9000)" in chain_rule_note(0.8, lower, "M,A")
    assert "inside its interval (at least 0.9000)" in chain_rule_note(5.0, lower, "M,A")


def test_term_with_zero_conditional_entropy_is_exactly_zero():
    rng = np.random.default_rng(0)
    m = rng.integers(0, 2, 400)
    a = rng.integers(0, 3, 400)
    t = (m + a) % 2  # T is a function of (M, A): H(T|M,A) = 0
    z = rng.standard_normal((400, 5))
    res = make_estimator("probe", seeds=1, folds=3).estimate(z, t, joint_codes([m, a]))
    assert res.degenerate and res.value == 0.0 and res.ci_low == 0.0 and res.ci_high == 0.0
    assert "H(Y|C) = 0" in res.note


class _Overshoot(CrossFitEstimator):
    """A deliberately broken critic (scores 10 nats per row) to exercise clipping."""

    name = "overshoot"

    def fit_fold(self, x_tr, y_tr, c_tr, sub_tr, x_ev, y_ev, c_ev, seed):
        return FoldOutput(arrays={"r": np.full(len(y_ev), 10.0)})


def test_estimate_above_entropy_is_clipped_and_flagged():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    c = rng.integers(0, 2, 200)
    c[:5] = 2  # a sparse stratum of 5 rows, with both classes
    y[:5] = [0, 1, 0, 1, 0]
    res = _Overshoot(seeds=1, folds=2).estimate(rng.standard_normal((200, 3)), y, c)
    from matprobe.data.entropy import conditional_entropy

    assert res.clipped and res.value == pytest.approx(conditional_entropy(y, c))
    assert "clipped" in res.note
    assert "sparse strata" in res.note and "2: 5 rows" in res.note


@pytest.mark.parametrize(
    "z, y, c, message",
    [
        (np.zeros((6, 2)), np.array([0, 1] * 3), None, "too few samples"),
        (np.vstack([np.full((1, 2), np.nan), np.zeros((99, 2))]), np.array([0, 1] * 50), None, "NaN/Inf"),
        (np.zeros((100, 2)), np.zeros(100, dtype=int), None, "one class"),
        (np.zeros((100, 2)), np.array([0, 1] * 40), None, "80 labels but Z has 100 rows"),
        (np.zeros((100, 2)), np.array([0, 1] * 50), np.zeros(90), "90 labels but Z has 100 rows"),
    ],
)
def test_bad_inputs_give_one_clear_line(z, y, c, message):
    with pytest.raises(EstimationError, match=message) as info:
        make_estimator("probe", seeds=1, folds=5).estimate(z, y, c)
    assert "\n" not in str(info.value)


def test_a_chain_scans_z_for_nan_once_and_still_refuses_it(monkeypatch):
    """The terms of a chain share z and its fold plan: the first term scans z for NaN/Inf, the
    later ones skip the scan (0.04 s each at 20k x 4,096), and a bad z is still refused."""
    import matprobe.mi.base as base

    rng = np.random.default_rng(0)
    f = {"M": rng.integers(0, 2, 200), "A": rng.integers(0, 2, 200)}
    bad = rng.standard_normal((200, 3))
    bad[7, 1] = np.inf
    with pytest.raises(EstimationError, match="NaN/Inf values in 1 row "):
        chain_terms(bad, f, seeds=1, folds=2)
    seen = []
    real = base.check_inputs

    def spy(*args, **kw):
        seen.append(kw["known_finite"])
        return real(*args, **kw)

    monkeypatch.setattr(base, "check_inputs", spy)
    chain_terms(rng.standard_normal((200, 3)), f, seeds=1, folds=2, direct=True, difference=False)
    assert seen == [False, True, True]  # I(Z;M), I(Z;A|M), then the direct I(Z;M,A)


def test_chain_rejects_unknown_factor_and_single_class():
    z = np.zeros((50, 2))
    with pytest.raises(EstimationError, match="factor 'T' not given"):
        chain_terms(z, {"M": np.arange(50) % 2}, order=["M", "T"])
    with pytest.raises(EstimationError, match="one class"):
        chain_terms(z, {"M": np.arange(50) % 2, "A": np.zeros(50)}, order=["M", "A"])


def test_per_stratum_probe_fit_equals_sklearn_multinomial_logistic_regression():
    """Each stratum's head is L2 multinomial logistic regression on that stratum's rows.

    The probe minimises sum_{i in s} ce_i / n + lam |W_s|^2 per stratum s (the pieces of one
    joint objective over n rows), with log-prior offsets absorbed by the unpenalised
    intercept; sklearn minimises C sum ce_i + |W|^2 / 2, so C = 1 / (2 lam n). For two
    classes sklearn fits one vector v = w_1 - w_0, and the probe's symmetric optimum has
    w_0 = -w_1 = -v/2, so its penalty is lam |v|^2 / 2 and C = 1 / (lam n).
    """
    from sklearn.linear_model import LogisticRegression

    from matprobe.mi.probe import ProbeEstimator

    rng = np.random.default_rng(5)
    n_tr, n_ev, d = 900, 300, 3
    c = rng.integers(0, 2, n_tr + n_ev)
    y = np.where(c == 0, rng.integers(0, 3, n_tr + n_ev), rng.integers(0, 2, n_tr + n_ev))
    means = rng.normal(0, 1.0, (2, 3, d))
    x = (means[c, y] + rng.standard_normal((n_tr + n_ev, d))).astype(np.float32)
    lam = 1e-3
    est = ProbeEstimator(seeds=1, penalties=(lam,), extrapolate=False, max_iter=200)
    est.tolerance_change = 1e-9  # run to the optimum: this checks the objective, not the stopping rule
    sub = np.zeros(n_tr, dtype=np.int64)
    out = est.fit_fold_seeds(x[:n_tr], y[:n_tr], c[:n_tr], sub, x[n_tr:], y[n_tr:], c[n_tr:], [0])[0]
    from matprobe.mi.probe import _log_marginal

    log_q = out.arrays["r"] + _log_marginal(y[:n_tr], c[:n_tr], y[n_tr:], c[n_tr:])
    for s in (0, 1):
        tr, ev = c[:n_tr] == s, c[n_tr:] == s
        n_classes = np.unique(y[:n_tr][tr]).size
        ref = LogisticRegression(C=1.0 / ((2 if n_classes > 2 else 1) * lam * n_tr), tol=1e-10, max_iter=5000)
        ref.fit(x[:n_tr][tr], y[:n_tr][tr])
        cols = np.searchsorted(ref.classes_, y[n_tr:][ev])
        expect = ref.predict_log_proba(x[n_tr:][ev])[np.arange(ev.sum()), cols]
        np.testing.assert_allclose(log_q[ev], expect, atol=2e-3)


def test_preprocessor_fit_transform_equals_fit_then_transform():
    from matprobe.mi.prep import Preprocessor

    rng = np.random.default_rng(2)
    z = np.sinh(rng.standard_normal((400, 40))).astype(np.float32)
    z[:, :3] = np.round(z[:, :3])  # tied coordinates
    train = rng.random(400) < 0.8
    a = Preprocessor(8, True, seed=1).fit(z[train]).transform(z)
    b = Preprocessor(8, True, seed=1).fit_transform(z, train)
    np.testing.assert_array_equal(a, b)


def test_quantile_map_from_presorted_columns_equals_direct_fit():
    from matprobe.mi.prep import Preprocessor, SortedColumns

    rng = np.random.default_rng(4)
    z = np.sinh(rng.standard_normal((500, 30))).astype(np.float32)
    z[:, :3] = np.round(z[:, :3])  # tied coordinates
    z[:, 3] = 1.0  # a constant one
    cols = SortedColumns(z)
    for f in range(2):
        train = rng.random(500) < 0.75
        a = Preprocessor(6, True, seed=f).fit(z[train]).transform(z)
        b = Preprocessor(6, True, seed=f).fit_transform(z, train, cols)
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_bootstrap_draws_are_the_same_in_int32_and_int64():
    """`_aggregate` draws its bootstrap rows as int32 for speed: numpy gives the same values as
    int64 from the same stream for ranges under 2^32, so every interval keeps its bits; a numpy
    that changes this fails here, not silently in the intervals."""
    for n in (2, 7, 1234, 20_000, 2**20):
        a = np.random.default_rng([0, 104729]).integers(0, n, size=(5, 999))
        b = np.random.default_rng([0, 104729]).integers(0, n, size=(5, 999), dtype=np.int32)
        np.testing.assert_array_equal(a, b)


def test_a_one_factor_chain_estimates_its_term_once_and_shows_it_once(monkeypatch):
    # of one factor the direct term I(Z;M) is the chain's term: estimated once, one row
    import matprobe.mi.chain as chain_module

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 600)
    z = rng.standard_normal((600, 5)) + np.eye(5)[y]
    seen = []
    original = chain_module.estimate_terms
    monkeypatch.setattr(chain_module, "estimate_terms",
                        lambda est, tags, z, codes, specs, **kw: seen.append([s.name for s in specs])
                        or original(est, tags, z, codes, specs, **kw))
    res = chain_terms(z, {"M": y}, seeds=1, folds=3)
    assert seen == [["I(Z;M)"]]
    frame = res.frame()
    assert list(frame["term"]) == ["I(Z;M)", "sum of terms"]
    (_, term), = res.terms["probe"]
    assert res.direct["probe"] is term and res.difference["probe"] == [term.value]


def test_finite_values_that_overflow_a_float32_row_sum_are_not_refused():
    # the NaN/Inf screen is a float32 row sum (a product with ones): rows of finite values near
    # float32's largest overflow it, and the element-wise test that follows finds nothing wrong
    from matprobe.mi.prep import check_inputs

    rng = np.random.default_rng(3)
    z = rng.standard_normal((40, 4)).astype(np.float32)
    z[5] = 3.0e38  # its sum overflows float32
    with np.errstate(over="ignore"):
        assert not np.isfinite(z[5].sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no overflow warning reaches the user
        out, y, _ = check_inputs(z, rng.integers(0, 2, 40))
    assert np.array_equal(out, z)
    z[9, 2] = -np.inf  # a real one is still refused, by row
    with pytest.raises(EstimationError, match="NaN/Inf values in 1 row .first: row 9"):
        check_inputs(z, y)


@pytest.mark.parametrize("seed", range(4))
def test_lexicographic_cells_are_numpys_unique_rows(seed):
    # the cells of (stratum, class, sub-class) columns by one integer key: the rows, order and
    # inverse of np.unique over the stacked columns (negative codes included: the probe's held-out
    # only cells carry sub-class -1)
    from matprobe.mi.base import lexicographic_cells

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    cols = [rng.integers(-2, int(rng.integers(1, 9)), n) for _ in range(int(rng.integers(1, 4)))]
    rows, inverse = np.unique(np.stack(cols, 1), axis=0, return_inverse=True)
    cell, per_column = lexicographic_cells(cols)
    assert np.array_equal(cell, inverse.reshape(-1))
    assert np.array_equal(np.stack(per_column, 1), rows)
