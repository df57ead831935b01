"""`probe._Adam` is torch.optim.Adam's update, written out so that no torch optimiser (and its
torch._dynamo import, 1.5-2.5 s per fresh process) is constructed: same bits, with and without
weight decay (the L2 form that torch.optim.Adam adds to the gradient, not AdamW's)."""

from __future__ import annotations

import pytest
import torch

from matprobe.mi.probe import _Adam

torch.set_num_threads(1)


def _run(weight_decay):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(7, 5, generator=gen), torch.randn(5, generator=gen)]
    data = torch.randn(64, 7, generator=gen)
    ours = [p.clone().requires_grad_(True) for p in start]
    ref = [p.clone().requires_grad_(True) for p in start]
    opt_ours = _Adam(ours, lr=3e-3, weight_decay=weight_decay)
    opt_ref = torch.optim.Adam(ref, lr=3e-3, weight_decay=weight_decay, foreach=False)
    for _ in range(25):
        for params, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            loss = torch.logsumexp(data @ params[0] + params[1], dim=1).mean()
            loss.backward()
            opt.step()
    return ours, ref


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_same_bits_as_torch_adam(weight_decay):
    ours, ref = _run(weight_decay)
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)


def test_weight_decay_changes_the_path():
    assert not torch.equal(_run(0.0)[0][0], _run(1e-2)[0][0])


def test_a_parameter_without_gradient_is_left_alone_and_the_others_match_torch():
    # the step updates the parameters that have a gradient, in one call per operation over them
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(6, 3, generator=gen), torch.randn(3, generator=gen), torch.randn(4, generator=gen)]
    data = torch.randn(32, 6, generator=gen)
    ours = [p.clone().requires_grad_(True) for p in start]
    ref = [p.clone().requires_grad_(True) for p in start]
    opts = (_Adam(ours, lr=1e-2), torch.optim.Adam(ref, lr=1e-2, foreach=False))
    for _ in range(10):
        for params, opt in zip((ours, ref), opts):
            opt.zero_grad()
            torch.logsumexp(data @ params[0] + params[1], dim=1).mean().backward()  # params[2] unused
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    assert torch.equal(ours[2].detach(), start[2])
