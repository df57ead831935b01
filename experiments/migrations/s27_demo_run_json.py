"""The committed demo's run.json after the twenty-seventh session: each checkpoint's entry records the
option its checkpoint answers most (`top_answer`) and the prompt template its items were put in
(`prompt`), as `run` now writes them (`report.design.store_record`), read from the run's
stores, which are not committed. Run from the repository root where reports/demo/stores holds the run's
stores (after `make demo`), then `matprobe report reports/demo`.
"""

import json
from pathlib import Path

from matprobe.report.design import store_record

run = Path("reports/demo")
doc = json.loads((run / "run.json").read_text())
for ck in doc["checkpoints"]:
    store = run / ck["store"]
    assert store.exists(), store
    ck.update(store_record(store))
    print(ck["name"], ck["top_answer"], ck["prompt"]["name"])
(run / "run.json").write_text(json.dumps(doc, indent=2))  # as the pipeline writes it
