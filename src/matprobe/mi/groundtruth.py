"""Ground-truth tasks with exactly known MI for discrete factors and nested M -> A -> T chains.

Z given all factors is Gaussian: Z_sig | (f_1..f_m) ~ N(mu, I_k) in a k-dim signal space,
mu = sum_j s_j v_j(f_1..f_j) (nested means, so each factor adds its own term), embedded in
d dimensions with independent isotropic noise on the orthogonal complement (an orthogonal
change of basis of [Z_sig, noise]), optionally followed by an invertible per-coordinate map.
Neither the embedding nor the map changes any MI (MI is invariant under invertible maps of
Z; the noise is independent of everything), so every chain term equals its value in the
k-dim signal space, computed by Monte Carlo of exact log-densities (docs/design.md §3):

    I(Z;F_j | F_<j) = E[ log p(z | f_<=j) - log p(z | f_<j) ],
    p(z | f_<=j) = sum over later factors of p(f_>j | f_<=j) N(z; mu, I).

The Monte Carlo standard error is reported with each value (nats).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy.special import logsumexp

TRANSFORMS = ("linear", "sinh", "cubic")


@dataclass
class GroundTruthTask:
    """A nested chain of discrete factors with Gaussian class-conditionals.

    sizes: classes per factor in chain order (one entry = a single discrete factor).
    separations: scale of each factor's mean contribution (larger = more MI).
    d: ambient dimension; signal_dim: k (capped at d).
    imbalance: class weights within each parent stratum are exp(-imbalance * rank).
    degenerate: the last factor has one class in the first parent stratum (H = 0 there).
    transform: "linear" (orthogonal embedding only), "sinh" or "cubic" (x + x^3/3) applied
    per coordinate after the embedding; both are strictly monotone, so invertible.
    noise_scale: standard deviation of the noise on the d - k complement directions (1 =
    isotropic). Real embeddings are anisotropic, with class structure in high-variance
    directions; with isotropic unit noise and d/n large, the signal directions fall below the
    Marchenko-Pastur edge (1 + sqrt(d/n))^2 and no unsupervised reduction can find them.
    The noise is independent of the factors, so it never changes the MI.
    """

    sizes: tuple[int, ...] = (2, 4, 4)
    separations: tuple[float, ...] = (1.0, 1.0, 1.0)
    d: int = 16
    signal_dim: int = 8
    imbalance: float = 0.0
    degenerate: bool = False
    transform: str = "linear"
    noise_scale: float = 1.0
    names: tuple[str, ...] = ("M", "A", "T")
    seed: int = 0
    _truth_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if len(self.separations) != len(self.sizes):
            raise ValueError("separations and sizes must have the same length")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if min(self.sizes) < 1 or self.d < 1:
            raise ValueError("sizes and d must be positive")
        self.names = tuple(self.names[: len(self.sizes)]) if len(self.names) >= len(self.sizes) \
            else tuple(f"F{j}" for j in range(len(self.sizes)))

    @property
    def k(self) -> int:
        return min(self.signal_dim, self.d)

    @cached_property
    def _structure(self):
        """Cells (all factor tuples), their probabilities and means in the signal space."""
        rng = np.random.default_rng([self.seed, 11])
        cells = np.array(np.meshgrid(*[np.arange(s) for s in self.sizes], indexing="ij")).reshape(
            len(self.sizes), -1).T
        prob = np.ones(len(cells))
        mean = np.zeros((len(cells), self.k))
        for j, size in enumerate(self.sizes):
            prefixes = {tuple(row[:j]) for row in cells}
            cond = {}
            vecs = {}
            for pre in prefixes:
                w = np.exp(-self.imbalance * rng.permutation(size))
                if self.degenerate and j == len(self.sizes) - 1 and j > 0 and all(v == 0 for v in pre):
                    w = np.zeros(size)
                    w[0] = 1.0
                cond[pre] = w / w.sum()
                v = rng.standard_normal((size, self.k))
                vecs[pre] = self.separations[j] * v / np.sqrt(self.k) * np.sqrt(2.0)
            for i, row in enumerate(cells):
                pre = tuple(row[:j])
                prob[i] *= cond[pre][row[j]]
                mean[i] += vecs[pre][row[j]]
        keep = prob > 0
        return cells[keep], prob[keep] / prob[keep].sum(), mean[keep]

    @cached_property
    def _embedding(self):
        rng = np.random.default_rng([self.seed, 13])
        u, _ = np.linalg.qr(rng.standard_normal((self.d, self.k)))
        return u.astype(np.float32)  # [d, k] orthonormal columns

    def _map(self, x):
        if self.transform == "sinh":
            return np.sinh(x)
        if self.transform == "cubic":
            return x + x**3 / 3.0
        return x

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(Z float32 [n, d], {factor name: int codes [n]})."""
        rng = np.random.default_rng([self.seed, 17, seed])
        cells, prob, mean = self._structure
        idx = rng.choice(len(cells), size=n, p=prob)
        z_sig = (mean[idx] + rng.standard_normal((n, self.k))).astype(np.float32)
        u = self._embedding
        if self.d == self.k:
            z = z_sig @ u.T  # u is square orthogonal here
        else:
            noise = rng.standard_normal((n, self.d), dtype=np.float32)
            noise -= (noise @ u) @ u.T  # keep only the orthogonal complement
            z = z_sig @ u.T + self.noise_scale * noise
        z = self._map(z).astype(np.float32)
        return z, {name: cells[idx, j].astype(np.int64) for j, name in enumerate(self.names)}

    def _log_densities(self, z_sig):
        _, _, mean = self._structure
        sq = (z_sig**2).sum(1)[:, None] - 2 * z_sig @ mean.T + (mean**2).sum(1)[None, :]
        return -0.5 * sq - 0.5 * self.k * np.log(2 * np.pi)  # [n, cells]

    def _prefix_logp(self, ld, idx, j):
        """log p(z | f_<=j of each sample's own cell), from component log-densities ld."""
        cells, prob, _ = self._structure
        if j < 0:
            return logsumexp(ld + np.log(prob)[None, :], axis=1)
        keys = [tuple(r) for r in cells[:, : j + 1]]
        out = np.empty(len(idx))
        groups: dict[tuple, list[int]] = {}
        for ci, key in enumerate(keys):
            groups.setdefault(key, []).append(ci)
        for members in groups.values():
            members = np.array(members)
            w = prob[members] / prob[members].sum()
            rows = np.flatnonzero(np.isin(idx, members))
            if rows.size:
                out[rows] = logsumexp(ld[np.ix_(rows, members)] + np.log(w)[None, :], axis=1)
        return out

    def truth(self, n_mc: int = 400_000, seed: int = 12345) -> dict[str, tuple[float, float]]:
        """Exact chain terms by Monte Carlo: {term name: (value nats, MC standard error)}.

        Keys: "I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)", ..., and the direct "I(Z;M,A,T)".
        """
        key = (n_mc, seed)
        if key in self._truth_cache:
            return self._truth_cache[key]
        cells, prob, mean = self._structure
        rng = np.random.default_rng([self.seed, 19, seed])
        sums = None
        total = 0
        chunk = 50_000
        m = len(self.sizes)
        while total < n_mc:
            b = min(chunk, n_mc - total)
            idx = rng.choice(len(cells), size=b, p=prob)
            z_sig = mean[idx] + rng.standard_normal((b, self.k))
            ld = self._log_densities(z_sig)
            levels = [self._prefix_logp(ld, idx, j) for j in range(-1, m)]
            diffs = np.stack([levels[j + 1] - levels[j] for j in range(m)]
                             + [levels[m] - levels[0]], axis=1)
            s1, s2 = diffs.sum(0), (diffs**2).sum(0)
            sums = (s1, s2) if sums is None else (sums[0] + s1, sums[1] + s2)
            total += b
        mean_d = sums[0] / total
        se = np.sqrt(np.maximum(sums[1] / total - mean_d**2, 0) / total)
        out = {}
        for j in range(m):
            name = f"I(Z;{self.names[j]}" + (f"|{','.join(self.names[:j])})" if j else ")")
            out[name] = (float(mean_d[j]), float(se[j]))
        out[f"I(Z;{','.join(self.names)})"] = (float(mean_d[m]), float(se[m]))
        self._truth_cache[key] = out
        return out

    def entropies(self) -> dict[str, float]:
        """Exact H(F_j | F_<j) of the population, the upper limits of the chain terms (nats)."""
        cells, prob, _ = self._structure
        out = {}
        for j in range(len(self.sizes)):
            def h(cols):
                if not cols:
                    return 0.0
                keys = {}
                for row, p in zip(cells[:, cols], prob):
                    keys[tuple(row)] = keys.get(tuple(row), 0.0) + p
                p = np.array(list(keys.values()))
                return float(-(p * np.log(p)).sum())
            name = f"H({self.names[j]}" + (f"|{','.join(self.names[:j])})" if j else ")")
            out[name] = h(list(range(j + 1))) - h(list(range(j)))
        return out


def single_factor_task(k_classes: int = 4, d: int = 16, separation: float = 1.0, **kw) -> GroundTruthTask:
    """One discrete factor Y with K classes: Z | Y ~ N(mu_y, I) (embedded, optionally mapped)."""
    return GroundTruthTask(sizes=(k_classes,), separations=(separation,), d=d, names=("Y",), **kw)


def chain_task(sizes=(2, 4, 4), d: int = 16, separations=(1.0, 1.0, 1.0), **kw) -> GroundTruthTask:
    """Nested M -> A -> T chain (three factors by default)."""
    return GroundTruthTask(sizes=tuple(sizes), separations=tuple(separations), d=d, **kw)
