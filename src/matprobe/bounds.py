"""Fano and PAC bound calculators for the Python API (`mp.bounds.fano`, `mp.bounds.pac`), the
`matprobe bounds fano` and `matprobe bounds pac` commands with their option names and defaults."""

from __future__ import annotations

from typing import Optional

from matprobe.defaults import DEFAULTS
from matprobe.theory.fano import FanoBounds, fano_report
from matprobe.theory.pac import PacBounds, pac_report

__all__ = ["FanoBounds", "PacBounds", "fano", "pac"]


def fano(error: float, classes: int, entropy: Optional[float] = None, marginal_entropy: Optional[float] = None,
         mi: Optional[float] = None, unit: str = DEFAULTS.unit) -> FanoBounds:
    """Fano's bounds side by side, the paper's form (CrossMed eq. 7-8) included (`matprobe bounds fano`).

    Parameters
    ----------
    error : float
        Error rate ε as a fraction (0.168).
    classes : int
        Number of classes K (answer options).
    entropy : float, optional
        H(Y|C), e.g. H(T|M,A).
    marginal_entropy : float, optional
        H(Y) (the paper's H(T)), to audit eq. 8.
    mi : float, optional
        An MI value: the smallest error it allows.
    unit : {"nats", "bits"}, default "nats"
        Unit of the inputs and outputs.

    Returns
    -------
    FanoBounds
        ``.frame()``, ``.to_table()``.

    Examples
    --------
    >>> import math, matprobe as mp
    >>> b = mp.bounds.fano(error=0.25, classes=4, entropy=math.log(4))
    >>> f = b.frame()
    """
    return fano_report(error, classes, entropy, marginal_entropy, mi, unit)


def pac(emp_risk: float, n: int, params: Optional[float] = None, bits_per_param: float = 16.0,
        ln_h: Optional[float] = None, kl: Optional[float] = None, delta: float = DEFAULTS.delta,
        test_errors: Optional[int] = None, test_n: Optional[int] = None) -> PacBounds:
    """PAC bounds on the true risk side by side; vacuous ones (>= 1) flagged (`matprobe bounds pac`).

    Parameters
    ----------
    emp_risk : float
        Empirical (training) risk in [0, 1].
    n : int
        Training samples.
    params : float, optional
        Parameter count (ln|H| = params x bits_per_param x ln 2).
    bits_per_param : float, default 16.0
    ln_h : float, optional
        ln|H| in nats, instead of params x bits.
    kl : float, optional
        KL(Q||P) in nats, for the PAC-Bayes bounds.
    delta : float, default 0.05
        Failure probability.
    test_errors, test_n : int, optional
        Held-out errors k of m samples.

    Returns
    -------
    PacBounds
        ``.frame()``, ``.to_table(unit)``.
    """
    return pac_report(emp_risk, n, delta, params=params, bits_per_param=bits_per_param, ln_h=ln_h, kl_qp=kl,
                      test_errors=test_errors, test_n=test_n)
