"""The committed demo's significance.csv after the twenty-seventh session's change of `run`'s unit of
analysis: the run now pairs each metric as `matprobe significance` does on the same results.csv
(`stats.significance.metric_units`: by target where a metric is measured on two or more targets, else
by seed), where it paired by seed always. Recomputed from the committed results.csv with the
pipeline's own function; run from the repository root, then `matprobe report reports/demo`.
"""

from pathlib import Path

import pandas as pd

from matprobe.io import atomic_path
from matprobe.pipeline import load_pipeline, significance_table

run = Path("reports/demo")
cfg = load_pipeline("experiments/demo/pipeline.toml")
results = pd.read_csv(run / "results.csv", keep_default_na=False, na_values=[""])
table, untested = significance_table(results, cfg)
assert not untested, untested
before = pd.read_csv(run / "significance.csv")
with atomic_path(run / "significance.csv") as tmp:
    table.to_csv(tmp, index=False)
after = pd.read_csv(run / "significance.csv")
for b, a in zip(before.itertuples(), after.itertuples()):
    print(f"{a.comparison} {a.metric}: unit {b.unit} -> {a.unit}, p {b.p:.4g} -> {a.p:.4g}")
