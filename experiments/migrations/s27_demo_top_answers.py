"""The committed demo's run.json after the twenty-seventh session: each checkpoint's entry records the
option its checkpoint answers most (`report.design.top_answer`, as `run` now writes it), read from the
run's stores, which are not committed; the report's one-option warnings then need no store. Run from
the repository root where reports/demo/stores holds the run's stores (after `make demo`), then
`matprobe report reports/demo`.
"""

import json
from pathlib import Path

from matprobe.report.design import top_answer

run = Path("reports/demo")
doc = json.loads((run / "run.json").read_text())
for ck in doc["checkpoints"]:
    store = run / ck["store"]
    assert store.exists(), store
    ck["top_answer"] = top_answer(store)
    print(ck["name"], ck["top_answer"])
(run / "run.json").write_text(json.dumps(doc, indent=2))  # as the pipeline writes it
