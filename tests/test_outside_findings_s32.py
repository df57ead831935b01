"""Smaller findings of an outside statistician (issue 22, thirty-first session), mended in the
thirty-second: a Python call answered with the command line's flag name, and a near-saturation
note that named H(Y|C) for an unconditional term and rounded 99.7% up to 100%."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from matprobe.data.entropy import conditional_entropy
from matprobe.errors import MatprobeError
from matprobe.mi import chain_terms, make_estimator

torch.set_num_threads(1)


def test_a_percent_level_in_python_is_answered_by_its_parameter_name():
    with pytest.raises(MatprobeError, match=r"^ci_level 95 is outside \(0, 1\).*did you mean 0\.95\?"):
        chain_terms(np.zeros((40, 2)), {"Y": np.arange(40) % 2}, ci_level=95)


@pytest.mark.parametrize("conditional", [False, True])
def test_the_near_saturation_note_names_the_cap_and_does_not_round_up(conditional):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    c = rng.integers(0, 2, 600)
    z = (2 * y - 1)[:, None] * 3.0 + rng.standard_normal((600, 2))  # nearly separable: near the cap
    est = make_estimator("probe", seeds=1, folds=3, penalties=(1e-3,), ladder=("linear",)).estimate(
        z, y, c if conditional else None)
    assert "near-saturated" in est.flags
    note = next(n for n in est.note.split("; ") if "near saturation" in n)
    share, cap_name, cap = re.search(r"estimate at ([\d.]+)% of (H\(Y(?:\|C)?\)) = ([\d.]+) nats", note).groups()
    assert cap_name == ("H(Y|C)" if conditional else "H(Y)")
    h = conditional_entropy(y, c if conditional else np.zeros_like(y))
    assert float(cap) == pytest.approx(h, abs=5e-5)
    exact = 100 * est.value / h  # the note's share is floored to a tenth of a percent
    assert float(share) <= exact < float(share) + 0.1 + 1e-9
