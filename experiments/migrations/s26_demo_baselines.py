"""Rewrite the committed demo's MI files' control-task and permutation-null entries on the reported
(clipped) scale of `mi.controls` (twenty-sixth session), from what each entry stored: the control's raw
estimate and interval, the raw paired interval and p, the raw null estimates. A fresh run computes the
same numbers from the same raw ones; the raw ones are kept under their `*_raw` names.

    python experiments/migrations/s26_demo_baselines.py   # from the repository root, then
    matprobe report reports/demo
"""
import json
from pathlib import Path

import numpy as np

from matprobe.mi.controls import bounded_selectivity
from matprobe.mi.interface import MIEstimate


def estimate(value, lo, hi, level, raw):
    return MIEstimate(value=value, ci_low=lo, ci_high=hi, ci_level=level, unit="nats", n_train=0, n_eval=0,
                      estimator="probe", params={}, diagnostics={"raw": raw})


def migrate(term: dict) -> bool:
    changed = False
    c = term.get("control")
    if isinstance(c, dict) and "control_raw" not in c:
        observed = estimate(term["estimate"], term["ci_low"], term["ci_high"], c["ci_level"],
                            (term["estimate"], term["ci_low"], term["ci_high"]))
        ctrl_value = min(max(c["control"], 0.0), c["control_ci"][1])  # clipped as the estimator clips it
        ctrl = estimate(ctrl_value, c["control_ci"][0], c["control_ci"][1], c["ci_level"],
                        (c["control"], *c["control_ci"]))
        sel, lo, hi, p, notes = bounded_selectivity(observed, ctrl, c["ci_low"], c["ci_high"], c["p_value"],
                                                    c["ci_level"])
        c.update(control_raw=c["control"], selectivity_raw=c["selectivity"], ci_low_raw=c["ci_low"],
                 ci_high_raw=c["ci_high"], control=ctrl_value, selectivity=sel, ci_low=lo, ci_high=hi, p_value=p,
                 notes=[*c["notes"][:1], *notes])
        changed = True
    n = term.get("permutation")
    if isinstance(n, dict) and "null_mean_raw" not in n:
        shown = [min(max(x, 0.0), term["h_upper"]) for x in n["null"]]
        n.update(null_mean_raw=n["null_mean"], excess_raw=n["excess"], null_mean=float(np.mean(shown)),
                 excess=term["estimate"] - float(np.mean(shown)))
        changed = True
    return changed


if __name__ == "__main__":
    for path in sorted(Path("reports/demo/mi").glob("*.json")):
        doc = json.loads(path.read_text())
        terms = doc["terms"] if isinstance(doc["terms"], list) else [t for ts in doc["terms"].values() for t in ts]
        if sum(migrate(t) for t in terms):
            path.write_text(json.dumps(doc, indent=2))
            print("rewrote", path)
