"""The committed demo's run.json after the twenty-seventh session: each checkpoint's entry records the
prompt template its items were put in (`report.design.prompt_of`, as `run` now writes it), read from the
run's stores, which are not committed. Run from the repository root where reports/demo/stores holds the
run's stores (after `make demo`), then `matprobe report reports/demo`.
"""

import json
from pathlib import Path

from matprobe.report.design import prompt_of

run = Path("reports/demo")
doc = json.loads((run / "run.json").read_text())
for ck in doc["checkpoints"]:
    store = run / ck["store"]
    assert store.exists(), store
    ck["prompt"] = prompt_of(store)
    print(ck["name"], ck["prompt"]["name"])
(run / "run.json").write_text(json.dumps(doc, indent=2))  # as the pipeline writes it
