"""KSG-type k-nearest-neighbour MI between continuous Z and discrete Y (Ross 2014).

Ross, "Mutual information between discrete and continuous data sets", PLoS ONE 9(2), 2014:
    I = psi(N) + psi(k) - < psi(N_y) > - < psi(m) >,
with d_i the max-norm distance to the k-th neighbour among rows of the same class, N_y the
class size and m_i the number of rows of any class within d_i (the point included).
Conditional: I(Z;Y|C) = sum_c p(c) I(Z;Y|C=c), each stratum on its own rows.

A non-neural cross-check: nothing is trained, so there are no folds; Z is standardised
(and reduced by PCA, default 16 dims: kNN estimates degrade quickly with dimension,
docs/design.md §3) on all rows, labels unseen.
"""

from __future__ import annotations

import numpy as np
from scipy.special import digamma

from matprobe.mi.base import MEAN, CrossFitEstimator, FoldOutput, FoldPlan
from matprobe.mi.interface import TWO_SIDED, EstimatorTags
from matprobe.mi.prep import Preprocessor
from matprobe.mi.registry import register_estimator


class KSGEstimator(CrossFitEstimator):
    name = "ksg"
    kind = MEAN
    # nothing is trained, so no fold plan; per-row terms are the Ross terms of every row
    tags = EstimatorTags(uses_fold_plan=False, pointwise=True, conditional=True, bound=TWO_SIDED)

    def __init__(self, *args, k: int = 5, **kwargs):
        kwargs.setdefault("pca", 16)
        kwargs.setdefault("seeds", 1)
        super().__init__(*args, **kwargs)
        self.k = k

    def estimate(self, z, y, c=None, *, sub=None, plan=None, names=None, pointwise=False):
        # no training: one "fold" whose training and held-out rows are all rows
        return super().estimate(z, y, c, sub=sub, plan=None, names=names, pointwise=pointwise)

    def _run_folds(self, z, y, c, sub, active, plan: FoldPlan):
        x = Preprocessor(self.pca, self.gaussianize, seed=self.seed).fit(z).transform(z)
        rng = np.random.default_rng([self.seed, 3])
        # tiny jitter breaks ties (duplicated embeddings) that make kNN radii zero
        x = x + 1e-6 * rng.standard_normal(x.shape).astype(np.float32)
        r = np.zeros(len(y))
        for s in np.unique(c[active]):
            rows = np.flatnonzero((c == s) & active)
            r[rows] = self._ross(x[rows], y[rows])
        return [{"r": r}], [{"k": self.k}]

    def _ross(self, x, y):
        from sklearn.neighbors import KDTree  # here, not at import: the registry loads this module

        n = len(y)
        radius = np.empty(n)
        k_used = np.empty(n)
        n_y = np.empty(n)
        for label in np.unique(y):
            rows = np.flatnonzero(y == label)
            n_y[rows] = len(rows)
            if len(rows) < 2:
                radius[rows] = 0.0
                k_used[rows] = 1
                continue
            kk = min(self.k, len(rows) - 1)
            tree = KDTree(x[rows], metric="chebyshev")
            dist, _ = tree.query(x[rows], k=kk + 1)
            radius[rows] = np.nextafter(dist[:, -1], 0)
            k_used[rows] = kk
        tree = KDTree(x, metric="chebyshev")
        m = tree.query_radius(x, radius, count_only=True)
        return digamma(n) + digamma(k_used) - digamma(n_y) - digamma(np.maximum(m, 1))

    def fit_fold(self, *a, **k) -> FoldOutput:  # pragma: no cover - not used (no training)
        raise NotImplementedError


def make_ksg(*, seeds=None, pca=16, **params) -> KSGEstimator:
    """Registered factory: KSG is deterministic (one seed whatever `seeds` is) and, when the
    caller asks for no PCA (pca=None), keeps its own default of 16 dims (kNN degrades fast
    with dimension, docs/design.md §3)."""
    return KSGEstimator(pca=16 if pca is None else pca, **params)


register_estimator("ksg", make_ksg, KSGEstimator.tags, summary="Ross (2014) k-nearest-neighbour estimator")
