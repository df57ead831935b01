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
        cells, _, _ = self._structure
        idx, z_sig = self._draw_signal(rng, n)
        u = self._embedding
        if self.d == self.k:
            z = z_sig @ u.T  # u is square orthogonal here
        else:
            noise = rng.standard_normal((n, self.d), dtype=np.float32)
            noise -= (noise @ u) @ u.T  # keep only the orthogonal complement
            z = z_sig @ u.T + self.noise_scale * noise
        z = self._map(z).astype(np.float32)
        return z, {name: cells[idx, j].astype(np.int64) for j, name in enumerate(self.names)}

    def _draw_signal(self, rng, n):
        """Each row's cell and its float32 signal coordinates (the first draws of `sample`)."""
        cells, prob, mean = self._structure
        idx = rng.choice(len(cells), size=n, p=prob)
        return idx, (mean[idx] + rng.standard_normal((n, self.k))).astype(np.float32)

    def _term_rows(self, idx, z_sig) -> np.ndarray:
        """Per row, the exact pointwise log-ratio of every chain term and of the direct term
        [n, m + 1]: log p(z | f_<=j) - log p(z | f_<j) at the row's own factors."""
        ld = self._log_densities(z_sig)
        m = len(self.sizes)
        levels = [self._prefix_logp(ld, idx, j) for j in range(-1, m)]
        return np.stack([levels[j + 1] - levels[j] for j in range(m)] + [levels[m] - levels[0]], axis=1)

    def _term_names(self) -> list[str]:
        names = [f"I(Z;{self.names[j]}" + (f"|{','.join(self.names[:j])})" if j else ")")
                 for j in range(len(self.sizes))]
        return names + [f"I(Z;{','.join(self.names)})"]

    def oracle_terms(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """The exact pointwise log-ratio of each term on the rows of `sample(n, seed)` (nats,
        float64 [n] per term name, the keys of `truth`). Their row mean is what an estimator
        that knew the true densities would report on that sample: its distance from `truth` is
        the sample's own noise, which no held-out average over those rows escapes.

        >>> task = chain_task((2, 3), d=8, separations=(1.0, 1.5), seed=1)
        >>> rows = task.oracle_terms(200_000, seed=3)
        >>> value, se = task.truth()["I(Z;M)"]
        >>> bool(abs(rows["I(Z;M)"].mean() - value) < 4 * (se + rows["I(Z;M)"].std() / 200_000 ** 0.5))
        True
        """
        idx, z_sig = self._draw_signal(np.random.default_rng([self.seed, 17, seed]), n)
        rows = self._term_rows(idx, z_sig.astype(np.float64))
        return dict(zip(self._term_names(), rows.T))

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
        while total < n_mc:
            b = min(chunk, n_mc - total)
            idx = rng.choice(len(cells), size=b, p=prob)
            z_sig = mean[idx] + rng.standard_normal((b, self.k))
            diffs = self._term_rows(idx, z_sig)
            s1, s2 = diffs.sum(0), (diffs**2).sum(0)
            sums = (s1, s2) if sums is None else (sums[0] + s1, sums[1] + s2)
            total += b
        mean_d = sums[0] / total
        se = np.sqrt(np.maximum(sums[1] / total - mean_d**2, 0) / total)
        out = {name: (float(mean_d[j]), float(se[j])) for j, name in enumerate(self._term_names())}
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


# ---------------------------------------------------------------------------------------------
# Off the linear-Gaussian path (issue 12): samplers that carry their exact MI.
#
# A latent signal s in R^k is drawn from a class-conditional *mixture* (components per class,
# Gaussian or multivariate Student-t with identity scale), then embedded in d dims as
#     z = A s + (I - A A^+) g,
# with A [d, k] of full column rank and g independent noise with per-coordinate scales. A^+ z = s
# exactly (A^+ A = I and A^+ (I - A A^+) = 0), and z given s does not depend on the labels, so
# I(Z; .) = I(S; .) for every term: the truth is computed in the k-dim latent space by Monte
# Carlo of exact log-densities, like GroundTruthTask. "Massive activations": a few coordinates
# of A and g are scaled by 100-1000 (and shifted by a constant), as in the hidden states of
# 7B models; the signal partly lives there.


def _log_t_density(sq, k, nu):
    """log density of the k-variate Student-t with identity scale at squared norm sq."""
    from scipy.special import gammaln

    return (gammaln((nu + k) / 2) - gammaln(nu / 2) - 0.5 * k * np.log(nu * np.pi)
            - 0.5 * (nu + k) * np.log1p(sq / nu))


@dataclass
class LatentMixtureTask:
    """Y with K classes; S | Y=y is a mixture of `components` clusters (weights uniform or
    imbalanced), each N(mu_{y,u}, I_k) (family "gauss") or Student-t_nu(mu_{y,u}, I_k) ("t").

    separation: spread of the class centres; spread: spread of a class's clusters around its
    centre (spread > 0 with components >= 2 makes the Bayes posterior p(y|z) non-linear in z).
    With `chain=True` the cluster U is a second factor: terms I(Z;Y) and I(Z;U|Y).
    separation = spread = 0 gives the null task (I = 0 exactly).
    massive: number of "massive" coordinates (scale `massive_scale`, constant offset 10x that);
    the first half of them carry one signal direction each (axis-aligned), the rest noise only.
    noise_scales: "flat" (all 1), "decay" (log-uniform in [0.05, 1]: anisotropic like real
    embeddings), a pair (lo, hi) (log-uniform in [lo, hi]; above the signal's variance of about
    1 the noise's top components push the signal out of a PCA reduction) or a float (all equal
    to it).
    scale_spread: each class's latent scale is exp(scale_spread * u_y), u_y ~ U(-1, 1) (0: all
    1). Classes that differ in scale have a Bayes posterior quadratic in z, which no linear
    critic represents; with separation = spread = 0 the scales alone carry the MI.
    """

    k_classes: int = 4
    components: int = 1
    d: int = 32
    signal_dim: int = 8
    separation: float = 1.0
    spread: float = 0.0
    family: str = "gauss"
    nu: float = 3.0
    imbalance: float = 0.0
    massive: int = 0
    massive_scale: float = 300.0
    noise_scales: object = "decay"
    chain: bool = False
    seed: int = 0
    scale_spread: float = 0.0
    _truth_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.family not in ("gauss", "t"):
            raise ValueError(f"family must be 'gauss' or 't', got {self.family!r}")
        if self.k_classes < 2 or self.components < 1 or self.d < 1:
            raise ValueError("k_classes >= 2, components >= 1 and d >= 1 required")
        if self.massive > self.d - self.k:
            raise ValueError("too many massive coordinates for d")

    @property
    def k(self) -> int:
        return min(self.signal_dim, self.d)

    @property
    def names(self) -> tuple[str, ...]:
        return ("Y", "U") if self.chain else ("Y",)

    @property
    def null(self) -> bool:
        return self.separation == 0 and (self.spread == 0 or self.components == 1) and self.scale_spread == 0

    @cached_property
    def _scales(self) -> np.ndarray:
        """The latent scale of each component (its class's), [components in total]."""
        cls, _, _ = self._structure
        if self.scale_spread == 0:
            return np.ones(len(cls))
        # a stream of its own: the other parameters stay those of the same task without scales
        u = np.random.default_rng([self.seed, 41]).uniform(-1.0, 1.0, self.k_classes)
        return np.exp(self.scale_spread * u)[cls]

    @cached_property
    def _structure(self):
        """(class of each component, component probabilities, component means [comp, k])."""
        rng = np.random.default_rng([self.seed, 23])
        w_class = np.exp(-self.imbalance * rng.permutation(self.k_classes))
        w_class /= w_class.sum()
        scale = np.sqrt(2.0 / self.k)
        centres = self.separation * scale * rng.standard_normal((self.k_classes, self.k))
        cls = np.repeat(np.arange(self.k_classes), self.components)
        prob = np.repeat(w_class / self.components, self.components)
        mean = centres[cls] + self.spread * scale * rng.standard_normal((len(cls), self.k))
        return cls, prob, mean

    @cached_property
    def _embedding(self):
        """(A [d, k], its pseudo-inverse [k, d], noise scale per coordinate [d], offset [d])."""
        rng = np.random.default_rng([self.seed, 29])
        d, k = self.d, self.k
        n_sig_massive = min(self.massive - self.massive // 2, k)
        massive = rng.choice(d, size=self.massive, replace=False)
        u, _ = np.linalg.qr(rng.standard_normal((d, k)))
        a = u.copy()
        for j in range(n_sig_massive):  # signal direction j lives on one massive coordinate
            a[:, j] = 0.0
            a[massive[j], j] = 1.0
        if isinstance(self.noise_scales, str):
            sc = np.ones(d) if self.noise_scales == "flat" else np.exp(rng.uniform(np.log(0.05), 0.0, d))
        elif isinstance(self.noise_scales, tuple):  # (lo, hi): log-uniform in [lo, hi]
            lo, hi = self.noise_scales
            sc = np.exp(rng.uniform(np.log(lo), np.log(hi), d))
        else:
            sc = np.full(d, float(self.noise_scales))
        row_scale = np.ones(d)
        row_scale[massive] = self.massive_scale * rng.uniform(0.3, 3.0, self.massive)
        a = a * row_scale[:, None]
        sc = sc * row_scale
        offset = np.zeros(d)
        offset[massive] = 10 * row_scale[massive] * rng.choice([-1, 1], self.massive)
        return a, np.linalg.pinv(a), sc, offset

    def _draw_latent(self, rng, n):
        cls, prob, mean = self._structure
        comp = rng.choice(len(cls), size=n, p=prob)
        x = rng.standard_normal((n, self.k))
        if self.family == "t":
            x = x / np.sqrt(rng.chisquare(self.nu, size=n) / self.nu)[:, None]
        return comp, mean[comp] + x * self._scales[comp][:, None]

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(Z float32 [n, d], {"Y": class codes, "U" (chain only): cluster within class})."""
        rng = np.random.default_rng([self.seed, 31, seed])
        cls, _, _ = self._structure
        comp, s = self._draw_latent(rng, n)
        a, a_pinv, sc, offset = self._embedding
        g = rng.standard_normal((n, self.d)) * sc[None, :]
        g -= (g @ a_pinv.T) @ a.T  # (I - A A^+) g: noise off the signal's range
        z = (s @ a.T + g + offset[None, :]).astype(np.float32)
        out = {"Y": cls[comp].astype(np.int64)}
        if self.chain:
            out["U"] = (comp % self.components).astype(np.int64)
        return z, out

    def _log_comp(self, s):
        _, _, mean = self._structure
        sq = (s**2).sum(1)[:, None] - 2 * s @ mean.T + (mean**2).sum(1)[None, :]
        sq = np.maximum(sq, 0.0)
        scale = self._scales[None, :]  # a density of x / scale, over scale^k (all 1: the same bits)
        sq = sq / scale**2
        log_jac = -self.k * np.log(scale)
        if self.family == "t":
            return _log_t_density(sq, self.k, self.nu) + log_jac
        return -0.5 * sq - 0.5 * self.k * np.log(2 * np.pi) + log_jac

    def _term_rows(self, comp, s) -> np.ndarray:
        """Per row, the exact pointwise log-ratios [n, 3] of I(Z;Y), I(Z;U|Y) and I(Z;Y,U) at the
        row's own component (log p(s|y) - log p(s), log p(s|y,u) - log p(s|y), their sum)."""
        cls, prob, _ = self._structure
        logp = np.log(prob)
        # log p(u | y) within the class of each component
        p_class = np.bincount(cls, weights=prob)
        log_w_in = logp - np.log(p_class[cls])
        lc = self._log_comp(s)  # [b, comp]
        log_marg = logsumexp(lc + logp[None, :], axis=1)
        same = cls[None, :] == cls[comp][:, None]
        log_class = logsumexp(np.where(same, lc + log_w_in[None, :], -np.inf), axis=1)
        log_comp = lc[np.arange(len(comp)), comp]
        return np.stack([log_class - log_marg, log_comp - log_class, log_comp - log_marg], 1)

    def oracle_terms(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        """The exact pointwise log-ratio of each term on the rows of `sample(n, seed)` (nats,
        float64 [n] per term name, the keys of `truth`); see `GroundTruthTask.oracle_terms`.

        >>> task = mixture_task(3, 2, d=8, signal_dim=4, seed=2)
        >>> rows = task.oracle_terms(200_000, seed=5)["I(Z;Y)"]
        >>> value, se = task.truth()["I(Z;Y)"]
        >>> bool(abs(rows.mean() - value) < 4 * (se + rows.std() / 200_000 ** 0.5))
        True
        """
        comp, s = self._draw_latent(np.random.default_rng([self.seed, 31, seed]), n)
        rows = np.zeros((n, 3)) if self.null else self._term_rows(comp, s)
        return {name: rows[:, j] for j, name in enumerate(self._term_names())}

    def _term_names(self) -> list[str]:
        """The terms of `truth` and `oracle_terms`, in the column order of `_term_rows`."""
        return ["I(Z;Y)", "I(Z;U|Y)", "I(Z;Y,U)"] if self.chain else ["I(Z;Y)"]

    def truth(self, n_mc: int = 400_000, seed: int = 12345) -> dict[str, tuple[float, float]]:
        """{"I(Z;Y)": (nats, MC s.e.)} (+ "I(Z;U|Y)" and "I(Z;Y,U)" with chain=True)."""
        key = (n_mc, seed)
        if key in self._truth_cache:
            return self._truth_cache[key]
        rng = np.random.default_rng([self.seed, 37, seed])
        acc = []
        total = 0
        while total < n_mc:
            b = min(50_000, n_mc - total)
            comp, s = self._draw_latent(rng, b)
            acc.append(self._term_rows(comp, s))
            total += b
        diffs = np.concatenate(acc)
        m, se = diffs.mean(0), diffs.std(0) / np.sqrt(len(diffs))
        if self.null:
            m, se = np.zeros(3), np.zeros(3)
        out = {name: (float(m[j]), float(se[j])) for j, name in enumerate(self._term_names())}
        self._truth_cache[key] = out
        return out

    def entropies(self) -> dict[str, float]:
        cls, prob, _ = self._structure
        p_class = np.bincount(cls, weights=prob)
        h_y = float(-(p_class * np.log(p_class)).sum())
        out = {"H(Y)": h_y}
        if self.chain:
            out["H(U|Y)"] = float(-(prob * np.log(prob)).sum()) - h_y
        return out


@dataclass(frozen=True)
class SpiralTask:
    """A task seen through a spiral: each row rotated, in one plane, by an angle that grows with
    its squared distance from a centre (the "spiral" diffeomorphism of Czyz et al., NeurIPS 2023,
    "Beyond normal: on the evaluation of mutual information estimators", here in the plane of
    the two leading directions of the class centres).

        z' = o + R(theta) (z - o),   theta = speed * |z - o|^2 / d,

    with R a rotation in that plane (identity elsewhere) and o the base task's offset. A
    rotation keeps |z - o|, so theta is read off z' and the map is inverted by R(-theta): every
    MI term, every pointwise log-ratio and so `truth`, `oracle_terms` and `entropies` are the
    base task's. The Bayes posterior in z' bends with the radius, which a linear critic cannot
    follow; the base's posterior is what the estimator would see at speed 0.

    >>> base = LatentMixtureTask(k_classes=3, d=8, signal_dim=4, seed=1)
    >>> task = SpiralTask(base, speed=2.0)
    >>> z0, _ = base.sample(500, seed=3); z1, _ = task.sample(500, seed=3)
    >>> o = base._embedding[3]
    >>> bool(np.allclose(np.linalg.norm(z1 - o, axis=1), np.linalg.norm(z0 - o, axis=1), rtol=1e-5))
    True
    >>> bool(np.allclose(task.invert(z1), z0, atol=1e-4))
    True
    """

    base: LatentMixtureTask
    speed: float = 2.0

    @property
    def names(self) -> tuple[str, ...]:
        return self.base.names

    @property
    def null(self) -> bool:
        return self.base.null

    @cached_property
    def _plane(self) -> np.ndarray:
        """[2, d] orthonormal: the two leading directions of the class centres in z."""
        cls, prob, mean = self.base._structure
        a = self.base._embedding[0]
        p_class = np.bincount(cls, weights=prob)
        centres = np.stack([(prob[cls == y] @ mean[cls == y]) / p_class[y] for y in range(len(p_class))])
        centres = (centres - p_class @ centres) @ a.T  # [classes, d]
        if np.linalg.matrix_rank(centres) < 2:  # no two class directions (a null, or K = 2)
            centres = a[:, :2].T if a.shape[1] >= 2 else np.eye(2, a.shape[0])
        q, _ = np.linalg.qr(np.linalg.svd(centres, full_matrices=False)[2][:2].T)
        return q.T

    def _rotate(self, z: np.ndarray, sign: float) -> np.ndarray:
        o = self.base._embedding[3]
        c = np.asarray(z, dtype=np.float64) - o
        theta = sign * self.speed * (c**2).sum(1) / c.shape[1]
        e1, e2 = self._plane
        a, b = c @ e1, c @ e2
        cos, sin = np.cos(theta), np.sin(theta)
        return z + np.outer(a * cos - b * sin - a, e1) + np.outer(a * sin + b * cos - b, e2)

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The base task's `sample(n, seed)`, each row through the spiral (float32)."""
        z, f = self.base.sample(n, seed)
        return self._rotate(z.astype(np.float64), 1.0).astype(np.float32), f

    def invert(self, z: np.ndarray) -> np.ndarray:
        """The inverse map (rows back to the base task's)."""
        return self._rotate(np.asarray(z, dtype=np.float64), -1.0)

    def truth(self, n_mc: int = 400_000, seed: int = 12345) -> dict[str, tuple[float, float]]:
        return self.base.truth(n_mc, seed)

    def oracle_terms(self, n: int, seed: int = 0) -> dict[str, np.ndarray]:
        return self.base.oracle_terms(n, seed)

    def entropies(self) -> dict[str, float]:
        return self.base.entropies()


def mixture_task(k_classes=6, components=2, d=64, separation=1.0, spread=1.5, **kw) -> LatentMixtureTask:
    """Class-conditionals that are mixtures of `components` Gaussian clusters (non-linear posterior)."""
    return LatentMixtureTask(k_classes=k_classes, components=components, d=d, separation=separation,
                             spread=spread, **kw)


def student_t_task(k_classes=4, d=32, nu=3.0, separation=1.5, **kw) -> LatentMixtureTask:
    """Heavy tails: S | Y=y ~ multivariate Student-t_nu(mu_y, I)."""
    return LatentMixtureTask(k_classes=k_classes, d=d, family="t", nu=nu, separation=separation, **kw)


def massive_task(k_classes=4, d=4096, massive=6, separation=1.2, massive_scale=300.0, **kw) -> LatentMixtureTask:
    """d-dim states with a few coordinates 100-1000x the rest; part of the signal lives on them."""
    kw.setdefault("signal_dim", 8)
    # noise s.d. 0.3 off the signal (anisotropic like real embeddings, as in mi_bench.py): with
    # unit noise in 4088 of 4096 dims the signal falls below the Marchenko-Pastur edge and no
    # unsupervised reduction can find it (the separate stress task)
    kw.setdefault("noise_scales", 0.3)
    return LatentMixtureTask(k_classes=k_classes, d=d, massive=massive, separation=separation,
                             massive_scale=massive_scale, **kw)


def many_class_task(k_classes=50, d=64, separation=2.0, **kw) -> LatentMixtureTask:
    """Many classes (e.g. K = 50 at ~100 rows per class)."""
    kw.setdefault("signal_dim", 16)
    return LatentMixtureTask(k_classes=k_classes, d=d, separation=separation, **kw)


def null_task(k_classes=4, d=32, **kw) -> LatentMixtureTask:
    """Labels independent of Z: I(Z;Y) = 0 exactly."""
    return LatentMixtureTask(k_classes=k_classes, d=d, separation=0.0, spread=0.0, **kw)


# ---------------------------------------------------------------------------------------------
# The sample's own noise, a bound on every regular estimator (docs/estimators.md, "Small MI is
# as uncertain as its sample").


def efficient_se(task, n: int, n_mc: int = 400_000, seed: int = 12345) -> dict[str, float]:
    """{term: the efficient standard error of that term from n rows (nats)}.

    The efficient influence function of a mutual-information term I(Z;Y|C) under a
    nonparametric model is its pointwise log-ratio minus I (Kandasamy et al., NeurIPS 2015,
    "Nonparametric von Mises estimators for entropies, divergences and mutual informations"), so
    no regular estimator that learns the densities from the same n rows has an asymptotic
    standard error below sd(log-ratio) / sqrt(n). Near MI = 0 with a linear-logistic posterior
    the parametric model's bound is the same to leading order (docs/estimators.md). The sd is
    the task's own, from the Monte-Carlo rows of `truth(n_mc, seed)` (its s.e. times sqrt(n_mc)).

    >>> task = chain_task((2, 3), d=8, separations=(1.0, 1.5), seed=1)
    >>> ses = efficient_se(task, 2_000, n_mc=100_000)
    >>> sd = task.oracle_terms(100_000, seed=4)["I(Z;M)"].std()
    >>> bool(abs(ses["I(Z;M)"] - sd / 2_000 ** 0.5) < 0.05 * ses["I(Z;M)"])
    True
    """
    return {name: efficient_se_from_mc(se, n_mc, n) for name, (_, se) in task.truth(n_mc, seed).items()}


def efficient_se_from_mc(mc_se, n_mc: int, n):
    """The efficient s.e. at n rows from a truth's Monte-Carlo s.e. over n_mc rows: both are
    sd(log-ratio) over sqrt(rows), so it is mc_se * sqrt(n_mc / n) (arrays broadcast)."""
    return mc_se * np.sqrt(n_mc / n)


def median_abs_error_floor(relative_se) -> float:
    """The median of |e_i| pooled over draws, each e_i ~ N(0, relative_se[i]^2): the median
    relative error an unbiased estimator with the efficient standard errors (`efficient_se`
    divided by each truth) would show on a family of draws. One draw: Phi^-1(0.75) * se.

    >>> round(median_abs_error_floor([0.1]), 6)  # 0.6745 * 0.1
    0.067449
    """
    from scipy.optimize import brentq
    from scipy.special import ndtr

    r = np.asarray(relative_se, dtype=np.float64)
    if r.size == 0 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"relative_se must be finite and >= 0, got {relative_se!r}")
    zero_share = float(np.mean(r == 0))  # draws with s.e. 0 have e = 0 exactly
    if zero_share >= 0.5:
        return 0.0
    r = r[r > 0]

    def below(m):  # P(|e| <= m) over the pooled draws, minus one half
        return zero_share + (1 - zero_share) * np.mean(2 * ndtr(m / r) - 1) - 0.5

    return float(brentq(below, 0.0, 10 * float(r.max()), xtol=1e-12))
