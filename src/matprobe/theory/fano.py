"""Fano's inequality: error probability against conditional entropy and mutual information.

Fano (Cover & Thomas 2006, Thm 2.10.1): for any estimator Ŷ = g(X) of Y taking values
in an alphabet of K symbols, with ε = P(Ŷ ≠ Y),

    H(Y | X) <= φ(ε) = h(ε) + ε ln(K - 1)            ("K-1" variant, the sharp one)
    H(Y | X) <= h(ε) + ε ln K                        ("K" variant, weaker)

where h is the binary entropy. With X = (Z, C) and C known (e.g. C = (M, A)):

    I(Z; Y | C) = H(Y | C) - H(Y | Z, C) >= H(Y | C) - φ(ε).

Averaging over strata c is tighter (φ is concave, so Σ p_c φ(ε_c) <= φ(Σ p_c ε_c)),
and each stratum's bound can be clipped at 0 because MI is non-negative.

Inverse: φ increases on [0, 1 - 1/K] from 0 to ln K, so the smallest error that a
given H(Y|X) allows is the root of φ(ε) = H(Y|X) on that interval (brentq). Given an MI
value Î, H(Y|Z,C) = H(Y|C) - Î, so ε >= φ⁻¹(H(Y|C) - Î).

CrossMed (§IV, eq. 7-8) writes I(Z;T|M,A) >= H(T) - h(ε) - ε log|Y_T|. The log K in
place of log(K-1) is valid but looser; H(T) in place of H(T|M,A) is **invalid** unless
T is independent of (M, A) (their Assumption 1): it adds I(T; M, A) >= 0 to the bound.
Counterexample (docs/design.md §4): T = M, Z independent of everything, ε = 0 (predict T
from M); the truth is I(Z;T|M,A) = 0 but the paper's bound gives H(T) = ln 2.

Everything is in nats unless `unit="bits"` (then inputs and outputs of information
quantities are in bits).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize
from scipy.special import xlogy

from matprobe.checks import check_rate
from matprobe.errors import BoundsError
from matprobe.units import NATS, check_unit, from_nats, to_nats

VARIANTS = ("K-1", "K")
# Tolerance (nats) for "an entropy above ln K": plug-in values land a hair above it.
_ENTROPY_TOL = 1e-9
_PEAK_ROUNDING = 1e-12  # an entropy this close below φ's peak is the peak, up to float rounding
# Typed values are rounded: 1.3863 for ln 4 = 1.386294... is accepted and read as ln K.
_TYPED_TOL = 1e-3


# ------------------------------------------------------------------ argument checks


def check_error(eps, name: str = "error") -> float:
    # the one rate check (matprobe.checks.check_rate, shared with PAC's risk): 16.8 is refused naming 0.168
    return check_rate(eps, name, error=BoundsError)


def check_classes(k) -> int:
    if isinstance(k, float) and not k.is_integer():
        raise BoundsError(f"classes K = {k} must be a whole number >= 2")
    k = int(k)
    if k < 2:
        raise BoundsError(f"classes K = {k} must be >= 2 (Fano needs at least two labels)")
    return k


def _check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise BoundsError(f"Fano variant {variant!r} is unknown; use 'K-1' (sharp) or 'K'")
    return variant


def _log_alphabet(k: int, variant: str) -> float:
    return math.log(k - 1) if _check_variant(variant) == "K-1" else math.log(k)


# ------------------------------------------------------------------ entropies


def entropy_of(p, unit: str = NATS) -> float:
    """Entropy of a probability vector (must be >= 0 and sum to 1)."""
    p = np.asarray(p, dtype=float).ravel()
    if p.size == 0 or np.any(~np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise BoundsError("entropy: probabilities must be >= 0 and sum to 1")
    return from_nats(float(-xlogy(p, p).sum()), unit)


def binary_entropy(eps, unit: str = NATS):
    """h(ε) = -ε ln ε - (1-ε) ln(1-ε); vectorised; h(0) = h(1) = 0.

    Examples
    --------
    >>> from matprobe.theory.fano import binary_entropy
    >>> binary_entropy(0.5, unit="bits")
    1.0
    >>> binary_entropy([0.0, 1.0]).tolist() == [0.0, 0.0]
    True
    """
    e = np.asarray(eps, dtype=float)
    if np.any(~np.isfinite(e)) or np.any((e < 0) | (e > 1)):
        raise BoundsError(f"error = {eps} is outside [0, 1]; give it as a fraction")
    h = 0.0 - xlogy(e, e) - xlogy(1 - e, 1 - e)  # 0.0 - 0.0, not -0.0 (printed "-0.000000" at ε = 0)
    h = h / math.log(2.0) if check_unit(unit) == "bits" else h
    return float(h) if h.ndim == 0 else h


# ------------------------------------------------------------------ Fano forward


def fano_entropy_upper(eps, k: int, variant: str = "K-1", unit: str = NATS):
    """Upper bound on H(Y|X) allowed by error ε with K classes: h(ε) + ε ln(K-1) (or ln K).

    Parameters
    ----------
    eps : float or array_like
        Error rate(s) in [0, 1].
    k : int
        Number of classes K (>= 2).
    variant : {"K-1", "K"}, default "K-1"
        The sharp form ε ln(K-1), or the looser ε ln K.
    unit : {"nats", "bits"}, default "nats"

    Examples
    --------
    ε = 0.25, K = 4: h(0.25) + 0.25 ln 3 = 0.562335 + 0.274653 nats. At ε = 1 - 1/K the bound
    reaches ln K, the entropy of a uniform label:

    >>> import math
    >>> from matprobe.theory.fano import fano_entropy_upper
    >>> round(fano_entropy_upper(0.25, 4), 6)
    0.836988
    >>> math.isclose(fano_entropy_upper(0.75, 4), math.log(4))
    True
    """
    k = check_classes(k)
    e = np.asarray(eps, dtype=float)
    phi = binary_entropy(e) + e * _log_alphabet(k, variant)
    phi = np.asarray(phi)
    phi = phi / math.log(2.0) if check_unit(unit) == "bits" else phi
    return float(phi) if phi.ndim == 0 else phi


def fano_mi_lower(
    h_cond: float, eps: float, k: int, variant: str = "K-1", unit: str = NATS
) -> float:
    """I(Z;Y|C) >= H(Y|C) - φ(ε). Raw value (may be negative: then only I >= 0 holds).

    Examples
    --------
    A uniform 4-class label (H = ln 4 nats) predicted from Z with 25 % error: Z holds at least
    ln 4 - φ(0.25) = 1.386294 - 0.836988 nats about it.

    >>> import math
    >>> from matprobe.theory.fano import fano_mi_lower
    >>> round(fano_mi_lower(math.log(4), 0.25, 4), 6)
    0.549306
    """
    h = to_nats(float(h_cond), unit)
    eps = check_error(eps)
    return from_nats(h - fano_entropy_upper(eps, k, variant), unit)


def fano_mi_lower_stratified(
    weights, h_strata, errors, k: int, variant: str = "K-1", unit: str = NATS
) -> float:
    """Σ_c p(c) max(0, H(Y|C=c) - φ(ε_c)): the per-stratum (tighter) conditional bound."""
    w = np.asarray(weights, dtype=float)
    hs = np.asarray(h_strata, dtype=float)
    es = np.asarray(errors, dtype=float)
    if not (w.shape == hs.shape == es.shape) or w.ndim != 1 or w.size == 0:
        raise BoundsError(
            "stratified Fano: weights, entropies and errors must be equal-length lists"
        )
    if np.any(w < 0) or abs(w.sum() - 1.0) > 1e-9:
        raise BoundsError("stratified Fano: stratum weights must be >= 0 and sum to 1")
    for e in es:
        check_error(e, "stratum error")
    per = to_nats(hs, unit) - fano_entropy_upper(es, k, variant)
    return from_nats(float(np.sum(w * np.maximum(per, 0.0))), unit)


# ------------------------------------------------------------------ Fano inverse


def _phi_peak(k: int, variant: str) -> tuple[float, float]:
    """(argmax, max) of φ: (1-1/K, ln K) for K-1; (K/(K+1), ln(K+1)) for the K variant."""
    if variant == "K-1":
        return (k - 1.0) / k, math.log(k)  # (K-1)/K, not 1 - 1/K: 12/18 == 2/3 to the last bit
    return k / (k + 1.0), math.log(k + 1.0)


def fano_min_error(h_cond_x: float, k: int, variant: str = "K-1", unit: str = NATS) -> float:
    """Smallest ε with φ(ε) >= H(Y|X): no estimator of Y from X can do better.

    Root of φ on [0, argmax φ], where φ is increasing. H(Y|X) <= 0 gives 0.

    Examples
    --------
    The inverse of `fano_entropy_upper`; a label with all its ln K left allows no better than
    chance, 1 - 1/K:

    >>> import math
    >>> from matprobe.theory.fano import fano_entropy_upper, fano_min_error
    >>> round(fano_min_error(fano_entropy_upper(0.25, 4), 4), 9)
    0.25
    >>> fano_min_error(math.log(4), 4)
    0.75
    """
    k = check_classes(k)
    _check_variant(variant)
    h = to_nats(float(h_cond_x), unit)
    if not math.isfinite(h):
        raise BoundsError(f"conditional entropy = {h_cond_x} must be finite")
    if h <= 0.0:
        return 0.0
    if h > math.log(k) + _ENTROPY_TOL:
        raise BoundsError(
            f"conditional entropy {from_nats(h, unit):.6g} {unit} exceeds ln K = "
            f"{from_nats(math.log(k), unit):.6g} {unit} for K = {k}; check --classes and the unit"
        )
    top, peak = _phi_peak(k, variant)
    # φ is flat at its peak: an entropy a rounding below it (6/6/6 counts: ln 3 - 2e-16) has a root
    # 1e-8 from `top` that brentq cannot place, and a floor just above an error of exactly 1 - 1/K
    # flipped seven verdicts of a study; such an entropy is the peak
    if h >= peak - _PEAK_ROUNDING:
        return top
    return float(
        optimize.brentq(lambda e: fano_entropy_upper(e, k, variant) - h, 0.0, top, xtol=1e-14)
    )


def fano_min_error_given_mi(
    mi: float, h_cond: float, k: int, variant: str = "K-1", unit: str = NATS
) -> float:
    """Smallest ε Fano allows when I(Z;Y|C) = mi and H(Y|C) = h_cond: φ⁻¹(H(Y|C) - I)."""
    return fano_min_error(float(h_cond) - float(mi), k, variant, unit)


# ------------------------------------------------------------------ finite sample


@dataclass(frozen=True)
class FiniteFano:
    """Fano lower bound on I with the error (and optionally H) replaced by confidence limits."""

    bound: float  # lower bound on I(Z;Y|C), holds with probability >= 1 - delta
    error_upper: float  # one-sided Clopper-Pearson upper limit on ε at δ/pieces
    entropy_lower: float  # H(Y|C) used (a lower confidence limit if it was estimated)
    delta: float
    pieces: int
    unit: str

    def to_dict(self) -> dict:
        return asdict(self)


def plugin_entropy_deviation(n: int, delta: float, conditional: bool = True) -> float:
    """t with P(H <= Ĥ_plugin - t) <= δ, in nats, for n i.i.d. samples.

    The plug-in (conditional) entropy is concave in the empirical law, so E Ĥ <= H
    (Jensen); moving one sample changes Σ n_i ln n_i by < 1 + ln n per cell touched
    (two cells for H(Y), four for H(Y|C) = H(Y,C) - H(C)), so McDiarmid's inequality
    gives t = c·sqrt(n ln(1/δ) / 2) with c = (1 + ln n)/n (doubled for conditional).
    """
    from matprobe.theory.pac import check_delta, check_n

    n, delta = check_n(n), check_delta(delta)
    c = (2.0 if conditional else 1.0) * (1.0 + math.log(n)) / n
    return c * math.sqrt(n * math.log(1.0 / delta) / 2.0)


def fano_mi_lower_finite(
    errors: int,
    n: int,
    h_cond: float,
    k: int,
    delta: float = 0.05,
    *,
    entropy_n: int | None = None,
    variant: str = "K-1",
    unit: str = NATS,
) -> FiniteFano:
    """Finite-sample Fano: I(Z;Y|C) >= H_low - φ(min(ε_up, argmax φ)) with prob >= 1 - δ.

    ε_up is the one-sided Clopper-Pearson upper limit from `errors` of `n` held-out
    answers. If `entropy_n` is given, `h_cond` is a plug-in estimate from that many
    samples and is lowered by `plugin_entropy_deviation`; δ is split equally between
    the estimated pieces (union bound). φ is non-decreasing up to its peak, so capping
    ε_up there keeps the bound valid.
    """
    from matprobe.theory.pac import check_delta, test_set_bound

    k = check_classes(k)
    delta = check_delta(delta)
    pieces = 2 if entropy_n is not None else 1
    d = delta / pieces
    eps_up = test_set_bound(errors, n, d)
    h = to_nats(float(h_cond), unit)
    if entropy_n is not None:
        h = max(h - plugin_entropy_deviation(entropy_n, d), 0.0)
    top, _ = _phi_peak(k, _check_variant(variant))
    bound = h - fano_entropy_upper(min(eps_up, top), k, variant)
    return FiniteFano(from_nats(bound, unit), eps_up, from_nats(h, unit), delta, pieces, unit)


# ------------------------------------------------------------------ audit of CrossMed eq. 8


@dataclass(frozen=True)
class FanoAudit:
    """CrossMed eq. 8 held against the correct conditional Fano bound."""

    correct: float  # H(T|M,A) - h(ε) - ε ln(K-1)
    log_k_variant: float  # H(T|M,A) - h(ε) - ε ln K: valid, looser
    paper: float  # H(T) - h(ε) - ε ln K (eq. 8 as printed)
    entropy_gap: float  # H(T) - H(T|M,A) = I(T; M,A) >= 0, what the substitution adds
    verdict: str  # "valid" | "looser" | "invalid"
    reason: str
    unit: str

    def to_dict(self) -> dict:
        return asdict(self)


def audit_paper_fano(
    h_marginal: float, h_cond: float, eps: float, k: int, unit: str = NATS
) -> FanoAudit:
    """Compare eq. 8 (H(T), log K) with the correct bound (H(T|M,A), log(K-1)).

    "valid": the paper's number equals the correct bound; "looser": smaller (still a
    true lower bound); "invalid": larger than anything Fano licenses -- which happens
    exactly when I(T;M,A) = H(T) - H(T|M,A) > ε ln(K/(K-1)).
    """
    k = check_classes(k)
    eps = check_error(eps)
    hm, hc = to_nats(float(h_marginal), unit), to_nats(float(h_cond), unit)
    if hc > hm + _ENTROPY_TOL:
        raise BoundsError(
            f"H(T|M,A) = {h_cond} exceeds H(T) = {h_marginal}: conditioning cannot raise entropy; "
            "check which value is which"
        )
    correct = hc - fano_entropy_upper(eps, k, "K-1")
    log_k = hc - fano_entropy_upper(eps, k, "K")
    paper = hm - fano_entropy_upper(eps, k, "K")
    gap = max(hm - hc, 0.0)
    tol = 1e-12
    if paper > correct + tol:
        verdict = "invalid"
        reason = (
            f"H(T) exceeds H(T|M,A) by I(T;M,A) = {from_nats(gap, unit):.4g} {unit}, more than the "
            f"ε ln(K/(K-1)) = {from_nats(eps * math.log(k / (k - 1)), unit):.4g} {unit} the log K "
            "costs; the bound claims more than Fano allows (holds only if T is independent of M,A)"
        )
    elif paper < correct - tol:
        verdict = "looser"
        reason = "log K in place of log(K-1) costs ε ln(K/(K-1))" + (
            "; H(T) > H(T|M,A) here too, so the form is unsound in general" if gap > tol else ""
        )
    else:
        verdict = "valid"
        reason = "equals the correct bound (ε = 0 and H(T) = H(T|M,A))"
    return FanoAudit(
        from_nats(correct, unit),
        from_nats(log_k, unit),
        from_nats(paper, unit),
        from_nats(gap, unit),
        verdict,
        reason,
        unit,
    )


def marginal_entropy_counterexample(n_per_modality: int = 50, seed: int = 0) -> dict:
    """The docs/design.md §4 counterexample, built from explicit samples.

    M uniform on two modalities, A constant, T = M, Z ~ N(0, 1) independent of all;
    the predictor T̂ = M is always right (ε = 0). So H(T|M,A) = 0 and the true
    I(Z;T|M,A) = 0, yet eq. 8 gives H(T) = ln 2 > 0.
    """
    from matprobe.data.entropy import conditional_entropy, entropy

    rng = np.random.default_rng(seed)
    m = np.repeat([0, 1], n_per_modality)
    a = np.zeros_like(m)
    t = m.copy()
    z = rng.standard_normal(m.size)
    t_hat = m
    eps = float(np.mean(t_hat != t))
    h_t = entropy(t)
    h_t_ma = conditional_entropy(t, [m, a])
    return {
        "modality": m,
        "anatomy": a,
        "task": t,
        "z": z,
        "error": eps,
        "H(T)": h_t,
        "H(T|M,A)": h_t_ma,
        "true I(Z;T|M,A)": 0.0,
        "audit": audit_paper_fano(h_t, h_t_ma, eps, 2),
    }


# ------------------------------------------------------------------ side-by-side table


def _typed_entropy(value: float, k: int, unit: str, flag: str) -> float:
    h = float(value)
    log_k = from_nats(math.log(k), unit)
    if not (0 <= h <= log_k + _TYPED_TOL):
        in_bits = unit == NATS and 0 <= h <= math.log2(k) + _TYPED_TOL  # log2 K bits, typed as nats
        raise BoundsError(f"{flag} {h} {unit} is outside [0, ln K = {log_k:.6g} {unit}]"
                          + ("; in bits? pass --unit bits" if in_bits else ""))
    return min(h, log_k)  # a typed, rounded ln K (1.3863 for ln 4) means ln K


def fano_table(
    error: float,
    classes: int,
    entropy: float | None = None,
    marginal_entropy: float | None = None,
    mi: float | None = None,
    unit: str = NATS,
) -> list[dict]:
    """Rows (quantity, value, unit, note) for `matprobe bounds fano`.

    `entropy` is H(Y|C) (H(T|M,A) for the paper's setting), `marginal_entropy` H(Y)
    (H(T)); with no `marginal_entropy` the paper's form is shown with `entropy` in
    its place (the reading under which it is only looser). `mi` adds the smallest
    error that MI value allows.
    """
    check_unit(unit)
    eps, k = check_error(error), check_classes(classes)

    lg = "log2" if unit == "bits" else "ln"  # the formulas' logarithm is the unit's (a study read "ln K = 2 bits")

    def row(quantity, value, note, row_unit=unit):
        return {"quantity": quantity.replace("ln", lg), "value": value, "unit": row_unit,
                "note": note.replace("ε ln(", f"ε {lg}(")}

    rows = [
        row("h(ε)", binary_entropy(eps, unit), "binary entropy"),
        row("H(Y|X) <= h(ε) + ε ln(K-1)", fano_entropy_upper(eps, k, "K-1", unit), "Fano, sharp (Cover & Thomas 2.10.1)"),
        row("H(Y|X) <= h(ε) + ε ln K", fano_entropy_upper(eps, k, "K", unit), "paper eq. 7 (valid, looser)"),
        row("ln K", from_nats(math.log(k), unit), "largest possible H(Y|X)"),
    ]
    if entropy is None:
        if mi is not None:
            raise BoundsError("--mi needs --entropy (H(Y|C)) to give the smallest error it allows")
        return rows
    h = _typed_entropy(entropy, k, unit, "--entropy")
    hm = h if marginal_entropy is None else _typed_entropy(marginal_entropy, k, unit, "--marginal-entropy")
    audit = audit_paper_fano(hm, h, eps, k, unit)
    floor = fano_mi_lower(h, eps, k, "K-1", unit)
    rows += [
        row("I(Z;Y|C) >= H(Y|C) - h(ε) - ε ln(K-1)", floor,
            "correct conditional bound" + (" (negative here: it says only I >= 0)" if floor < 0 else "")),
        row("I(Z;Y|C) >= H(Y|C) - h(ε) - ε ln K", fano_mi_lower(h, eps, k, "K", unit), "valid, looser"),
        row("paper eq. 8: H(T) - h(ε) - ε ln K", audit.paper, f"{audit.verdict}: {audit.reason}"
            + ("" if marginal_entropy is not None else " (H(T) taken = H(Y|C), no marginal entropy given)")),
        row("smallest ε given I = 0", fano_min_error(h, k, "K-1", unit), "φ⁻¹(H(Y|C)): error with a useless Z",
            "probability"),
    ]
    if mi is not None:
        if not 0 <= float(mi) <= h + _TYPED_TOL:  # 0 <= I(Z;Y|C) <= H(Y|C): no other value is an MI here
            raise BoundsError(f"--mi {mi} {unit} is outside [0, H(Y|C) = {h:.6g} {unit}], where I(Z;Y|C) always "
                              "lies; give the estimate in the unit of --entropy")
        mi = min(float(mi), h)
        rows.append(row(f"smallest ε given I = {float(mi):.4g}", fano_min_error_given_mi(mi, h, k, "K-1", unit),
                        "φ⁻¹(H(Y|C) - I)", "probability"))
    return rows


@dataclass
class FanoBounds:
    """`matprobe bounds fano` as a typed result: inputs and the rows of `fano_table`."""

    error: float
    classes: int
    rows: list
    unit: str = NATS
    entropy: float | None = None
    marginal_entropy: float | None = None
    mi: float | None = None

    def frame(self):
        import pandas as pd

        return pd.DataFrame(self.rows, columns=["quantity", "value", "unit", "note"])

    def to_table(self):
        from matprobe.present.views import fano_table

        return fano_table(self)

    def to_dict(self) -> dict:
        return asdict(self)


def fano_report(error: float, classes: int, entropy: float | None = None,
                marginal_entropy: float | None = None, mi: float | None = None,
                unit: str = NATS) -> FanoBounds:
    """`fano_table` with its inputs, as a FanoBounds (`.frame()`, `.to_table()`)."""
    rows = fano_table(error, classes, entropy, marginal_entropy, mi, unit)
    return FanoBounds(float(error), int(classes), rows, unit, entropy, marginal_entropy, mi)
