"""The warm critics' label logits (neural.label_logits): the gather used when each stratum has one
cell per label gives the bits of the logsumexp over cells it replaces."""

from __future__ import annotations

import numpy as np
import torch

from matprobe.mi.neural import cell_of_label, label_logits
from matprobe.mi.probe import NEG, cell_layout


def _layout(c, y, sub):
    """off [strata, cells] and lab [cells, labels] as the probe's fold layout builds them."""
    _, _, cell_y, _, off = cell_layout(c, y, sub, c, y)
    k = int(y.max()) + 1
    lab = torch.where(torch.as_tensor(cell_y)[:, None] == torch.arange(k)[None, :], 0.0, NEG)
    return torch.as_tensor(off, dtype=torch.float32), lab


def test_the_gather_equals_the_logsumexp_over_cells_bit_for_bit():
    rng = np.random.default_rng(3)
    # three strata; label 3 never occurs in stratum 0 (a label without a cell there)
    c = np.repeat([0, 1, 2], 200)
    y = rng.integers(0, 4, 600)
    y[(c == 0) & (y == 3)] = 0
    off, lab = _layout(c, y, np.zeros(600, dtype=np.int64))
    cell_of = cell_of_label(off, lab)
    assert cell_of is not None and int(cell_of[0, 3]) == -1
    si = torch.as_tensor(c)
    for scale in (0.1, 3.0, 30.0):
        logits = torch.as_tensor(rng.normal(0, scale, (600, off.shape[1])), dtype=torch.float32) + off[si]
        fast = label_logits(logits, si, lab, cell_of)
        full = label_logits(logits, si, lab, None)
        present = cell_of[si] >= 0
        assert torch.equal(fast[present], full[present])
        assert bool((fast[~present] <= NEG / 2).all()) and bool((full[~present] <= NEG / 2).all())
        # and what the critic uses them for: e^g and logsumexp over labels, the same bits
        assert torch.equal(torch.logsumexp(fast, 1), torch.logsumexp(full, 1))


def test_sub_classes_keep_the_logsumexp():
    c = np.zeros(40, dtype=np.int64)
    y = np.repeat([0, 1], 20)
    sub = np.tile([0, 1], 20)  # two cells per label
    off, lab = _layout(c, y, sub)
    assert cell_of_label(off, lab) is None
