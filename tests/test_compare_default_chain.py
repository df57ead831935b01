"""A README-only study read I(Z;M) = 0.855 nats from `compare --term M` where `mi` and `sweep` on
the same store, layer, pool, seeds and folds read 1.321: compare's default chain was the term alone
(M), `mi`'s is M, A, T, and the chain sets the rows and the folds' strata. compare's default is now
`mi`'s chain wherever the term is one of its terms, so the same term at the same settings is the
same number; on a store without `mi`'s chain it keeps the term's own, and says so."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import synthetic_mat_store

KW = dict(seeds=1, folds=3, pca=None)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cmpdefault")
    signal = [("modality", "CT", 1.0), ("anatomy", "Lung", 0.8), ("task", "Cls", 0.6)]
    a = synthetic_mat_store(root / "a.h5", seed=21, n=240, d=5, signal=signal, accuracy=0.7)
    b = synthetic_mat_store(root / "b.h5", seed=21, n=240, d=5, signal=signal[:1], accuracy=0.7)
    return a, b


def test_compare_reads_mis_number_for_a_term_of_mis_default_chain(stores):
    import matprobe as mp

    a, b = stores
    chain = mp.mi(a, **KW)  # the default chain, M, A, T
    for term, index in (("M", 0), ("A|M", 1), ("T|M,A", 2)):
        comp = mp.compare(a, b, term=term, n_boot=100, **KW)
        e = chain.estimates("probe")[index].estimate
        assert (comp.side_a["estimate"], comp.side_a["ci_low"], comp.side_a["ci_high"]) == \
            (e.value, e.ci_low, e.ci_high), term
        assert "not `mi`'s default" not in comp.note
    # the chain given names the same numbers
    given = mp.compare(a, b, term="M", factors="M,A,T", n_boot=100, **KW)
    assert given.side_a["estimate"] == chain.estimates("probe")[0].estimate.value
    # and within the term's own chain (the old default) the number is another one: the chain matters
    alone = mp.compare(a, b, term="M", factors="M", n_boot=100, **KW)
    assert alone.side_a["estimate"] != given.side_a["estimate"]


def test_on_a_store_without_mis_chain_the_terms_own_chain_is_used_and_said(tmp_path):
    from matprobe.mi.compare import compare_stores
    from matprobe.store import EmbeddingStore

    rng = np.random.default_rng(3)
    n = 200
    m, t = rng.integers(0, 2, n), rng.integers(0, 2, n)
    z = rng.normal(size=(n, 3)).astype("float32")
    z[:, 0] += m
    ids = [f"q{i}" for i in range(n)]
    for name in ("a", "b"):
        EmbeddingStore.from_arrays(tmp_path / f"{name}.h5", ids, {"M": [f"m{v}" for v in m], "T": [f"t{v}" for v in t]},
                                   {("8", "last"): z}, overwrite=True).close()
    comp = compare_stores(tmp_path / "a.h5", tmp_path / "b.h5", "M", layer="8", pool="last", n_boot=100, **KW)
    assert "estimated within the chain M, not `mi`'s default M,A,T, whose factor A store A does not hold" in comp.note
