"""`matprobe check` on a small synthetic store with known answers and hand-written MI results."""

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from matprobe.errors import StoreError
from matprobe.store import EmbeddingStore
from matprobe.theory import check

STRATA = [
    ("CT", "Lung", "cls"),
    ("CT", "Lung", "seg"),
    ("MRI", "Brain", "cls"),
    ("MRI", "Brain", "seg"),
]
N_PER = [40, 60, 50, 30]
ERRORS = [4, 30, 0, 12]  # errors per stratum


def _phi(eps, k):
    """h(ε) + ε ln(K-1), written out here independently of fano.py."""
    h = 0.0 if eps in (0.0, 1.0) else -eps * math.log(eps) - (1 - eps) * math.log(1 - eps)
    return h + eps * math.log(k - 1)


@pytest.fixture()
def synthetic(tmp_path):
    rng = np.random.default_rng(7)
    ids, labels, ans_idx, pred, split = [], {"modality": [], "anatomy": [], "task": []}, [], [], []
    for (m, a, t), n, e in zip(STRATA, N_PER, ERRORS):
        ai = rng.integers(0, 4, n)
        if (m, t) == ("MRI", "seg"):
            ai = rng.integers(0, 2, n)  # only two answer positions used: K_s = 2
        wrong = np.zeros(n, bool)
        wrong[rng.choice(n, e, replace=False)] = True
        p = np.where(wrong, (ai + 1) % 4, ai)
        for i in range(n):
            ids.append(f"{m}-{a}-{t}-{i}")
            labels["modality"].append(m)
            labels["anatomy"].append(a)
            labels["task"].append(t)
            split.append("test" if i % 2 == 0 else "train")
        ans_idx += ai.tolist()
        pred += p.tolist()
    labels["answer_index"] = ans_idx
    labels["split"] = split
    n = len(ids)
    path = tmp_path / "s.h5"
    store = EmbeddingStore.from_arrays(
        path,
        ids,
        labels,
        {("0", "mean"): rng.standard_normal((n, 2)).astype(np.float32)},
        answers={"pred": np.asarray(pred), "probs": np.full((n, 4), 0.25, np.float32)},
    )
    fp = store.content_id
    store.close()
    return path, fp, np.asarray(ans_idx), np.asarray(pred), np.asarray(split)


def _mi_json(tmp_path, fp, strata=(), terms=()):
    p = tmp_path / "mi.json"
    p.write_text(
        json.dumps(
            {
                "kind": "matprobe.mi",
                "format_version": 1,
                "store": "s.h5",
                "store_fingerprint": fp,
                "layer": "0",
                "pool": "mean",
                "unit": "nats",
                "factors": ["modality", "anatomy", "task"],
                "terms": list(terms),
                "strata": list(strata),
            }
        )
    )
    return p


def _stratum(m, a, t, est, lo, hi):
    return {
        "target": "answer",
        "given": {"modality": m, "anatomy": a, "task": t},
        "estimator": "probe",
        "n": 10,
        "estimate": est,
        "ci_low": lo,
        "ci_high": hi,
        "h_upper": 1.0,
    }


def test_per_stratum_numbers_against_independent_computation(synthetic, tmp_path):
    path, _fp, ai, _pred, _ = synthetic
    res = check.run_check(path, None, delta=0.05, level=0.95).to_dict()
    assert res["target"] == "answer"
    by = {tuple(r["given"].values()): r for r in res["strata"]}
    start = 0
    for s, n, e in zip(STRATA, N_PER, ERRORS):
        r = by[s]
        ys = ai[start : start + n]
        start += n
        assert (r["n"], r["errors"]) == (n, e)
        assert r["error_ci"] == pytest.approx(proportion_confint(e, n, 0.05, method="beta"), abs=1e-12)
        counts = np.bincount(ys)
        h = stats.entropy(counts[counts > 0])
        assert r["h_y"] == pytest.approx(h, abs=1e-12)
        k = len(np.unique(ys))
        assert r["classes"] == k
        eps = e / n
        expected = h - _phi(min(eps, 1 - 1 / k), k)
        assert r["fano_mi_lower"] == pytest.approx(expected, abs=1e-12)
        eps_up = stats.beta.ppf(0.95, e + 1, n - e) if e < n else 1.0
        assert r["error_upper"] == pytest.approx(eps_up, rel=1e-9)
        assert r["fano_mi_lower_finite"] == pytest.approx(h - _phi(min(eps_up, 1 - 1 / k), k), abs=1e-9)
        assert r["mi"] is None


def test_aggregate_and_paper_audit(synthetic):
    path, _fp, ai, _pred, _ = synthetic
    res = check.run_check(path).to_dict()
    agg = res["aggregate"]
    n = len(ai)
    eps = sum(ERRORS) / n
    assert agg["error"] == pytest.approx(eps)
    k = 4
    counts = np.bincount(ai)
    h_y = stats.entropy(counts)
    assert agg["h_y"] == pytest.approx(h_y)
    h_eps = -eps * math.log(eps) - (1 - eps) * math.log(1 - eps)
    assert agg["paper_eq8"] == pytest.approx(h_y - h_eps - eps * math.log(k))
    # H(Y|M,A) by hand: weighted entropies of the two (M, A) groups
    groups = [ai[:100], ai[100:]]
    h_ma = sum(len(g) / n * stats.entropy(np.bincount(g)) for g in groups)
    assert agg["h_y_given_ma"] == pytest.approx(h_ma)
    assert agg["fano_mi_lower_given_ma"] == pytest.approx(h_ma - _phi(eps, k))
    # stratum average is at least the pooled (M,A,T) bound (concavity of φ)
    assert agg["fano_mi_lower_stratified"] >= agg["fano_mi_lower_given_mat"] - 1e-12
    audit = agg["paper_eq8_audit"]
    gap = h_y - h_ma
    assert audit["entropy_gap"] == pytest.approx(gap)
    assert audit["verdict"] == ("invalid" if gap > eps * math.log(4 / 3) else "looser")


def test_mi_strata_comparisons(synthetic, tmp_path):
    path, fp, _ai, *_ = synthetic
    res0 = check.run_check(path).to_dict()
    b = {tuple(r["given"].values()): r for r in res0["strata"]}
    ok = b[STRATA[0]]["fano_mi_lower"] + 0.05  # above the bound
    low = b[STRATA[2]]["fano_mi_lower"] - 0.5  # well below; CI too
    mi = _mi_json(
        tmp_path,
        fp,
        strata=[
            _stratum(*STRATA[0], ok, ok - 0.1, ok + 0.1),
            _stratum(*STRATA[2], low, low - 0.1, low + 0.1),
            # slightly below the point bound, CI reaches the finite-sample bound
            _stratum(
                *STRATA[1],
                b[STRATA[1]]["fano_mi_lower"] - 0.01,
                0.0,
                b[STRATA[1]]["fano_mi_lower"] + 0.2,
            ),
        ],
    )
    res = check.run_check(path, mi).to_dict()
    r = {tuple(x["given"].values()): x for x in res["strata"]}
    assert r[STRATA[0]]["mi_meets_bound"] == "yes"
    assert r[STRATA[0]]["error_respects_floor"] == "yes"
    assert r[STRATA[2]]["mi_meets_bound"] == "NO"
    assert r[STRATA[1]]["mi_meets_bound"] == "within CI"
    assert r[STRATA[3]]["mi"] is None
    # the error floor inverts Fano: φ(floor) = H - Î (floor inside [0, 1 - 1/K])
    s = r[STRATA[0]]
    assert _phi(s["error_floor"], s["classes"]) == pytest.approx(s["h_y"] - ok, abs=1e-9)
    # Î equal to H(Y|s) - φ(ε̂) puts the floor exactly at the observed error
    assert s["error_floor"] <= s["error"]


def test_units_of_mi_results_are_converted(synthetic, tmp_path):
    path, fp, *_ = synthetic
    mi = _mi_json(tmp_path, fp, strata=[_stratum(*STRATA[0], 1.0, 0.9, 1.1)])
    data = json.loads(mi.read_text())
    data["unit"] = "bits"
    mi.write_text(json.dumps(data))
    r = next(x for x in check.run_check(path, mi).to_dict()["strata"] if tuple(x["given"].values()) == STRATA[0])
    assert r["mi"]["estimate"] == pytest.approx(math.log(2))


def test_conditional_term_only_is_compared_in_aggregate(synthetic, tmp_path):
    path, fp, *_ = synthetic
    term = {
        "term": "I(Z;answer|modality,anatomy)",
        "target": "answer",
        "given": ["modality", "anatomy"],
        "estimator": "probe",
        "estimate": 0.0,
        "ci_low": 0.0,
        "ci_high": 0.01,
        "ci_level": 0.9,
    }
    res = check.run_check(path, _mi_json(tmp_path, fp, terms=[term])).to_dict()
    assert all(r["mi"] is None and r["mi_source"].startswith("term only") for r in res["strata"])
    (t,) = res["aggregate"]["terms"]
    assert t["fano_mi_lower"] == pytest.approx(res["aggregate"]["fano_mi_lower_given_ma"])
    agg = res["aggregate"]
    n, e = agg["n"], agg["errors"]
    eps_up = stats.beta.ppf(0.95, e + 1, n - e)
    assert t["fano_mi_lower_finite"] == pytest.approx(agg["h_y_given_ma"] - _phi(eps_up, 4), abs=1e-9)
    assert 0.01 < t["fano_mi_lower_finite"] < t["fano_mi_lower"]  # this store: a clear "NO"
    assert t["mi_meets_bound"] == "NO"


def test_pac_uses_heldout_split(synthetic):
    path, _fp, ai, pred, split = synthetic
    res = check.run_check(path, emp_risk=0.1, n_train=4500, params=7e9, bits=16).to_dict()
    held = split == "test"
    m = int(held.sum())
    k = int((pred[held] != ai[held]).sum())
    assert (res["pac"]["m"], res["pac"]["errors"]) == (m, k)
    assert res["pac"]["test_set_bound"] == pytest.approx(stats.beta.ppf(0.95, k + 1, m - k), rel=1e-9)
    bounds = {b["name"]: b for b in res["pac"]["bounds"]}
    assert bounds["paper eq. 3 (CrossMed Thm 1)"]["vacuous"]
    assert not any(b["contradicted"] for b in bounds.values())


def test_pac_without_a_split_is_held_out_on_the_target_s_rows(synthetic, tmp_path):
    """A store with no split = test rows (an own study's manifest without a split): given the held-out
    target, the PAC error is on its rows and says so; without it, on every row and says that."""
    path, _fp, ai, pred, _split = synthetic
    with EmbeddingStore.open(path) as st:
        samples = st.samples()
    labels = {f: samples[f].astype(str).tolist() for f in ("modality", "anatomy", "task")}
    labels["answer_index"] = ai.tolist()
    ids = [f"row-{i}" for i in range(len(ai))]
    store = EmbeddingStore.from_arrays(tmp_path / "nosplit.h5", ids, labels,
                                       {("0", "mean"): np.random.default_rng(0).standard_normal((len(ai), 2))
                                        .astype(np.float32)},
                                       answers={"pred": pred, "probs": np.full((len(pred), 4), 0.25, np.float32)})
    store.close()
    target = STRATA[1]
    res = check.run_check(tmp_path / "nosplit.h5", heldout_target=target).to_dict()["pac"]
    rows = np.array([tuple(g) == target for g in zip(*(labels[f] for f in ("modality", "anatomy", "task")))])
    m, k = int(rows.sum()), int((pred[rows] != ai[rows]).sum())
    assert (res["m"], res["errors"]) == (m, k) == (N_PER[1], ERRORS[1])
    assert res["heldout"].startswith(f"rows of the held-out target {' / '.join(target)}")
    assert res["test_set_bound"] == pytest.approx(stats.beta.ppf(0.95, k + 1, m - k), rel=1e-9)
    every = check.run_check(tmp_path / "nosplit.h5").to_dict()["pac"]
    assert every["m"] == len(pred) and every["heldout"].startswith("all answered rows")
    # a store with split = test rows keeps them, target or not, and names them the target's where they are
    assert check.run_check(path, heldout_target=target).to_dict()["pac"]["heldout"] == "rows with split = test"
    target_split = [("test" if tuple(g) == target else "train")
                    for g in zip(*(labels[f] for f in ("modality", "anatomy", "task")))]
    EmbeddingStore.from_arrays(tmp_path / "run-split.h5", ids, {**labels, "split": target_split},
                               {("0", "mean"): np.zeros((len(ai), 2), np.float32)},
                               answers={"pred": pred, "probs": np.full((len(pred), 4), 0.25, np.float32)}).close()
    pac = check.run_check(tmp_path / "run-split.h5", heldout_target=target).to_dict()["pac"]
    assert (pac["m"], pac["heldout"]) == (N_PER[1], f"rows of the held-out target {' / '.join(target)} (split = "
                                                      "test in the store)")


def test_stratum_mi_near_its_cap_or_of_a_one_sided_term_is_one_sided(synthetic, tmp_path):
    """A stratum's Î at >= 90% of H(Y|s), or of a term whose intervals are one-sided (its entries'
    note), only states its lower end: `bound` "lower", shown as "≥ x"; others stay two-sided."""
    path, fp, *_ = synthetic
    h = {tuple(r["given"].values()): r["h_y"] for r in check.run_check(path).to_dict()["strata"]}
    lower_note = dict(_stratum(*STRATA[2], 0.2, 0.1, 1.2), note="lower bound: ci_high is H(Y|C=c)'s upper "
                      "confidence limit")
    mi = _mi_json(tmp_path, fp, strata=[
        _stratum(*STRATA[0], h[STRATA[0]], h[STRATA[0]], 1.4),  # at its cap
        _stratum(*STRATA[1], 0.89 * h[STRATA[1]], 0.5 * h[STRATA[1]], h[STRATA[1]]),  # just under 90%
        lower_note])
    res = check.run_check(path, mi)
    r = {tuple(x.given.values()): x.mi for x in res.strata}
    assert r[STRATA[0]].bound == "lower" and "near-saturated" in r[STRATA[0]].note
    assert r[STRATA[1]].bound is None and "bound" not in r[STRATA[1]].to_dict()
    assert r[STRATA[2]].bound == "lower" and "one-sided" in r[STRATA[2]].note
    # the file round-trips it, and the CLI table shows the one-sided cell as such
    again = check.CheckResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert {tuple(s.given.values()): s.mi.bound for s in again.strata if s.mi} == {
        STRATA[0]: "lower", STRATA[1]: None, STRATA[2]: "lower"}
    from matprobe.present import OneSided

    cells = {(row["modality"], row["anatomy"], row["task"]): row["mi"] for row in res.to_table().rows}
    assert isinstance(cells[STRATA[0]], OneSided) and not isinstance(cells[STRATA[1]], OneSided)


def test_fingerprint_mismatch_is_one_clear_error(synthetic, tmp_path):
    path, _fp, *_ = synthetic
    mi = _mi_json(tmp_path, "0" * 64)
    with pytest.raises(StoreError, match="other store content"):
        check.run_check(path, mi)


def test_cli_check_writes_json_and_refuses_other_store(synthetic, tmp_path):
    from matprobe.cli import app

    path, fp, *_ = synthetic
    runner = CliRunner()
    out = tmp_path / "check.json"
    mi = _mi_json(tmp_path, fp, strata=[_stratum(*STRATA[0], 0.5, 0.4, 0.6)])
    r = runner.invoke(app, ["check", str(path), "--mi", str(mi), "--out", str(out)])
    assert r.exit_code == 0, r.output
    written = json.loads(out.read_text())
    assert written["kind"] == "matprobe.check" and len(written["strata"]) == 4
    assert written["strata"] == json.loads(json.dumps(check.run_check(path, mi).to_dict()["strata"]))
    bad = _mi_json(tmp_path, "f" * 64)
    r = runner.invoke(app, ["check", str(path), "--mi", str(bad), "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 2
    assert "other store content" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


def test_store_without_answers_and_bad_mi_file(tmp_path):
    ids = [f"s{i}" for i in range(6)]
    labels = {"modality": ["CT"] * 6, "anatomy": ["Lung"] * 6, "task": ["cls"] * 6, "answer_index": [0] * 6}
    path = tmp_path / "noans.h5"
    EmbeddingStore.from_arrays(path, ids, labels, {("0", "mean"): np.zeros((6, 2), np.float32)}).close()
    with pytest.raises(StoreError, match="no rows with a stored answer"):
        check.run_check(path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        check.load_mi_results(bad)
    bad.write_text(json.dumps({"kind": "something.else"}))
    with pytest.raises(StoreError, match="not a matprobe MI results file"):
        check.load_mi_results(bad)


def test_check_tables_show_fano_bounds_below_0_as_0_and_name_the_conditioning(synthetic):
    # study4 (issue 26): the per-stratum column printed "-0.171 (-0.171)" as needed information, and the
    # aggregate rows said H(Y|M,A) and I(Z;Y|M,A) >= beside strata and an Î conditioned on (M, A, T)
    from matprobe.present.views import check_table, check_tables

    path, *_ = synthetic
    res = check.run_check(path)
    s0, s1 = res.strata[0], res.strata[1]
    s0.fano_mi_lower, s0.fano_mi_lower_finite = -0.171, -0.171
    s1.fano_mi_lower, s1.fano_mi_lower_finite = 0.0125, -0.024
    a = res.aggregate
    a.h_y_given_ma, a.h_y_given_mat = 1.3168, 1.1932
    a.fano_mi_lower_given_ma, a.fano_mi_lower_given_mat, a.fano_mi_lower_stratified = -0.0673, -0.1909, 0.0
    a.terms = [check.TermCheck(term="I(Z;answer|modality,anatomy,task)", mi=check.MIValue.from_dict(
        {"estimate": 0.0, "ci_low": 0.0, "ci_high": 1.386, "ci_level": 0.95, "estimator": "probe"}),
        fano_mi_lower=0.0, fano_mi_lower_finite=-0.193, compared_with="stratum average", mi_meets_bound="yes")]
    table = check_table(res)
    cells = table.cells()
    col = table.headers().index("I >= (finite)")
    assert cells[0][col] == "0.000 (0.000)" and cells[1][col] == "0.013 (0.000)"
    assert ("I >= (finite): Fano's bound H(Y|s) - φ(ε) below 0 demands nothing (MI >= 0 anyway) and is shown as "
            "0.000") in table.footnotes
    rows = {r[0]: r[1:] for r in check_tables(res)[1].cells()}
    assert rows["H(Y|M,A,T)"] == ["1.1932", "nats", "the strata's conditioning"]
    assert rows["I(Z;Y|M,A,T) >="] == ["-0.1909", "nats", "H(Y|M,A,T) - φ(ε); vacuous (≤ 0: MI ≥ 0 anyway)"]
    assert rows["stratum average bound (M,A,T)"] == [
        "0.0000", "nats", "Σ p_s max(0, H(Y|s) - φ(ε_s)) over the (M, A, T) strata; vacuous (≤ 0: MI ≥ 0 anyway)"]
    assert rows["H(Y|M,A)"] == ["1.3168", "nats", "eq. 8's conditioning: given M, A only (T not given)"]
    assert rows["I(Z;Y|M,A) >="] == [
        "-0.0673", "nats", "H(Y|M,A) - φ(ε); bounds I(Z;Y|M,A), not I(Z;Y|M,A,T); vacuous (≤ 0: MI ≥ 0 anyway)"]
    assert rows["I(Z;answer|modality,anatomy,task): Î"] == [
        "0.0000", "nats", "vs bound 0.0000 (stratum average bound (M,A,T)): yes"]
    assert "stratum average bound" not in rows  # no unconditioned label left


def test_the_terms_i_says_why_it_sits_below_its_strata(synthetic, tmp_path):
    """A study's check showed strata at 0.120 and 0.229 and the term's Î at 0.0000, unexplained: each
    stratum's Î is clipped at 0 on its own, the term's is the mean of every raw per-row term clipped once."""
    from matprobe.present.views import check_tables

    path, fp, *_ = synthetic
    vals = [0.12, 0.0, 0.229, 0.0]
    mi = _mi_json(tmp_path, fp, strata=[_stratum(*s, v, 0.0, 1.0) for s, v in zip(STRATA, vals)])
    res = check.run_check(path, mi)
    a = res.aggregate
    a.terms = [check.TermCheck(term="I(Z;answer|modality,anatomy,task)", mi=check.MIValue.from_dict(
        {"estimate": 0.0, "ci_low": 0.0, "ci_high": 1.386, "ci_level": 0.95, "estimator": "probe"}),
        fano_mi_lower=0.0, fano_mi_lower_finite=-0.193, compared_with="stratum average", mi_meets_bound="yes")]
    weights = {s.given["modality"] + s.given["anatomy"] + s.given["task"]: s.n for s in res.strata}
    mean = sum(weights["".join(s)] * v for s, v in zip(STRATA, vals)) / sum(weights.values())
    rows = {r[0]: r[1:] for r in check_tables(res)[1].cells()}
    note = rows["I(Z;answer|modality,anatomy,task): Î"][2]
    assert note == (f"vs bound 0.0000 (stratum average bound (M,A,T)): yes; the strata's Î above, each clipped at 0 "
                    f"on its own, average {mean:.4f}: the term's Î is the mean of the raw per-row terms of every "
                    "stratum (those below 0 too), clipped once")
    a.terms[0].mi.estimate = mean  # no gap: nothing to explain
    assert check_tables(res)[1].cells()[-1][3] == "vs bound 0.0000 (stratum average bound (M,A,T)): yes"


def test_a_stratum_of_a_term_marked_lower_is_one_sided_whatever_its_note(synthetic, tmp_path):
    """A near-saturated term's entries carry bound "lower" without "lower bound" in their note."""
    path, fp, *_ = synthetic
    entry = dict(_stratum(*STRATA[1], 0.2, 0.1, 1.2), bound="lower", note="near-saturated")
    res = check.run_check(path, _mi_json(tmp_path, fp, strata=[entry]))
    s = {tuple(x.given.values()): x.mi for x in res.strata}[STRATA[1]]
    assert s.bound == "lower" and s.note == "the term is one-sided"
