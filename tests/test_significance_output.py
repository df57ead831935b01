"""Table IX layout, output files by suffix, and the CLI commands."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from matprobe.cli import app
from matprobe.errors import StatsError
from matprobe.present.significance import format_p, table_ix, table_ix_column, write_output
from matprobe.stats.significance import compare_conditions


def results_frame(seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for cond, mu in (("Related", 83.0), ("Unrelated", 49.0), ("Without Modality", 80.0),
                     ("Without Anatomy", 58.0), ("Without Task", 48.0)):
        for t in range(4):
            for s in range(2):
                rows.append((cond, f"target{t}", s, "accuracy", mu + rng.normal(0, 3)))
                rows.append((cond, f"target{t}", s, "cIoU", mu / 100 + rng.normal(0, 0.03)))
    return pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"])


def test_format_p_as_table_ix():
    assert format_p(0.0004) == "< 0.001"
    assert format_p(0.001) == "0.001"
    assert format_p(0.0123) == "0.012"
    assert format_p(float("nan")) == "n/a"


def test_table_ix_layout():
    res = compare_conditions(results_frame())
    table = table_ix(res)
    assert list(table.index) == ["Related vs. Unrelated", "Without Modality vs. Related",
                                 "Without Anatomy vs. Related", "Without Task vs. Related"]
    assert list(table.columns) == ["Classification (accuracy)", "Segmentation (cIoU)"]
    for _, row in res.iterrows():
        assert table.loc[row.comparison, table_ix_column(row.metric)] == format_p(row.p)


def test_outputs_by_suffix(tmp_path):
    res = compare_conditions(results_frame())
    back = pd.read_csv(write_output(res, tmp_path / "t.csv"))
    np.testing.assert_array_equal(back.p.to_numpy(), res.p.to_numpy())  # %.17g round trip
    md = write_output(res, tmp_path / "t.md").read_text()
    assert "| Related vs. Unrelated | " + format_p(res.p[0]) in md
    tex = write_output(res, tmp_path / "t.tex").read_text()
    assert r"\begin{tabular}" in tex and "$<$ 0.001" in tex
    with pytest.raises(StatsError, match="unknown output type '.xlsx'"):
        write_output(res, tmp_path / "t.xlsx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv", "t.md", "t.tex"]


def test_cli_significance_and_errors(tmp_path):
    frame = results_frame()
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    runner = CliRunner()
    out = tmp_path / "table9.md"
    result = runner.invoke(app, ["significance", str(path), "--percent", "--unit", "seed", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Without Task vs. Related" in result.output
    assert "Unit of analysis: seed" in out.read_text()
    frame[frame.condition != "Unrelated"].to_csv(path, index=False)
    # default: the Table IX comparisons whose conditions are present (3 of 4), said so
    result = runner.invoke(app, ["significance", str(path), "--percent", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert "Related vs. Unrelated" not in result.stdout and "Without Task vs. Related" in result.stdout
    assert "3 of 4; no condition 'Unrelated'" in result.stderr
    spec = tmp_path / "spec.txt"
    spec.write_text("Related vs Unrelated\n")
    result = runner.invoke(app, ["significance", str(path), "--percent", "--spec", str(spec)])
    assert result.exit_code == 2
    assert "error:" in result.output and "condition 'Unrelated'" in result.output


def test_cli_significance_summary(tmp_path):
    path = tmp_path / "summary.csv"
    path.write_text("comparison,metric,mean_a,sd_a,mean_b,sd_b,n,reported_p\n"
                    "Related vs. Unrelated,accuracy,83.2,1.8,48.7,2.1,3,< 0.001\n")
    result = CliRunner().invoke(app, ["significance-summary", str(path), "--percent", "--out",
                                      str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    assert "cannot give p below 0.25" in " ".join(result.output.split())
    assert pd.read_csv(tmp_path / "s.csv").n.iloc[0] == 3


def test_cli_spec_metric_and_csv(tmp_path):
    from scipy import stats

    frame = results_frame(1)
    path = tmp_path / "results.csv"
    frame.to_csv(path, index=False)
    spec = tmp_path / "spec.txt"
    spec.write_text("Without Task vs Unrelated\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["significance", str(path), "--percent", "--spec", str(spec),
                                      "--metric", "accuracy", "--out", str(out)])
    assert result.exit_code == 0, result.output
    back = pd.read_csv(out)
    assert len(back) == 1 and back.comparison[0] == "Without Task vs Unrelated"
    means = frame[frame.metric == "accuracy"].groupby(["condition", "target"]).value.mean()
    ref = stats.ttest_rel(means["Without Task"], means["Unrelated"])
    assert back.p[0] == pytest.approx(ref.pvalue, rel=1e-10) and back.df[0] == 3


def test_wilcoxon_note_names_the_rows_of_each_variant():
    # one metric equal in every pair, another not: the note read "exact; no non-zero differences",
    # as if no row had a non-zero difference; each variant now names its rows
    from matprobe.present.significance import notes
    from matprobe.stats.significance import Comparison

    rows = []
    for seed, (acc, mi) in enumerate(((0.5, 0.10), (0.5, 0.13), (0.5, 0.11))):
        rows += [("Related", "t", seed, "accuracy", acc), ("Unrelated", "t", seed, "accuracy", acc),
                 ("Related", "t", seed, "mi", mi), ("Unrelated", "t", seed, "mi", mi - 0.01 * (seed + 1))]
    res = compare_conditions(pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"]),
                             [Comparison("Related", "Unrelated")], unit="seed")
    line = next(n for n in notes(res) if n.startswith("Wilcoxon"))
    assert line == ("Wilcoxon signed-rank p: exact (Related vs Unrelated, mi); no non-zero differences "
                    "(Related vs Unrelated, accuracy) (an exact p is never below 2^(1-n) for n non-zero pairs)")


def test_seeds_are_said_to_be_nested_only_across_several_targets():
    # a study of one target printed "seeds nested in targets are treated as independent pairs":
    # there the seeds are the replicates; across targets they are nested in them
    from matprobe.stats.significance import Comparison

    def warnings_of(targets):
        rows = [(cond, t, s, "accuracy", 0.5 + 0.1 * (cond == "Related") + 0.01 * s * (k + 1))
                for k, t in enumerate(targets) for s in range(3) for cond in ("Related", "Unrelated")]
        res = compare_conditions(pd.DataFrame(rows, columns=["condition", "target", "seed", "metric", "value"]),
                                 [Comparison("Related", "Unrelated")], unit="seed")
        return str(res["warning"].iloc[0])

    assert "nested" not in warnings_of(["t1"])
    assert "seeds nested in targets are treated as independent pairs" in warnings_of(["t1", "t2"])
