"""The statistics' fine print (issue 23): Wilcoxon variant and floor, sd = 0, cIoU at item
level, mismatched item sets, I > U, implied r where p ignores r, machine formats, the
permutation p's name, compare's interval name, ratio errors naming file and rows."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import ndtri
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import StatsError
from matprobe.mi.compare import paired_difference
from matprobe.present import significance as formatting
from matprobe.stats.significance import (
    compare_conditions,
    min_exact_p,
    paired_test,
    read_results,
    significance,
    wilcoxon_signed_rank,
)
from matprobe.stats.summary import implied_r, summary_table


def enumerate_wilcoxon(d):
    """Exact conditional signed-rank p by brute force: drop zeros, average ranks of |d|,
    then all 2^n sign vectors; p = P(|sum of signed ranks| >= observed)."""
    d = np.asarray(d, float)
    d = d[d != 0]
    n = d.size
    ranks = stats.rankdata(np.abs(d))
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # [2^n, n] of +-1
    sums = signs @ ranks
    obs = abs(np.sum(np.sign(d) * ranks))
    return float(np.mean(np.abs(sums) >= obs - 1e-9))


def item_results(diffs, cond=("A", "B")):
    """One target, one seed, items scored 0/1 with a - b = diffs (b = 0 where diff is 1)."""
    rows = []
    for i, dv in enumerate(diffs):
        rows.append((cond[0], "t", "0", f"img{i}", "correct", float(dv == 1 or i % 2)))
        rows.append((cond[1], "t", "0", f"img{i}", "correct", float(dv != 1 and i % 2)))
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "item", "metric", "value"])


# ------------------------------------------------------------------ Wilcoxon


def test_wilcoxon_14_items_4_discordant_is_exact_and_not_below_its_floor():
    # the case: 4 items right under A only, 10 tied (difference 0), --unit item
    frame = item_results([1, 1, 1, 1] + [0] * 10)
    res = compare_conditions(frame, ["A vs B"], unit="item")
    row = res.iloc[0]
    assert row.wilcoxon_p == pytest.approx(enumerate_wilcoxon([1, 1, 1, 1]))
    assert row.wilcoxon_p == pytest.approx(0.125) == min_exact_p(4)  # not scipy's 0.046
    assert row.wilcoxon_p >= row.min_exact_p
    assert row.wilcoxon_method.startswith("exact conditional")
    assert "10 zero differences dropped" in row.wilcoxon_method
    shown = formatting.detail_table(res)
    assert shown["Wilcoxon p (exact conditional)"].iloc[0] == "0.125"


@pytest.mark.parametrize("seed", range(6))
def test_wilcoxon_with_zeros_and_ties_equals_full_enumeration(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(14, 19))
    d = rng.integers(-3, 6, n).astype(float)  # many ties and some zeros
    p, method = wilcoxon_signed_rank(d)
    assert p == pytest.approx(enumerate_wilcoxon(d), rel=1e-12)
    assert p >= min_exact_p(int(np.count_nonzero(d)))
    assert method.startswith("exact")


def test_wilcoxon_without_ties_equals_scipy_exact():
    d = np.random.default_rng(7).normal(0.3, 1.0, 20)
    p, method = wilcoxon_signed_rank(d)
    assert method == "exact"
    assert p == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-10)


def test_wilcoxon_large_n_uses_corrected_normal_approximation():
    d = np.random.default_rng(8).integers(-4, 7, 700).astype(float)
    p, method = wilcoxon_signed_rank(d)
    assert method.startswith("normal approximation")
    ref = stats.wilcoxon(d, method="asymptotic", correction=True).pvalue
    assert p == pytest.approx(ref, rel=1e-9)


# ------------------------------------------------------------------ sd = 0


@pytest.mark.parametrize("a,b", [
    ([0.5, 0.75, 1.0], [0.25, 0.5, 0.75]),  # exactly 0.25 each
    ([0.3, 0.4, 0.5], [0.2, 0.3, 0.4]),  # 0.1 up to rounding (sd ~ 2e-17)
])
def test_constant_differences_have_no_t_test(a, b):
    assert np.std(np.subtract(a, b), ddof=1) < 1e-15
    res = paired_test(a, b)
    assert math.isnan(res["t"]) and math.isnan(res["p"]) and math.isnan(res["dz"])
    assert math.isnan(res["ci_low"]) and math.isnan(res["hedges_g"])
    assert res["perm_p"] == pytest.approx(0.25)  # exact tests still hold: 2^(1-3)
    frame = pd.DataFrame({"condition": ["A"] * 3 + ["B"] * 3, "target": ["x", "y", "z"] * 2,
                          "metric": "accuracy", "value": a + b})
    table = compare_conditions(frame, ["A vs B"], unit="target")
    assert "sd 0" in table.warning.iloc[0] and "t and p are n/a" in table.warning.iloc[0]
    shown = formatting.detail_table(table)
    assert shown["t"].iloc[0] == "n/a" and shown["p"].iloc[0] == "n/a"


def test_hedges_g_with_two_pairs_is_n_a_and_says_why():
    """With 2 pairs (df = 1) J(df) is undefined, so g is n/a: a README-only user study saw n/a in every
    row with no note. With 3 pairs g is dz J(2), J(2) = Gamma(1) / (Gamma(1/2) sqrt(1)) = 1 / sqrt(pi)."""
    def table(a, b):
        n = len(a)
        frame = pd.DataFrame({"condition": ["A"] * n + ["B"] * n, "target": [f"t{i}" for i in range(n)] * 2,
                              "metric": "accuracy", "value": a + b})
        return compare_conditions(frame, ["A vs B"], unit="target")

    two = table([0.5, 0.7], [0.4, 0.45])
    assert math.isnan(two.hedges_g.iloc[0]) and "Hedges' g needs 3 or more pairs" in two.warning.iloc[0]
    three = table([0.5, 0.7, 0.6], [0.4, 0.45, 0.58])
    assert "Hedges' g" not in three.warning.iloc[0]
    assert three.hedges_g.iloc[0] == pytest.approx(three.dz.iloc[0] / math.sqrt(math.pi), rel=1e-12)


# ------------------------------------------------------------------ cIoU at item level


def seg_frame(rng, n_items=12):
    rows = []
    for cond, shift in (("A", 0.2), ("B", 0.0)):
        for s in ("0", "1"):
            for i in range(n_items):
                union = float(rng.integers(50, 900))
                inter = float(np.floor(union * min(0.99, rng.beta(2 + 5 * shift, 2))))
                rows += [(cond, "t", s, f"img{i}", "intersection", inter),
                         (cond, "t", s, f"img{i}", "union", union)]
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "item", "metric", "value"])


def test_ciou_at_item_level_is_labelled_mean_iou_or_refused():
    frame = seg_frame(np.random.default_rng(1))
    res = compare_conditions(frame, ["A vs B"], unit="item")
    assert list(res.metric) == ["mean IoU"]
    wide = frame.pivot_table(index=["condition", "seed", "item"], columns="metric", values="value")
    iou = (wide.intersection / wide.union).unstack("condition")
    assert res.mean_diff.iloc[0] == pytest.approx((iou.A - iou.B).mean(), rel=1e-12)
    assert "not cIoU" in res.warning.iloc[0]
    with pytest.raises(StatsError, match="--unit item.*mean IoU.*--unit seed or target"):
        compare_conditions(frame, ["A vs B"], unit="item", metrics=["cIoU"])


def expect_error(tmp_path, frame, *fragments, **kwargs):
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(StatsError) as err:
        compare_conditions(read_results(path), ["A vs B"], source=str(path), **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg, msg
    for f in fragments:
        assert f in msg, msg
    return msg


@pytest.mark.parametrize("unit", ["seed", "target"])
def test_item_missing_in_one_condition_is_refused_above_item_level(tmp_path, unit):
    frame = seg_frame(np.random.default_rng(2)).reset_index(drop=True)
    drop = (frame.condition == "B") & (frame.seed == "1") & (frame["item"] == "img3")
    kept = frame[~drop].reset_index(drop=True)
    line = kept.index[(kept.condition == "A") & (kept.seed == "1") & (kept["item"] == "img3")
                      & (kept.metric == "intersection")][0] + 2
    expect_error(tmp_path, kept, "different items", "'img3'", f"line {line}", "but no 'B'",
                 unit=unit)
    # a plain per-item metric averaged over different items is refused the same way
    acc = item_results([1, 0, 1, 1, 0, 1])
    acc = acc.drop(index=acc.index[(acc.condition == "B") & (acc["item"] == "img2")])
    expect_error(tmp_path, acc, "different items", "'img2'", unit="seed")


def test_intersection_above_union_or_negative_is_refused(tmp_path):
    frame = seg_frame(np.random.default_rng(3)).reset_index(drop=True)
    bad = frame.copy()
    i = bad.index[(bad.condition == "A") & (bad["item"] == "img5") & (bad.seed == "0")
                  & (bad.metric == "intersection")][0]
    bad.loc[i, "value"] = 5 * bad.loc[i + 1, "value"]
    expect_error(tmp_path, bad, "exceeds 'union'", f"line {i + 2} / line {i + 3}", unit="seed")
    neg = frame.copy()
    neg.loc[i, "value"] = -3.0
    expect_error(tmp_path, neg, "negative", f"line {i + 2}", unit="target")


def test_ratio_errors_name_file_and_rows(tmp_path):
    frame = seg_frame(np.random.default_rng(4)).reset_index(drop=True)
    zero = frame.copy()
    run = (zero.condition == "B") & (zero.seed == "0")
    zero.loc[run, "value"] = 0.0
    first = zero.index[run][0] + 2
    expect_error(tmp_path, zero, "'union' sums to 0", f"line {first}", unit="seed")
    lonely = frame.drop(index=[7]).reset_index(drop=True)  # a union row without its intersection
    assert frame.loc[7, "metric"] == "union" and frame.loc[6, "metric"] == "intersection"
    expect_error(tmp_path, lonely, "'intersection' at line 8 has no matching 'union'", unit="seed")


# ------------------------------------------------------------------ significance-summary


def test_implied_r_is_na_when_p_ignores_r():
    assert math.isnan(implied_r(0.5, 0.1, 0.5, 0.1, 10, 0.3))  # was 1.000
    table = summary_table(pd.DataFrame([dict(comparison="A vs B", metric="acc", mean_a=0.5, sd_a=0.1,
                                             mean_b=0.5, sd_b=0.1, n=10, reported_p="0.3")]))
    assert math.isnan(table.implied_r.iloc[0])
    assert "implied r n/a" in table.warning.iloc[0]
    # a real difference still gives an implied r, checked against the closed form
    r = implied_r(0.6, 0.1, 0.5, 0.12, 10, 0.01)
    sd_d = math.sqrt(0.1**2 + 0.12**2 - 2 * r * 0.1 * 0.12)
    assert 2 * stats.t.sf(0.1 * math.sqrt(10) / sd_d, 9) == pytest.approx(0.01, rel=1e-9)


# ------------------------------------------------------------------ machine formats, Perm. p


def seeds_frame(n_targets=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for t in range(n_targets):
        base = rng.normal(0.6, 0.05)
        for cond, mu in (("A", 0.04), ("B", 0.0)):
            rows.append((cond, f"t{t}", "0", "accuracy", base + mu + rng.normal(0, 0.02)))
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"])


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_significance_machine_formats_carry_full_precision(tmp_path, fmt):
    path = tmp_path / "r.csv"
    seeds_frame().to_csv(path, index=False)
    ref = stats.ttest_rel(*(seeds_frame().pivot_table(index="target", columns="condition",
                                                       values="value")[c] for c in "AB"))
    out = CliRunner().invoke(app, ["significance", str(path), "--format", fmt])
    assert out.exit_code == 0, out.output
    text = out.stdout
    if fmt == "csv":
        rows = pd.read_csv(io.StringIO(text))
        rec = rows.iloc[0]
    else:
        doc = json.loads(text)
        doc = doc[0] if isinstance(doc, list) else doc
        rec = doc["rows"][0]
    assert float(rec["p"]) == pytest.approx(ref.pvalue, rel=1e-12)  # not "0.004"
    assert float(rec["t"]) == pytest.approx(ref.statistic, rel=1e-12)
    ci = ref.confidence_interval()
    assert float(rec["ci_low"]) == pytest.approx(ci.low, rel=1e-12)
    assert float(rec["ci_high"]) == pytest.approx(ci.high, rel=1e-12)
    assert rec["unit"] == "target" and float(rec["ci_level"]) == 0.95
    assert str(rec["wilcoxon_method"]) == "exact" and str(rec["perm_method"]) == "exact"


def test_perm_p_header_names_monte_carlo_and_its_draws():
    rng = np.random.default_rng(5)
    n = 45  # above the 40-pair enumeration, off any decimal grid
    a = rng.normal(0.6, 0.05, n) + math.pi * 1e-7
    frame = pd.DataFrame({"condition": ["A"] * n + ["B"] * n, "target": [f"t{i}" for i in range(n)] * 2,
                          "metric": "accuracy", "value": np.r_[a, a - 0.01 + rng.normal(0, 0.05, n)]})
    res = significance(frame, ["A vs B"], unit="target")
    assert res.results.perm_method.iloc[0] == "monte carlo (200000 resamples)"
    heads = [c.header for t in res.tables() for c in t.columns]
    assert "Perm. p (Monte Carlo, 200000 draws)" in heads
    assert not any(h.startswith("Perm. p (exact") for h in heads)
    assert any("not exact" in line for line in res.notes())


# ------------------------------------------------------------------ compare's interval


def test_compare_interval_is_named_normal_with_bootstrap_se():
    rng = np.random.default_rng(6)
    va, vb = rng.normal(0.3, 1, (1, 300)), rng.normal(0.1, 1, (1, 300))
    d = paired_difference(va, vb, n_boot=500, seed=1)
    z = ndtri(0.975)
    assert d.ci_low == pytest.approx(d.delta - z * d.se, rel=1e-12)
    assert d.ci_high == pytest.approx(d.delta + z * d.se, rel=1e-12)
    assert d.method.startswith("normal interval") and "500 resamples" in d.method


def test_significance_summary_csv_carries_numbers(tmp_path):
    path = tmp_path / "summary.csv"
    pd.DataFrame([dict(comparison="A vs B", metric="acc", mean_a=0.61, sd_a=0.1, mean_b=0.5, sd_b=0.12, n=10,
                       reported_p="0.01"),
                  dict(comparison="C vs B", metric="acc", mean_a=0.5, sd_a=0.1, mean_b=0.5, sd_b=0.1, n=10,
                       reported_p="0.3")]).to_csv(path, index=False)
    out = CliRunner().invoke(app, ["significance-summary", str(path), "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = pd.read_csv(io.StringIO(out.stdout))
    assert rows.implied_r.iloc[0] == pytest.approx(implied_r(0.61, 0.1, 0.5, 0.12, 10, 0.01), rel=1e-12)
    assert math.isnan(rows.implied_r.iloc[1])  # p does not depend on r there
    # the independent two-sample p at full precision, against scipy
    ref = stats.ttest_ind_from_stats(0.61, 0.1, 10, 0.5, 0.12, 10).pvalue
    assert rows.p_independent.iloc[0] == pytest.approx(ref, rel=1e-12)


def test_validation_is_idempotent_and_marks_nothing(tmp_path):
    # issue 24: no hidden column marks a frame as validated; each test validates what it gets, so
    # validating twice must change nothing (the CSV line names included) and a table built from a
    # validated frame equals one built from the raw rows
    import pandas as pd

    from matprobe.stats.significance import read_results, significance, validate_results

    rows = [{"condition": c, "target": "CT,Chest,Cls", "seed": s, "item": i, "metric": m, "value": v}
            for c, base in (("Related", 6), ("Unrelated", 4)) for s in range(3) for i in ("a", "b")
            for m, v in (("intersection", base + s), ("union", 10 + s))]
    rows += [{"condition": c, "target": "CT,Chest,Cls", "seed": s, "item": "", "metric": "accuracy",
              "value": 0.7 - 0.1 * (c == "Unrelated") + 0.01 * s} for c in ("Related", "Unrelated") for s in range(3)]
    path = tmp_path / "results.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    once = read_results(path)
    twice = validate_results(once, str(path))
    pd.testing.assert_frame_equal(once, twice)
    assert once["_row"].iloc[0] == "line 2"
    a = significance(once, ["Related vs Unrelated"]).results
    b = significance(pd.DataFrame(rows), ["Related vs Unrelated"]).results
    pd.testing.assert_frame_equal(a, b)
