"""The probe's L-BFGS-B driver (matprobe.mi.lbfgs) against scipy's public `minimize`: the same
iterates to the bit, on problems of the probe's shape and on ones it did not choose."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize, rosen, rosen_der

from matprobe.mi import lbfgs
from matprobe.mi.lbfgs import minimize_lbfgsb

needs_direct = pytest.mark.skipif(lbfgs._direct_setulb() is None,
                                  reason="this scipy's L-BFGS-B routine is not the interface the driver knows")


def _scipy(fun, x0, **opts):
    return minimize(fun, x0, jac=True, method="L-BFGS-B", options=opts).x


def _softmax_problem(seed: int, n: int, p: int, k: int, lam: float):
    """Penalised multinomial logistic regression in float32 products, as the probe's critics."""
    rng = np.random.default_rng(seed)
    x = rng.standard_t(3, size=(n, p)).astype(np.float32)
    y = rng.integers(0, k, n)
    onehot = np.eye(k, dtype=np.float32)[y]

    def fun(theta):
        w = theta.reshape(p, k)
        logits = x @ w.astype(np.float32)
        top = logits.max(axis=1, keepdims=True)
        e = np.exp(logits - top)
        z = e.sum(axis=1, keepdims=True)
        loss = float((top[:, 0] + np.log(z[:, 0]) - logits[np.arange(n), y]).sum(dtype=np.float64)) / n
        loss += lam * float((w * w).sum())
        grad = (x.T @ (e / z - onehot)).astype(np.float64) / n + 2 * lam * w
        return loss, grad.ravel()

    return fun, rng.normal(scale=0.1, size=p * k)


@needs_direct
@pytest.mark.parametrize("seed", range(8))
def test_same_bits_as_scipy_minimize_on_softmax_critics(seed):
    rng = np.random.default_rng(100 + seed)
    n, p, k = int(rng.integers(30, 400)), int(rng.integers(2, 70)), int(rng.integers(2, 9))
    lam = float(10 ** rng.uniform(-6, -1))
    fun, x0 = _softmax_problem(seed, n, p, k, lam)
    opts = {"maxiter": 300, "maxcor": 10, "gtol": 1e-6, "ftol": 1e-5}
    ours = minimize_lbfgsb(fun, x0, direct=True, **opts)
    assert np.array_equal(ours, _scipy(fun, x0, **opts))
    assert ours.dtype == np.float64 and ours.shape == x0.shape


@needs_direct
@pytest.mark.parametrize("maxiter,maxcor", [(1, 3), (7, 5), (2000, 10), (2000, 20)])
def test_same_bits_on_rosenbrock_including_stops_at_maxiter(maxiter, maxcor):
    # a problem nobody shaped for this driver: long curved valley, many line searches
    x0 = np.array([-1.2, 1.0, -0.5, 0.8, 1.7])
    fun = lambda x: (rosen(x), rosen_der(x))  # noqa: E731
    opts = {"maxiter": maxiter, "maxcor": maxcor, "gtol": 1e-10, "ftol": 1e-14}
    ours = minimize_lbfgsb(fun, x0, direct=True, **opts)
    assert np.array_equal(ours, _scipy(fun, x0, **opts))
    if maxiter >= 2000:  # it did converge: the minimiser of Rosenbrock is all ones
        np.testing.assert_allclose(ours, np.ones(5), atol=1e-6)


@needs_direct
def test_same_bits_when_the_evaluation_budget_stops_it():
    x0 = np.array([-1.2, 1.0, 0.3])
    fun = lambda x: (rosen(x), rosen_der(x))  # noqa: E731
    opts = {"maxiter": 1000, "maxfun": 9, "gtol": 1e-12, "ftol": 1e-15}
    assert np.array_equal(minimize_lbfgsb(fun, x0, direct=True, **opts), _scipy(fun, x0, **opts))


def test_the_public_path_is_scipy_minimize_and_the_input_is_left_alone():
    fun, x0 = _softmax_problem(0, 120, 6, 3, 1e-3)
    kept = x0.copy()
    opts = {"maxiter": 50, "maxcor": 10, "gtol": 1e-6, "ftol": 1e-7}
    assert np.array_equal(minimize_lbfgsb(fun, x0, direct=False, **opts), _scipy(fun, x0, **opts))
    assert np.array_equal(x0, kept)


def test_an_unknown_scipy_interface_takes_the_public_path(monkeypatch):
    import scipy

    lbfgs._direct_setulb.cache_clear()
    monkeypatch.setattr(scipy, "__version__", "1.99.0")
    try:
        assert lbfgs._direct_setulb() is None
        with pytest.raises(RuntimeError, match="another interface"):
            minimize_lbfgsb(lambda x: (float(x @ x), 2 * x), np.ones(2), maxiter=5, direct=True)
        np.testing.assert_allclose(minimize_lbfgsb(lambda x: (float(x @ x), 2 * x), np.ones(2), maxiter=50),
                                   [0.0, 0.0], atol=1e-8)
    finally:
        lbfgs._direct_setulb.cache_clear()


def test_a_routine_that_refuses_the_arguments_hands_over_to_minimize(monkeypatch):
    # a scipy whose version is in the known range but whose routine takes other arguments: the
    # first call's TypeError (before any evaluation) hands the problem to `minimize`, and later
    # calls go there directly
    def other_interface(*args):
        raise TypeError("setulb() takes 18 positional arguments")

    monkeypatch.setattr(lbfgs, "_direct_setulb", lambda: other_interface)
    monkeypatch.setattr(lbfgs, "_REFUSED_INTERFACE", set())
    fun, x0 = _softmax_problem(3, 90, 5, 3, 1e-3)
    opts = {"maxiter": 50, "maxcor": 10, "gtol": 1e-6, "ftol": 1e-7}
    assert np.array_equal(minimize_lbfgsb(fun, x0, **opts), _scipy(fun, x0, **opts))
    assert lbfgs._REFUSED_INTERFACE == {other_interface}
    assert np.array_equal(minimize_lbfgsb(fun, x0, **opts), _scipy(fun, x0, **opts))
    with pytest.raises(TypeError):  # asked for the compiled routine itself: its error is the answer
        minimize_lbfgsb(fun, x0, direct=True, **opts)
