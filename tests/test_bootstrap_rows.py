"""The interval's bootstrap row weights: shared between the terms of a fold plan without
changing a bit, and the estimator's products on one BLAS thread (issue 22, chain speed)."""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_info

from matprobe.mi.base import ROW_WEIGHTS_BUDGET, bootstrap_row_weights
from matprobe.mi.groundtruth import chain_task
from matprobe.mi.probe import ProbeEstimator

torch.set_num_threads(1)


def _fresh(seed, sizes, B):
    """The weights of each stratum drawn one after another from a fresh stream, and the stream."""
    rng = np.random.default_rng(list(seed))
    return [bootstrap_row_weights(rng, n_c, B) for n_c in sizes], rng


def test_rows_are_multinomial_counts_that_sum_to_the_stratum():
    (w,), _ = _fresh((0, 104729), [37], 200)
    assert w.shape == (201, 37) and np.all(w[0] == 1.0)
    np.testing.assert_array_equal(w.sum(axis=1), 37.0)  # what `_aggregate` passes as wsum
    assert np.all(w == np.round(w)) and w.min() >= 0
    # each row's count is binomial(37, 1/37): mean 1, variance 36/37 (pooled over rows and replicates)
    assert abs(w[1:].mean() - 1.0) < 1e-12 and abs(w[1:].var() - 36 / 37) < 0.1


def test_a_cache_hit_gives_the_weights_and_the_stream_of_drawing_them():
    seed, B, sizes = (3, 104729), 50, [120, 80, 40]
    expected, rng_fresh = _fresh(seed, sizes, B)
    cache: dict = {}
    rng = np.random.default_rng(list(seed))
    drawn = ()
    for n_c in sizes[:2]:  # an earlier term draws the first two strata into the cache
        drawn += (n_c,)
        bootstrap_row_weights(rng, n_c, B, cache, (seed, B, drawn))
    assert len(cache) == 2
    # a later term with the same first two strata and a third: two hits, then a draw that must
    # continue the stream where the hits left it
    rng = np.random.default_rng(list(seed))
    drawn, got = (), []
    for n_c in sizes:
        drawn += (n_c,)
        got.append(bootstrap_row_weights(rng, n_c, B, cache, (seed, B, drawn)))
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert rng.integers(0, 2**31) == rng_fresh.integers(0, 2**31)
    assert not got[0].flags.writeable  # shared between terms: nobody may change them


def test_the_cache_keeps_to_its_budget():
    n_c = ROW_WEIGHTS_BUDGET // (8 * 11) + 1  # B = 10: eleven float64 rows just over the budget
    cache: dict = {}
    bootstrap_row_weights(np.random.default_rng(0), n_c, 10, cache, ("big",))
    assert cache == {}
    bootstrap_row_weights(np.random.default_rng(0), 1000, 10, cache, ("small",))
    assert list(cache) == [("small",)]


def _chain_rows():
    task = chain_task((2, 3), d=6, separations=(1.0, 1.0), signal_dim=3, noise_scale=0.6, seed=5)
    z, f = task.sample(900, seed=1)
    return z, f["M"], f["A"]


def test_a_term_on_a_plan_that_holds_an_earlier_terms_weights_keeps_its_bits():
    z, m, a = _chain_rows()
    groups = m * 3 + a
    est = ProbeEstimator(seeds=2, folds=3, pca=None)
    alone = est.estimate(z, a, m, plan=est.fold_plan(z, groups))
    plan = est.fold_plan(z, groups)
    est.estimate(z, a, m, plan=plan)  # fills the plan's row weights with this term's strata
    assert len(plan.row_weights) == 2
    again = est.estimate(z, a, m, plan=plan)
    assert (again.value, again.ci_low, again.ci_high) == (alone.value, alone.ci_low, alone.ci_high)
    assert [s.to_dict() for s in again.strata] == [s.to_dict() for s in alone.strata]


class _SeesThreads(ProbeEstimator):
    """Records numpy's BLAS thread counts where the folds are pooled (inside `estimate`'s fitting)."""

    def pool_folds(self, per_seed, diags, fold):
        self.seen = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        super().pool_folds(per_seed, diags, fold)


def test_the_fitting_runs_numpy_blas_on_one_thread():
    z, m, a = _chain_rows()
    est = _SeesThreads(seeds=1, folds=3, pca=None)
    est.estimate(z, a, m)
    assert est.seen and set(est.seen) == {1}
