"""Issue 22 (speed): the chain's I(Z;F_1), whose softmax cells are the joint classes of every factor
through its sub-classes, and the direct joint term pose the same fitting problem; they share its
penalty path, refit and half fits through the fold plan. Sharing must give the same bits as fitting
each term on its own, and must not mix up problems that differ."""

from __future__ import annotations

import numpy as np
import torch

from matprobe.data.entropy import joint_codes
from matprobe.mi import make_estimator
from matprobe.mi.chain import TermSpec, chain_terms, estimate_terms
from matprobe.mi.groundtruth import chain_task
from matprobe.mi.registry import estimator_tags

torch.set_num_threads(1)


def _sample(seed):
    task = chain_task((2, 3, 2), d=12, signal_dim=6, noise_scale=0.5, seed=seed)
    return task.sample(900, seed=seed)


def _alone(z, f, spec, **kw):
    est = make_estimator("probe", seeds=2, folds=3, pca=None, **kw)
    codes = {k: np.unique(v, return_inverse=True)[1] for k, v in f.items()}
    return estimate_terms(est, estimator_tags("probe"), z, codes, [spec],
                          plan_groups=joint_codes([codes[k] for k in ("M", "A", "T")]))[0]


def _count_fits(monkeypatch):
    from matprobe.mi import probe

    calls = []
    original = probe.ProbeEstimator._train

    def counting(self, *args):
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(probe.ProbeEstimator, "_train", counting)
    return calls


def test_shared_fits_give_the_bits_of_fitting_alone(monkeypatch):
    calls = _count_fits(monkeypatch)
    z, f = _sample(1)
    res = chain_terms(z, f, order=["M", "A", "T"], seeds=2, folds=3, pca=None, difference=False)
    n_chain = len(calls)
    direct = res.direct["probe"]
    alone = _alone(z, f, TermSpec(("M", "A", "T")))
    assert (direct.value, direct.ci_low, direct.ci_high) == (alone.value, alone.ci_low, alone.ci_high)
    n_direct_alone = len(calls) - n_chain
    del calls[:]
    chain_terms(z, f, order=["M", "A", "T"], seeds=2, folds=3, pca=None, difference=False, direct=False)
    # the direct term cost fewer fits inside the chain than alone: it shared I(Z;M)'s
    assert n_chain - len(calls) < n_direct_alone
    first = res.estimates()[0].estimate
    alone_first = _alone(z, f, TermSpec(("M",), (), ("A", "T")))
    assert (first.value, first.ci_low, first.ci_high) == (alone_first.value, alone_first.ci_low, alone_first.ci_high)


def test_terms_with_other_problems_share_nothing(monkeypatch):
    # without sub-classes the first term's cells are M's classes alone: another problem, no fits shared
    calls = _count_fits(monkeypatch)
    z, f = _sample(3)
    codes = {k: np.unique(v, return_inverse=True)[1] for k, v in f.items()}
    est = make_estimator("probe", seeds=2, folds=3, pca=None, use_subclasses=False)
    both = estimate_terms(est, estimator_tags("probe"), z, codes,
                          [TermSpec(("M",), (), ("A", "T")), TermSpec(("M", "A", "T"))],
                          plan_groups=joint_codes([codes[k] for k in ("M", "A", "T")]))
    n_both = len(calls)
    first = _alone(z, f, TermSpec(("M",), (), ("A", "T")), use_subclasses=False)
    alone = _alone(z, f, TermSpec(("M", "A", "T")), use_subclasses=False)
    assert len(calls) - n_both == n_both  # the two terms alone took as many fits as together
    assert (both[0].value, both[0].ci_low) == (first.value, first.ci_low)
    assert (both[1].value, both[1].ci_low, both[1].ci_high) == (alone.value, alone.ci_low, alone.ci_high)
