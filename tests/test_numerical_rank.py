"""Rows in a subspace of Z (rank-deficient features): the PCA keeps the numerical rank, not the
quantile map's rank noise past it (`prep.numerical_rank`). Truths by quadrature (scipy), not by
the estimator."""
import numpy as np
import pytest
import torch
from scipy import integrate, stats

import matprobe as mp
from matprobe.mi import prep
from matprobe.mi.prep import RANK_GAP, label_free_reduction, numerical_rank, row_scale_variance

RAW_RANK = prep.raw_rank_at_most

torch.set_num_threads(1)


def _probit_truth(sigma: float) -> float:
    """I(Z;Y) for Y = 1[s + e > 0], s ~ N(0, sigma^2) the signal's projection, e ~ N(0, 1): log 2 - E h(Phi(s))."""
    def h(s):
        p = stats.norm.cdf(s)
        return -(p * np.log(p) + (1 - p) * np.log1p(-p)) if 0 < p < 1 else 0.0
    eh, _ = integrate.quad(lambda s: h(s) * stats.norm.pdf(s, scale=sigma), -12 * sigma, 12 * sigma, limit=400)
    return float(np.log(2) - eh)


def _subspace_rows(seed: int, n: int, d: int, r: int):
    rng = np.random.default_rng([seed, d, r])
    g = rng.standard_normal((n, r))
    w = 2.0 * rng.standard_normal(r) / np.sqrt(r)
    y = (g @ w + rng.standard_normal(n) > 0).astype(int)
    return (g @ rng.standard_normal((r, d))).astype(np.float32), y, _probit_truth(float(np.linalg.norm(w)))


@pytest.mark.parametrize("d, r", [(256, 5), (256, 10), (1024, 30)])
@pytest.mark.parametrize("gaussianize", [True, False])
def test_the_pca_keeps_the_numerical_rank_of_rows_in_a_subspace(d, r, gaussianize):
    z, _, _ = _subspace_rows(0, 2000, d, r)
    red = label_free_reduction(z, 64, gaussianize)
    assert red.rank_cut == r and red.features.shape[1] == r and red.kept_basis.shape[1] == r
    # what the cut removes: the quantile map's rank noise (or rounding), whose scale follows the row's
    # norm; standardised as the critic sees it, it read as heavy elliptical tails
    assert abs(row_scale_variance(red.features)) < 0.05


def test_without_rank_noise_every_leading_component_is_kept():
    """A full-rank input (a smooth spectrum 2,500-fold from top to bottom, or one direction 1,000x
    the rest, as massive coordinates give) is not cut: all 64 components are kept."""
    rng = np.random.default_rng(1)
    smooth = (rng.standard_normal((2000, 256)) * np.geomspace(2.5, 0.05, 256)).astype(np.float32)
    dominant = rng.standard_normal((2000, 256)).astype(np.float32)
    dominant += np.outer(30.0 * rng.standard_normal(2000), rng.standard_normal(256) / 16).astype(np.float32)
    for z in (smooth, dominant):
        red = label_free_reduction(z, 64)
        assert red.rank_cut is None and red.features.shape[1] == 64
    # the dominant direction's gap after the quantile map is a gap of the kind a cut looks for
    # (the noise's components below a coordinate's variance): only the raw rows' rank tells them apart
    v = np.linalg.svd(label_free_reduction(dominant, 64).features, compute_uv=False) ** 2
    assert v[0] / v[1] > RANK_GAP
    # heavy-tailed rows without the quantile map: 8 Student-t (nu = 1.2) coordinates beside 120
    # Gaussian ones, rotated, have the same kind of gap in the raw spectrum at 8 (the calibration
    # bench's small-t1.2 family at n = 20k: 150-220x) and are full rank
    t_rows = np.c_[stats.t.rvs(1.2, size=(20_000, 8), random_state=2), rng.standard_normal((20_000, 120))]
    t_rows = (t_rows @ np.linalg.qr(rng.standard_normal((128, 128)))[0]).astype(np.float32)
    seen = []
    with pytest.MonkeyPatch.context() as mp_:
        mp_.setattr(prep, "raw_rank_at_most", lambda x, k, seed=0, rms=0.0: seen.append(k) or RAW_RANK(x, k, seed, rms))
        red = label_free_reduction(t_rows, 64, gaussianize=False)
    assert seen == [8] and red.rank_cut is None and red.features.shape[1] == 64


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_rows_stored_at_a_lower_precision_keep_their_rank(precision):
    """Rows of a model run in bf16 (or fp16), read as float32: rounded in their last place. bf16's
    rounding is above the float32 tolerance of `matrix_rank`; the storage's own roundoff sets it."""
    z, _, _ = _subspace_rows(0, 2000, 256, 10)
    stored = torch.from_numpy(z).to(getattr(torch, precision)).float()
    assert prep.storage_roundoff(stored) == (2.0 ** -8 if precision == "bfloat16" else 2.0 ** -24)
    red = label_free_reduction(stored.numpy(), 64)
    assert red.rank_cut == 10 and red.features.shape[1] == 10
    # full-rank noise 30x bf16's rounding is more than the storage explains: not rank 10
    noisy = stored + 30 * 2.0 ** -8 * stored.abs().mean() * torch.randn(stored.shape, generator=torch.Generator().manual_seed(0))
    rows, rms = prep._raw_rows(noisy.to(torch.bfloat16).float(), torch.ones(256), 0)
    assert not prep.raw_rank_at_most(rows, 10, 0, rms)


def test_numerical_rank_cuts_at_the_first_gap_below_a_median_coordinate():
    v = np.array([900.0, 5.0, 4.0, 0.01, 0.009])
    assert numerical_rank(v, 1.0) == 3  # 900 -> 5 is a 180x gap but 5 is above a coordinate's variance
    assert numerical_rank(v, 0.001) == 5  # nothing below a coordinate's variance: every component kept
    assert numerical_rank(v, 1.0, gap=1000.0) == 5


def test_rank_deficient_rows_get_two_sided_intervals_that_cover_the_truth():
    """12 draws over three shapes: every interval two-sided, unflagged (the start code flagged all of
    them `misspecified-linear` for heavy tails the rows do not have), and at least 10 of 12 cover
    the quadrature truth (95% intervals: P(<= 9 of 12) = 2% if they hold their level)."""
    covered = 0
    for d, r in ((256, 5), (256, 10), (1024, 10)):
        for seed in range(4):
            z, y, truth = _subspace_rows(seed, 2000, d, r)
            e = mp.mi(z, {"Y": y}, progress=False).terms["probe"][0][1]
            assert e.bound == "two-sided" and "misspecified-linear" not in e.flags, e.note
            assert f"the PCA kept {r} of its 64 components" in e.note
            covered += e.ci_low <= truth <= e.ci_high
    assert covered >= 10
