"""Issue 22: label-free preprocessing fitted once per store and shared by every term, fold and
seed; the exact quantile map and the PCA against independent computations (scipy, numpy SVD)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import ndtri
from scipy.stats import rankdata

from matprobe.mi.base import make_plan
from matprobe.mi.prep import label_free_features, normal_scores

torch.set_num_threads(1)


def test_normal_scores_are_mid_rank_normal_quantiles_with_ties():
    rng = np.random.default_rng(0)
    x = np.stack([rng.standard_normal(301), rng.integers(-2, 3, 301), np.full(301, 4.0),
                  -np.abs(rng.standard_normal(301)), np.sinh(rng.standard_normal(301))], 1).astype(np.float32)
    got = normal_scores(torch.from_numpy(x)).numpy()
    want = ndtri((rankdata(x, axis=0) - 0.5) / 301)
    np.testing.assert_allclose(got, want, atol=2e-6)
    assert np.all(got[:, 2] == 0.0)  # a constant column maps to the median score


def test_label_free_features_without_pca_are_standardised_scores():
    rng = np.random.default_rng(1)
    z = np.exp(rng.standard_normal((400, 5))).astype(np.float32)
    got = label_free_features(z, pca=None)
    s = ndtri((rankdata(z, axis=0) - 0.5) / 400)
    np.testing.assert_allclose(got, (s - s.mean(0)) / s.std(0), atol=1e-5)


def _gapped(rng, n: int, d: int) -> np.ndarray:
    """6 strong directions (s.d. 5) over unit noise, and 2 massive coordinates (s.d. 500)."""
    basis = np.linalg.qr(rng.standard_normal((d, 6)))[0]
    z = rng.standard_normal((n, 6)) * 5.0 @ basis.T + rng.standard_normal((n, d))
    z[:, [7, 11]] = 500.0 * rng.standard_normal((n, 2))
    return z.astype(np.float32)


def test_label_free_pca_spans_the_top_principal_subspace_and_keeps_massive_columns():
    rng = np.random.default_rng(2)
    n, d = 1500, 200
    # a clear spectral gap: 6 strong directions (s.d. 5) over unit noise, and 2 massive coordinates
    z = _gapped(rng, n, d)
    got = label_free_features(z, pca=6, gaussianize=False)
    assert got.shape == (n, 8)
    # the last two columns are the massive coordinates, standardised (largest raw s.d. first)
    order = [7, 11] if z[:, 7].std() > z[:, 11].std() else [11, 7]
    np.testing.assert_allclose(got[:, 6:], (z[:, order] - z[:, order].mean(0)) / z[:, order].std(0), atol=1e-4)
    # the PCA scores span the top-6 principal subspace of the scaled input (numpy's exact SVD)
    sd = z.std(0)
    scale = sd / np.median(sd)
    scale[[7, 11]] = 1.0
    x = (z - z.mean(0)) / sd * scale
    top = np.linalg.svd(x, full_matrices=False)[2][:6].T
    proj = np.linalg.lstsq(got[:, :6], x @ top, rcond=None)[0]
    resid = x @ top - got[:, :6] @ proj
    # randomised range finder, one power iteration: within 1% of the exact subspace at this gap
    assert np.linalg.norm(resid) / np.linalg.norm(x @ top) < 1e-2


def test_plan_fits_preprocessing_once_and_shares_it_across_folds():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((300, 80)).astype(np.float32)
    plan = make_plan(z, rng.integers(0, 3, 300), k=5, pca=16)
    a, b = plan.transformed(z, 0), plan.transformed(z, 4)
    assert a is b and a.shape == (300, 16)
    np.testing.assert_array_equal(a, label_free_features(z, pca=16))
    plan.per_fold, plan.features = True, {}  # the pre-issue-22 behaviour: one fit per fold
    assert not np.array_equal(plan.transformed(z, 0), plan.transformed(z, 1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_label_free_features_on_cuda_equal_cpu():
    rng = np.random.default_rng(4)
    # the quantile map (torch.sort on the GPU, the CPU's own sorts) gives every value the same
    # mid-rank, ties included: the scores differ only by the devices' float32 ndtri (up to 2.3e-5
    # near |z| = 3, seen on an H200), far below the 1.2e-3 between neighbouring ranks at n = 2000
    x = np.concatenate([rng.standard_normal((2000, 100)), rng.integers(-3, 4, (2000, 20))], 1).astype(np.float32)
    on_cpu = normal_scores(torch.from_numpy(x)).numpy()
    on_gpu = normal_scores(torch.from_numpy(x).cuda()).cpu().numpy()
    assert np.diff(ndtri((np.arange(2000) + 0.5) / 2000)).min() > 1e-3
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=0, atol=1e-4)
    # the PCA: the same span where the spectrum has a gap (components of a gapless spectrum are
    # defined on neither device: random data differed by 0.01 between them, seen on an H200), and
    # the same standardised massive columns
    z = _gapped(rng, 2000, 300)
    for gaussianize in (False, True):
        a = label_free_features(z, pca=6, gaussianize=gaussianize, device="cpu")
        b = label_free_features(z, pca=6, gaussianize=gaussianize, device="cuda")
        np.testing.assert_allclose(b[:, 6:], a[:, 6:], atol=1e-4)
        proj = np.linalg.lstsq(b[:, :6], a[:, :6], rcond=None)[0]
        assert np.linalg.norm(a[:, :6] - b[:, :6] @ proj) / np.linalg.norm(a[:, :6]) < 1e-3


def test_cpu_and_torch_rankings_give_the_same_scores_bit_for_bit():
    # the CPU ranks columns by a radix sort, numpy's argsort or packed words, other devices with torch.sort:
    # ties are ordered differently by the sorts, the mid-rank scores must not be
    from matprobe.mi.prep import (
        _argsort_order,
        _normal_scores_numpy,
        _normal_scores_torch,
        _packed_order,
        _radix_order,
    )

    rng = np.random.default_rng(5)
    x = np.concatenate([rng.standard_normal((700, 150)), rng.integers(-3, 4, (700, 140)),
                        np.full((700, 3), 2.5), np.round(rng.standard_normal((700, 7)), 1)], 1).astype(np.float32)
    # columns with a few tied pairs (as float32 hidden states at n = 20k), ties at both extremes
    sparse = rng.standard_normal((700, 20)).astype(np.float32)
    for j in range(20):
        rows = rng.choice(700, 6, replace=False)
        sparse[rows[1], j] = sparse[rows[0], j]
        sparse[rows[3:], j] = sparse[rows[2], j]  # a run of four
        sparse[rows[4], j] = sparse[:, j].min() if j % 2 else sparse[:, j].max()
    x = np.concatenate([x, sparse], 1)
    x = x[:, rng.permutation(x.shape[1])]  # tied and untied columns in every block of columns
    assert x.flags.f_contiguous  # column-major, as a DataFrame's values often are
    given = x.copy()
    a = torch.from_numpy(_normal_scores_numpy(x)).T
    assert np.array_equal(x, given)  # the caller's array is left as it was
    b = _normal_scores_torch(torch.from_numpy(x))
    assert torch.equal(a, b)
    np.testing.assert_allclose(a.numpy(), ndtri((rankdata(x, axis=0) - 0.5) / 700), atol=1e-5)  # float32 ndtri
    # the CPU's three orderings (the fastest is picked per run): ties land in another order, the
    # scores are the same bits; -0.0 and +0.0 are a tie for each
    x[:5, 0], x[5:9, 0] = -0.0, 0.0
    x[[20, 22], 1], x[21, 1] = 0.0, -0.0  # interleaved in row order
    by_radix = _normal_scores_numpy(x, order=_radix_order)
    by_argsort = _normal_scores_numpy(x, order=_argsort_order)
    by_packed = _normal_scores_numpy(x, order=_packed_order)
    assert x[0, 0] == 0.0 and np.signbit(x[0, 0])  # x still as set (-0.0), not overwritten by a call
    assert np.array_equal(by_radix, by_argsort)
    assert np.array_equal(by_radix, by_packed)
    assert np.array_equal(by_radix[0, :9], np.full(9, by_radix[0, 0]))  # one run of nine ties
    assert torch.equal(torch.from_numpy(by_radix).T, _normal_scores_torch(torch.from_numpy(x)))
    np.testing.assert_allclose(by_radix.T, ndtri((rankdata(x, axis=0) - 0.5) / 700), atol=1e-5)


@pytest.mark.parametrize("order_name", ["_radix_order", "_packed_order"])
def test_integer_key_orders_sort_every_float32_bit_pattern_class_like_numpy(order_name):
    # the CPU's two sorts on integer keys (the two-pass radix sort, the packed 64-bit words)
    # against numpy's sort: negatives and positives, +-0.0, subnormals, the largest magnitudes,
    # values that share their high or low 16 bits
    from matprobe.mi import prep

    rng = np.random.default_rng(6)
    tiny = np.finfo(np.float32).tiny
    special = np.array([0.0, -0.0, tiny / 8, -tiny / 8, tiny, -tiny, 3.4e38, -3.4e38, 1.0, -1.0],
                       dtype=np.float32)
    rows = [rng.standard_normal(997).astype(np.float32),
            np.concatenate([special, rng.standard_normal(987).astype(np.float32) * 1e-30]),
            # equal high halves, different low halves, and the reverse
            (np.uint32(0x3F800000) + rng.integers(0, 1 << 16, 997).astype(np.uint32)).view(np.float32),
            (rng.integers(0, 1 << 15, 997).astype(np.uint32) << 16 | np.uint32(7)).view(np.float32),
            rng.integers(-3, 4, 997).astype(np.float32)]
    x = np.stack([r[rng.permutation(997)] for r in rows])
    order, repeat = getattr(prep, order_name)(x)
    assert order.dtype == torch.int64  # what torch's gather and scatter take
    order = order.numpy()
    np.testing.assert_array_equal(np.take_along_axis(x, order, 1), np.sort(x, axis=1))
    if repeat is not None:  # the ties read off the sorted keys: equal values, +-0.0 included
        s = np.sort(x, axis=1)
        np.testing.assert_array_equal(repeat, s[:, 1:] == s[:, :-1])
    for r in range(x.shape[0]):
        assert sorted(order[r].tolist()) == list(range(997))  # a permutation
    # stable within ties (ties of equal bits keep their row order): a radix sort is stable, the
    # packed words carry the position below the key
    ints = order[4]
    vals = x[4, ints]
    for v in np.unique(vals):
        assert np.all(np.diff(ints[vals == v]) > 0)


@pytest.mark.parametrize("shape,p", [((3, 7), 0.3), ((5, 1001), 0.01), ((1, 9), 1.0), ((4, 16), 0.0), ((2, 64), 0.9)])
def test_sparse_true_finds_what_flatnonzero_finds(shape, p):
    from matprobe.mi.prep import _sparse_true

    mask = np.random.default_rng(7).random(shape) < p
    np.testing.assert_array_equal(_sparse_true(mask), np.flatnonzero(mask))


def test_a_column_major_z_is_left_as_the_caller_gave_it():
    # a DataFrame's .values and many h5py/numpy transposes are column-major: the normal scores
    # were written into such a z's own memory (its transpose is contiguous, so no copy was made)
    from matprobe.mi.chain import chain_terms
    from matprobe.mi.groundtruth import chain_task
    from matprobe.mi.prep import label_free_reduction

    task = chain_task((2, 3, 3), d=24, signal_dim=4, noise_scale=0.5, seed=1)
    z, f = task.sample(400, seed=0)
    zf = np.asfortranarray(z.astype(np.float32))
    given = zf.copy()
    feats = label_free_reduction(zf, pca=8).features
    assert np.array_equal(zf, given)
    np.testing.assert_array_equal(feats, label_free_reduction(given, pca=8).features)
    res = chain_terms(zf, f, seeds=1, folds=2)
    assert np.array_equal(zf, given)
    again = chain_terms(given, f, seeds=1, folds=2)
    assert [e.value for _, e in res.terms["probe"]] == [e.value for _, e in again.terms["probe"]]
