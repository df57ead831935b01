"""Paired significance tests checked against scipy / statsmodels and closed forms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special, stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from matprobe.errors import StatsError
from matprobe.stats.significance import (
    DEFAULT_CROSSMED_COMPARISONS,
    Comparison,
    adjust_p,
    compare_conditions,
    hedges_correction,
    item_level_analysis,
    load_spec,
    mcnemar_items,
    min_exact_p,
    mixed_model_test,
    paired_bootstrap,
    paired_test,
    parse_comparison,
    read_results,
    sign_flip_p,
)

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass

REPO = Path(__file__).resolve().parents[1]
TABLE9 = REPO / "experiments" / "table9"
CONDITIONS = {"Related": 83.0, "Unrelated": 49.0, "Without Modality": 62.0,
              "Without Anatomy": 58.0, "Without Task": 48.0}


def tidy(rng, n_targets=6, n_seeds=3, conditions=CONDITIONS, sd=4.0):
    """Random tidy results: a target effect shared by all conditions (so pairs correlate)."""
    rows = []
    target_effect = rng.normal(0, 5, n_targets)
    for cond, mu in conditions.items():
        for t in range(n_targets):
            for s in range(n_seeds):
                for metric, scale in (("accuracy", 1.0), ("cIoU", 0.01)):
                    value = (mu + target_effect[t] + rng.normal(0, sd)) * scale
                    rows.append((cond, f"target{t}", str(s), metric, value))
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"])


def arrays(frame, a, b, metric, unit):
    """Pairs built independently of the library: pivot, then average for unit=target."""
    sub = frame[frame.metric == metric]
    wide = sub.pivot_table(index=["target", "seed"], columns="condition", values="value")
    if unit == "target":
        wide = wide.groupby(level="target").mean()
    return wide[a].to_numpy(), wide[b].to_numpy()


# ----------------------------------------------------------------- agreement with scipy


@pytest.mark.parametrize("n", [3, 8, 25])
def test_paired_test_matches_scipy(n):
    rng = np.random.default_rng(n)
    a = rng.normal(1.0, 2.0, n)
    b = a * 0.6 + rng.normal(0.4, 1.0, n)
    res = paired_test(a, b, ci_level=0.9)
    ref = stats.ttest_rel(a, b)
    ci = ref.confidence_interval(confidence_level=0.9)
    assert res["t"] == pytest.approx(ref.statistic, rel=1e-10, abs=1e-12)
    assert res["p"] == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-12)
    assert res["df"] == ref.df == n - 1
    assert res["ci_low"] == pytest.approx(ci.low, rel=1e-10, abs=1e-12)
    assert res["ci_high"] == pytest.approx(ci.high, rel=1e-10, abs=1e-12)
    d = a - b
    assert res["dz"] == pytest.approx(d.mean() / d.std(ddof=1), rel=1e-12)
    # Hedges' exact correction J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2))
    j = special.gamma((n - 1) / 2) / (math.sqrt((n - 1) / 2) * special.gamma((n - 2) / 2))
    assert res["hedges_g"] == pytest.approx(res["dz"] * j, rel=1e-10)
    if n > 10:  # ... and its usual approximation 1 - 3 / (4 df - 1) (Lakens 2013) for larger n
        assert j == pytest.approx(1 - 3 / (4 * (n - 1) - 1), rel=1e-3)
    assert res["wilcoxon_p"] == pytest.approx(stats.wilcoxon(d).pvalue, rel=1e-10)
    exact = stats.permutation_test((d,), lambda x, axis=-1: x.mean(axis=axis),
                                   permutation_type="samples", n_resamples=np.inf,
                                   vectorized=True) if n <= 16 else None
    if exact is not None:
        assert res["perm_p"] == pytest.approx(exact.pvalue, rel=1e-10)
        assert res["perm_method"] == "exact"


def test_hedges_correction_closed_forms():
    # J(df) = Gamma(df/2) / (sqrt(df/2) Gamma((df-1)/2)): J(2) = 1/sqrt(pi), J(3) = sqrt(pi/6)
    assert hedges_correction(2) == pytest.approx(1 / math.sqrt(math.pi), rel=1e-12)
    assert hedges_correction(3) == pytest.approx(math.sqrt(math.pi / 6), rel=1e-12)
    assert hedges_correction(4) == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)


def test_sign_flip_dynamic_programming_equals_scipy_enumeration():
    rng = np.random.default_rng(3)
    d = rng.integers(-6, 12, 15).astype(float)  # integer differences, zeros included
    d[2] = 0.0
    p_dp, method = sign_flip_p(d, max_exact=0)  # force the grid / DP path
    assert method == "exact"
    ref = stats.permutation_test((d,), lambda x, axis=-1: x.sum(axis=axis),
                                 permutation_type="samples", n_resamples=np.inf, vectorized=True)
    assert p_dp == pytest.approx(ref.pvalue, rel=1e-10)
    assert sign_flip_p(d)[0] == pytest.approx(ref.pvalue, rel=1e-10)
    # decimal grid (one decimal place, as accuracies in percent with one digit)
    p_dec, _ = sign_flip_p(d / 10 + 0.1 * (d != 0), max_exact=0)
    p_enum, _ = sign_flip_p(d / 10 + 0.1 * (d != 0))  # meet in the middle
    assert p_dec == pytest.approx(p_enum, rel=1e-10)
    # two exact algorithms agree where scipy's enumeration would be slow (2^30 sign vectors)
    d30 = rng.integers(-3, 9, 30).astype(float)
    assert sign_flip_p(d30)[0] == pytest.approx(sign_flip_p(d30, max_exact=0)[0], rel=1e-9)
    assert p_dec == pytest.approx(p_enum, rel=1e-10)


def test_sign_flip_monte_carlo_near_exact_and_floor():
    rng = np.random.default_rng(4)
    d = rng.normal(0.4, 1.0, 12) + np.pi * 1e-7  # off any decimal grid
    exact, _ = sign_flip_p(d)
    approx, method = sign_flip_p(d, max_exact=0, n_resamples=40_000, seed=1)
    assert method.startswith("monte carlo")
    assert abs(approx - exact) < 0.012  # 4 sd of a binomial proportion near 0.1 at 40k draws
    # all differences of one sign: exact p is the floor 2^(1-n)
    assert sign_flip_p(np.arange(1.0, 9.0))[0] == pytest.approx(min_exact_p(8)) == 2**-7


def test_holm_and_bh_equal_statsmodels():
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(0, 0.1, 12), [0.03, 0.03, 0.5, 1.0]])  # ties included
    for ours, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        np.testing.assert_allclose(adjust_p(p, ours), multipletests(p, method=theirs)[1],
                                   rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("unit", ["seed", "target"])
def test_compare_conditions_end_to_end(unit):
    frame = tidy(np.random.default_rng(6))
    res = compare_conditions(frame, unit=unit)
    assert list(res.comparison.unique()) == [c.label for c in DEFAULT_CROSSMED_COMPARISONS]
    assert len(res) == 8 and set(res.metric) == {"accuracy", "cIoU"}
    for _, row in res.iterrows():
        a, b = arrays(frame, row.a, row.b, row.metric, unit)
        ref = stats.ttest_rel(a, b)
        assert row.n_pairs == len(a) == (18 if unit == "seed" else 6)
        assert row.t == pytest.approx(ref.statistic, rel=1e-10)
        assert row.p == pytest.approx(ref.pvalue, rel=1e-10, abs=1e-300)
        assert row.unit == unit
    np.testing.assert_allclose(res.p_holm, multipletests(res.p, method="holm")[1], rtol=1e-12)
    np.testing.assert_allclose(res.p_bh, multipletests(res.p, method="fdr_bh")[1], rtol=1e-12)
    per_metric = compare_conditions(frame, unit=unit, family="metric")
    acc = per_metric[per_metric.metric == "accuracy"]
    np.testing.assert_allclose(acc.p_holm, multipletests(acc.p, method="holm")[1], rtol=1e-12)


def test_mixed_model_balanced_equals_target_level_t():
    # Balanced one-way random-intercept model fitted by REML: when the target variance is
    # estimated > 0, Var(mu_hat) = MSB / (targets * seeds) = var(target means) / targets,
    # so the Wald z equals the paired t on target means (a closed form, not statsmodels).
    frame = tidy(np.random.default_rng(7), n_targets=8, n_seeds=4, sd=3.0)
    rng = np.random.default_rng(70)
    shift = dict(zip([f"target{t}" for t in range(8)], rng.normal(0, 6, 8)))
    rel = frame.condition == "Related"
    frame.loc[rel, "value"] += frame.loc[rel, "target"].map(shift) * (frame.metric == "accuracy")
    comp = Comparison("Related", "Unrelated")
    res = mixed_model_test(frame, comp, "accuracy")
    a, b = arrays(frame, "Related", "Unrelated", "accuracy", "target")
    ref = stats.ttest_rel(a, b)
    assert res["mixed_var_target"] > 0
    assert res["mixed_mean_diff"] == pytest.approx((a - b).mean(), rel=1e-8)
    assert res["mixed_z"] == pytest.approx(ref.statistic, rel=1e-4)
    assert res["mixed_p"] == pytest.approx(2 * stats.norm.sf(abs(res["mixed_z"])), rel=1e-12)


# ----------------------------------------------------------------- Med-MAT Table 3


def medmat_tidy(path, columns):
    wide = pd.read_csv(path)
    long = wide.melt(id_vars=["row"], value_vars=columns, var_name="condition")
    return long.assign(target=long.row.astype(str), seed="0", metric="accuracy")


def test_medmat_table3_trained_vs_baseline_plus():
    wide = pd.read_csv(TABLE9 / "medmat_table3.csv")
    assert len(wide) == 43  # Med-MAT Table 3 has 43 rows
    frame = medmat_tidy(TABLE9 / "medmat_table3.csv", ["baseline", "baseline_plus", "trained"])
    res = compare_conditions(frame, [Comparison("trained", "baseline_plus")])
    ref = stats.ttest_rel(wide.trained, wide.baseline_plus)
    row = res.iloc[0]
    assert row.n_pairs == 43 and row.df == 42
    assert row.t == pytest.approx(ref.statistic, rel=1e-10)
    assert row.p == pytest.approx(ref.pvalue, rel=1e-10)
    assert row.mean_diff == pytest.approx((wide.trained - wide.baseline_plus).mean(), rel=1e-12)
    # integer accuracies: the permutation p is exact (dynamic programming over 43 pairs)
    assert row.perm_method == "exact"


@pytest.mark.parametrize("table", [5, 6, 7, 8])
def test_medmat_tables_trained_vs_baseline(table):
    path = TABLE9 / f"medmat_table{table}.csv"
    wide = pd.read_csv(path)
    res = compare_conditions(medmat_tidy(path, ["baseline", "trained"]),
                             ["trained vs baseline"]).iloc[0]
    ref = stats.ttest_rel(wide.trained, wide.baseline)
    assert res.n_pairs == 8
    assert res.p == pytest.approx(ref.pvalue, rel=1e-10)
    full = stats.permutation_test((wide.trained - wide.baseline,),
                                  lambda x, axis=-1: x.mean(axis=axis), vectorized=True,
                                  permutation_type="samples", n_resamples=np.inf)
    assert res.perm_p == pytest.approx(full.pvalue, rel=1e-10)


# ----------------------------------------------------------------- item level


def item_frame(rng, n_items=40):
    rows = []
    for cond, shift in (("Related", 0.15), ("Unrelated", 0.0)):
        for t in range(2):
            for i in range(n_items):
                correct = int(rng.uniform() < 0.55 + shift)
                union = rng.uniform(50, 500)  # unequal image sizes: ratio of sums != mean ratio
                inter = union * rng.beta(2 + 10 * shift, 2)
                for metric, v in (("correct", correct), ("intersection", inter), ("union", union)):
                    rows.append((cond, f"t{t}", "0", f"img{i}", metric, v))
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "item", "metric", "value"])


def ciou_of(frame, cond):
    sub = frame[frame.condition == cond]
    return sub[sub.metric == "intersection"].value.sum() / sub[sub.metric == "union"].value.sum()


def test_mcnemar_equals_statsmodels():
    frame = item_frame(np.random.default_rng(8))
    res = mcnemar_items(frame, Comparison("Related", "Unrelated"), "correct")
    wide = frame[frame.metric == "correct"].pivot_table(
        index=["target", "item"], columns="condition", values="value")
    table = pd.crosstab(wide.Related, wide.Unrelated).reindex(index=[0, 1], columns=[0, 1],
                                                              fill_value=0)
    ref = mcnemar(table.to_numpy(), exact=True)
    assert res["mcnemar_p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert res["only_a"] == table.loc[1, 0] and res["only_b"] == table.loc[0, 1]


def test_paired_bootstrap_recomputes_ciou_as_ratio_of_sums():
    frame = item_frame(np.random.default_rng(9))
    comp = Comparison("Related", "Unrelated")
    res = paired_bootstrap(frame, comp, "cIoU", n_resamples=400, seed=3)

    expected = ciou_of(frame, "Related") - ciou_of(frame, "Unrelated")
    assert res["estimate"] == pytest.approx(expected, rel=1e-12)
    assert res["n_items"] == 80
    assert res["ci_low"] < expected < res["ci_high"]
    # the per-target-seed cIoU used by the t-test is also a ratio of sums
    per_target = [ciou_of(frame[frame.target == t], "Related")
                  - ciou_of(frame[frame.target == t], "Unrelated") for t in ("t0", "t1")]
    table = compare_conditions(frame, [comp], metrics=["cIoU"], unit="target")
    assert table.mean_diff.iloc[0] == pytest.approx(np.mean(per_target), rel=1e-12)
    mean_of_ratios = (frame[frame.metric == "intersection"].value.to_numpy()
                      / frame[frame.metric == "union"].value.to_numpy())
    assert abs(mean_of_ratios.mean() - (ciou_of(frame, "Related") + ciou_of(frame, "Unrelated"))
               / 2) > 1e-4  # the data do separate the two definitions
    both = item_level_analysis(frame, [comp], n_resamples=200)
    assert set(both.metric) == {"correct", "cIoU"}
    assert not math.isnan(both.set_index("metric").loc["correct", "mcnemar_p"])


# ----------------------------------------------------------------- bad input


def write(tmp_path, frame, name="results.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def small(rng=None):
    return tidy(np.random.default_rng(10), n_targets=3, n_seeds=2)


def expect(tmp_path, frame, *fragments, **kwargs):
    path = write(tmp_path, frame)
    with pytest.raises(StatsError) as err:
        compare_conditions(read_results(path), source=str(path), **kwargs)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_bad_unpaired_row(tmp_path):
    frame = small()
    key = (frame.target == "target1") & (frame.seed == "1") & (frame.metric == "accuracy")
    frame = frame[~(key & (frame.condition == "Unrelated"))].reset_index(drop=True)
    partner = frame.index[key.reindex(frame.index, fill_value=False).to_numpy() & (
        frame.condition == "Related").to_numpy()][0]
    expect(tmp_path, frame, "unpaired", "target 'target1', seed '1'",
           f"has 'Related' (line {partner + 2}) but no 'Unrelated'", unit="seed")


def test_bad_misaligned_duplicate(tmp_path):
    frame = small()
    frame.loc[5, "seed"] = frame.loc[4, "seed"]  # two rows now claim the same seed
    frame.loc[5, "metric"] = frame.loc[4, "metric"]
    expect(tmp_path, frame, "duplicate rows", "line 6", "line 7")


def test_bad_missing_condition(tmp_path):
    frame = small()
    frame = frame[frame.condition != "Without Task"]
    expect(tmp_path, frame, "condition 'Without Task'", "absent", "conditions present")


def test_bad_nan(tmp_path):
    frame = small()
    frame.loc[3, "value"] = np.nan
    expect(tmp_path, frame, "NaN", "line 5")


def test_bad_metric_absent_for_one_condition(tmp_path):
    frame = small()
    frame = frame[~((frame.condition == "Unrelated") & (frame.metric == "cIoU"))]
    expect(tmp_path, frame, "metric 'cIoU' is absent for condition 'Unrelated'",
           "rows for 'Related': line")


def test_bad_fewer_than_two_pairs(tmp_path):
    frame = tidy(np.random.default_rng(11), n_targets=1, n_seeds=2)
    expect(tmp_path, frame, "only 1 pair", "at least 2", "line")


def test_bad_unit_and_spec(tmp_path):
    with pytest.raises(StatsError, match="unit 'run'"):
        compare_conditions(small(), unit="run")
    spec = tmp_path / "spec.txt"
    spec.write_text("# comment\nTable IX row: Related vs. Unrelated\nWithout Task vs Related\n")
    comps = load_spec(spec)
    assert comps == (Comparison("Related", "Unrelated", "Table IX row"),
                     Comparison("Without Task", "Related"))
    with pytest.raises(StatsError, match="write it as 'A vs B'"):
        parse_comparison("Related versus Unrelated")


def _copied_seeds(frame, seeds=("0", "1", "2")):
    """The same rows under several seeds: an item's runs that agree exactly (no new information)."""
    return pd.concat([frame.assign(seed=s) for s in seeds], ignore_index=True)


def test_item_level_tests_count_an_item_once_however_many_seeds_it_has():
    """A study's 200 items x 3 seeds read "600 pairs" in the items table and a McNemar p over 600
    rows; an item's seeds share its image, so the bootstrap resamples items with their seeds and
    McNemar is clustered by item (Durkalski et al. 2003)."""
    one = item_frame(np.random.default_rng(8))
    three = _copied_seeds(one)
    comp = Comparison("Related", "Unrelated")
    # copied seeds add nothing: the cluster bootstrap reads exactly what one seed reads
    for metric in ("correct", "cIoU"):
        a = paired_bootstrap(one, comp, metric, n_resamples=300, seed=4)
        b = paired_bootstrap(three, comp, metric, n_resamples=300, seed=4)
        assert (b["n_items"], b["n_rows"], a["n_rows"]) == (80, 240, 80)
        assert b["estimate"] == pytest.approx(a["estimate"], rel=1e-12)
        assert (b["ci_low"], b["ci_high"]) == pytest.approx((a["ci_low"], a["ci_high"]), rel=1e-9)
    # clustered McNemar over identical seeds = McNemar's chi-square (no continuity correction) on one seed
    res = mcnemar_items(three, comp, "correct")
    wide = one[one.metric == "correct"].pivot_table(index=["target", "item"], columns="condition", values="value")
    table = pd.crosstab(wide.Related, wide.Unrelated).reindex(index=[0, 1], columns=[0, 1], fill_value=0)
    ref = mcnemar(table.to_numpy(), exact=False, correction=False)
    assert res["mcnemar_p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert (res["n_items"], res["n_rows"], res["only_a"]) == (80, 240, 3 * table.loc[1, 0])
    assert res["mcnemar_method"].startswith("clustered")
    assert mcnemar_items(one, comp, "correct")["mcnemar_method"] == "exact binomial"
    # pooled as 240 independent pairs, p would have been far smaller
    pooled = mcnemar(3 * table.to_numpy(), exact=True).pvalue
    assert pooled < res["mcnemar_p"] / 10
    # the item-unit t-test still pairs rows, and says so
    t = compare_conditions(three, [comp], metrics=["correct"], unit="item")
    assert "240 (target, seed, item) rows of 80 items under 3 seeds are treated as independent pairs" in t.warning.iloc[0]


def test_the_items_table_says_items_and_their_rows():
    from matprobe.present.significance import item_table

    comp = Comparison("Related", "Unrelated")
    one = item_frame(np.random.default_rng(8))
    shown = item_table(item_level_analysis(_copied_seeds(one), [comp], n_resamples=100))
    assert shown.Items.tolist() == ["80 (240 rows)"] * 2
    assert shown["McNemar p"].iloc[0].endswith("(clustered by item)") and shown["McNemar p"].iloc[1] == "n/a"
    plain = item_table(item_level_analysis(one, [comp], n_resamples=100))
    assert plain.Items.tolist() == ["80", "80"] and "clustered" not in plain["McNemar p"].iloc[0]


def test_unit_target_says_where_its_seed_means_average_other_seeds_and_mixed_says_it_is_a_z_test():
    """At unit target a target's value is its seed mean per condition: with an Unrelated seed missing
    in one target the t-test (scipy's on the pandas seed means) averaged four Related seeds against
    three without a word, where --unit seed names the run it leaves out. `--mixed` printed MixedLM's
    z-test p beside the t-test with no word that it is anti-conservative with 3 targets."""
    import pandas as pd
    from scipy import stats

    import matprobe as mp

    rng = np.random.default_rng(3)
    rows = []
    for t, target in enumerate(("CT,Lung,A", "MRI,Brain,B", "X-ray,Chest,C")):
        for seed in range(4):
            for cond, shift in (("Related", 0.1), ("Unrelated", 0.0)):
                if cond == "Unrelated" and t == 1 and seed == 3:
                    continue
                rows.append({"condition": cond, "target": target, "seed": seed, "metric": "accuracy",
                             "value": 0.5 + shift + 0.02 * t + rng.normal(0, 0.01)})
    frame = pd.DataFrame(rows)
    res = mp.significance(frame, unit="target", mixed=True)
    row = res.frame().set_index("metric").loc["accuracy"]
    means = frame.groupby(["condition", "target"])["value"].mean().unstack("condition")
    assert row["p"] == pytest.approx(stats.ttest_rel(means["Related"], means["Unrelated"]).pvalue, rel=1e-9)
    notes = " ".join(res.notes())
    assert ("each target's value is the mean of other seeds under the two conditions (target 'MRI,Brain,B': "
            "'Related' seeds 0, 1, 2, 3, 'Unrelated' seeds 0, 1, 2): --unit seed pairs the seeds both have") in notes
    assert ("mixed model (--mixed): its p is a z-test (statsmodels' MixedLM, REML), anti-conservative with few "
            "targets (3 here)") in notes, notes
    balanced = frame[~((frame.target == "MRI,Brain,B") & (frame.seed == 3))]
    assert "mean of other seeds" not in " ".join(mp.significance(balanced, unit="target").notes())
