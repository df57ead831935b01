"""Where the plan keeps every coordinate, each fold fits the linear level with and without the
per-coordinate quantile map (`map_choice`, on by default) and keeps the map unless the features
without it predict the validation split significantly better (`ladder_z` s.e. of the paired
per-row gains, and `ladder_min_gain`): the map bends Gaussian classes that differ along thin
directions of Z, and heavy tails need it."""

from __future__ import annotations

import numpy as np
import torch
from scipy.special import logsumexp

from matprobe.mi.chain import chain_terms

torch.set_num_threads(1)


def _thin_direction_task(n: int, seed: int, d: int = 6):
    """Three Gaussian classes, shared covariance A A^T with A = I + G / sqrt(d) (a random
    covariance: some directions of little variance). Returns z, y and the exact I(Z;Y) by 200k-draw
    Monte Carlo of the known densities (numpy only)."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d)) / np.sqrt(d) + np.eye(d)
    means = rng.standard_normal((3, d)) * 0.4 / np.sqrt(2)

    def sample(m, r):
        y = r.integers(0, 3, m)
        return means[y] + r.standard_normal((m, d)) @ a.T, y

    z, y = sample(n, np.random.default_rng(seed + 1))
    zm, ym = sample(200_000, np.random.default_rng(seed + 2))
    diff = zm[:, None, :] - means[None]
    ll = -0.5 * np.einsum("nkd,de,nke->nk", diff, np.linalg.inv(a @ a.T), diff)
    return z, y, float(np.mean(ll[np.arange(len(ym)), ym] - logsumexp(ll, axis=1) + np.log(3)))


def test_thin_directions_choose_the_features_without_the_map_and_read_nearer_the_truth():
    covered, errors, chose_plain = {True: 0, False: 0}, {True: 0.0, False: 0.0}, 0
    for seed in range(6):
        z, y, truth = _thin_direction_task(1500, seed)
        for choice in (True, False):
            (_, e), = chain_terms(z, {"Y": y}, seeds=1, folds=3, map_choice=choice).terms["probe"]
            covered[choice] += e.ci_low <= truth <= e.ci_high
            errors[choice] += abs(e.value - truth)
            if choice:
                chose_plain += sum(f["base"] == "no quantile map" for f in e.diagnostics["folds"])
            else:
                assert all("base" not in f for f in e.diagnostics["folds"])
    assert covered[True] > covered[False] and errors[True] < 0.8 * errors[False], (covered, errors)
    assert chose_plain >= 3  # of 18 folds (5 at this commit)


def test_the_features_without_the_map_only_where_they_gain_significantly():
    # the rule as stated, fold by fold: the base changes exactly where the paired per-row gain
    # stands above ladder_z s.e. and ladder_min_gain, and the gain is the two bases' validation
    # losses' difference
    picked = {"quantile map": 0, "no quantile map": 0}
    for seed in range(6):
        z, y, _ = _thin_direction_task(1500, seed)
        (_, e), = chain_terms(z, {"Y": y}, seeds=1, folds=3).terms["probe"]
        for f in e.diagnostics["folds"]:
            significant = f["base_gain"] > 0.002 and f["base_gain"] > 2.0 * f["base_gain_se"]
            assert f["base"] == ("no quantile map" if significant else "quantile map")
            picked[f["base"]] += 1
            if f["level"] == "linear" and f["base"] == "quantile map":  # both bases at the linear level
                assert abs(f["base_gain"] - (f["val_loss_mapped"] - f["val_loss_unmapped"])) < 1e-6  # float32 sums
    assert min(picked.values()) >= 1, picked  # both outcomes occur on these draws


def test_heavy_tails_keep_the_map_and_a_reduced_store_is_not_offered_the_choice():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 1500)
    z = rng.standard_t(1.5, (1500, 6)) + np.eye(6)[y]
    (_, e), = chain_terms(z, {"Y": y}, seeds=1, folds=3).terms["probe"]
    assert [f["base"] for f in e.diagnostics["folds"]] == ["quantile map"] * 3
    assert all(f["val_loss_mapped"] < f["val_loss_unmapped"] for f in e.diagnostics["folds"])
    wide = np.c_[z, rng.standard_normal((1500, 10))]
    (_, e), = chain_terms(wide, {"Y": y}, seeds=1, folds=3, pca=8).terms["probe"]
    assert all("base" not in f for f in e.diagnostics["folds"])  # PCA reduced Z: nothing offered
