"""significance-summary on rounded published numbers: the rounding of the means, sds and reported
p widens the p range over r (a p just outside the range at the values as given is not called
impossible), the two-sample p is named for the test it is, percent is refused as in
`significance` (or read as percentage points with percent=True), the mean difference carries its
unit, and `mp.significance_summary` returns a typed result. Every p is checked against scipy
(ttest_rel, ttest_ind) on raw pairs built here."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

import matprobe as mp
from matprobe.cli import app
from matprobe.errors import StatsError
from matprobe.stats.summary import read_summary, summary_table

HEADER = "comparison,metric,mean_a,sd_a,mean_b,sd_b,n,reported_p\n"


def pairs_two(mean_a, sd_a, mean_b, sd_b, same_direction=False):
    """Two pairs with these means and sds (sample sd, ddof 1); a and b move in opposite
    directions (r = -1) unless ``same_direction`` (r = 1)."""
    da, db = sd_a / math.sqrt(2), sd_b / math.sqrt(2)
    a = np.array([mean_a - da, mean_a + da])
    b = np.array([mean_b - db, mean_b + db]) if same_direction else np.array([mean_b + db, mean_b - db])
    return a, b


def pairs_three(mean_a, sd_a, mean_b, sd_b, rho):
    """Three pairs with these means and sds and correlation -rho."""
    u = np.array([-1.0, 0.0, 1.0])
    v = np.array([1.0, -2.0, 1.0])
    u, v = ((x - x.mean()) / x.std(ddof=1) for x in (u, v))  # mean 0, sd 1, orthogonal
    return mean_a + sd_a * u, mean_b - sd_b * (rho * u + math.sqrt(1 - rho**2) * v)


def written(a, b, decimals=4):
    """The row a paper prints for raw pairs a, b: means and sds rounded to `decimals`, the
    paired t-test p (scipy ttest_rel) to 3 decimals."""
    f = f"{{:.{decimals}f}}"
    p = stats.ttest_rel(a, b).pvalue
    return [f.format(a.mean()), f.format(a.std(ddof=1)), f.format(b.mean()), f.format(b.std(ddof=1)),
            str(len(a)), f"{p:.3f}"], p


def write_csv(tmp_path, rows, name="summary.csv"):
    path = tmp_path / name
    path.write_text(HEADER + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


# the user study's case: Related vs Unrelated, cIoU 0.4521 ± 0.0141 vs 0.4071 ± 0.0212 on two
# seeds, reported p 0.323; the unrounded sds are 0.01413 and 0.02122
STUDY = pairs_two(0.4521, 0.01413, 0.4071, 0.02122)
# three pairs with r = -0.998, printed as 0.6123 ± 0.0141 vs 0.5783 ± 0.0212, p 0.238
THREE = pairs_three(0.6123, 0.01414, 0.5783, 0.02124, 0.998)


@pytest.mark.parametrize("a, b", [STUDY, THREE], ids=["two pairs", "three pairs"])
def test_rounded_inputs_are_not_called_impossible(tmp_path, a, b):
    cells, p_raw = written(a, b)
    assert cells[1] == "0.0141" and cells[3] == "0.0212"
    path = write_csv(tmp_path, [["Related vs Unrelated", "cIoU", *cells]])
    row = summary_table(read_summary(path), source=str(path)).iloc[0]
    reported = float(cells[5])
    # at the values as printed the paired p never reaches the reported one: the old verdict
    assert row.p_max < reported - 0.0005 and math.isnan(row.implied_r)
    # ... but the raw pairs behind them give it: only the rounding made it look impossible
    assert "no r in" not in row.warning
    assert "within their rounding" in row.warning and "rounding taken: means and sds ±5e-05, reported p ±0.0005" \
        in row.warning
    assert row.p_min_rounding <= p_raw <= row.p_max_rounding
    r_raw = np.corrcoef(a, b)[0, 1]
    assert row.implied_r_low - 1e-9 <= r_raw <= row.implied_r_high + 1e-9
    assert row.implied_r_high < -0.9  # only a strong negative correlation gives it


def test_widened_range_is_scipy_at_the_corners(tmp_path):
    # the largest p within the rounding: smallest difference, both sds at the top, r = -1; the
    # smallest: largest difference, sds as close as the rounding allows, r = 1 (raw pairs, scipy)
    path = write_csv(tmp_path, [["Related vs Unrelated", "cIoU", "0.4521", "0.0141", "0.4071", "0.0212", 2,
                                 "0.323"]])
    row = summary_table(read_summary(path)).iloc[0]
    top = stats.ttest_rel(*pairs_two(0.45205, 0.01415, 0.40715, 0.02125)).pvalue
    bottom = stats.ttest_rel(*pairs_two(0.45215, 0.01415, 0.40705, 0.02115, same_direction=True)).pvalue
    assert row.p_max_rounding == pytest.approx(top, rel=1e-9)
    assert row.p_min_rounding == pytest.approx(bottom, rel=1e-9)
    # as given, r = -1 is the printed pairs' ttest_rel
    assert row.p_max == pytest.approx(stats.ttest_rel(*pairs_two(0.4521, 0.0141, 0.4071, 0.0212)).pvalue,
                                      rel=1e-9)


def test_impossible_p_is_still_impossible(tmp_path):
    path = write_csv(tmp_path, [["Related vs Unrelated", "cIoU", "0.4521", "0.0141", "0.4071", "0.0212", 2,
                                 "0.9"]])
    row = summary_table(read_summary(path)).iloc[0]
    # 0.9 (±0.05) is far above even the widened range (0.324 at most, checked against scipy above)
    top = stats.ttest_rel(*pairs_two(0.45205, 0.01415, 0.40715, 0.02125)).pvalue
    assert row.p_max_rounding == pytest.approx(top, rel=1e-9) and top < 0.85
    assert "no r in [-1, 1] gives p = 0.9, nor do any values within the rounding" in row.warning
    assert math.isnan(row.implied_r_low) and math.isnan(row.implied_r_high)
    shown = mp.significance_summary(path).to_table()
    assert shown.cells()[0][shown.headers().index("Implied r within rounding")] == "none"


def test_written_decimals_are_the_rounding(tmp_path):
    # "0.0140" carries 4 decimals although the float 0.014 has 3; a p '< 0.001' is a bound
    path = write_csv(tmp_path, [["A vs B", "cIoU", "0.5000", "0.0140", "0.4000", "0.0200", 5, "< 0.001"],
                                ["A vs B", "accuracy", "0.50", "0.14", "0.40", "0.20", 5, ""]])
    table = summary_table(read_summary(path))
    assert table.rounding.tolist() == ["means and sds ±5e-05", "means and sds ±0.005"]
    # the bound: r needed within the rounding is at most the one needed as given
    first = table.iloc[0]
    assert first.implied_r_low <= first.implied_r and first.implied_r_high == 1.0
    # no rounding: the range is the implied r itself
    exact = summary_table(read_summary(path), rounding=False).iloc[0]
    assert exact.rounding == "none (the values are taken as exact)"
    assert exact.implied_r_low == pytest.approx(first.implied_r, abs=1e-9)
    assert exact.p_max_rounding == pytest.approx(exact.p_max, rel=1e-12)


def test_p_columns_name_their_test(tmp_path):
    # Zero-overlap-like: the two-sample p lies outside the paired range over r
    a = np.array([0.61, 0.62, 0.63])
    b = np.array([0.50, 0.58, 0.54])
    cells = [f"{a.mean():.17g}", f"{a.std(ddof=1):.17g}", f"{b.mean():.17g}", f"{b.std(ddof=1):.17g}", 3, ""]
    path = write_csv(tmp_path, [["Zero-overlap vs Related", "accuracy", *cells]])
    res = mp.significance_summary(path)
    row = res.frame().iloc[0]
    two_sample = stats.ttest_ind(a, b).pvalue  # independent samples, df 2n-2
    assert row.p_independent == pytest.approx(two_sample, rel=1e-9)
    t0 = (a.mean() - b.mean()) / math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 3)
    assert row["p_r=0"] == pytest.approx(2 * stats.t.sf(t0, 2), rel=1e-9)  # paired, r = 0, df n-1
    assert not row.p_min <= two_sample <= row.p_max  # why it must not read as a paired p
    table = res.to_table()
    heads = table.headers()
    assert "p independent" not in heads
    col = heads.index("Two-sample p (df 2n-2)")
    assert table.cells()[0][col] == f"{two_sample:.3f}"
    assert "Paired p over r" in heads and "Paired p over r, within rounding" in heads
    glossary = " ".join(table.footnotes)
    assert "Two-sample p (df 2n-2): Student's t-test of two independent samples" in glossary
    assert "not a paired p" in glossary and "paired t-test on the n pairs (df n-1)" in glossary
    # the CLI's table says the same
    out = CliRunner().invoke(app, ["significance-summary", str(path)])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "Two-sample p (df 2n-2)" in text and "p independent" not in text
    assert "independent samples" in text


def test_percent_is_refused_with_the_fix(tmp_path):
    path = write_csv(tmp_path, [["Related vs Unrelated", "accuracy", "43.27", "2.15", "36.15", "1.80", 5,
                                 "0.004"]])
    with pytest.raises(StatsError, match=r"'accuracy' is in percent \(values up to 43.27\).*divide the values "
                                         r"by 100"):
        summary_table(read_summary(path), source=str(path))
    with pytest.raises(StatsError, match="is in percent"):
        mp.significance_summary(path)
    out = CliRunner().invoke(app, ["significance-summary", str(path)])
    assert out.exit_code == 2 and "error:" in out.output and "divide the values by 100" in out.output
    # the same numbers as fractions are accepted
    frac = write_csv(tmp_path, [["Related vs Unrelated", "accuracy", "0.4327", "0.0215", "0.3615", "0.0180", 5,
                                 "0.004"]], "frac.csv")
    assert mp.significance_summary(frac).frame().unit.iloc[0] == "fraction"


def test_percent_on_purpose_is_percentage_points(tmp_path):
    path = write_csv(tmp_path, [["Related vs Unrelated", "accuracy", "43.27", "2.15", "36.15", "1.80", 5,
                                 "0.004"]])
    res = mp.significance_summary(path, percent=True)
    row = res.frame().iloc[0]
    assert row.unit == "percentage points" and row.mean_diff == pytest.approx(7.12)
    assert res.to_table().headers()[3] == "Mean diff (percentage points)"
    assert any("percentage points" in n for n in res.notes())
    # rounding in percent: two decimals, ±0.005 points; the p at r = 0 is scipy's on raw values
    assert row.rounding == "means and sds ±0.005, reported p ±0.0005"
    t0 = 7.12 / math.sqrt((2.15**2 + 1.80**2) / 5)
    assert row["p_r=0"] == pytest.approx(2 * stats.t.sf(t0, 4), rel=1e-9)
    # percent in one row and fractions in another is refused whatever `percent` says
    mixed = write_csv(tmp_path, [["Related vs Unrelated", "accuracy", "43.27", "2.15", "36.15", "1.80", 5, ""],
                                 ["Related vs Zero-overlap", "accuracy", "0.4327", "0.0215", "0.30", "0.02", 5, ""]],
                      "mixed.csv")
    with pytest.raises(StatsError, match="mixes units"):
        mp.significance_summary(mixed, percent=True)


def test_mean_diff_carries_its_unit(tmp_path):
    path = write_csv(tmp_path, [["Related vs Unrelated", "cIoU", "0.4521", "0.0141", "0.4071", "0.0212", 2, ""]])
    table = mp.significance_summary(path).to_table()
    assert table.headers()[3] == "Mean diff (fraction)" and table.cells()[0][3] == "0.045"
    assert any(n.startswith("Mean diff: mean_a - mean_b, in fractions") for n in table.footnotes)
    # rows of different units: each cell names its own
    both = write_csv(tmp_path, [["Related vs Unrelated", "cIoU", "0.4521", "0.0141", "0.4071", "0.0212", 2, ""],
                                ["Related vs Unrelated", "BLEU", "31.2", "1.1", "28.9", "0.9", 2, ""]], "both.csv")
    shown = mp.significance_summary(both).to_table()
    col = shown.headers().index("Mean diff")
    assert [r[col] for r in shown.cells()] == ["0.045 (fraction)", "2.300"]
    assert any("the metric's own unit" in n for n in shown.footnotes)


def test_api_returns_a_typed_result(tmp_path):
    a, b = STUDY
    cells, _ = written(a, b)
    path = write_csv(tmp_path, [["Related vs Unrelated", "cIoU", *cells]])
    res = mp.significance_summary(path)
    assert not isinstance(res, pd.DataFrame)
    frame = res.frame()
    assert isinstance(frame, pd.DataFrame) and frame is res.results and len(frame) == 1
    table = res.to_table()
    assert table.headers()[:2] == ["Comparison", "Metric"] and res.tables()[0].headers() == table.headers()
    assert any("Related vs Unrelated, cIoU: p = 0.323 lies outside" in n for n in res.notes())
    machine = res.tables_for("csv")[0].frame()
    assert machine.p_independent.iloc[0] == pytest.approx(
        stats.ttest_ind_from_stats(0.4521, 0.0141, 2, 0.4071, 0.0212, 2).pvalue, rel=1e-12)
    # the CLI's csv carries the same numbers
    out = CliRunner().invoke(app, ["significance-summary", str(path), "--format", "csv"])
    assert out.exit_code == 0, out.output
    back = pd.read_csv(io.StringIO(out.stdout))
    assert back.implied_r_high.iloc[0] == pytest.approx(frame.implied_r_high.iloc[0], rel=1e-12)
    # a DataFrame works as well as a path
    again = mp.significance_summary(read_summary(path))
    assert again.frame().implied_r_high.iloc[0] == pytest.approx(frame.implied_r_high.iloc[0], rel=1e-12)


def test_a_file_without_rows_is_refused(tmp_path):
    path = write_csv(tmp_path, [])
    with pytest.raises(StatsError, match="no rows"):
        mp.significance_summary(path)


def test_a_p_that_only_the_rounding_allows_says_so_in_that_order():
    """CrossMed's cIoU 0.75 ± 0.02 against 0.32 ± 0.01 at n = 2 with "p < 0.001": at the values as given
    the paired p is at least 0.0105 (r = 1; scipy's t on the difference of means, sd |0.02 - 0.01|), so
    no r gives it; the r > 0.998 that does holds only within the rounding. The note read "needs
    r > 0.998: no r gives it", a threshold that no r at the values as given meets."""
    import pandas as pd
    from scipy import stats

    import matprobe as mp

    df = pd.DataFrame([{"comparison": "Related vs. Unrelated", "metric": "cIoU", "mean_a": "0.75", "sd_a": "0.02",
                        "mean_b": "0.32", "sd_b": "0.01", "n": 2, "reported_p": "< 0.001"}])
    note = " ".join(mp.significance_summary(df).notes())
    sd_diff = abs(0.02 - 0.01)  # r = 1: the sd of the differences is |sd_a - sd_b|
    p_at_r1 = 2 * stats.t.sf((0.75 - 0.32) / (sd_diff / 2 ** 0.5), 1)
    assert round(p_at_r1, 4) == 0.0105
    assert ("p < 0.001: no r gives it at the values as given; within their rounding, r > 0.998 does "
            "(p runs from 0.0105 at r=1") in note, note
