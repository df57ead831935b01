"""Issue 25: the online (prequential) codelength of a term's labels (matprobe.mi.codelength): the
schedule and sums against a hand computation, the probe's code on a task with and without
information, and what `mi --codelength` writes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from matprobe.mi import chain_terms
from matprobe.mi.codelength import block_ends, online_codelength

torch.set_num_threads(1)


def laplace(x_tr, y_tr, c_tr, sub_tr, x_ev, c_ev, y_ev, k=3):
    """A critic written out: add-one frequencies of the training labels within the row's stratum."""
    out = np.empty(len(y_ev))
    for i, (c, y) in enumerate(zip(c_ev, y_ev)):
        seen = y_tr[c_tr == c]
        out[i] = math.log((np.sum(seen == y) + 1) / (len(seen) + k))
    return out


def test_codelength_equals_a_hand_computation():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.choice(3, n, p=[0.6, 0.3, 0.1])
    c = rng.integers(0, 2, n)
    x = rng.standard_normal((n, 2))
    got = online_codelength(laplace, x, y, c, seed=4, min_first=20)
    # by hand: the same row order, blocks at 0.1% ... 100% of 400 rows with at least 20 in the first
    order = np.random.default_rng([4, 31_337]).permutation(n)
    ys, cs = y[order], c[order]
    ends = [20, 25, 50, 100, 200, 400]  # 0.0625 * 400 = 25, 0.125 * 400 = 50, ...
    assert got.block_ends == ends
    classes = {s: len(set(y[c == s])) for s in (0, 1)}
    total = sum(math.log2(classes[s]) for s in cs[:20])
    for start, end in zip(ends[:-1], ends[1:]):
        for i in range(start, end):
            seen = ys[:start][cs[:start] == cs[i]]
            total -= math.log2((np.sum(seen == ys[i]) + 1) / (len(seen) + 3))
    assert got.online_bits == pytest.approx(total, abs=1e-6)
    assert got.uniform_bits == pytest.approx(sum(math.log2(classes[s]) for s in c), abs=1e-9)
    assert got.compression == pytest.approx(got.uniform_bits / got.online_bits)
    assert sum(got.block_bits) == pytest.approx(got.online_bits)


def test_block_schedule():
    assert block_ends(20_000) == [20, 40, 80, 160, 320, 640, 1250, 2500, 5000, 10000, 20000]
    assert block_ends(100, min_first=30) == [30, 50, 100]
    with pytest.raises(Exception, match="at least 40 rows"):
        online_codelength(laplace, np.zeros((30, 1)), np.zeros(30, dtype=int), min_first=20)


def test_probe_code_compresses_information_and_not_noise():
    rng = np.random.default_rng(1)
    n = 1500
    m = rng.integers(0, 2, n)
    a = rng.integers(0, 3, n)
    z = np.concatenate([m[:, None] * 2.0 + rng.standard_normal((n, 2)), rng.standard_normal((n, 4))], 1)
    res = chain_terms(z.astype(np.float32), {"M": m, "A": a}, seeds=1, folds=3, pca=None, direct=False,
                      difference=False, codelength=True)
    frame = res.frame().set_index("term")
    assert frame.loc["I(Z;M)", "compression"] > 1.5  # M is in Z: its labels cost far less than 1 bit each
    assert frame.loc["I(Z;M)", "uniform_bits"] == pytest.approx(n)  # two classes: 1 bit per row
    # A is noise given M: the online code cannot beat the uniform one by more than chance
    assert 0.9 < frame.loc["I(Z;A|M)", "compression"] < 1.02
    assert frame.loc["I(Z;A|M)", "uniform_bits"] == pytest.approx(n * math.log2(3))


def test_mi_cli_writes_the_codelength(tmp_path):
    from conftest import mi_cli_on_synthetic_store

    res, doc, _ = mi_cli_on_synthetic_store(tmp_path, "--codelength", seed=2, n=300)
    codes = [t["codelength"] for t in doc["terms"]]
    assert codes[0]["uniform_bits"] == pytest.approx(300) and codes[0]["compression"] > 1.2
    assert codes[0]["block_ends"][-1] == 300 and len(codes[0]["block_bits"]) == len(codes[0]["block_ends"])
    assert "compression" in res.output and "online code" in res.output
