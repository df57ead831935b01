"""A merged checkpoint whose training unfroze the vision tower, and the ORIGINAL code's outputs on it.

Run with the same reference environment as make_reference.py (haotian-liu/LLaVA's code,
transformers 4.37, peft 0.4), after it:

    /tmp/llava-ref/bin/python tests/reference/llava_original/make_unfrozen_reference.py

`kit/llava-v1.5-tiny-unfrozen` is `kit/llava-v1.5-tiny-merged` (whose shards carry random
`model.vision_tower.*` weights) with `"unfreeze_mm_vision_tower": true` in its config, as LLaVA's
train.py writes it for a run with `--unfreeze_mm_vision_tower True`. With that flag the original
`CLIPVisionTower` is built before `from_pretrained` fills the model, so the checkpoint's own tower
weights are the ones used (without it they are ignored: the merged case of make_reference.py).
Writes `reference_unfrozen.npz` beside this file, in reference.npz's layout; the existing kit and
reference are not touched.
"""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import make_reference as ref  # noqa: E402 (the kit's paths, items, builder patch and reference run)

NAME = "llava-v1.5-tiny-unfrozen"


def main():
    torch.set_num_threads(1)
    import transformers

    assert transformers.__version__ == "4.37.2", transformers.__version__
    builder = ref.fp32_builder()
    src, dst = ref.KIT / "llava-v1.5-tiny-merged", ref.KIT / NAME
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["unfreeze_mm_vision_tower"] = True
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    cases: dict = {}
    ref.run_reference(builder, NAME, None, "llava_v1", cases)
    # the same items through the frozen merged checkpoint, in this run: the tower's weights must matter
    frozen: dict = {}
    ref.run_reference(builder, "llava-v1.5-tiny-merged", None, "llava_v1", frozen)
    moved = [float(np.abs(cases[f"{NAME}|llava_v1|{i}|pools"] - frozen[f"llava-v1.5-tiny-merged|llava_v1|{i}|pools"]).max())
             for i in range(len(ref.ITEMS))]
    print(f"largest |unfrozen - frozen| per item: {moved}")
    assert min(moved) > 1e-3, "the checkpoint's tower weights did not reach the features"
    meta = dict(runs=[(NAME, None, "llava_v1")], items=[[list(s), q, o] for s, q, o in ref.ITEMS],
                transformers=transformers.__version__, torch=torch.__version__, llava="llava-torch 1.2.2.post1",
                python=sys.version.split()[0])
    cases["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(ref.HERE / "reference_unfrozen.npz", **cases)


if __name__ == "__main__":
    main()
