"""`significance` on results a user brings (or `run` wrote) with conditions beyond Table IX's.

Found by a README-only study of Related, Unrelated, Zero-overlap and Leave-one-out runs: the
defaults tested Related vs. Unrelated only (the run's report tested all three comparisons), a
`--spec` with one comparison short of pairs refused the whole table, a metric measured for some
conditions only refused every comparison, and conditions written `zero_overlap` found no default.
Every p here is scipy's `ttest_rel` on pairs built independently of the library.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import StatsError
from matprobe.stats.significance import LEFT_OUT, related_comparisons, significance

MEANS = {"Related": 0.62, "Unrelated": 0.55, "Zero-overlap": 0.41, "Leave-one-out": 0.58}
SEEDS = {"Related": 3, "Unrelated": 3, "Zero-overlap": 2, "Leave-one-out": 2}


def results(rng, seeds=SEEDS, metrics=("accuracy",), names=None) -> pd.DataFrame:
    """One target, seeds per condition, a seed effect shared by the conditions (pairs correlate)."""
    names = names or {c: c for c in MEANS}
    seed_effect = rng.normal(0, 0.05, 4)
    rows = []
    for cond, mu in MEANS.items():
        for s in range(seeds[cond]):
            for metric in metrics:
                rows.append((names[cond], "MRI,Brain,Classification", str(s), metric,
                             float(np.clip(mu + seed_effect[s] + rng.normal(0, 0.02), 0, 1))))
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"])


def scipy_p(frame, a, b, metric="accuracy") -> float:
    wide = frame[frame.metric == metric].pivot_table(index="seed", columns="condition", values="value")
    pairs = wide[[a, b]].dropna()
    return float(stats.ttest_rel(pairs[a], pairs[b]).pvalue)


def test_defaults_test_related_against_every_condition_as_run_does():
    frame = results(np.random.default_rng(0))
    res = significance(frame)
    table = res.results
    labels = list(dict.fromkeys(table["comparison"]))
    # run's own rule over the same conditions: one rule, not two
    assert labels == [c.label for c in related_comparisons(list(MEANS))]
    assert labels == ["Related vs. Unrelated", "Related vs. Zero-overlap", "Related vs. Leave-one-out"]
    for row in table.itertuples():
        assert row.p == pytest.approx(scipy_p(frame, row.a, row.b), rel=1e-10)
    # Holm over the three, as the run's report adjusts them
    p = table["p"].to_numpy()
    order = np.argsort(p)
    holm = np.maximum.accumulate(np.minimum(1, (3 - np.arange(3)) * p[order]))
    np.testing.assert_allclose(table["p_holm"].to_numpy()[order], holm, rtol=1e-12)
    # the seeds only Related and Unrelated have are said, not paired
    zero = table[table.b == "Zero-overlap"].iloc[0]
    assert zero.n_pairs == 2 and LEFT_OUT + "target 'MRI,Brain,Classification', seed '2': 'Related' only" in zero.warning
    assert any("Related against the other conditions (Zero-overlap, Leave-one-out)" in n or
               "Related against each other condition" in n for n in res.notes())


def test_a_comparison_short_of_pairs_is_left_out_and_the_others_tested(tmp_path):
    frame = results(np.random.default_rng(1), seeds={**SEEDS, "Zero-overlap": 1})
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    spec = tmp_path / "spec.txt"
    spec.write_text("Related vs Unrelated\nRelated vs Zero-overlap\nRelated vs Leave-one-out\n")
    for given in (None, spec):
        res = significance(path, given)
        assert set(res.results["comparison"]) == {"Related vs Unrelated" if given else "Related vs. Unrelated",
                                                  "Related vs Leave-one-out" if given else
                                                  "Related vs. Leave-one-out"}
        assert any("Zero-overlap: not tested" in n and "1 (target, seed) run(s)" in n for n in res.notes())
        for row in res.results.itertuples():
            assert row.p == pytest.approx(scipy_p(frame, row.a, row.b), rel=1e-10)
    out = CliRunner().invoke(app, ["significance", str(path), "--spec", str(spec)])
    assert out.exit_code == 0, out.output
    assert "Zero-overlap: not tested" in out.output


def test_a_metric_measured_for_some_conditions_is_tested_where_it_is():
    """cIoU measured for Related, Unrelated and Leave-one-out only: tested on those two comparisons,
    the third said; accuracy tested on all three."""
    frame = results(np.random.default_rng(2), metrics=("accuracy", "cIoU"))
    frame = frame[~((frame.condition == "Zero-overlap") & (frame.metric == "cIoU"))]
    res = significance(frame)
    tested = set(zip(res.results["comparison"], res.results["metric"]))
    assert ("Related vs. Zero-overlap", "cIoU") not in tested
    assert {("Related vs. Unrelated", "cIoU"), ("Related vs. Leave-one-out", "cIoU"),
            ("Related vs. Zero-overlap", "accuracy")} <= tested
    assert any("Related vs. Zero-overlap: not tested on cIoU, no 'cIoU' rows for 'Zero-overlap'" in n
               for n in res.notes())
    row = res.results.set_index(["comparison", "metric"]).loc[("Related vs. Leave-one-out", "cIoU")]
    assert row["p"] == pytest.approx(scipy_p(frame, "Related", "Leave-one-out", "cIoU"), rel=1e-10)
    # --metric cIoU alone: the same two, not a refusal
    only = significance(frame, metrics=["cIoU"])
    assert len(only.results) == 2 and set(only.results["metric"]) == {"cIoU"}


def test_conditions_written_another_way_are_read_as_run_names_them():
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    canonical = results(rng_a)
    theirs = results(rng_b, names={"Related": "related", "Unrelated": "UNRELATED",
                                   "Zero-overlap": "zero_overlap", "Leave-one-out": "leave one out"})
    a, b = significance(canonical), significance(theirs)
    pd.testing.assert_frame_equal(a.results, b.results)
    assert any(n.startswith("conditions read as 'related' = Related") and "'zero_overlap' = Zero-overlap" in n
               for n in b.notes())
    # a spec in the user's spelling finds them too
    c = significance(theirs, ["related vs zero_overlap"])
    assert c.results["p"].iloc[0] == pytest.approx(scipy_p(canonical, "Related", "Zero-overlap"), rel=1e-10)


def test_names_of_the_users_own_are_kept_and_without_related_two_are_paired():
    frame = results(np.random.default_rng(4), names={"Related": "LoRA r=8", "Unrelated": "LoRA r=16",
                                                     "Zero-overlap": "x", "Leave-one-out": "y"})
    with pytest.raises(StatsError, match="no 'Related' condition the defaults need exactly two conditions"):
        significance(frame)
    two = frame[frame.condition.isin(["LoRA r=8", "LoRA r=16"])]
    res = significance(two)
    assert res.results["comparison"].tolist() == ["LoRA r=8 vs. LoRA r=16"]
    assert res.results["p"].iloc[0] == pytest.approx(scipy_p(two, "LoRA r=8", "LoRA r=16"), rel=1e-10)


def test_a_table_with_a_column_per_metric_is_refused_with_the_long_form(tmp_path):
    long = results(np.random.default_rng(5), metrics=("accuracy", "cIoU"))
    wide = long.pivot_table(index=["condition", "target", "seed"], columns="metric", values="value").reset_index()
    wide = wide.rename(columns={"condition": "setting", "target": "heldout", "seed": "run", "accuracy": "acc",
                                "cIoU": "ciou"})
    wide["run"] = wide["run"].astype(int)
    path = tmp_path / "wide.csv"
    wide.to_csv(path, index=False)
    with pytest.raises(StatsError) as err:
        significance(path)
    message = str(err.value)
    assert "missing column(s) condition, target, metric, value (it has setting, heldout, run, acc, ciou)" in message
    assert "a column per metric (acc, ciou)" in message and ".melt(" in message
    # the fix as the message gives it gives the long table's numbers
    fixed = pd.read_csv(path).melt(id_vars=["setting", "heldout", "run"], var_name="metric", value_name="value")
    fixed = fixed.rename(columns={"setting": "condition", "heldout": "target", "run": "seed"})
    fixed["metric"] = fixed["metric"].replace({"acc": "accuracy", "ciou": "cIoU"})
    got = significance(fixed).results.set_index(["comparison", "metric"])["p"].sort_index()
    want = significance(long).results.set_index(["comparison", "metric"])["p"].sort_index()
    pd.testing.assert_series_equal(got, want, rtol=1e-9)


def test_the_run_tests_what_significance_tests_on_its_results():
    """A study's report read p = 0.280 on 4 (target, seed) pairs where `matprobe significance` on the
    run's results.csv read 2 targets: the run now takes the command's comparisons and units."""
    from types import SimpleNamespace

    from matprobe.pipeline import significance_table

    rng = np.random.default_rng(6)
    rows = []
    for cond, mu in (("Related", 0.6), ("Unrelated", 0.5), ("Zero-overlap", 0.4)):
        for t, target in enumerate(("MRI,Brain,Quality", "CT,Chest,Orientation")):
            for s in range(3):
                rows.append((cond, target, str(s), "I(Z;task|modality,anatomy) nats", mu + 0.1 * t + rng.normal(0, .05)))
                if t == 0:  # accuracy measured on the first target only: paired by seed
                    rows.append((cond, target, str(s), "accuracy", mu + rng.normal(0, .05)))
    frame = pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"])
    cfg = SimpleNamespace(conditions=["related", "unrelated", "zero-overlap"])
    run_table, untested = significance_table(frame, cfg)
    cli = significance(frame).results
    key = ["comparison", "metric", "unit", "n_pairs", "p"]
    pd.testing.assert_frame_equal(run_table[key].reset_index(drop=True), cli[key].reset_index(drop=True))
    assert dict(zip(run_table["metric"], run_table["unit"])) == {"I(Z;task|modality,anatomy) nats": "target",
                                                                 "accuracy": "seed"}
    mi = run_table[(run_table.metric != "accuracy") & (run_table.b == "Zero-overlap")].iloc[0]
    means = frame[frame.metric != "accuracy"].groupby(["target", "condition"])["value"].mean().unstack()
    assert mi.p == pytest.approx(float(stats.ttest_rel(means["Related"], means["Zero-overlap"]).pvalue), rel=1e-10)
