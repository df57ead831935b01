"""L-BFGS-B on a function that returns (loss, gradient), with scipy's compiled routine driven
directly.

The probe's critics are small multinomial-logistic problems (tens to a few thousand weights)
solved hundreds of times per chain; each takes about 50 evaluations. Through
`scipy.optimize.minimize` every evaluation also paid scipy's Python wrappers (the memoising
Jacobian, the scalar-function object's copies and equality checks, a result object per
iteration): about 0.1 ms, as much as the evaluation itself on a quick-demo store
(docs/estimators.md, "Fitting cost"). Here the same compiled routine (`setulb`, scipy >= 1.15)
is called in the same loop that `scipy.optimize._lbfgsb_py._minimize_lbfgsb` runs, with no
bounds and no callback, so the iterates are the same bits (tests/test_lbfgs.py checks that
against `minimize` on the installed scipy). On a scipy whose routine has another interface the
public `minimize` is called instead.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np

# the interface of scipy's compiled routine this loop was written against (the C port of
# L-BFGS-B, scipy 1.15 to 1.17); other versions take the public path
DIRECT_SCIPY_VERSIONS = ((1, 15), (1, 17))
_REFUSED_INTERFACE: set = set()  # a routine whose call raised TypeError: not called again


@cache
def _direct_setulb():
    """scipy's compiled L-BFGS-B step where its interface is the one this module drives, else None."""
    try:
        import scipy
        from scipy.optimize import _lbfgsb
    except ImportError:  # pragma: no cover - scipy is a dependency
        return None
    try:
        version = tuple(int(v) for v in scipy.__version__.split(".")[:2])
    except ValueError:
        return None
    low, high = DIRECT_SCIPY_VERSIONS
    if not low <= version <= high or not hasattr(_lbfgsb, "setulb"):
        return None
    return _lbfgsb.setulb


def minimize_lbfgsb(fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], x0: np.ndarray, *,
                    maxiter: int, maxcor: int = 10, gtol: float = 1e-5, ftol: float = 2.2204460492503131e-09,
                    maxfun: int = 15000, maxls: int = 20, direct: bool | None = None) -> np.ndarray:
    """The minimiser L-BFGS-B (no bounds) reaches from x0: `scipy.optimize.minimize(fun_and_grad,
    x0, jac=True, method="L-BFGS-B", options=dict(maxiter=..., maxcor=..., gtol=..., ftol=...)).x`,
    the same bits.

    fun_and_grad(x) returns (loss, gradient of x's shape); it must not keep or modify x.
    direct: drive the compiled routine (True), call `minimize` (False), or the former where the
    installed scipy has the routine's known interface (None).

    >>> import numpy as np
    >>> x = minimize_lbfgsb(lambda x: (float(((x - 3.0) ** 2).sum()), 2.0 * (x - 3.0)), np.zeros(2), maxiter=50)
    >>> np.round(x, 6).tolist()
    [3.0, 3.0]
    """
    setulb = _direct_setulb() if direct in (None, True) else None
    if setulb in _REFUSED_INTERFACE and not direct:
        setulb = None
    if direct and setulb is None:
        raise RuntimeError("this scipy's L-BFGS-B routine has another interface: call with direct=None")
    if setulb is None:
        return _public(fun_and_grad, x0, maxiter, maxcor, gtol, ftol, maxfun, maxls)
    # the loop of scipy's _minimize_lbfgsb (1.15-1.17), with its arguments for no bounds
    x = np.array(np.asarray(x0).ravel(), dtype=np.float64)
    n, m = x.size, maxcor
    factr = ftol / np.finfo(float).eps
    nbd = np.zeros(n, np.int32)
    low = np.zeros(n, np.float64)
    high = np.zeros(n, np.float64)
    f = np.array(0.0, dtype=np.float64)
    g = np.zeros(n, dtype=np.float64)
    wa = np.zeros(2 * m * n + 5 * n + 11 * m * m + 8 * m, np.float64)
    iwa = np.zeros(3 * n, dtype=np.int32)
    task = np.zeros(2, dtype=np.int32)
    ln_task = np.zeros(2, dtype=np.int32)
    lsave = np.zeros(4, dtype=np.int32)
    isave = np.zeros(44, dtype=np.int32)
    dsave = np.zeros(29, dtype=np.float64)
    n_iterations = n_evaluations = 0
    while True:
        g = g.astype(np.float64)
        try:
            setulb(m, x, low, high, nbd, f, g, factr, gtol, wa, iwa, task, lsave, isave, dsave, maxls, ln_task)
        except TypeError:
            if n_evaluations or direct:
                raise
            # another interface than this version was expected to have (refused before any
            # evaluation): the public path from here on
            _REFUSED_INTERFACE.add(setulb)
            return _public(fun_and_grad, x0, maxiter, maxcor, gtol, ftol, maxfun, maxls)
        if task[0] == 3:  # evaluate at x (a copy: scipy hands the user a copy too)
            value, grad = fun_and_grad(x.copy())
            f = float(value)
            g = np.atleast_1d(grad)
            n_evaluations += 1
        elif task[0] == 1:  # a new iterate
            n_iterations += 1
            if n_iterations >= maxiter:
                task[0], task[1] = 5, 504
            elif n_evaluations > maxfun:
                task[0], task[1] = 5, 502
        else:
            break
    return x


def _public(fun_and_grad, x0, maxiter, maxcor, gtol, ftol, maxfun, maxls) -> np.ndarray:
    from scipy.optimize import minimize

    return minimize(fun_and_grad, x0, jac=True, method="L-BFGS-B",
                    options={"maxiter": maxiter, "maxcor": maxcor, "gtol": gtol, "ftol": ftol,
                             "maxfun": maxfun, "maxls": maxls}).x
