"""Reproduce the significance analyses of experiments/table9 and print them as Markdown.

  (a) CrossMed Table IX layout from the synthetic example_results.csv, at each unit of
      analysis, with the MixedLM and item-level (paired bootstrap, McNemar) analyses;
  (b) CrossMed's reported means +- sd through the summary-statistics mode;
  (c) Med-MAT Table 3 (43 rows): Trained vs Baseline+, Trained vs Baseline, Baseline+ vs
      Baseline, per row and per target dataset;
  (d) Med-MAT Tables 5-8: Trained vs Baseline for each backbone.

Usage: python experiments/table9/run_all.py > experiments/table9/output.md
Deterministic (bootstrap seed 0). Accuracies are fractions in (a) and percent in (c), (d).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from matprobe.present import significance as fmt
from matprobe.stats.significance import (
    Comparison,
    compare_conditions,
    item_level_analysis,
    read_results,
)
from matprobe.stats.summary import exact_level_warning, summary_table

HERE = Path(__file__).resolve().parent
BACKBONES = {5: "NEXT-Chat", 6: "MiniGPT-v2", 7: "Qwen2-VL", 8: "Llama-3.2-Vision"}


def show(title: str, table: pd.DataFrame, index: bool = False) -> None:
    print(f"**{title}**\n\n{fmt.markdown(table, index)}\n")


def results_block(title: str, res: pd.DataFrame) -> None:
    show(f"{title}: Table IX layout (paired t-test p)", fmt.table_ix(res), index=True)
    show(f"{title}: paired statistics", fmt.detail_table(res))
    for line in fmt.notes(res):
        print(f"- {line}")
    print()


def example() -> None:
    print("## (a) CrossMed Table IX layout from example_results.csv (synthetic)\n")
    frame = read_results(HERE / "example_results.csv")
    for unit in ("target", "seed"):
        res = compare_conditions(frame, unit=unit, mixed=unit == "seed",
                                 source="example_results.csv")
        results_block(f"unit = {unit}", res)
        if unit == "seed":
            mixed = res[["comparison", "metric", "mixed_mean_diff", "mixed_se", "mixed_z",
                         "mixed_p", "mixed_n_targets"]].copy()
            mixed["mixed_p"] = [fmt.format_p(p) for p in mixed.mixed_p]
            show("MixedLM (seed-level differences, random intercept per target; z-test)",
                 mixed.round(4))
    items = item_level_analysis(frame, n_resamples=2000, seed=0, source="example_results.csv")
    show("Item level: paired bootstrap over items (cIoU recomputed as sum I / sum U per "
         "resample) and exact McNemar", fmt.item_table(items))


def crossmed_summary() -> None:
    print("## (b) CrossMed's reported mean +- sd (Tables III/V), paired p over the unknown r\n")
    print("The number of pairs behind CrossMed's +- is not stated; n is varied. Reported p "
          "from Table IX.\n")
    rows = []
    for n in (2, 3, 5, 10):
        rows += [
            ("Related vs. Unrelated", "accuracy (%)", 83.2, 1.8, 48.7, 2.1, n, "< 0.001"),
            ("Related vs. Unrelated", "cIoU", 0.75, 0.02, 0.32, 0.01, n, "< 0.001"),
            ("CT Related vs. Unrelated", "accuracy (%)", 72.0, 1.4, 50.1, 2.0, n, ""),
        ]
    frame = pd.DataFrame(rows, columns=["comparison", "metric", "mean_a", "sd_a", "mean_b",
                                        "sd_b", "n", "reported_p"])
    table = summary_table(frame, source="CrossMed Tables III/V", percent=True)  # accuracy (%) as published
    show("Paired p from summary statistics", fmt.summary_display(table, with_warning=False))
    for rec in table.itertuples():
        if rec.warning:
            print(f"- {rec.comparison}, {rec.metric}, n={rec.n}: {rec.warning}")
    print()
    print("Table IX's ablation p-values (0.002 to 0.010) come with no sds (Table VIII), so "
          "only the exact-test floor can be checked:\n")
    for n in (3, 5, 8, 10):
        warn = exact_level_warning(n, 0.002, "= 0.002") or "reachable by an exact test"
        print(f"- n = {n}: {warn}")
    print()


def medmat_tidy(table: int, columns: list[str], metric: str = "accuracy") -> pd.DataFrame:
    wide = pd.read_csv(HERE / f"medmat_table{table}.csv")
    long = wide.melt(id_vars=["row", "target_subset"], value_vars=columns,
                     var_name="condition")
    return long.assign(target=long.row.astype(str), seed="0", metric=metric)


def medmat() -> None:
    print("## (c) Med-MAT Table 3 (43 rows; accuracy in %)\n")
    comps = [Comparison("trained", "baseline_plus", "Trained vs. Baseline+"),
             Comparison("trained", "baseline", "Trained vs. Baseline"),
             Comparison("baseline_plus", "baseline", "Baseline+ vs. Baseline")]
    frame = medmat_tidy(3, ["baseline", "baseline_plus", "trained"])
    results_block("Med-MAT Table 3, unit = row (one trained model per row)",
                  compare_conditions(frame, comps, source="medmat_table3.csv"))
    # Rows sharing a target dataset share its Baseline (same untrained model, same test set),
    # so they are not independent. A target dataset is identified by its Target Subset name
    # and its Baseline accuracy (e.g. 'X-ray, Brain' at 49 and at 25 are different datasets).
    wide = pd.read_csv(HERE / "medmat_table3.csv")
    dataset = wide.target_subset + " @ baseline " + wide.baseline.astype(str)
    grouped = frame.assign(seed=frame.target, target=frame.row.map(dict(zip(wide.row, dataset))))
    res = compare_conditions(grouped, comps, unit="target", source="medmat_table3.csv")
    results_block(f"Med-MAT Table 3, unit = target dataset ({res.n_pairs.iloc[0]} datasets; "
                  "rows averaged within each)", res)
    print("## (d) Med-MAT Tables 5-8: Trained vs. Baseline per backbone (8 rows each)\n")
    frames = [medmat_tidy(t, ["baseline", "trained"], metric=f"{name} (Table {t})")
              for t, name in BACKBONES.items()]
    res = compare_conditions(pd.concat(frames, ignore_index=True),
                             [Comparison("trained", "baseline", "Trained vs. Baseline")],
                             source="medmat_table5-8.csv")
    results_block("Med-MAT Tables 5-8 (Holm/BH over the four backbones)", res)


if __name__ == "__main__":
    print("# experiments/table9: significance analyses (generated by run_all.py)\n")
    example()
    crossmed_summary()
    medmat()
