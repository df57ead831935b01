"""What original-format LLaVA studies are refused for, and when (a README-only study of LoRA runs).

- the CLIP tower in every key layout transformers writes (a whole CLIPModel, a CLIPVisionModel saved
  before transformers 5 with `vision_model.*` keys, one saved by transformers 5 without them) loads
  and computes what transformers computes; `init` refuses exactly the towers `extract` refuses;
- segmentation items shown as several images to a model that takes one (original LLaVA) are refused
  before any store is written, naming the first such item, the count and the fix in the caller's
  words (`--rendering grid`, `[extract] rendering = "grid"`); `init` writes that setting;
- `run` names every store of the run made with other settings in one line, before extracting;
- a LoRA run without non_lora_trainables.bin (whatever its base), or a trainer's checkpoint-N
  folder of one, is refused naming the files and the folder that has them;
- a run missing both its base and its tower is told both at once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from matprobe.errors import ExtractError
from test_llava_original import KIT, TOWER, _cli
from test_llava_original import _study as _original_study
from test_segmentation import write_seg_manifest

torch.set_num_threads(1)
LORA = KIT / "llava-v1.5-tiny-lora"
BASE = KIT / "vicuna-tiny"


# ------------------------------------------------------------------ towers in every key layout

def _towers(root: Path) -> dict[str, tuple[Path, torch.nn.Module]]:
    """{layout: (folder, the transformers vision model whose weights it holds)}: saved by transformers'
    own save_pretrained (a CLIPVisionModel, a whole CLIPModel) and, for the layout of older versions, the
    vision model's weights under `vision_model.`; each with the kit tower's config and processor."""
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel

    vcfg = CLIPVisionConfig.from_pretrained(TOWER)
    torch.manual_seed(0)
    vision = CLIPVisionModel(vcfg).eval()
    vision.save_pretrained(root / "vision")
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=50,
                max_position_embeddings=8)
    whole = CLIPModel(CLIPConfig(text_config=text, vision_config=vcfg.to_dict(), projection_dim=16)).eval()
    whole.save_pretrained(root / "whole")
    prefixed = root / "prefixed"
    vision.config.save_pretrained(prefixed)
    state = {k if k.startswith("vision_model.") else "vision_model." + k: v.contiguous()
             for k, v in vision.state_dict().items()}
    save_file(state, prefixed / "model.safetensors")
    for name in ("vision", "whole", "prefixed"):
        shutil.copy(TOWER / "preprocessor_config.json", root / name)
    return {"vision": (root / "vision", vision), "whole": (root / "whole", whole.vision_model),
            "prefixed": (prefixed, vision)}


def _keys(folder: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        return list(f.keys())


def test_every_tower_layout_loads_and_equals_the_transformers_forward(tmp_path):
    from matprobe.extract.original_llava import load_tower

    towers = _towers(tmp_path)
    keys = {name: _keys(folder) for name, (folder, _) in towers.items()}
    # the layouts are what they claim: transformers 5 saves a CLIPVisionModel without the prefix
    assert not any(k.startswith("vision_model.") for k in keys["vision"]) and "embeddings.class_embedding" in keys["vision"]
    assert any(k.startswith("text_model.") for k in keys["whole"])
    assert all(k.startswith("vision_model.") for k in keys["prefixed"])
    pixels = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    for name, (folder, reference) in towers.items():
        tower = load_tower(folder, 32)
        with torch.no_grad():
            got = tower(pixels, output_hidden_states=True)
            want = reference(pixels, output_hidden_states=True)
        for layer in (-2, -1):  # LLaVA's select layer, and the last
            torch.testing.assert_close(got.hidden_states[layer], want.hidden_states[layer], rtol=0, atol=0,
                                       msg=name)
    from matprobe.extract.original_llava import check_tower  # init's check, without the tensors

    for folder, _ in towers.values():
        check_tower(folder, 32)


def test_a_tower_missing_a_weight_is_refused_alike_by_the_check_and_the_load(tmp_path):
    from safetensors.torch import load_file, save_file

    from matprobe.extract.original_llava import check_tower, load_tower

    folder, _ = _towers(tmp_path)["vision"]
    state = load_file(folder / "model.safetensors")
    del state["post_layernorm.weight"]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ExtractError) as checked:
        check_tower(folder, 32)
    with pytest.raises(ExtractError) as loaded:
        load_tower(folder, 32)
    assert str(checked.value) == str(loaded.value)
    assert "1 of its 55 weight(s) missing, first 'post_layernorm.weight'" in str(checked.value)


# ------------------------------------------------------------------ a study with segmentation items

def _study(root: Path, segmentation: bool = True) -> Path:
    """`test_llava_original._study` (two LoRA runs named by condition and seed; a held-out triplet, a
    related and an unrelated one, 10 rows each) with 3 segmentation items of a fourth triplet."""
    root.mkdir(parents=True, exist_ok=True)
    path = _original_study(root, {"meta": np.load(KIT.parent / "reference.npz")["meta"]})
    if segmentation:
        seg = write_seg_manifest(root / "seg", n=3)
        rows = []
        for line in seg.read_text().splitlines():
            rec = json.loads(line)
            rec["image"] = str(root / "seg" / rec["image"])
            rec["option_masks"] = [str(root / "seg" / m) for m in rec["option_masks"]]
            rows.append(rec)
        with path.open("a") as fh:
            fh.write("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _init(root: Path, data: Path, *extra) -> tuple:
    toml = root / "study.toml"
    args = ["init", root / "ckpts" / "related-s0", root / "ckpts" / "unrelated-s0", "--data", data,
            "--target", "MRI,Head,Orientation", "--seeds", "1", "--folds", "2", "--out", toml, *extra]
    return _cli(args), toml


def test_init_checks_the_tower_as_extract_loads_it(tmp_path):
    """A tower saved by transformers 5 (no `vision_model.` prefix) is accepted by init and extract
    alike; one missing a weight, which extract refuses, init refuses first, writing nothing."""
    from safetensors.torch import load_file, save_file

    data = _study(tmp_path, segmentation=False)
    folder, _ = _towers(tmp_path / "towers")["vision"]
    res, toml = _init(tmp_path, data, "--base", BASE, "--vision-tower", folder)
    assert res.exit_code == 0, res.output
    assert "rendering" not in toml.read_text()  # no segmentation items: the default rendering stays
    toml.unlink()
    state = load_file(folder / "model.safetensors")
    del state["embeddings.class_embedding"]
    save_file(state, folder / "model.safetensors")
    res, toml = _init(tmp_path, data, "--base", BASE, "--vision-tower", folder)
    assert res.exit_code == 2 and not toml.exists(), res.output
    assert "weight(s) missing, first 'embeddings.class_embedding'" in res.output, res.output


def test_extract_refuses_several_images_for_a_one_image_model_before_writing(tmp_path):
    data = _study(tmp_path)
    out = tmp_path / "lora.h5"
    args = ["extract", "--ckpt", tmp_path / "ckpts" / "related-s0", "--base", BASE, "--vision-tower", TOWER,
            "--data", data, "--out", out, "--layers", "-1", "--pool", "last"]
    res = _cli(args)
    assert res.exit_code == 2 and not out.exists(), res.output
    line = " ".join(res.output.split())
    assert line.startswith("error:") and "3 segmentation item(s)" in line and "first 'seg0'" in line, line
    assert "5 images each" in line and "take one image per prompt" in line and "pass --rendering grid" in line, line


def test_init_writes_the_grid_and_run_refuses_several_images_before_anything(tmp_path):
    import tomllib

    from matprobe.pipeline import load_pipeline

    data = _study(tmp_path)
    res, toml = _init(tmp_path, data, "--base", BASE, "--vision-tower", TOWER)
    assert res.exit_code == 0, res.output
    text = toml.read_text()
    assert tomllib.loads(text)["extract"]["rendering"] == "grid"
    line = next(x for x in text.splitlines() if x.startswith("rendering"))
    assert "3 segmentation items" in line and "one image per prompt" in line, line  # says why
    assert load_pipeline(toml).rendering == "grid"
    multi = tmp_path / "multi.toml"
    multi.write_text("\n".join(x for x in text.splitlines() if not x.startswith("rendering")).replace(
        "study-run", "multi-run"))
    res = _cli(["run", multi])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert "[[checkpoints]] 'related-s0' (and 1 more)" in line and "first 'seg0'" in line, line
    assert "3 segmentation item(s)" in line and 'set [extract] rendering = "grid"' in line, line
    assert not (tmp_path / "multi-run").exists()


def test_run_names_every_store_made_with_other_settings_at_once(tmp_path):
    """Two of the run's stores made with another rendering (and one with the same settings): one line
    names both and the fix, before anything is extracted or written."""
    from matprobe.preflight import check_pipeline
    from matprobe.store import EmbeddingStore

    data = _study(tmp_path)
    res, toml = _init(tmp_path, data, "--base", BASE, "--vision-tower", TOWER)
    assert res.exit_code == 0, res.output
    stores = tmp_path / "study-run" / "stores"
    stores.mkdir(parents=True)
    prov = {"pools": ["last"], "dtype": "fp32", "device_type": "cpu", "num_decoder_layers": 3, "layers": ["2"]}
    for name, rendering in (("related-s0", "multi-image"), ("unrelated-s0", "multi-image"), ("other", "grid")):
        EmbeddingStore.from_arrays(stores / f"{name}.h5", ["a", "b"], {"task": ["x", "y"]},
                                   {("2", "last"): np.zeros((2, 4), np.float32)},
                                   provenance={**prov, "segmentation_rendering": {"name": rendering}}).close()
    before = {p.name: p.stat().st_mtime_ns for p in stores.iterdir()}
    res = _cli(["run", toml])
    assert res.exit_code == 2, res.output
    line = " ".join(res.output.split())
    assert "2 of its stores" in line and "related-s0.h5, unrelated-s0.h5" in line, line
    assert "rendering 'multi-image' stored, 'grid' asked" in line and "delete those store files" in line, line
    assert {p.name: p.stat().st_mtime_ns for p in stores.iterdir()} == before
    assert not (tmp_path / "study-run" / "data").exists()  # nothing extracted, no condition manifest
    # the same settings (layers as the model counts them, pools, dtype): nothing to say
    from matprobe.pipeline import load_pipeline

    for name in ("related-s0", "unrelated-s0"):
        (stores / f"{name}.h5").unlink()
    EmbeddingStore.from_arrays(stores / "related-s0.h5", ["a"], {"task": ["x"]},
                               {("2", "last"): np.zeros((1, 4), np.float32)},
                               provenance={**prov, "segmentation_rendering": {"name": "grid"}}).close()
    check_pipeline(load_pipeline(toml))


# ------------------------------------------------------------------ a run's pieces and inputs

@pytest.mark.parametrize("base", [BASE, KIT / "llava-v1.5-tiny"], ids=["language-model", "whole-llava"])
def test_lora_run_without_non_lora_trainables_names_that_file(tmp_path, base):
    """LLaVA's builder reads the projector from the run's non_lora_trainables.bin (else it fetches one
    from the hub): on a whole LLaVA as base (task LoRA) the base's own projector was used silently."""
    from matprobe.extract.checkpoints import load_model

    run = shutil.copytree(LORA, tmp_path / "lora-run")
    (run / "non_lora_trainables.bin").unlink()
    with pytest.raises(ExtractError, match=r"no non_lora_trainables\.bin; LLaVA's train.py writes it into the run's "
                                           r"top folder.*copy non_lora_trainables\.bin from it into"):
        load_model(run, base=base, vision_tower=TOWER)


def test_a_trainers_checkpoint_folder_of_a_lora_run_is_refused_by_init_and_extract(tmp_path):
    """The Hugging Face trainer's checkpoint-500 of a LLaVA LoRA run holds the adapter only: extract
    stopped on an AttributeError, and init accepted it."""
    data = _study(tmp_path, segmentation=False)
    step = tmp_path / "ckpts" / "related-s0" / "checkpoint-500"
    step.mkdir()
    for name in ("adapter_config.json", "adapter_model.bin"):
        shutil.copy(LORA / name, step / name)
    want = (f"checkpoint {step}: no config.json and no non_lora_trainables.bin; LLaVA's train.py writes them "
            "into the run's top folder")
    res = _cli(["extract", "--ckpt", KIT / "llava-v1.5-tiny", "--adapter", step, "--vision-tower", TOWER,
                "--data", data, "--out", tmp_path / "z.h5", "--layers", "-1"])
    assert res.exit_code == 2 and want in " ".join(res.output.split()), res.output
    assert not (tmp_path / "z.h5").exists()
    toml = tmp_path / "study.toml"
    res = _cli(["init", f"related-s0={step}", f"unrelated-s0={tmp_path / 'ckpts' / 'unrelated-s0'}", "--data", data,
                "--target", "MRI,Head,Orientation", "--base", KIT / "llava-v1.5-tiny", "--vision-tower", TOWER,
                "--out", toml])
    assert res.exit_code == 2 and want in " ".join(res.output.split()), res.output
    assert not toml.exists()


def test_a_run_missing_its_base_and_tower_is_told_both_at_once(tmp_path):
    data = _study(tmp_path, segmentation=False)
    res, toml = _init(tmp_path, data)
    assert res.exit_code == 2 and not toml.exists(), res.output
    line = " ".join(res.output.split())
    assert "pass --base DIR" in line and "pass --vision-tower DIR" in line, line
    res = _cli(["extract", "--ckpt", tmp_path / "ckpts" / "related-s0", "--data", data, "--out",
                tmp_path / "z.h5", "--layers", "-1"])
    line = " ".join(res.output.split())
    assert res.exit_code == 2 and "pass --base DIR" in line and "pass --vision-tower DIR" in line, line
    # one of them given: only the other is asked for
    res, _ = _init(tmp_path, data, "--vision-tower", TOWER)
    assert res.exit_code == 2 and "pass --base DIR" in res.output and "--vision-tower" not in res.output


# ------------------------------------------------------------------ the folder, the base or the config at fault

def _one_file_base(root: Path, name: str, edit) -> Path:
    """vicuna-tiny saved as one pytorch_model.bin after `edit(state) -> (state, config changes)`."""
    from matprobe.extract.original_llava import read_weights

    d = root / name
    d.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "config.json"):
        shutil.copy(BASE / f, d / f)
    state, changes = edit(read_weights(BASE))
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **changes}))
    torch.save(state, d / "pytorch_model.bin")
    return d


def test_a_wrong_base_is_named_as_the_base_not_the_run(tmp_path):
    """A pretraining run on a language model of another shape was blamed on the run ('the config and
    weights disagree', 'download every shard')."""
    from matprobe.extract.checkpoints import load_model

    run = KIT / "llava-v1.5-tiny-pretrain"
    fewer = _one_file_base(tmp_path, "two-layers", lambda s: ({k: v for k, v in s.items() if ".layers.2." not in k},
                                                              {"num_hidden_layers": 2}))
    with pytest.raises(ExtractError, match=rf"--base {fewer}: 9 weight\(s\) the run's config.json needs are missing.*"
                                           r"pass the language model the run at .* was trained on"):
        load_model(run, base=fewer, vision_tower=TOWER)

    def wider(s):
        s = dict(s)
        s["model.embed_tokens.weight"] = torch.cat([s["model.embed_tokens.weight"], torch.zeros(10, 32)])
        s["lm_head.weight"] = torch.cat([s["lm_head.weight"], torch.zeros(10, 32)])
        return s, {"vocab_size": 410}

    vocab = _one_file_base(tmp_path, "vocab410", wider)
    with pytest.raises(ExtractError, match=rf"--base {vocab}: model.embed_tokens.weight has shape \(410, 32\), the "
                                           r"config.json of the run at .* says \(400, 32\)"):
        load_model(run, base=vocab, vision_tower=TOWER)


def test_a_projector_type_the_weights_do_not_have_is_named(tmp_path):
    run = shutil.copytree(KIT / "llava-v1.5-tiny", tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["mm_projector_type"] == "mlp2x_gelu"
    (run / "config.json").write_text(json.dumps({**cfg, "mm_projector_type": "linear"}))
    from matprobe.extract.checkpoints import load_model

    with pytest.raises(ExtractError, match=r"config.json says mm_projector_type 'linear', but the projector weights "
                                           r"are another type's \(they hold model.mm_projector.0"):
        load_model(run, vision_tower=TOWER)


def test_a_pretraining_run_whose_projector_is_in_a_checkpoint_names_where(tmp_path):
    """Its top has a config and no weights: 'a whole model; drop --base' with --base, 'no weights files'
    without. LLaVA's trainer saves checkpoint-N/{config.json, mm_projector.bin}, or
    mm_projector/checkpoint-N.bin from a checkpoint-N output."""
    pre = KIT / "llava-v1.5-tiny-pretrain"
    run = tmp_path / "run"
    for step in (500, 1000):
        (run / f"checkpoint-{step}").mkdir(parents=True)
        for f in ("config.json", "mm_projector.bin"):
            shutil.copy(pre / f, run / f"checkpoint-{step}" / f)
    shutil.copy(pre / "config.json", run / "config.json")
    for base in (None, BASE):
        args = ["extract", "--ckpt", run, "--vision-tower", TOWER, "--data", tmp_path / "none.jsonl",
                "--out", tmp_path / "z.h5", *(["--base", base] if base else [])]
        line = " ".join(_cli(args).output.split())
        assert (f"checkpoint {run}: no weights at its top; its projector is in checkpoint-1000/mm_projector.bin "
                f"(a pretraining run's checkpoint): pass {run / 'checkpoint-1000'} as the checkpoint") in line, line
    saved = tmp_path / "saved"
    (saved / "mm_projector").mkdir(parents=True)
    shutil.copy(pre / "config.json", saved / "config.json")
    shutil.copy(pre / "mm_projector.bin", saved / "mm_projector" / "checkpoint-1000.bin")
    from matprobe.extract.checkpoints import load_model

    with pytest.raises(ExtractError, match=r"its projector is mm_projector/checkpoint-1000.bin.*copy it to "
                                           rf"{saved / 'mm_projector.bin'}"):
        load_model(saved, base=BASE, vision_tower=TOWER)
    # done as it says: the run's projector on its base, as the kit's projector-only run loads
    shutil.copy(saved / "mm_projector" / "checkpoint-1000.bin", saved / "mm_projector.bin")
    assert load_model(saved, base=BASE, vision_tower=TOWER).info["layout"] == "projector-only"


def test_an_item_past_the_checkpoints_length_is_named_by_its_id_and_the_rows_before_it_kept(tmp_path):
    """The refusal quoted the question's first words, not the item, and said nothing of the store."""
    image = KIT / "images" / "item0.png"
    rows = [{"id": f"short{i}", "image": str(image), "question": "Which organ?", "options": ["lung", "liver"],
             "answer": i % 2, "modality": "CT", "anatomy": "Chest", "task": "Organ"} for i in range(2)]
    rows.append({**rows[0], "id": "long-one", "question": "describe " * 2100})
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = _cli(["extract", "--ckpt", KIT / "llava-v1.5-tiny", "--vision-tower", TOWER, "--data", data,
                "--out", tmp_path / "z.h5", "--layers", "-1", "--batch-size", "1"])
    line = " ".join(res.output.split())
    assert res.exit_code == 2, res.output
    assert "item 'long-one': question 'describe describe" in line and "tokenizer_model_max_length 2048" in line, line
    assert f"2 of 3 rows are finished in {tmp_path / 'z.h5'}: fix it and rerun the same command to resume" in line
