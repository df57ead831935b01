"""Ground-truth tasks' pointwise oracle terms (issue 22: the sample's own noise in the calibration
benchmark) against posteriors computed independently from the public sample (scipy densities on
the signal coordinates recovered from Z, the labels `sample` returns)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from matprobe.mi.groundtruth import LatentMixtureTask, chain_task, null_task


def test_latent_mixture_oracle_rows_are_the_true_log_posterior_ratio_of_each_sampled_row():
    task = LatentMixtureTask(k_classes=4, d=20, signal_dim=5, separation=1.3, imbalance=0.6, seed=11)
    z, f = task.sample(3000, seed=4)
    rows = task.oracle_terms(3000, seed=4)["I(Z;Y)"]
    cls, prob, mean = task._structure  # the task's definition: class weights and centres
    a, _, _, offset = task._embedding
    s = np.linalg.lstsq(a, (z.astype(np.float64) - offset).T, rcond=None)[0].T  # Z back to the signal
    log_joint = np.stack([np.log(prob[c]) + multivariate_normal(mean[c], np.eye(task.k)).logpdf(s)
                          for c in range(task.k_classes)], 1)
    y = f["Y"]
    want = log_joint[np.arange(len(y)), y] - logsumexp(log_joint, axis=1) - np.log(prob[y])
    np.testing.assert_allclose(rows, want, atol=2e-4)  # Z is float32


def test_chain_oracle_rows_are_each_terms_true_pointwise_ratio_and_sum_to_the_direct_term():
    task = chain_task((2, 3), d=6, signal_dim=6, separations=(1.0, 1.2), imbalance=0.5, seed=7)
    z, f = task.sample(2500, seed=9)
    rows = task.oracle_terms(2500, seed=9)
    cells, prob, mean = task._structure
    z_sig = z.astype(np.float64) @ task._embedding.astype(np.float64)  # d == k: an orthogonal map
    ld = np.stack([multivariate_normal(mean[c], np.eye(task.k)).logpdf(z_sig) for c in range(len(cells))], 1)
    m, a = f["M"], f["A"]
    log_pz = logsumexp(ld + np.log(prob), axis=1)

    def log_pz_given(sel_rows):  # log p(z | the row's own prefix), mixture over the cells matching it
        out = np.empty(len(m))
        for i, want in enumerate(sel_rows):
            w = prob * want
            out[i] = logsumexp(ld[i] + np.log(np.where(w > 0, w / w.sum(), 1e-300)))
        return out

    log_pz_m = log_pz_given([cells[:, 0] == m_i for m_i in m])
    log_pz_ma = log_pz_given([(cells[:, 0] == m_i) & (cells[:, 1] == a_i) for m_i, a_i in zip(m, a)])
    np.testing.assert_allclose(rows["I(Z;M)"], log_pz_m - log_pz, atol=1e-4)
    np.testing.assert_allclose(rows["I(Z;A|M)"], log_pz_ma - log_pz_m, atol=1e-4)
    np.testing.assert_allclose(rows["I(Z;M,A)"], rows["I(Z;M)"] + rows["I(Z;A|M)"], atol=1e-10)


def test_oracle_means_converge_to_truth_and_the_null_is_exactly_zero():
    task = LatentMixtureTask(k_classes=3, components=2, spread=1.0, chain=True, d=8, signal_dim=4, seed=3)
    rows = task.oracle_terms(200_000, seed=1)
    truth = task.truth(200_000)
    for name, (value, se) in truth.items():
        sd = rows[name].std() / np.sqrt(len(rows[name]))
        assert abs(rows[name].mean() - value) < 4 * np.hypot(se, sd), name
    assert np.all(null_task(seed=2).oracle_terms(500, seed=0)["I(Z;Y)"] == 0.0)


def test_efficient_se_is_the_spread_of_the_oracle_over_independent_samples():
    # the oracle's mean over n rows is an unbiased estimator whose spread over independent samples
    # is sd(log-ratio)/sqrt(n): the efficient s.e. must match it (300 replicates: ~4% noise on an sd)
    from matprobe.mi.groundtruth import efficient_se

    for task, term in [(LatentMixtureTask(k_classes=3, d=16, signal_dim=8, separation=0.25,
                                          noise_scales="decay", seed=104), "I(Z;Y)"),
                       (chain_task((2, 3), d=6, separations=(1.0, 0.6), imbalance=0.5, seed=3), "I(Z;A|M)")]:
        n = 500
        means = np.array([task.oracle_terms(n, seed=r)[term].mean() for r in range(300)])
        se = efficient_se(task, n, n_mc=100_000)[term]
        assert abs(means.std(ddof=1) / se - 1) < 0.15, (term, means.std(ddof=1), se)


def test_median_abs_error_floor_is_the_pooled_median_of_normal_errors():
    from scipy.stats import norm

    from matprobe.mi.groundtruth import median_abs_error_floor

    assert median_abs_error_floor([0.08]) == pytest.approx(norm.ppf(0.75) * 0.08, rel=1e-9)
    rng = np.random.default_rng(0)
    for r in ([0.02, 0.1, 0.3, 0.05], [0.0, 0.1, 0.25], [0.06] * 3 + [0.5]):
        pooled = np.concatenate([np.abs(rng.normal(0, s, 400_000)) for s in r])
        assert median_abs_error_floor(r) == pytest.approx(np.median(pooled), rel=5e-3), r
    assert median_abs_error_floor([0.0, 0.0, 0.1]) == 0.0  # two of three draws are exact
    with pytest.raises(ValueError, match="relative_se"):
        median_abs_error_floor([0.1, np.nan])
