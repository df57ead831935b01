"""A term whose linear critic is shown to be misspecified gets a one-sided interval (issue 22).

The ladder's check of the non-linear level is made once per fold, on a validation split inside
the training folds. One fold's check is weak at n = 2k; pooled over the folds it is not. The rule
(`ProbeEstimator.misspecification`): most folds chose the non-linear level, or the mean gain over
the folds exceeds `ladder_min_gain` and `ladder_z` times its pooled standard error
sqrt(sum se_f^2) / F; or, without labels, the rows' squared scale varies by more than
`max_row_scale_variance` (heavy elliptical tails, where the check has no power at small MI).
Then only the lower end is a statement.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import make_estimator
from matprobe.mi.groundtruth import LatentMixtureTask
from matprobe.mi.prep import (
    block_scale_variance,
    radial_interaction,
    row_scale_variance,
    shared_scale_weights,
)

torch.set_num_threads(1)


def _diags(gains, ses, levels=None, seeds=2):
    """Fold diagnostics as `_run_folds` records them: one dict per (fold, seed), the check's
    numbers repeated over the seeds of a fold."""
    levels = levels or ["linear"] * len(gains)
    return [{"fold": f, "seed": s, "level": lv, "level_gain": g, "level_gain_se": e}
            for f, (g, e, lv) in enumerate(zip(gains, ses, levels)) for s in range(seeds)]


@pytest.mark.parametrize("gains,ses,levels,expected", [
    # no fold alone passes 2 s.e.; pooled: mean 0.01, s.e. sqrt(5 * 0.006^2) / 5 = 0.00268 -> z = 3.7
    ([0.01] * 5, [0.006] * 5, None, True),
    # the same gains, twice the noise: pooled s.e. 0.00537 -> z = 1.86
    ([0.01] * 5, [0.012] * 5, None, False),
    # many standard errors, but below the minimum gain of 0.002 nats per row (a null's early stop)
    ([0.0006, 0.0005, 0.0009, 0.0, 0.0012], [0.0002] * 5, None, False),
    # most folds chose the non-linear level: misspecified whatever the pool says
    ([0.0, 0.0, 0.0, 0.0, 0.0], [0.01] * 5, ["nonlinear"] * 3 + ["linear"] * 2, True),
    ([0.0, 0.0, 0.0, 0.0, 0.0], [0.01] * 5, ["nonlinear"] * 2 + ["linear"] * 3, False),
])
def test_the_rule_pools_the_folds_checks(gains, ses, levels, expected):
    est = make_estimator("probe")
    msg = est.misspecification(_diags(gains, ses, levels))
    pooled, pooled_se = np.mean(gains), np.sqrt(np.sum(np.square(ses))) / len(ses)
    assert (msg is not None) is expected
    if expected:  # the sentence carries the pooled numbers, as computed here
        assert f"{pooled:.4f} +- {pooled_se:.4f}" in msg


@pytest.mark.parametrize("over_prior,named", [
    ([-0.03, -0.02, 0.01, -0.01, 0.0], True),   # pooled -0.01: the linear critic is worse than the prior
    ([-0.03, -0.02, 0.05, 0.01, 0.0], False),   # pooled +0.002: it is not
    (None, False),                                # diagnostics without the comparison
])
def test_the_sentence_names_a_linear_critic_worse_than_the_prior(over_prior, named):
    diags = _diags([0.02] * 5, [0.005] * 5)
    if over_prior is not None:
        for d, v in zip(diags, np.repeat(over_prior, 2)):
            d["linear_over_prior"] = v
    msg = make_estimator("probe").misspecification(diags)
    assert msg is not None and ("worse than the label frequencies" in msg) is named
    if named:
        assert f"{-np.mean(over_prior):.4f} nats per row worse" in msg


# a null, and a dependence of 0.059 nats, both beside massive coordinates (d = 1,024): the fitted
# linear critic predicts worse than the label prior in both, and at n = 2k the probe reads about 0 in
# both. Judged against the prior instead of the fitted linear critic, the null's interval became
# two-sided [0, 0.01] and so did the dependence's, [0, 0.03], which misses it (issue 22)
_MASSIVE = dict(k_classes=3, d=1024, signal_dim=8, massive=6)


@pytest.mark.parametrize("task,draw", [
    (LatentMixtureTask(**_MASSIVE, separation=0.0, seed=300), 0),
    (LatentMixtureTask(**_MASSIVE, separation=0.3, seed=412), 12),
], ids=["null", "small-dependence"])
def test_beside_massive_coordinates_a_near_zero_reading_stays_one_sided(task, draw):
    z, f = task.sample(2000, seed=draw)
    truth, se = task.truth(100_000)["I(Z;Y)"]
    res = make_estimator("probe").estimate(z, f["Y"])
    assert "misspecified-linear" in res.flags and res.bound == "lower", res.note
    assert "worse than the label frequencies" in res.note and "does not show independence" in res.note
    assert res.value < 0.02 and res.ci_low - 3 * se <= truth <= res.ci_high


def _t_task(draw):
    # Student-t classes (nu = 3), K = 2, 4 signal dims in d = 96: a linear probe is 10-30% low
    # at n = 2k and its two-sided interval missed the truth in 6 of 10 draws before this rule
    return LatentMixtureTask(k_classes=2, d=96, signal_dim=4, family="t", nu=3.0, separation=2.0, seed=700 + draw)


def test_heavy_tailed_classes_are_one_sided_and_at_least_cover():
    for draw in range(2):
        task = _t_task(draw)
        z, f = task.sample(2000, seed=draw)
        truth, se = task.truth(100_000)["I(Z;Y)"]
        res = make_estimator("probe", folds=5, seeds=2).estimate(z, f["Y"])
        assert "misspecified-linear" in res.flags and res.bound == "lower", (res.flags, res.note)
        assert res.ci_high == res.diagnostics["h_upper_limit"] >= res.h_upper and "not bounded" in res.note
        # the lower end is a statement: below the truth, and not vacuous
        assert truth * 0.5 < res.ci_low <= truth + 3 * se, (res.ci_low, truth)


def test_a_well_specified_task_stays_two_sided():
    # Gaussian classes with a shared covariance: the linear posterior is exact
    task = LatentMixtureTask(k_classes=3, d=96, signal_dim=4, separation=1.5, seed=3)
    z, f = task.sample(2000, seed=0)
    truth, se = task.truth(100_000)["I(Z;Y)"]
    res = make_estimator("probe", folds=5, seeds=2).estimate(z, f["Y"])
    assert "misspecified-linear" not in res.flags and res.bound == "two-sided", res.note
    assert res.ci_low - 3 * se <= truth <= res.ci_high + 3 * se


# --- the rows' scale variance (label-free): heavy elliptical tails make the linear critic short ---

def test_row_scale_variance_of_multivariate_t_rows_is_two_over_nu_minus_four():
    # x = g / sqrt(W), W ~ chi2_nu / nu: s^2 = 1 / W is inverse-gamma, Var(s^2) / E[s^2]^2 = 2 / (nu - 4)
    rng = np.random.default_rng(0)
    nu, n = 14.0, 400_000
    a = rng.standard_normal((5, 5))  # any shared scatter: kappa does not depend on it
    x = (rng.standard_normal((n, 5)) @ a) / np.sqrt(rng.chisquare(nu, n) / nu)[:, None]
    assert row_scale_variance(x, max_rows=n) == pytest.approx(2 / (nu - 4), abs=0.02)


def test_row_scale_variance_of_two_clusters_has_its_closed_form():
    # x = eps m + g, eps = +-1, g ~ N(0, S): Var r = 4 m'Sm + 2 tr S^2, Cov x = C = mm' + S, so
    # kappa = -2 |m|^4 / ((tr C)^2 + 2 tr C^2): negative, however wide the clusters
    rng = np.random.default_rng(1)
    n, d = 400_000, 4
    m = np.array([2.0, 1.0, 0.0, 0.0])
    s_half = np.diag([1.0, 0.5, 0.3, 0.2])
    x = rng.choice([-1.0, 1.0], n)[:, None] * m + rng.standard_normal((n, d)) @ s_half
    c = np.outer(m, m) + s_half @ s_half
    exact = -2 * (m @ m) ** 2 / (np.trace(c) ** 2 + 2 * np.trace(c @ c))
    assert row_scale_variance(x, max_rows=n) == pytest.approx(exact, abs=0.01)


def test_row_scale_variance_within_strata_ignores_the_spread_between_them():
    # Gaussian rows around two stratum means: -0.3 pooled (the two-cluster closed form), 0 within
    rng = np.random.default_rng(3)
    n = 200_000
    c = rng.integers(0, 2, n)
    m = np.array([1.5, 0.0, 0.0])
    x = np.where(c[:, None] == 1, m, -m) + rng.standard_normal((n, 3))
    cov = np.outer(m, m) + np.eye(3)
    pooled = -2 * (m @ m) ** 2 / (np.trace(cov) ** 2 + 2 * np.trace(cov @ cov))
    assert row_scale_variance(x, max_rows=n) == pytest.approx(pooled, abs=0.01)
    assert row_scale_variance(x, c, max_rows=n) == pytest.approx(0.0, abs=0.01)


def test_row_scale_variance_within_strata_ignores_their_scales_but_not_their_tails():
    """Gaussian strata at scales 0.5, 1 and 2: pooled they are a scale mixture (kappa of s^2 over
    the strata, Var/E^2 of (0.25, 1, 4) with weights 0.4/0.35/0.25), within them 0 (an outside
    statistician's family read 1-30 and flagged every draw). Student-t rows inside such strata keep
    their own 2 / (nu - 4)."""
    rng = np.random.default_rng(4)
    n, nu = 400_000, 14.0
    p = np.array([0.4, 0.35, 0.25])
    c = rng.choice(3, n, p=p)
    scale = np.array([0.5, 1.0, 2.0])
    g = rng.standard_normal((n, 4))
    s2 = scale**2
    mixture = (p @ s2**2 - (p @ s2) ** 2) / (p @ s2) ** 2
    # rows x = s g with s^2 the stratum's: kappa solves Var r = kappa (tr S)^2 + 2 (1 + kappa) tr S^2
    assert row_scale_variance(g * scale[c, None], max_rows=n) == pytest.approx(mixture, abs=0.03)
    assert row_scale_variance(g * scale[c, None], c, max_rows=n) == pytest.approx(0.0, abs=0.01)
    t_rows = g / np.sqrt(rng.chisquare(nu, n) / nu)[:, None] * scale[c, None]
    assert row_scale_variance(t_rows, c, max_rows=n) == pytest.approx(2 / (nu - 4), abs=0.02)


def test_row_scale_variance_of_gaussian_rows_is_near_zero_in_any_width():
    rng = np.random.default_rng(2)
    for n, d in [(2000, 1), (2000, 8), (2000, 64), (3000, 1100)]:  # 1,100 columns: the subsampled path
        x = rng.standard_normal((n, d)) * np.exp(rng.uniform(-2, 0, d))
        assert abs(row_scale_variance(x)) < 0.03, (n, d)


def test_a_block_that_shares_the_scale_is_found_and_its_kappa_has_the_closed_form():
    # lognormal s^2 (kappa = e^0.25 - 1) on 4 of 64 columns, independent Gaussian columns beside:
    # the whole norm's kappa is diluted to kappa (tr S_B)^2 + 2 kappa tr S_B^2 over (tr S)^2 + 2 tr S^2
    # (Var r = Var r_B + Var r_N, each by the Gaussian quadratic-form moments), the block's is kappa
    rng = np.random.default_rng(4)
    n, k, d = 200_000, 4, 64
    kappa = float(np.exp(0.25)) - 1
    sd = np.exp(rng.uniform(-1, 0.5, d))
    s = np.exp(0.25 * rng.standard_normal(n))[:, None]
    x = rng.standard_normal((n, d)) * sd
    x[:, :k] *= s
    var = sd**2
    var[:k] *= float(np.exp(0.125))  # E s^2 = e^(1/8)
    tr_b, tr_b2, tr_s, tr_s2 = var[:k].sum(), (var[:k] ** 2).sum(), var.sum(), (var**2).sum()
    diluted = kappa * (tr_b**2 + 2 * tr_b2) / (tr_s**2 + 2 * tr_s2)
    assert row_scale_variance(x, max_rows=n) == pytest.approx(diluted, abs=0.005)
    half = rng.random(n) < 0.5
    w = shared_scale_weights(x[half], max_rows=n)
    standardised = w * x.var(0)
    # flat on the block; the other columns hold only the eigenvector's sampling noise
    assert standardised[:k].sum() > 0.9 and standardised[:k].min() > 0.2 and standardised[k:].max() < 0.02
    assert row_scale_variance(x[~half], max_rows=n, weights=w) == pytest.approx(kappa, abs=0.03)


@pytest.mark.parametrize("n,d,ratio", [(200, 2, 2.1), (320, 6, 1.7), (1600, 64, 1.7)])
def test_the_blocks_kappa_on_held_apart_rows_is_centred_at_zero_within_its_null_sd(n, d, ratio):
    # `block_scale_variance`, as the probe's folds take it (weights from one half, kappa on the
    # other), on 150 Gaussian samples: centred at 0, its null s.d. (closed form) at least the
    # spread it shows and at most 1.7 times it (it leaves out the denominator's own noise; 2.1 on
    # 2 columns, where the weights often fall on one of them), and
    # 3 null s.d. passed in at most 1%; on the rows that chose the weights it leans above 0
    rng = np.random.default_rng([5, n, d])
    kappas, null_sds, same_rows = [], [], []
    for _ in range(150):
        x = rng.standard_normal((n, d)) * np.exp(rng.uniform(-2, 0, d))
        kappa, null_sd = block_scale_variance(x, seed=int(rng.integers(1 << 30)))
        kappas.append(kappa)
        null_sds.append(null_sd)
        same_rows.append(row_scale_variance(x, weights=shared_scale_weights(x)))
    kappas, null_sds = np.array(kappas), np.array(null_sds)
    spread = kappas.std(ddof=1)
    assert abs(kappas.mean()) < 3 * spread / np.sqrt(len(kappas)) + 0.01 * (d >= 64) + 0.03 * (d < 64)
    assert spread <= np.median(null_sds) <= ratio * spread
    assert np.mean(kappas > 3 * null_sds) <= 0.01
    assert np.mean(same_rows) > kappas.mean() + 3 * spread / np.sqrt(len(kappas))


def test_a_tiny_gaussian_store_is_not_taken_for_heavy_tails():
    # 160 training rows, 3 Gaussian columns: the block's kappa scatters (0.19 in one fold here, where
    # a fold counting it was damped); below 3 null s.d. it does not count, no fold is damped and the
    # term is the same bits as with the block's kappa never counted
    task = LatentMixtureTask(k_classes=2, d=3, signal_dim=1, separation=1.0, noise_scales="flat", seed=3)
    z, f = task.sample(240, seed=0)
    kw = dict(seeds=1, folds=3, pca=None)
    ungated = make_estimator("probe", block_scale_z=0.0, **kw).estimate(z, f["Y"])
    assert any(d["representation"] == "radially damped" for d in ungated.diagnostics["folds"])
    res = make_estimator("probe", **kw).estimate(z, f["Y"])
    never = make_estimator("probe", block_scale_z=np.inf, **kw).estimate(z, f["Y"])
    folds = res.diagnostics["folds"]
    assert max(d["row_scale_variance_block_raw"] for d in folds) > 0.1
    assert all(d["row_scale_variance"] < 0.1 and d["row_scale_variance_block"] is None for d in folds)
    assert all(d["representation"] == "features" for d in folds)
    assert (res.value, res.ci_low, res.ci_high) == (never.value, never.ci_low, never.ci_high)


def _diags_with_scale(scale_var, gains=(0.002,) * 5, ses=(0.0015,) * 5):
    diags = _diags(list(gains), list(ses))
    for d in diags:
        d["row_scale_variance"] = scale_var
    return diags


@pytest.mark.parametrize("scale_var,flagged", [(0.05, False), (0.09, False), (0.11, True), (0.65, True)])
def test_a_large_row_scale_variance_alone_makes_the_linear_critic_misspecified(scale_var, flagged):
    # pooled gain 0.002 +- 0.00067: below ladder_min_gain, so only the scale rule can flag
    msg = make_estimator("probe").misspecification(_diags_with_scale(scale_var))
    assert (msg is not None) is flagged
    if flagged:
        assert f"relative variance {scale_var:.2f}" in msg and f"{scale_var / (1 + scale_var):.0%} short" in msg
    # without the ladder's check the sentence says there was none (no "+- inf")
    no_check = [{k: v for k, v in d.items() if not k.startswith("level_gain")} for d in _diags_with_scale(scale_var)]
    msg_no_check = make_estimator("probe").misspecification(no_check)
    if flagged:
        assert "no non-linear critic was checked" in msg_no_check and "inf" not in msg_no_check
    # the threshold is a parameter (recorded with the results)
    assert make_estimator("probe", max_row_scale_variance=np.inf).misspecification(
        _diags_with_scale(scale_var)) is None


# small MI (0.03-0.08 nats) between Student-t classes (nu = 2): at n = 2k the linear probe reads
# 40-60% of the truth, and the non-linear level's gain stays within 2 s.e. in half the draws, whose
# two-sided intervals missed (5 of 10 in the calibration benchmark's `small-t2`, issue 22)
_SMALL_T2 = dict(k_classes=4, d=32, signal_dim=8, family="t", nu=2.0, separation=0.3)


def test_small_mi_under_heavy_tails_is_one_sided_and_covers_where_two_sided_missed():
    misses_without = 0
    # the benchmark's draws 0, 2 and 4, and since the check's patience is 2 (thirty-fifth session) draw 5:
    # the ladder's own pooled gain now flags draw 2 without the rule (one-sided and covering there), and
    # draw 5 is the next whose two-sided interval misses without it (draws 1, 3, 6, 8 are flagged as 2 is)
    for draw in (0, 2, 4, 5):
        task = LatentMixtureTask(**_SMALL_T2, seed=100 + draw)  # the benchmark's draws
        z, f = task.sample(2000, seed=draw)
        truth, se = task.truth(100_000)["I(Z;Y)"]
        res = make_estimator("probe").estimate(z, f["Y"])
        # (the radial check off in these two: the rule on the rows' scale alone)
        flag_only = make_estimator("probe", radial_damping=False, radial_check=False).estimate(z, f["Y"])
        off = make_estimator("probe", max_row_scale_variance=np.inf, radial_check=False).estimate(z, f["Y"])
        # the flag alone changes the statement, not the estimate
        assert (flag_only.value, flag_only.ci_low) == (off.value, off.ci_low)
        assert "misspecified-linear" in flag_only.flags and flag_only.bound == "lower", flag_only.note
        # the note names the first rule that flags: the ladder's pooled gain can come before the scale's
        # (draw 2); without the non-linear level the scale rule names itself
        if "relative variance" not in flag_only.note:
            scale_only = make_estimator("probe", ladder=("linear",), radial_damping=False,
                                        radial_check=False).estimate(z, f["Y"])
            assert "misspecified-linear" in scale_only.flags and "relative variance" in scale_only.note, scale_only.note
        assert flag_only.ci_high == flag_only.diagnostics["h_upper_limit"] >= flag_only.h_upper
        # the damped features recover part of the shortfall; still one-sided, and covering
        assert "misspecified-linear" in res.flags and res.bound == "lower" and "radially damped" in res.note
        assert off.value < res.value and abs(res.value - truth) < abs(off.value - truth)
        assert res.ci_low - 3 * se <= truth
        misses_without += not (off.ci_low - 3 * se <= truth <= off.ci_high + 3 * se)
    assert misses_without >= 2  # what the rule is for: two-sided, these intervals missed (draws 0 and 5)


def test_radially_damped_features_only_where_the_rows_scale_varies_and_they_predict_better():
    folds = lambda res: [d["representation"] for d in res.diagnostics["folds"] if d["seed"] == 0]  # noqa: E731
    # Student-t classes (nu = 3, K = 2, d = 96, kappa about 0.3): damped in every fold, and closer
    task = _t_task(0)
    z, f = task.sample(2000, seed=0)
    truth = task.truth(100_000)["I(Z;Y)"][0]
    # (the radial and second-moment checks off: they offer other representations, which can win
    # folds here)
    res = make_estimator("probe", seeds=2, radial_check=False, second_moment_check=False).estimate(z, f["Y"])
    plain = make_estimator("probe", seeds=2, radial_damping=False, radial_check=False,
                           second_moment_check=False).estimate(z, f["Y"])
    assert folds(res) == ["radially damped"] * 5 and folds(plain) == ["features"] * 5
    assert abs(res.value - truth) < abs(plain.value - truth)
    # Gaussian classes (kappa about 0): never tried, the same bits as without the option
    gauss = LatentMixtureTask(k_classes=3, d=32, signal_dim=4, separation=1.0, seed=5)
    z, f = gauss.sample(2000, seed=0)
    a = make_estimator("probe", seeds=2).estimate(z, f["Y"])
    b = make_estimator("probe", seeds=2, radial_damping=False).estimate(z, f["Y"])
    assert folds(a) == ["features"] * 5 and (a.value, a.ci_low, a.ci_high) == (b.value, b.ci_low, b.ci_high)
    # classes that differ in scale (kappa above 0.1): the damped features were tried in every fold
    # and lost on validation log-loss at the chosen level (the non-linear one), so they were not kept
    # (the second-moment check off: its products, quadratic along the scales' directions, win folds here)
    scales = LatentMixtureTask(k_classes=3, d=32, signal_dim=4, separation=0.5, scale_spread=0.7, seed=100)
    z, f = scales.sample(2000, seed=0)
    res = make_estimator("probe", seeds=2, second_moment_check=False).estimate(z, f["Y"])
    ds = [d for d in res.diagnostics["folds"] if d["seed"] == 0]
    assert all(d["row_scale_variance"] > 0.1 and d["val_loss_damped"] > d["val_loss_features"] for d in ds)
    assert folds(res) == ["features"] * 5


# --- weights that vary with the row's radius (`prep.radial_interaction`, the radial check) ---

def test_radial_interaction_features_against_a_direct_computation():
    rng = np.random.default_rng(4)
    x_tr = rng.standard_normal((300, 6)) * rng.uniform(0.2, 3.0, (300, 1))
    x_ev = rng.standard_normal((50, 6))
    c_tr, c_ev = rng.integers(0, 3, 300), rng.integers(0, 4, 50)  # stratum 3 has no training rows
    columns = [4, 1]
    f_tr, f_ev = radial_interaction(x_tr, x_ev, c_tr, c_ev, columns=columns)
    means = {g: x_tr[c_tr == g].mean(0) for g in range(3)}
    centred = lambda x, c: x - np.array([means.get(g, x_tr.mean(0)) for g in c])  # noqa: E731
    xc_tr, xc_ev = centred(x_tr, c_tr), centred(x_ev, c_ev)
    log_tr = np.log((xc_tr**2).sum(1))
    u = lambda xc: np.clip((np.log((xc**2).sum(1)) - log_tr.mean()) / log_tr.std(), -3, 3)  # noqa: E731
    for f, xc in ((f_tr, xc_tr), (f_ev, xc_ev)):
        expected = np.column_stack([xc, xc[:, columns] * u(xc)[:, None], u(xc)])
        assert f.dtype == np.float32 and f.shape == (len(xc), 6 + 2 + 1)
        np.testing.assert_allclose(f, expected, rtol=1e-4, atol=1e-4)
    assert np.abs(f_tr[:, -1]).max() <= 3.0 and abs(f_tr[:, -1].mean()) < 0.05  # standardised, clipped


def test_weights_fitted_beside_a_fixed_critic_match_a_binomial_glm_with_offset():
    # two cells, one stratum, no penalty to speak of: the fit beside fixed per-row logits is the
    # logistic regression with offset (logit difference) that statsmodels fits by IRLS
    import types

    import statsmodels.api as sm

    rng = np.random.default_rng(0)
    n = 600
    h = rng.standard_normal((n, 3)).astype(np.float32)
    fixed = rng.standard_normal((n, 2)).astype(np.float32)  # the fixed critic's logits per row
    prior = np.log(np.array([0.4, 0.6], dtype=np.float32))
    eta = fixed[:, 1] - fixed[:, 0] + prior[1] - prior[0] + h @ np.array([0.8, -0.5, 0.3]) + 0.2
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(np.int64)
    design = torch.cat([torch.from_numpy(h), torch.ones(n, 1)], 1)
    st = types.SimpleNamespace(x_tr=design, rows_tr=np.arange(n), target=torch.from_numpy(y), k=2,
                               off=torch.from_numpy(prior))
    est = make_estimator("probe")
    mask = torch.ones(4, 1)
    (w,) = est._train([st], [torch.zeros(4, 2)], 1e-12, n, None, mask, row_offsets=[fixed])
    logits = fixed + prior + design.numpy() @ w.numpy()
    p_ours = np.exp(logits[:, 1]) / np.exp(logits).sum(1)
    glm = sm.GLM(y, sm.add_constant(h.astype(np.float64), prepend=False), family=sm.families.Binomial(),
                 offset=(fixed[:, 1] - fixed[:, 0] + prior[1] - prior[0]).astype(np.float64)).fit()
    np.testing.assert_allclose(p_ours, glm.fittedvalues, atol=2e-4)


def test_a_spiral_bend_is_caught_by_the_radial_check_where_the_ladder_missed_it():
    # classes seen through a spiral (rows turned in the class centres' plane by 2 |z - o|^2 / d):
    # MI unchanged, posterior bent. Without the check these two draws were two-sided and missed
    # (the non-linear level's Adam check found no gain); with it, one-sided, covering and closer
    from matprobe.mi.groundtruth import SpiralTask

    for seed in (104, 109):
        task = SpiralTask(LatentMixtureTask(k_classes=4, d=32, signal_dim=8, separation=1.5, seed=seed), speed=2.0)
        z, f = task.sample(2000, seed=seed - 100)
        truth, se = task.truth(100_000)["I(Z;Y)"]
        res = make_estimator("probe").estimate(z, f["Y"])
        # (the forty-second session's hinge checks off too: they also see the bend in these draws)
        off = make_estimator("probe", radial_check=False, additive_check=False, index_check=False, calibration_check=False).estimate(z, f["Y"])
        assert off.bound == "two-sided" and not off.ci_low - 2 * se <= truth <= off.ci_high + 2 * se
        assert "misspecified-linear" in res.flags and res.bound == "lower" and "radius" in res.note, res.note
        assert res.ci_low - 2 * se <= truth and abs(res.value - truth) < abs(off.value - truth)
        chosen = [d["representation"] for d in res.diagnostics["folds"] if d["seed"] == 0]
        assert "radial interaction" in chosen


def test_the_radial_check_keeps_a_well_specified_task_two_sided():
    # Gaussian classes with a shared covariance have an exactly linear posterior: across draws the
    # check's pooled gain stays under its threshold (one flag in 8 at most), and no fold opened the
    # radial representation where the estimate would move
    flagged = 0
    for seed in range(8):
        task = LatentMixtureTask(k_classes=4, d=32, signal_dim=8, separation=1.5, seed=200 + seed)
        z, f = task.sample(2000, seed=seed)
        res = make_estimator("probe", seeds=2).estimate(z, f["Y"])
        folds = [d for d in res.diagnostics["folds"] if d["seed"] == 0]
        assert all("radial_gain" in d for d in folds)
        flagged += "misspecified-linear" in res.flags
    assert flagged <= 1
