"""PAC generalisation bounds on a 0-1 risk, side by side, each flagged vacuous when >= 1.

All complexity terms (ln|H|, KL(Q||P), ln 1/P(h)) are in nats. Sources:

- CrossMed Theorem 1, eq. 3 (``paper_bound``): R <= R̂ + sqrt(2 (ln|H| + ln 2/δ) / n).
  Hoeffding plus a union bound over a finite class gives the two-sided gap
  sqrt((ln|H| + ln 2/δ) / (2n)) (Shalev-Shwartz & Ben-David 2014, Cor. 4.6), so the
  paper's form is exactly twice as loose (docs/design.md §4).
- Realizable finite class (R̂ = 0): R <= (ln|H| + ln 1/δ) / n (ibid., Cor. 2.3).
- Test-set bound (Langford 2005, "Tutorial on practical prediction theory", Thm 3.3):
  the largest p with P(Binomial(m, p) <= k) >= δ; equals beta.ppf(1-δ, k+1, m-k).
- Occam-kl (Langford 2005, Thm 4.6): R <= kl⁻¹(R̂, (ln 1/P(h) + ln 1/δ) / n).
- PAC-Bayes-kl (Seeger 2002; Maurer 2004): kl(R̂_Q || R_Q) <= (KL(Q||P) + ln(2√n/δ)) / n.
- McAllester (1999/2003), in the Pinsker-relaxed form of the above:
  R_Q <= R̂_Q + sqrt((KL + ln(2√n/δ)) / (2n)).
- Catoni (2007, Thm 1.2.6): for a fixed C > 0,
  R_Q <= (1 - exp(-C R̂_Q - (KL + ln 1/δ)/n)) / (1 - e^{-C}); a grid of C values is
  paid for with a union bound (δ / len(grid) each).

ln|H| for a network stored in `bits` bits per parameter: |H| <= 2^(params*bits), so
ln|H| = params * bits * ln 2 -- vacuous for any real model, and the bounds say so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats
from scipy.special import xlogy

from matprobe.checks import check_probability, check_rate
from matprobe.errors import BoundsError
from matprobe.proportions import clopper_pearson_interval

# Grid of Catoni's C used when none is given; the union bound costs ln(len) / n.
DEFAULT_CATONI_GRID = tuple(float(c) for c in np.geomspace(0.01, 100.0, 41))


@dataclass(frozen=True)
class Bound:
    """One upper bound on the true risk R (a probability of error)."""

    name: str
    value: float  # the bound on R; may exceed 1 (then it says nothing)
    formula: str
    delta: float
    vacuous: bool
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _bound(name: str, value: float, formula: str, delta: float, note: str = "") -> Bound:
    value = float(value)
    return Bound(name, value, formula, delta, bool(value >= 1.0), note)


# ------------------------------------------------------------------ argument checks


def check_risk(r, name: str = "empirical risk") -> float:
    return check_rate(r, name, what="a risk", error=BoundsError)  # the rate check Fano's ε uses too


def check_n(n, name: str = "n") -> int:
    if isinstance(n, float) and not n.is_integer():
        raise BoundsError(f"{name} = {n} must be a whole number of samples")
    n = int(n)
    if n <= 0:
        raise BoundsError(f"{name} = {n} must be a positive number of samples")
    return n


def check_delta(delta, name: str = "delta") -> float:
    return check_probability(delta, name, example=0.05, error=BoundsError)


def _check_nonneg(x, name: str) -> float:
    x = float(x)
    if not (math.isfinite(x) and x >= 0.0):
        raise BoundsError(f"{name} = {x} must be a finite number >= 0")
    return x


# ------------------------------------------------------------------ complexity


def log_hypothesis_count(params: float, bits: float) -> float:
    """ln|H| in nats for `params` parameters of `bits` bits each: params * bits * ln 2."""
    params = _check_nonneg(params, "params")
    bits = _check_nonneg(bits, "bits")
    if params == 0 or bits == 0:
        raise BoundsError("params and bits must both be > 0 to count a hypothesis class")
    return params * bits * math.log(2.0)


# ------------------------------------------------------------------ finite class


def paper_bound(emp_risk: float, n: int, ln_h: float, delta: float) -> float:
    """CrossMed eq. 3: R̂ + sqrt(2 (ln|H| + ln(2/δ)) / n)."""
    emp_risk, n, delta = check_risk(emp_risk), check_n(n), check_delta(delta)
    ln_h = _check_nonneg(ln_h, "ln|H|")
    return emp_risk + math.sqrt(2.0 * (ln_h + math.log(2.0 / delta)) / n)


def hoeffding_gap(n: int, ln_h: float, delta: float, two_sided: bool = True) -> float:
    """Uniform deviation |R - R̂| (two-sided) or R - R̂ (one-sided) over a finite class.

    Hoeffding + union bound: sqrt((ln|H| + ln(2/δ)) / (2n)); one-sided uses ln(1/δ).

    Examples
    --------
    One hypothesis (ln|H| = 0), n = 1000, δ = 0.05: sqrt(ln 40 / 2000).

    >>> from matprobe.theory.pac import hoeffding_gap
    >>> round(hoeffding_gap(1000, 0.0, 0.05), 6)
    0.042947
    """
    n, delta = check_n(n), check_delta(delta)
    ln_h = _check_nonneg(ln_h, "ln|H|")
    log_conf = math.log((2.0 if two_sided else 1.0) / delta)
    return math.sqrt((ln_h + log_conf) / (2.0 * n))


def hoeffding_bound(
    emp_risk: float, n: int, ln_h: float, delta: float, two_sided: bool = True
) -> float:
    """R <= R̂ + Hoeffding finite-class gap."""
    return check_risk(emp_risk) + hoeffding_gap(n, ln_h, delta, two_sided)


def realizable_bound(n: int, ln_h: float, delta: float) -> float:
    """Consistent learner (R̂ = 0) in a finite class: R <= (ln|H| + ln(1/δ)) / n.

    Examples
    --------
    2^20 hypotheses, n = 1000, δ = 0.05: (20 ln 2 + ln 20) / 1000.

    >>> import math
    >>> from matprobe.theory.pac import realizable_bound
    >>> round(realizable_bound(1000, 20 * math.log(2), 0.05), 6)
    0.016859
    """
    n, delta = check_n(n), check_delta(delta)
    ln_h = _check_nonneg(ln_h, "ln|H|")
    return (ln_h + math.log(1.0 / delta)) / n


# ------------------------------------------------------------------ binomial / test set


def test_set_bound(errors: int, m: int, delta: float) -> float:
    """Binomial tail inversion (Langford 2005): max{p : P(Bin(m, p) <= errors) >= δ}.

    Solved by root finding on the binomial cdf (decreasing in p); equals the one-sided
    Clopper-Pearson upper limit beta.ppf(1 - δ, errors + 1, m - errors).

    Examples
    --------
    No errors on m = 100 test items: the largest p with (1 - p)^100 >= 0.05, 1 - 0.05^(1/100).

    >>> from matprobe.theory.pac import test_set_bound
    >>> round(test_set_bound(0, 100, 0.05), 6)
    0.029513
    """
    m, delta = check_n(m, "test n"), check_delta(delta)
    k = int(errors)
    if not 0 <= k <= m:
        raise BoundsError(f"test errors = {errors} must lie in [0, test n = {m}]")
    if k == m:
        return 1.0
    def tail_minus_delta(p: float) -> float:
        return stats.binom.cdf(k, m, p) - delta

    return float(optimize.brentq(tail_minus_delta, k / m, 1.0, xtol=1e-15, rtol=4 * np.finfo(float).eps))


test_set_bound.__test__ = False  # not a pytest test despite the name


def clopper_pearson(errors: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided exact (Clopper-Pearson) interval for a binomial proportion.

    Examples
    --------
    0 of 10 at 95 %: the upper limit solves (1 - p)^10 = 0.025, so p = 1 - 0.025^(1/10).

    >>> from matprobe.theory.pac import clopper_pearson
    >>> lo, hi = clopper_pearson(0, 10)
    >>> lo, round(hi, 6)
    (0.0, 0.308497)
    """
    n = check_n(n)
    k = int(errors)
    if not 0 <= k <= n:
        raise BoundsError(f"errors = {errors} must lie in [0, n = {n}]")
    return clopper_pearson_interval(k, n, level)


# ------------------------------------------------------------------ kl


def kl_bernoulli(q, p):
    """kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p)) in nats (vectorised; inf at p in {0,1})."""
    q = np.asarray(q, dtype=float)
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = xlogy(q, q) - xlogy(q, p) + xlogy(1 - q, 1 - q) - xlogy(1 - q, 1 - p)
    return out if out.ndim else float(out)


def kl_inverse_upper(q, c, iters: int = 60):
    """sup{p in [q, 1] : kl(q || p) <= c} by bisection; returns the bracket's upper end.

    Vectorised over q and c. Taking the upper end keeps the answer on the safe side
    of the true root (docs/design.md §4). 60 halvings shrink the bracket below 1e-18.
    """
    q = np.asarray(q, dtype=float)
    c = np.asarray(c, dtype=float)
    if np.any(~np.isfinite(q)) or np.any((q < 0) | (q > 1)):
        raise BoundsError("kl⁻¹: empirical risk q must lie in [0, 1]")
    if np.any(~(c >= 0)):
        raise BoundsError("kl⁻¹: the complexity term c must be >= 0")
    q, c = np.broadcast_arrays(q, c)
    lo = q.copy()
    hi = np.ones_like(q)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        ok = kl_bernoulli(q, mid) <= c
        lo = np.where(ok, mid, lo)
        hi = np.where(ok, hi, mid)
    return hi if hi.ndim else float(hi)


def occam_kl_bound(emp_risk: float, n: int, ln_inv_prior: float, delta: float) -> float:
    """Occam's razor with kl (Langford 2005): kl⁻¹(R̂, (ln 1/P(h) + ln 1/δ) / n)."""
    emp_risk, n, delta = check_risk(emp_risk), check_n(n), check_delta(delta)
    ln_inv_prior = _check_nonneg(ln_inv_prior, "ln 1/P(h)")
    return kl_inverse_upper(emp_risk, (ln_inv_prior + math.log(1.0 / delta)) / n)


# ------------------------------------------------------------------ PAC-Bayes


def _pac_bayes_complexity(n: int, kl_qp: float, delta: float) -> float:
    return (kl_qp + math.log(2.0 * math.sqrt(n) / delta)) / n


def pac_bayes_kl_bound(emp_risk: float, n: int, kl_qp: float, delta: float) -> float:
    """Seeger (2002) / Maurer (2004): R_Q <= kl⁻¹(R̂_Q, (KL(Q||P) + ln(2√n/δ)) / n)."""
    emp_risk, n, delta = check_risk(emp_risk), check_n(n), check_delta(delta)
    kl_qp = _check_nonneg(kl_qp, "KL(Q||P)")
    return kl_inverse_upper(emp_risk, _pac_bayes_complexity(n, kl_qp, delta))


def mcallester_bound(emp_risk: float, n: int, kl_qp: float, delta: float) -> float:
    """McAllester form: R_Q <= R̂_Q + sqrt((KL(Q||P) + ln(2√n/δ)) / (2n)) (Pinsker on the kl bound)."""
    emp_risk, n, delta = check_risk(emp_risk), check_n(n), check_delta(delta)
    kl_qp = _check_nonneg(kl_qp, "KL(Q||P)")
    return emp_risk + math.sqrt(_pac_bayes_complexity(n, kl_qp, delta) / 2.0)


def catoni_bound(
    emp_risk: float, n: int, kl_qp: float, delta: float, grid=DEFAULT_CATONI_GRID
) -> tuple[float, float]:
    """Catoni (2007, Thm 1.2.6), minimised over a grid of C with δ split across the grid.

    Returns (bound, C at the minimum).
    """
    emp_risk, n, delta = check_risk(emp_risk), check_n(n), check_delta(delta)
    kl_qp = _check_nonneg(kl_qp, "KL(Q||P)")
    grid = np.asarray(grid, dtype=float)
    if grid.size == 0 or np.any(~(grid > 0)):
        raise BoundsError("Catoni grid must be a non-empty list of C > 0")
    delta_each = delta / grid.size
    values = -np.expm1(-grid * emp_risk - (kl_qp + math.log(1.0 / delta_each)) / n) / -np.expm1(
        -grid
    )
    i = int(np.argmin(values))
    return float(values[i]), float(grid[i])


# ------------------------------------------------------------------ all side by side


def pac_bounds(
    emp_risk: float,
    n: int,
    delta: float = 0.05,
    *,
    params: float | None = None,
    bits: float = 16.0,
    ln_h: float | None = None,
    kl_qp: float | None = None,
    test_errors: int | None = None,
    test_n: int | None = None,
) -> list[Bound]:
    """Every bound that the inputs allow, in one list (the paper's form first).

    Complexity: `ln_h` directly, or `params` x `bits` (ln|H| = params·bits·ln 2). The
    PAC-Bayes bounds use `kl_qp` when given, else the point-mass posterior on a uniform
    prior over H, for which KL(Q||P) = ln|H|.
    """
    emp_risk, n, delta = check_risk(emp_risk), check_n(n), check_delta(delta)
    if ln_h is None and params is not None:
        ln_h = log_hypothesis_count(params, bits)
    out: list[Bound] = []
    if ln_h is not None:
        out += _finite_class_bounds(emp_risk, n, _check_nonneg(ln_h, "ln|H|"), delta)
    kl_used = kl_qp if kl_qp is not None else ln_h
    if kl_used is not None:
        out += _pac_bayes_bounds(emp_risk, n, _check_nonneg(kl_used, "KL(Q||P)"), delta, kl_qp is not None)
    if test_errors is not None or test_n is not None:
        if test_errors is None or test_n is None:
            raise BoundsError("the test-set bound needs both --test-errors and --test-n")
        out.append(_bound("test-set (binomial tail inversion)", test_set_bound(test_errors, test_n, delta),
                          "max{p : P(Bin(m,p) <= k) >= δ}", delta,
                          f"k = {int(test_errors)} errors of m = {int(test_n)} held-out"))
    if not out:
        raise BoundsError(
            "no bound can be computed: give --params (and --bits), ln|H|, KL(Q||P) or --test-errors/--test-n"
        )
    return out


def _finite_class_bounds(emp_risk: float, n: int, ln_h: float, delta: float) -> list[Bound]:
    """The bounds over a finite class of |H| hypotheses (the paper's form first)."""
    c = f"ln|H| = {ln_h:.4g} nats, n = {n}"
    out = [
        _bound("paper eq. 3 (CrossMed Thm 1)", paper_bound(emp_risk, n, ln_h, delta),
               "R̂ + sqrt(2(ln|H| + ln 2/δ)/n)", delta, c + "; 2x the two-sided gap"),
        _bound("Hoeffding, two-sided", hoeffding_bound(emp_risk, n, ln_h, delta, True),
               "R̂ + sqrt((ln|H| + ln 2/δ)/(2n))", delta, c),
        _bound("Hoeffding, one-sided", hoeffding_bound(emp_risk, n, ln_h, delta, False),
               "R̂ + sqrt((ln|H| + ln 1/δ)/(2n))", delta, c),
    ]
    if emp_risk == 0.0:
        out.append(_bound("realizable (R̂ = 0)", realizable_bound(n, ln_h, delta), "(ln|H| + ln 1/δ)/n", delta, c))
    out.append(_bound("Occam-kl (uniform prior)", occam_kl_bound(emp_risk, n, ln_h, delta),
                      "kl⁻¹(R̂, (ln|H| + ln 1/δ)/n)", delta, c))
    return out


def _pac_bayes_bounds(emp_risk: float, n: int, kl: float, delta: float, kl_given: bool) -> list[Bound]:
    """The PAC-Bayes bounds for KL(Q||P) = kl (a given KL, or the point mass on a uniform prior)."""
    c = f"KL(Q||P) = {kl:.4g} nats" + ("" if kl_given else " (point mass, uniform prior)")
    value, best_c = catoni_bound(emp_risk, n, kl, delta)
    return [
        _bound("PAC-Bayes-kl (Seeger/Maurer)", pac_bayes_kl_bound(emp_risk, n, kl, delta),
               "kl⁻¹(R̂, (KL + ln(2√n/δ))/n)", delta, c),
        _bound("McAllester", mcallester_bound(emp_risk, n, kl, delta), "R̂ + sqrt((KL + ln(2√n/δ))/(2n))", delta, c),
        _bound("Catoni (grid of 41 C, union bound)", value, "(1 - exp(-C R̂ - (KL + ln(|grid|/δ))/n)) / (1 - e^-C)",
               delta, c + f"; best C = {best_c:.3g}"),
    ]


@dataclass
class PacBounds:
    """`matprobe bounds pac` as a typed result: inputs (complexities in nats) and the bounds."""

    emp_risk: float
    n: int
    delta: float
    bounds: list
    ln_h: float | None = None
    kl_qp: float | None = None
    test_errors: int | None = None
    test_n: int | None = None

    def frame(self):
        import pandas as pd

        return pd.DataFrame([b.to_dict() for b in self.bounds])

    def to_table(self, unit: str = "nats"):
        from matprobe.present.views import pac_table

        return pac_table(self, unit)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bounds"] = [b.to_dict() for b in self.bounds]
        return d


def pac_report(emp_risk: float, n: int, delta: float = 0.05, *, params: float | None = None,
               bits_per_param: float = 16.0, ln_h: float | None = None, kl_qp: float | None = None,
               test_errors: int | None = None, test_n: int | None = None) -> PacBounds:
    """`pac_bounds` with its inputs, as a PacBounds (`.frame()`, `.to_table(unit)`)."""
    bounds = pac_bounds(emp_risk, n, delta, params=params, bits=bits_per_param, ln_h=ln_h, kl_qp=kl_qp,
                        test_errors=test_errors, test_n=test_n)
    if ln_h is None and params is not None:
        ln_h = log_hypothesis_count(params, bits_per_param)
    return PacBounds(float(emp_risk), int(n), float(delta), bounds, ln_h,
                     kl_qp if kl_qp is not None else None, test_errors, test_n)
