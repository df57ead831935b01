"""The README's "study step by step", run as printed against a demo run.

The fenced block is parsed from README.md and every command is run with the working directory
at the root that holds the demo run (`reports/demo`, made by `matprobe demo --quick`, shared
with test_demo.py), so the paths are the README's own, with no substitution. One line is not
executed: `matprobe run experiments/demo/pipeline.toml` (that pipeline is the demo the fixture
just ran, in its quick form; running it again would cost a minute). `cp -r A B` is done with
shutil. Outputs are checked against the inputs, not only exit codes.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from conftest import readme_commands
from matprobe.cli import app
from matprobe.data import load_dataset
from matprobe.store import EmbeddingStore

ROOT = Path(__file__).resolve().parents[1]



def study_commands() -> list[str]:
    return readme_commands("The study step by step", first_block_only=True)


def test_readme_block_is_parsed():
    cmds = study_commands()
    assert cmds[0].startswith("matprobe data validate") and cmds[-1] == "matprobe report moved-demo"
    assert sum(c.startswith("matprobe ") for c in cmds) == len(cmds) - 1  # and one cp


def test_readme_study_runs_as_printed(quick_demo, monkeypatch):
    import torch

    torch.set_num_threads(1)
    root = quick_demo.parent.parent
    monkeypatch.chdir(root)
    runner = CliRunner()
    outputs, failed = {}, []
    for cmd in study_commands():
        argv = shlex.split(cmd)
        if argv[:2] == ["matprobe", "run"]:
            continue  # the pipeline the quick_demo fixture ran
        if argv[:2] == ["cp", "-r"]:
            shutil.copytree(argv[2], argv[3])
            continue
        assert argv[0] == "matprobe", cmd
        res = runner.invoke(app, argv[1:])
        outputs[cmd] = res.output
        if res.exit_code != 0:
            failed.append((argv[1], cmd, res.output[-600:]))
    assert not failed, failed

    # 1. the split: the target triplet is the test split, the Related triplets the training one
    split = load_dataset(root / "related.jsonl")
    target = ("MRI", "Brain", "Exposure")
    assert {s.split for s in split if s.triplet == target} == {"test"}
    assert all(sum(a == b for a, b in zip(s.triplet, target)) == 2 for s in split if s.split == "train")

    # 2. stores: every sample of the manifest, blocks 1 and 3, both pools, with answers
    n = len(load_dataset(root / "reports/demo/data/manifest.jsonl"))
    for name in ("related-s0.h5", "unrelated-s0.h5"):
        with EmbeddingStore.open(root / name) as st:
            assert st.n == n and st.done.all()
            assert sorted(st.feature_keys()) == [("1", "image"), ("1", "last"), ("3", "image"), ("3", "last")]
            assert (st.answers()["pred"] >= 0).all()

    # 3. the chain: full term names, both estimators, intervals around the estimates
    mi = json.loads((root / "mi.json").read_text())
    short = {"modality": "M", "anatomy": "A", "task": "T"}  # terms are named as --factors spells them
    terms = {(re.sub(r"[a-z]+", lambda m: short.get(m.group(0), m.group(0)), t["term"]), t["estimator"])
             for t in mi["terms"]}
    assert terms == {(t, e) for t in ("I(Z;M)", "I(Z;A|M)", "I(Z;T|M,A)") for e in ("probe", "ksg")}
    assert all(t["ci_low"] <= t["estimate"] <= t["ci_high"] for t in mi["terms"] if t["estimator"] == "probe")

    # 3b. the baselines: every term's control task, online code and permutation null (B = 9)
    base = json.loads((root / "mi-baselines.json").read_text())
    assert base["settings"]["permutations"] == 9 and base["settings"]["controls"] and base["settings"]["codelength"]
    for t in base["terms"]:
        assert t["permutation"]["p_value"] in [k / 10 for k in range(1, 11)] and len(t["permutation"]["null"]) == 9
        assert t["control"]["ci_low"] <= t["control"]["selectivity"] <= t["control"]["ci_high"]
        assert t["codelength"]["uniform_bits"] > 0
    modality = base["terms"][0]  # modality is in every checkpoint's Z: beyond every baseline
    assert modality["permutation"]["p_value"] == 0.1 and modality["control"]["ci_low"] > 0
    assert modality["codelength"]["compression"] > 1

    # 5. the sweep: both stores x both layers x three terms at pool last
    sweep = pd.read_csv(root / "sweep.csv")
    assert len(sweep.groupby(["store", "layer", "term"])) == 2 * 2 * 3
    assert set(sweep["pool"]) == {"last"}

    # 6. the moved copy re-reports to the same report
    assert (root / "moved-demo" / "report.md").read_text() == (quick_demo / "report.md").read_text()

    # 4. check estimated the answer term itself (mi.json has M, A, T only)
    check = json.loads((root / "check.json").read_text())
    assert all(s.get("mi") for s in check["strata"]), "check should estimate I(Z;Y|M,A,T) per stratum"
    table9 = (root / "table9.md").read_text()
    assert "Related vs. Unrelated" in table9
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(table9)
    heads = [t for t in tokens if t.type == "th_open"]
    for tok in tokens:
        if tok.type == "table_open":
            lines = table9.splitlines()[tok.map[0]:tok.map[1]]
            counts = {len(re.split(r"(?<!\\)\|", ln.strip().strip("|"))) for ln in lines if "---" not in ln}
            assert len(counts) == 1, lines
    assert heads


def test_readme_quotes_the_committed_demo_report_verbatim():
    # the summary the README quotes ("> - ..." lines) is the committed report's, line for line:
    # a demo rerun that changes the report must change the README with it
    readme = (ROOT / "README.md").read_text().splitlines()
    quoted = [line[2:] for line in readme if line.startswith("> - ")]
    report = (ROOT / "reports/demo/report.md").read_text().splitlines()
    summary = [line for line in report if line.startswith("- ")]
    assert len(quoted) >= 5
    assert quoted == summary[: len(quoted)]
