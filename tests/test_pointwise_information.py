"""Issue 25: pointwise V-information. Every held-out row gets the critic's log q(y|z,c) - log p(y|c)
(with the learning-curve step for the probe); the rows' mean is the term's estimate before clipping,
and within a stratum it is that stratum's entry: which strata, and which items, carry the information."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from matprobe.mi import chain_terms

torch.set_num_threads(1)


@pytest.mark.parametrize("estimator", ["probe", "mine"])
def test_pointwise_values_average_to_the_term_and_to_each_stratum(estimator):
    rng = np.random.default_rng(3)
    n = 900
    m = rng.integers(0, 3, n)
    a = rng.integers(0, 2, n)
    # A is in Z only for m == 0: that stratum carries the information
    z = np.c_[m + 0.3 * rng.standard_normal(n), np.where(m == 0, a, 0) + 0.3 * rng.standard_normal(n),
              rng.standard_normal(n)].astype(np.float32)
    res = chain_terms(z, {"M": m, "A": a}, estimators=[estimator], seeds=2, folds=3, pca=None, direct=False,
                      difference=False, pointwise=True)
    term = res.terms[estimator][1][1]  # I(Z;A|M)
    values = term.diagnostics["pointwise"]["values"]  # [seeds, n]
    assert values.shape == (2, n)
    assert values.mean() == pytest.approx(term.diagnostics["raw"][0], abs=1e-9)
    assert values.mean(axis=1) == pytest.approx(term.diagnostics["seed_values"], abs=1e-9)
    by_stratum = {int(s): values[:, m == s].mean() for s in range(3)}
    for entry, s in zip(term.strata, range(3)):
        assert entry["estimate"] == pytest.approx(max(by_stratum[s], 0.0), abs=1e-9)
    # the stratum where A is encoded carries it; the others are near 0
    assert by_stratum[0] > 0.3 and abs(by_stratum[1]) < 0.05 and abs(by_stratum[2]) < 0.05


def test_mi_cli_writes_pointwise_information_per_item(tmp_path):
    import pandas as pd

    from conftest import mi_cli_on_synthetic_store
    from matprobe.store import EmbeddingStore

    items = tmp_path / "items.csv"
    _, doc, store = mi_cli_on_synthetic_store(tmp_path, "--pointwise", items, seed=5, n=240, seeds=2)
    frame = pd.read_csv(items)
    with EmbeddingStore.open(store) as st:
        ids = [str(i) for i in st.ids]
    for t in doc["terms"]:
        rows = frame[frame["term"] == t["term"]]
        assert rows["id"].astype(str).tolist() == ids  # every item once, in the store's order
        assert max(rows["pointwise"].mean(), 0.0) == pytest.approx(t["estimate"], abs=1e-9)
