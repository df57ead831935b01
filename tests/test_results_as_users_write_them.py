"""`significance` on per-run tables written the way researchers' own scripts and spreadsheets write
them: headers in another case, a `run` column, tabs, seeds as 0.0, a `#` in a target, a condition
spelled two ways, one stray fraction among percentages. Found by a study of such files: each was
refused with a wrong cause (\"train more seeds\"), or read wrong without a word. Every p here is
scipy's `ttest_rel` on pairs built from the numbers written into the file."""

from __future__ import annotations

import warnings

import pytest
from scipy import stats

from matprobe.errors import StatsError
from matprobe.stats.significance import read_results, significance

RELATED = [0.81, 0.84, 0.79]
UNRELATED = [0.62, 0.70, 0.66]
P_WANT = float(stats.ttest_rel(RELATED, UNRELATED).pvalue)


def _write(path, header, rows, sep=","):
    path.write_text(sep.join(header) + "\n" + "".join(sep.join(map(str, r)) + "\n" for r in rows))
    return path


def _rows(target="CT-Lung-COVID", seeds=(0, 1, 2), seeds_b=None, related="Related", values=(RELATED, UNRELATED)):
    seeds_b = seeds if seeds_b is None else seeds_b
    return ([(related if not isinstance(related, list) else related[i], target, s, "accuracy", v)
             for i, (s, v) in enumerate(zip(seeds, values[0]))]
            + [("Unrelated", target, s, "accuracy", v) for s, v in zip(seeds_b, values[1])])


def _p(path) -> float:
    (p,) = significance(path).results["p"].tolist()
    return p


@pytest.mark.parametrize("header, sep", [
    (("Condition", "Target", "Seed", "Metric", "Value"), ","),
    (("condition ", " target", "seed", "metric", "VALUE "), ","),
    (("condition", "target", "run", "metric", "value"), ","),
    (("condition", "target", "seed", "metric", "value"), "\t"),
])
def test_headers_and_separators_researchers_write_are_read(tmp_path, header, sep):
    path = _write(tmp_path / "r.csv", header, _rows(), sep)
    assert _p(path) == pytest.approx(P_WANT, rel=1e-12)


def test_a_byte_order_mark_crlf_and_comment_lines_are_read_and_lines_counted_as_in_the_file(tmp_path):
    text = "condition,target,seed,metric,value\r\n" + "".join(",".join(map(str, r)) + "\r\n" for r in _rows())
    path = tmp_path / "r.csv"
    path.write_bytes(b"\xef\xbb\xbf# exported from my notebook\r\n" + text.encode())
    assert _p(path) == pytest.approx(P_WANT, rel=1e-12)
    frame = read_results(path)
    assert frame["_row"].tolist() == [f"line {i}" for i in range(3, 9)]  # the comment is line 1


def test_a_hash_inside_a_value_is_part_of_it(tmp_path):
    path = _write(tmp_path / "r.csv", ("condition", "target", "seed", "metric", "value"), _rows(target="CT#1"))
    assert set(read_results(path)["target"]) == {"CT#1"}
    assert _p(path) == pytest.approx(P_WANT, rel=1e-12)


def test_seeds_a_spreadsheet_wrote_as_floats_pair_with_integers(tmp_path):
    path = _write(tmp_path / "r.csv", ("condition", "target", "seed", "metric", "value"),
                  _rows(seeds=("0.0", "1.0", "2.0"), seeds_b=(0, 1, 2)))
    assert _p(path) == pytest.approx(P_WANT, rel=1e-12)


def test_runs_that_do_not_pair_because_of_their_labels_say_so_and_not_train_more_seeds(tmp_path):
    header = ("condition", "target", "seed", "metric", "value")
    apart = _write(tmp_path / "apart.csv", header, _rows(seeds=(0, 1, 2), seeds_b=(10, 11, 12)))
    with pytest.raises(StatsError) as exc:
        significance(apart)
    msg = str(exc.value)
    assert "'Related' has seed 0, 1, 2 and 'Unrelated' seed 10, 11, 12, none in common" in msg, msg
    assert "train at least two seeds" not in msg
    # two targets, one written with other spaces and case under Unrelated
    rows = ([("Related", t, s, "accuracy", v) for t in ("CT,Lung,COVID", "MRI,Brain,Tumour")
             for s, v in zip((0, 1, 2), RELATED)]
            + [("Unrelated", t, s, "accuracy", v) for t in ("ct, lung, covid", "MRI,Brain,Tumour")
               for s, v in zip((0, 1, 2), UNRELATED)])
    path = tmp_path / "spelled.csv"
    path.write_text("condition,target,seed,metric,value\n" + "".join(f'{c},"{t}",{s},{m},{v}\n' for c, t, s, m, v in rows))
    with pytest.raises(StatsError) as exc:
        significance(path)
    msg = str(exc.value)
    assert "'Related' writes target 'CT,Lung,COVID' and 'Unrelated' 'ct, lung, covid'" in msg, msg
    assert "train at least two seeds" not in msg


def test_a_condition_spelled_two_ways_is_one_condition_unless_both_spellings_hold_a_run(tmp_path):
    header = ("condition", "target", "seed", "metric", "value")
    mixed = _write(tmp_path / "mixed.csv", header, _rows(related=["Related", "related", "Related"]))
    res = significance(mixed)
    assert res.results["n_pairs"].tolist() == [3]
    assert res.results["p"].iloc[0] == pytest.approx(P_WANT, rel=1e-12)
    clash = _write(tmp_path / "clash.csv", header, _rows() + [("related", "CT-Lung-COVID", 1, "accuracy", 0.5)])
    with pytest.raises(StatsError, match=r"conditions 'Related' and 'related' both read as 'Related'.*line 3.*line 8"):
        significance(clash)


def test_one_fraction_among_percentages_is_refused_naming_its_row(tmp_path):
    header = ("condition", "target", "seed", "metric", "value")
    pct = ([round(100 * v) for v in RELATED], [round(100 * v) for v in UNRELATED])
    pct[0][1] = 0.84  # one row left as a fraction
    path = _write(tmp_path / "r.csv", header, _rows(values=pct))
    for percent in (False, True):
        with pytest.raises(StatsError) as exc:
            significance(path, percent=percent)
        msg = str(exc.value)
        assert "mixes units" in msg and "condition 'Related' is in fractions (values below 1) at line 3 (0.84)" in msg, msg
    # exact 0 and 1 read the same in both units: a percent table with a 0 passes with --percent
    pct[0][1] = 0
    zero = _write(tmp_path / "zero.csv", header, _rows(values=pct))
    assert significance(zero, percent=True).results["p"].iloc[0] == pytest.approx(
        float(stats.ttest_rel(pct[0], pct[1]).pvalue), rel=1e-12)


def test_a_comma_left_unquoted_and_a_semicolon_file_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("condition,target,seed,metric,value\nRelated,CT,Lung,COVID,0,accuracy,0.81\n")
    with pytest.raises(StatsError, match=r"line 2 has 7 fields, the header 5; a value holding a comma must be in "
                                         r"double quotes"):
        read_results(path)
    # a spreadsheet's trailing separators are empty fields, not a comma left unquoted
    trailing = tmp_path / "trailing.csv"
    trailing.write_text("condition,target,seed,metric,value\n" + "".join(",".join(map(str, r)) + ",,\n" for r in _rows()))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no parser warning on the way
        assert _p(trailing) == pytest.approx(P_WANT, rel=1e-12)
    semi = _write(tmp_path / "semi.csv", ("condition", "target", "seed", "metric", "value"), _rows(), ";")
    with pytest.raises(StatsError, match=r"separated by ';'.*save it as CSV with commas"):
        read_results(semi)


def test_a_column_per_condition_gets_the_long_form_for_conditions(tmp_path):
    path = _write(tmp_path / "wide.csv", ("seed", "Related", "Unrelated"),
                  [(s, a, b) for s, a, b in zip((0, 1, 2), RELATED, UNRELATED)])
    with pytest.raises(StatsError) as exc:
        read_results(path)
    msg = str(exc.value)
    assert "a column per condition (Related, Unrelated)" in msg and "var_name='condition'" in msg, msg


def test_a_papers_summary_table_is_read_with_its_p_column_as_papers_print_it(tmp_path):
    """`significance-summary` ignored a column named p, and refused 'p < 0.001', '0.01*' and '≤0.001'."""
    from matprobe.api import significance_summary
    from matprobe.stats.summary import parse_reported_p

    assert parse_reported_p("p < 0.001") == (0.001, "<")
    assert parse_reported_p("P=0.002") == (0.002, "=")
    assert parse_reported_p("≤0.001") == (0.001, "<")
    assert parse_reported_p("0.01**") == (0.01, "=")
    with pytest.raises(StatsError, match="leave the cell empty where the paper gives none"):
        parse_reported_p("n.s.")
    path = tmp_path / "paper.csv"
    path.write_text("Comparison,Metric,Mean_A,SD_A,Mean_B,SD_B,N,p\n"
                    "Related vs Unrelated,accuracy,0.8133,0.0252,0.6600,0.0400,3,p < 0.05\n")
    got = significance_summary(path)
    (row,) = got.results.to_dict("records")
    assert row["reported_p"] == "< 0.05"
    # the paired p at r = 0: sd of the differences sqrt(sd_a² + sd_b²), n - 1 degrees of freedom
    t0 = (0.8133 - 0.6600) / ((0.0252**2 + 0.0400**2) / 3) ** 0.5
    want = 2 * stats.t.sf(t0, 2)
    assert row["p_r=0"] == pytest.approx(want, rel=1e-9)
