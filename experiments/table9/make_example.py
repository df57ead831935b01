"""Write example_results.csv: SYNTHETIC item-level results in CrossMed's design (Sec. VI).

Not real model outputs. Condition means follow CrossMed Tables V and VIII (accuracy 83.2 /
48.7 / 62.0 / 58.0 / 48.0 %, cIoU 0.75 / 0.32 / 0.54 / 0.49 / 0.37 for Related / Unrelated /
Without Modality / Anatomy / Task). Targets are CrossMed's MAT triplets (Table II): three
classification targets (accuracy, 0/1 per item) and two segmentation targets (cIoU from
per-image intersection and union in pixels). Five seeds per target. Items are shared across
conditions, with a per-item difficulty, so the pairs are correlated as real paired runs are.

Usage: python experiments/table9/make_example.py  (deterministic; seed 2026)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "example_results.csv"
ACCURACY = {"Related": 0.832, "Unrelated": 0.487, "Without Modality": 0.620,
            "Without Anatomy": 0.580, "Without Task": 0.480}
CIOU = {"Related": 0.75, "Unrelated": 0.32, "Without Modality": 0.54,
        "Without Anatomy": 0.49, "Without Task": 0.37}
CLASSIFICATION = ["X-ray/Chest/Classification", "MRI/Brain/Classification",
                  "CT/Lung/Classification"]
SEGMENTATION = ["X-ray/Chest/Segmentation", "MRI/Brain/Segmentation"]
SEEDS = 5
ITEMS_CLS = 40
ITEMS_SEG = 20


def logit(p):
    return np.log(p / (1 - p))


def main() -> None:
    rng = np.random.default_rng(2026)
    rows = []
    for target in CLASSIFICATION:
        t_eff = rng.normal(0, 0.3)
        difficulty = rng.normal(0, 1.0, ITEMS_CLS)  # same items in every condition
        for seed in range(SEEDS):
            s_eff = rng.normal(0, 0.15)
            for cond, acc in ACCURACY.items():
                p = 1 / (1 + np.exp(-(logit(acc) + t_eff + s_eff - difficulty)))
                correct = (rng.uniform(size=ITEMS_CLS) < p).astype(int)
                rows += [(cond, target, seed, f"item{i:02d}", "accuracy", c)
                         for i, c in enumerate(correct)]
    for target in SEGMENTATION:
        t_eff = rng.normal(0, 0.2)
        union = rng.uniform(2_000, 20_000, ITEMS_SEG).round()  # pixels; image sizes differ
        hardness = rng.normal(0, 0.5, ITEMS_SEG)
        for seed in range(SEEDS):
            s_eff = rng.normal(0, 0.1)
            for cond, ciou in CIOU.items():
                iou = 1 / (1 + np.exp(-(logit(ciou) + t_eff + s_eff - hardness
                                        + rng.normal(0, 0.3, ITEMS_SEG))))
                for i in range(ITEMS_SEG):
                    rows.append((cond, target, seed, f"img{i:02d}", "intersection",
                                 float(np.round(iou[i] * union[i]))))
                    rows.append((cond, target, seed, f"img{i:02d}", "union", union[i]))
    frame = pd.DataFrame(rows, columns=["condition", "target", "seed", "item", "metric",
                                        "value"])
    tmp = OUT.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    tmp.replace(OUT)
    print(f"wrote {OUT.name}: {len(frame)} rows (synthetic)")


if __name__ == "__main__":
    main()
