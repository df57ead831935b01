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
        assert entry.estimate == pytest.approx(max(by_stratum[s], 0.0), abs=1e-9)
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


# ---------------------------------------------------------------- per-stratum summaries (report, JSON)
def test_pointwise_summary_equals_an_independent_groupby():
    import pandas as pd

    from matprobe.mi.pointwise import summarise_pointwise
    from matprobe.units import LN2

    rng = np.random.default_rng(11)
    for _draw in range(5):
        n, k = int(rng.integers(50, 400)), int(rng.integers(2, 7))
        groups = rng.integers(0, k, n)
        values = rng.standard_normal((3, n)) + rng.standard_normal(k)[groups]
        values[:, groups == 0] = 0.0  # a one-class stratum: every item exactly 0
        names = {g: {"M": f"m{g}", "A": f"a{g % 2}"} for g in range(k)}
        for unit, scale in (("nats", 1.0), ("bits", 1 / LN2)):
            s = summarise_pointwise(values, groups, names, unit=unit, items=4)
            frame = pd.DataFrame({"g": groups, "v": values.mean(axis=0) * scale})
            want = frame.groupby("g")["v"]
            assert [g.given for g in s.groups] == [names[c] for c in sorted(set(groups))]
            assert [g.n for g in s.groups] == want.size().tolist()
            np.testing.assert_allclose([g.mean for g in s.groups], want.mean().to_numpy(), rtol=1e-12)
            np.testing.assert_allclose([g.contribution for g in s.groups], (want.sum() / n).to_numpy(),
                                       rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose([g.positive for g in s.groups], want.apply(lambda v: (v > 0).mean()))
            np.testing.assert_allclose([g.median for g in s.groups], want.median().to_numpy(), rtol=1e-12)
            np.testing.assert_allclose([g.q75 for g in s.groups], want.quantile(0.75).to_numpy(), rtol=1e-12)
            assert [g.all_zero for g in s.groups] == [c == 0 for c in sorted(set(groups))]
            assert sum(g.contribution for g in s.groups) == pytest.approx(frame["v"].mean(), abs=1e-12)
            read = frame.loc[frame["g"] != 0, "v"]  # the one-class stratum's items are read by no critic
            assert [e.row for e in s.lowest] == read.nsmallest(4, keep="first").index.tolist()
            assert [e.value for e in s.highest] == pytest.approx(read.nlargest(4).tolist(), rel=1e-12)
            assert s.unit == unit and s.by == ["M", "A"]


def test_items_of_a_one_class_stratum_are_not_listed_as_read_worst():
    """Strata that read above 0 beside a one-class stratum (0 by definition): the lowest items are the
    read strata's lowest, never the zeros; with every stratum of one class nothing is listed."""
    from matprobe.mi.pointwise import summarise_pointwise

    rng = np.random.default_rng(5)
    for _draw in range(5):
        n = int(rng.integers(40, 200))
        groups = rng.integers(0, 3, n)
        values = np.abs(rng.standard_normal(n)) + 0.01  # every read item above 0
        fixed = int(rng.integers(0, 3))
        values[groups == fixed] = 0.0
        names = {g: {"M": f"m{g}"} for g in range(3)}
        s = summarise_pointwise(values, groups, names, items=3)
        read = np.flatnonzero(groups != fixed)
        assert [e.row for e in s.lowest] == read[np.argsort(values[read], kind="stable")][:3].tolist()
        assert all(e.value > 0 and e.given != {"M": f"m{fixed}"} for e in s.lowest + s.highest)
    s = summarise_pointwise(np.zeros(10), np.array([0] * 5 + [1] * 5), {0: {"M": "a"}, 1: {"M": "b"}})
    assert s.lowest == [] and s.highest == [] and all(g.all_zero for g in s.groups)


def test_chain_terms_summarise_each_term_per_stratum_without_being_asked():
    """Each chain term carries its pointwise summary by conditioning stratum (by class for I(Z;M)); the
    contributions add up to the unclipped estimate, and the stratum that holds the signal carries it."""
    rng = np.random.default_rng(4)
    for _draw in range(3):
        n = 720
        m = rng.integers(0, 3, n)
        a = rng.integers(0, 2, n)
        signal = int(rng.integers(0, 3))  # A is in Z only within one stratum of M, a different one per draw
        z = np.c_[m + 0.4 * rng.standard_normal(n), np.where(m == signal, a, 0) + 0.4 * rng.standard_normal(n),
                  rng.standard_normal((n, 3))].astype(np.float32)
        mods = np.array(["CT", "MRI", "X-ray"])
        res = chain_terms(z, {"M": mods[m], "A": a}, seeds=2, folds=3, pca=None, direct=False, difference=False)
        for _, e in res.terms["probe"]:
            s = e.diagnostics["pointwise_summary"]
            assert "pointwise" not in e.diagnostics  # per-item values only when asked for
            assert s.by == ["M"] and s.n == n  # I(Z;M) by class of M, I(Z;A|M) by stratum of M
            assert [g.given for g in s.groups] == [{"M": x} for x in mods]
            assert sum(g.contribution for g in s.groups) == pytest.approx(e.diagnostics["raw"][0], abs=1e-9)
            assert s.mean == pytest.approx(e.diagnostics["raw"][0], abs=1e-9)
        groups = res.terms["probe"][1][1].diagnostics["pointwise_summary"].groups
        contributions = [g.contribution for g in groups]
        assert int(np.argmax(contributions)) == signal
        assert all(abs(c) < 0.05 for i, c in enumerate(contributions) if i != signal)


def test_results_file_lists_the_extreme_items_by_store_id(tmp_path):
    """`matprobe mi --out FILE.json` records each term's summary; its listed items are the store ids with
    the lowest and highest values of the per-item file `--pointwise` writes, and it reads back typed."""
    import pandas as pd

    from conftest import mi_cli_on_synthetic_store
    from matprobe.mi.chain import ChainResult
    from matprobe.mi.pointwise import PointwiseSummary

    items = tmp_path / "items.csv"
    _, doc, store = mi_cli_on_synthetic_store(tmp_path, "--pointwise", items, seed=8, n=300, seeds=2)
    frame = pd.read_csv(items, dtype={"id": str})
    for t in doc["terms"]:
        s = t["pointwise_summary"]
        rows = frame[frame["term"] == t["term"]].reset_index(drop=True)
        assert s["mean"] == pytest.approx(rows["pointwise"].mean(), abs=1e-9)
        k = len(s["lowest"])
        assert k == 5
        assert [e["id"] for e in s["lowest"]] == rows.loc[rows["pointwise"].nsmallest(k).index, "id"].tolist()
        assert [e["value"] for e in s["highest"]] == pytest.approx(rows["pointwise"].nlargest(k).tolist(), abs=1e-9)
    back = ChainResult.from_json(doc)
    summary = back.terms["probe"][1][1].diagnostics["pointwise_summary"]
    assert isinstance(summary, PointwiseSummary) and summary.to_dict() == doc["terms"][1]["pointwise_summary"]
