"""Issue 24: MI results read back as typed objects (`ChainResult.from_json` / `.read`): the document
written from the read-back result equals the one it was read from, key for key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from matprobe.errors import EstimationError
from matprobe.mi import chain_terms
from matprobe.mi.chain import ChainResult, results_json

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def result():
    rng = np.random.default_rng(0)
    n = 300
    m, a, t = rng.integers(0, 2, n), rng.integers(0, 3, n), rng.integers(0, 2, n)
    z = np.c_[m + 0.4 * rng.standard_normal(n), a + 0.4 * rng.standard_normal(n), rng.standard_normal((n, 2))]
    return chain_terms(z.astype(np.float32), {"M": m, "A": a, "T": t}, estimators=["probe", "ksg"], seeds=1,
                       folds=3, pca=None, controls=True, codelength=True, permutations=3)


def test_round_trip_is_key_for_key(result):
    meta = dict(store="s.h5", fingerprint="abc", layer="3", pool="last")
    doc = json.loads(json.dumps(results_json(result, **meta)))
    back = ChainResult.from_json(doc)
    again = json.loads(json.dumps(results_json(back, **meta)))
    assert again == doc
    e = back.terms["probe"][1][1]
    assert e.strata and {"control", "codelength", "permutation"} <= set(e.diagnostics)
    assert back.meta == {"store": "s.h5", "layer": "3", "pool": "last", "fingerprint": "abc"}
    # the typed frame equals the original's on every chain-term column the file carries (the file keeps
    # the direct term of the first estimator in full, the others' as value and interval only)
    cols = ["term", "estimator", "estimate", "ci_low", "ci_high", "h_upper", "chain_difference", "selectivity",
            "compression", "p_perm"]
    chain = [name for name, _ in result.terms["probe"]]

    def rows(frame):
        return frame[frame["term"].isin(chain)][cols].reset_index(drop=True)

    assert rows(back.frame()).equals(rows(result.frame()))


def test_read_refuses_what_is_not_an_mi_document(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"kind": "matprobe.check"}))
    with pytest.raises(EstimationError, match="not an MI results document"):
        ChainResult.read(bad)
    with pytest.raises(EstimationError, match="cannot read MI results"):
        ChainResult.read(tmp_path / "missing.json")
