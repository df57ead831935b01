"""The committed demo check files after the twenty-sixth session's check changes, from their own inputs.

Part 1 (per-stratum MI bound/note, theory.check._mi_value from the MI files each check names) ran first,
then part 2 (pac.heldout named as the held-out target's rows where a run's split = test rows are exactly
them). Run from the repository root on the files before those changes; then `matprobe report reports/demo`.
"""

# ---- part 1
import json
from pathlib import Path

from matprobe.data.design import stratum_key
from matprobe.theory import check as C

changed = 0
for p in sorted(Path("reports/demo/check").glob("*.json")):
    d = json.loads(p.read_text())
    mi_path = Path(d["mi"])
    if not mi_path.exists():
        mi_path = Path("reports/demo") / d["mi"]
    mi = json.loads(mi_path.read_text())
    strata_mi, terms = C._mi_entries(mi, frozenset())
    entries = strata_mi.get(d["target"], {})
    unit = mi.get("unit", "nats")
    for row in d["strata"]:
        if row.get("mi_source") != "stratum":
            continue
        e = entries[stratum_key(row["given"], frozenset())]
        v = C._mi_value(e, unit, row["h_y"])
        for k in ("estimate", "ci_low", "ci_high"):
            assert abs(v[k] - row["mi"][k]) < 1e-12, (p, k, v[k], row["mi"][k])
        if "bound" in v:
            row["mi"]["bound"], row["mi"]["note"] = v["bound"], v["note"]
            changed += 1
    C.write_check(d, p)
print("strata marked one-sided:", changed)

# ---- part 2
run = json.loads(Path("reports/demo/run.json").read_text())
for ck in run["checkpoints"]:
    path = Path(ck["check"]) if Path(ck["check"]).exists() else Path("reports/demo") / ck["check"]
    d = json.loads(path.read_text())
    target = tuple(ck["target"])
    n_target = [s["n"] for s in d["strata"] if tuple(s["given"][f] for f in ("modality", "anatomy", "task")) == target]
    assert d["pac"]["heldout"] == "rows with split = test" and n_target == [d["pac"]["m"]], (path, n_target)
    d["pac"]["heldout"] = f"rows of the held-out target {' / '.join(target)} (split = test in the store)"
    C.write_check(d, path)
    print(path, d["pac"]["m"])
