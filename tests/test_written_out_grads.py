"""The ladder's non-linear forms fit by Adam on a gradient written out by hand (`_grads`), not by
autograd: the same operations autograd's backward runs, so the same bits, at about two thirds of
a step's cost (issue 22, forty-fourth session). Held here to autograd's own backward of `_fit`'s
loss on many random draws of every shape a fit meets (masked cells of other strata, one row, one
cell, weight decay), and to the estimator's bits with autograd switched back on."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matprobe.mi import make_estimator, probe
from matprobe.mi.groundtruth import mixture_task

torch.set_num_threads(1)

FORMS = (probe._MLPLadder, probe._LatentCellLadder, probe._EllipticalLadder)


def _autograd(form, p, x1, off_rows, target, weight_decay):
    """The gradient of the loss `_fit` minimises, by autograd (`_grads_by_autograd`, the path a
    form without `_grads` takes): mean cross-entropy plus the form's weight decay."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in p.items()}
    return form._grads_by_autograd(p, x1, off_rows, target, weight_decay)


def _params(form, gen, d1, cells, hidden, rank, copies):
    """Parameters of every kind a fit passes through (none left at its zero start)."""
    def rnd(*shape, s=1.0):
        return s * torch.randn(*shape, generator=gen)
    if form is probe._MLPLadder:
        return {"w": rnd(d1, cells), "r": rnd(d1, rank, s=0.3), "u": rnd(d1, hidden, s=d1 ** -0.5),
                "v": rnd(hidden, cells, s=0.2)}
    if form is probe._LatentCellLadder:
        return {"w": rnd(d1, cells, copies)}
    return {"w": rnd(d1, cells), "p": rnd(d1 - 1, rank, s=(d1 - 1) ** -0.5), "m": rnd(rank, cells),
            "a": rnd(cells), "log_b": rnd(cells) + float(np.log(rank))}


@pytest.mark.parametrize("form", FORMS, ids=lambda f: f.form_name)
def test_each_forms_gradient_has_autograds_bits(form):
    assert form.grads_written_for == form.form_name  # the capability each form declares
    rng = np.random.default_rng(0)
    for draw in range(60):
        gen = torch.Generator().manual_seed(draw)
        rows = int(rng.choice([1, 2, 37, 300, 512]))
        d1, cells = int(rng.integers(3, 70)), int(rng.integers(1, 13))
        p = _params(form, gen, d1, cells, int(rng.choice([8, 64])), int(rng.choice([1, 2, 8])),
                    int(rng.choice([2, 4])))
        x1 = torch.cat([torch.randn(rows, d1 - 1, generator=gen), torch.ones(rows, 1)], 1)
        off_rows = torch.randn(rows, cells, generator=gen)
        target = torch.randint(cells, (rows,), generator=gen)
        if draw % 3 == 0 and cells > 1:  # the first cell is another stratum's: masked, never a target
            off_rows[:, 0] = probe.NEG
            target = torch.randint(1, cells, (rows,), generator=gen)
        decay = float(rng.choice([0.0, 1e-4, 3e-3]))
        want = _autograd(form, p, x1, off_rows, target, decay)
        got = form._grads(p, x1, off_rows, target, decay)
        assert set(got) == set(want)
        for k in want:
            assert torch.equal(got[k], want[k]), (form.form_name, draw, k, float((got[k] - want[k]).abs().max()))


def test_a_wrong_gradient_is_caught():
    """The comparison can fail: autograd's gradient of a loss without the weight decay differs."""
    gen = torch.Generator().manual_seed(0)
    p = _params(probe._MLPLadder, gen, 9, 4, 8, 2, 2)
    x1, off_rows = torch.randn(50, 9, generator=gen), torch.zeros(50, 4)
    target = torch.randint(4, (50,), generator=gen)
    got = probe._MLPLadder._grads(p, x1, off_rows, target, 1e-3)
    assert not torch.equal(got["u"], _autograd(probe._MLPLadder, p, x1, off_rows, target, 0.0)["u"])
    assert torch.equal(got["w"], _autograd(probe._MLPLadder, p, x1, off_rows, target, 0.0)["w"])


def test_the_estimate_has_autograds_bits(monkeypatch):
    """Four-cluster classes, where every fold chooses the non-linear level and fits all three
    forms: the estimate, its interval and every diagnostic but the clock are the same bits."""
    task = mixture_task(k_classes=3, components=4, d=12, signal_dim=6, separation=1.0, spread=2.0, seed=3)
    z, f = task.sample(2000, seed=1)

    def run():
        e = make_estimator("probe", seeds=1, folds=3).estimate(z, f["Y"])
        diag = {k: v for k, v in e.diagnostics.items() if k != "seconds"}
        return e, json.dumps(diag, sort_keys=True, default=str)

    written, written_diag = run()
    folds = written.diagnostics["folds"]
    assert all(d["level"] == "nonlinear" and "val_loss_elliptical" in d and "val_loss_latent" in d for d in folds)
    for form in FORMS:
        monkeypatch.setattr(form, "grads_written_for", None)
    by_autograd, autograd_diag = run()
    assert (written.value, written.ci_low, written.ci_high) == (by_autograd.value, by_autograd.ci_low, by_autograd.ci_high)
    assert written_diag == autograd_diag
