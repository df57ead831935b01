"""Original haotian-liu/LLaVA checkpoints (issue 21) against the ORIGINAL code's outputs.

tests/reference/llava_original/make_reference.py built the tiny checkpoints in `kit/` the way
LLaVA's training code saves them and ran llava-torch 1.2.2.post1 (transformers 4.37.2, fp32)
on three items with non-square images of odd sizes; `reference.npz` holds, per checkpoint,
template and item, the token ids of `tokenizer_image_token`, the pixels of `process_images`,
the hidden state pools (last token, image positions, all positions) at the embeddings, every
decoder block and the final norm, and the last position's logits. Here matprobe computes the
same from the same files, batched with left padding, and must agree within 1e-4 relative.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from matprobe.errors import ExtractError

REF = Path(__file__).parent / "reference" / "llava_original"
KIT = REF / "kit"
TOWER = KIT / "tower"
TOL = 1e-4


@pytest.fixture(scope="module")
def reference():
    out = {}
    # reference_unfrozen.npz: a run that trained its tower (make_unfrozen_reference.py), same items
    for name in ("reference_unfrozen.npz", "reference.npz"):
        data = np.load(REF / name)
        out.update({k: data[k] for k in data.files})
    return out


def _items(reference):
    meta = json.loads(str(reference["meta"]))
    return meta["items"]


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def run_matprobe(ckpt, base=None, template=None, vision_tower=TOWER, layers="embed,0,1,2,final", items=None,
                 reference=None):
    """matprobe's pools [items, layers, 3 pools, D], last-position letter logits and the batch."""
    from PIL import Image

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.hooks import LayerPooler, letter_logits, parse_layers
    from matprobe.extract.tokens import last_token_index, option_letter_token_ids, pool_weights

    torch.set_num_threads(1)
    loaded = load_model(ckpt, base=base, vision_tower=vision_tower, template=template)
    items = items or _items(reference)
    images = [Image.open(KIT / "images" / f"item{i}.png") for i in range(len(items))]
    batch = loaded.processor.build_batch([q for _, q, _ in items], [o for _, _, o in items], images)
    inputs = batch.inputs
    pools = ["last", "image", "mean"]
    weights = pool_weights(inputs["input_ids"], inputs["attention_mask"], batch.question_mask,
                           loaded.image_token_id, pools)
    names = parse_layers(layers, loaded.num_layers)
    letters = option_letter_token_ids(loaded.processor.tokenizer, 4, loaded.architecture.letter_spellings)
    with LayerPooler(loaded.model, names, need_final_last=True) as pooler:
        pooled = pooler.run(inputs, weights, last_token_index(inputs["attention_mask"]))
        logits = letter_logits(loaded.model, pooler.last_final, letters)
        with torch.inference_mode():
            full = loaded.model.lm_head(pooler.last_final).float()
    stack = torch.stack([pooled[n] for n in names], dim=1).numpy()  # [B, layers, pools, D]
    return stack, logits.numpy(), full.detach().numpy(), batch, loaded


CASES = [  # (id, ckpt, base, template) -> reference key
    ("full-published-config", "llava-v1.5-tiny", None, "llava_v1"),
    ("merged-with-tower-keys", "llava-v1.5-tiny-merged", None, "llava_v1"),
    # the same shards, the config saying unfreeze_mm_vision_tower: their tower weights are used
    ("merged-unfrozen-tower", "llava-v1.5-tiny-unfrozen", None, "llava_v1"),
    ("lora-bin", "llava-v1.5-tiny-lora", "vicuna-tiny", "llava_v1"),
    ("projector-only", "llava-v1.5-tiny-pretrain", "vicuna-tiny", "llava_v1"),
    ("llava-med-mistral", "llava-med-v1.5-mistral-tiny", None, "mistral_instruct"),
]


@pytest.mark.parametrize("case,ckpt,base,template", CASES, ids=[c[0] for c in CASES])
def test_equals_original_code(reference, case, ckpt, base, template):
    """Z at every layer and the final norm, and the letter logits, within 1e-4 of the original code
    (default template: none passed)."""
    stack, letters, full, batch, loaded = run_matprobe(KIT / ckpt, KIT / base if base else None,
                                                       reference=reference)
    assert loaded.processor.template.name == template  # the default the checkpoint's family gets
    ids = batch.inputs["input_ids"]
    attention = batch.inputs["attention_mask"].bool()
    worst = 0.0
    for i, (_, _, options) in enumerate(_items(reference)):
        key = f"{ckpt}|{template}|{i}"
        # tokens: tokenizer_image_token's ids, the one -200 expanded to the image's positions
        ref_ids = reference[key + "|input_ids"]
        at0, at1 = reference[key + "|image_span"]
        expanded = np.concatenate([ref_ids[:at0], np.full(at1 - at0, -200), ref_ids[at0 + 1:]])
        np.testing.assert_array_equal(ids[i][attention[i]].numpy(), expanded)
        # pixels: process_images (pad to a square with the mean colour, resize, crop, normalise)
        if key + "|pixels" in reference:  # stored once per checkpoint (llava_v1 runs)
            np.testing.assert_allclose(batch.inputs["pixel_values"][i].numpy(), reference[key + "|pixels"],
                                       atol=1e-5, rtol=0)
        ref = reference[key + "|pools"]  # [embed, blocks..., final] x [last, image, mean]
        assert ref.shape == stack[i].shape
        for layer in range(ref.shape[0]):
            for p in range(3):
                worst = max(worst, _rel(stack[i, layer, p], ref[layer, p]))
        ref_logits = reference[key + "|logits"]
        assert _rel(full[i], ref_logits) < TOL
        ref_letters = ref_logits[reference[key + "|letter_ids"]][: len(options)]
        np.testing.assert_allclose(letters[i, : len(options)], ref_letters, rtol=0,
                                   atol=TOL * np.abs(ref_logits).max())
    assert worst < TOL, f"{case}: max relative difference {worst:.2e}"
    print(f"{case}: max relative difference of Z over layers x pools x items {worst:.2e}")


def test_a_trained_tower_is_said_in_the_provenance_and_moves_the_features(reference):
    from matprobe.extract.checkpoints import load_model

    said = {}
    for name in ("llava-v1.5-tiny-merged", "llava-v1.5-tiny-unfrozen"):
        said[name] = load_model(KIT / name, vision_tower=TOWER).info["vision_tower_weights"]
    assert said == {"llava-v1.5-tiny-merged": "the vision tower folder's",
                    "llava-v1.5-tiny-unfrozen": "the checkpoint's own (55 tensors; unfreeze_mm_vision_tower)"}
    # the two references differ: the flag alone decides which tower the original code runs
    moved = reference["llava-v1.5-tiny-unfrozen|llava_v1|0|pools"] - reference["llava-v1.5-tiny-merged|llava_v1|0|pools"]
    assert np.abs(moved).max() > 1.0


@pytest.mark.parametrize("template", ["vicuna_v1", "plain"])
def test_other_templates_equal_original_code(reference, template):
    """--template vicuna_v1 / plain render, tokenise and answer as conv_templates[...] does."""
    stack, letters, full, batch, _ = run_matprobe(KIT / "llava-v1.5-tiny", template=template, reference=reference)
    for i in range(len(_items(reference))):
        key = f"llava-v1.5-tiny|{template}|{i}"
        assert batch.prompts[i] == str(reference[key + "|prompt"])
        ref = reference[key + "|pools"]
        assert max(_rel(stack[i, la, p], ref[la, p]) for la in range(ref.shape[0]) for p in range(3)) < TOL
        assert _rel(full[i], reference[key + "|logits"]) < TOL


def test_wrong_system_text_is_seen(reference):
    """The comparison can fail: the training conversation's system text (vicuna_v1) against the
    evaluation one (llava_v1) the checkpoint defaults to differs far beyond the tolerance."""
    stack, _, full, _, _ = run_matprobe(KIT / "llava-v1.5-tiny", template="vicuna_v1", reference=reference)
    ref = reference["llava-v1.5-tiny|llava_v1|0|pools"]
    assert _rel(stack[0, -1, 0], ref[-1, 0]) > 1e-2  # last token, final norm


def test_lora_safetensors_equals_the_bin_reference(reference):
    """The same adapter saved by newer peft (adapter_model.safetensors) gives the .bin run's outputs."""
    stack, _, full, _, loaded = run_matprobe(KIT / "llava-v1.5-tiny-lora-st", KIT / "vicuna-tiny", reference=reference)
    assert loaded.info["adapter_layout"] == "llava-lora (adapter_model.safetensors)"
    assert loaded.info["non_lora_keys"] == 4
    for i in range(len(_items(reference))):
        ref = reference[f"llava-v1.5-tiny-lora|llava_v1|{i}|pools"]
        assert max(_rel(stack[i, la, p], ref[la, p]) for la in range(ref.shape[0]) for p in range(3)) < TOL
        assert _rel(full[i], reference[f"llava-v1.5-tiny-lora|llava_v1|{i}|logits"]) < TOL


def test_padding_colour_and_mode_are_seen(reference, monkeypatch):
    """Pixels of the non-square items: LLaVA's truncated mean colour matches; the rounded colour
    or a centre crop (`square`, transformers' default) does not, and moves Z past the tolerance."""
    from PIL import Image

    from matprobe.extract.original_llava import ImagePreprocessor

    pre = ImagePreprocessor(TOWER, "pad")
    assert pre.pad_colour == (122, 116, 104)  # int(mean * 255), not round
    image = Image.open(KIT / "images" / "item0.png")  # 37 x 23
    ref = reference["llava-v1.5-tiny|llava_v1|0|pixels"]
    np.testing.assert_allclose(pre(image), ref, atol=1e-5, rtol=0)
    rounded = ImagePreprocessor(TOWER, "pad")
    rounded.pad_colour = tuple(int(round(x * 255)) for x in rounded.mean.tolist())
    assert np.abs(rounded(image) - ref).max() > 1e-3
    assert np.abs(ImagePreprocessor(TOWER, "square")(image) - ref).max() > 0.5

    call = ImagePreprocessor.__call__

    def with_rounded_colour(self, im):
        self.pad_colour = rounded.pad_colour
        return call(self, im)

    monkeypatch.setattr(ImagePreprocessor, "__call__", with_rounded_colour)
    stack, *_ = run_matprobe(KIT / "llava-v1.5-tiny", reference=reference)
    ref_pools = reference["llava-v1.5-tiny|llava_v1|0|pools"]
    assert _rel(stack[0, -1, 1], ref_pools[-1, 1]) > TOL  # image pool at the final norm


def test_tower_is_required_and_checked(tmp_path):
    """A hub-id tower needs --vision-tower (one line naming it); a tower of another width is refused."""
    from matprobe.extract.checkpoints import load_model

    with pytest.raises(ExtractError, match=r"openai/clip-vit-large-patch14-336.*--vision-tower DIR"):
        load_model(KIT / "llava-v1.5-tiny")
    with pytest.raises(ExtractError, match="--vision-tower .*no config.json"):
        load_model(KIT / "llava-v1.5-tiny", vision_tower=tmp_path)
    wide = shutil.copytree(TOWER, tmp_path / "wide")
    cfg = json.loads((wide / "config.json").read_text())
    cfg.update(hidden_size=48)
    (wide / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ExtractError, match="mm_hidden_size 32"):
        load_model(KIT / "llava-v1.5-tiny", vision_tower=wide)


def test_runs_need_their_base_and_hf_checkpoints_refuse_llava_options(tmp_path):
    from matprobe.extract.checkpoints import load_model

    with pytest.raises(ExtractError, match="--base DIR"):
        load_model(KIT / "llava-v1.5-tiny-lora", vision_tower=TOWER)
    with pytest.raises(ExtractError, match="--base DIR"):
        load_model(KIT / "llava-v1.5-tiny-pretrain", vision_tower=TOWER)
    with pytest.raises(ExtractError, match="drop --base"):
        load_model(KIT / "llava-v1.5-tiny", base=KIT / "vicuna-tiny", vision_tower=TOWER)
    qwen = tmp_path / "qwen"
    qwen.mkdir()
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    with pytest.raises(ExtractError, match="--template llava_v1: qwen2_vl checkpoints use their chat template"):
        load_model(qwen, template="llava_v1")
    with pytest.raises(ExtractError, match="--template"):
        load_model(KIT / "llava-v1.5-tiny", vision_tower=TOWER, template="chat")


class _Exploit:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _poisoned_copy(tmp_path, shard_name: str, key: str):
    """A copy of the kit's tiny checkpoint whose shard `shard_name` holds, under `key`, an object whose
    unpickling would create the returned marker file. Returns (checkpoint folder, marker path)."""
    ckpt = shutil.copytree(KIT / "llava-v1.5-tiny", tmp_path / "llava-v1.5-evil")
    marker = tmp_path / "marker"
    shard = ckpt / shard_name
    state = torch.load(shard, weights_only=True)
    state[key] = _Exploit(marker)
    torch.save(state, shard)
    return ckpt, marker


def test_a_bin_that_needs_code_is_refused_and_not_run(tmp_path):
    """torch.load(weights_only=True) only: a shard carrying a pickled callable is one error line,
    and its code never runs."""
    from matprobe.extract.checkpoints import load_model

    ckpt, marker = _poisoned_copy(tmp_path, "pytorch_model-00001-of-00004.bin", "model.evil")
    with pytest.raises(ExtractError, match=r"pytorch_model-00001-of-00004.bin: needs code to unpickle"):
        load_model(ckpt, vision_tower=TOWER)
    assert not marker.exists()


def _manifest(folder: Path, reference) -> Path:
    rows = []
    for i, (_, question, options) in enumerate(_items(reference)):
        rows.append(dict(id=f"item{i}", image=str(KIT / "images" / f"item{i}.png"), question=question,
                         options=options, answer=0, modality="CT", anatomy="Chest", task="Classification"))
    path = folder / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cli(args):
    from typer.testing import CliRunner

    from matprobe.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_extract_store_equals_original_and_resume_checks(tmp_path, reference):
    """`matprobe extract` on the published-style checkpoint: stored Z (padded batches of 2) and
    answer probabilities equal the original code's; format, template, preprocessing and the tower
    fingerprint are in provenance, and a resume with the template or the tower changed is refused."""
    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    data = _manifest(tmp_path, reference)
    out = tmp_path / "z.h5"
    base = ["extract", "--ckpt", KIT / "llava-v1.5-tiny", "--vision-tower", TOWER, "--data", data, "--out", out,
            "--layers", "embed,0,1,2,final", "--pool", "last,image,question,mean", "--batch-size", "2"]
    res = _cli(base)
    assert res.exit_code == 0, res.output
    names = ["embed", "0", "1", "2", "final"]
    with EmbeddingStore.open(out) as st:
        prov = st.provenance
        assert prov["checkpoint_format"] == "llava-original (full, llama)"
        assert prov["prompt_template"]["name"] == "llava_v1"
        assert prov["image_preprocessing"]["pad_colour"] == [122, 116, 104]
        assert prov["vision_tower_fingerprint"]
        probs = st.answers()["probs"]
        for i, (_, _, options) in enumerate(_items(reference)):
            key = f"llava-v1.5-tiny|llava_v1|{i}"
            ref = reference[key + "|pools"]
            for li, layer in enumerate(names):
                for p, pool in enumerate(["last", "image", "mean"]):
                    assert _rel(st.read(layer, pool)[i], ref[li, p]) < TOL, (i, layer, pool)
            logits = reference[key + "|logits"][reference[key + "|letter_ids"]][: len(options)]
            expect = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
            np.testing.assert_allclose(probs[i, : len(options)], expect, rtol=1e-4, atol=1e-6)
    # resume with the template changed: refused, naming it, nothing written
    res = _cli([*base, "--template", "vicuna_v1"])
    assert res.exit_code == 2 and "prompt_template" in res.output, res.output
    assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1
    # resume with another tower (same shapes, other weights): refused, naming its fingerprint
    tower2 = shutil.copytree(TOWER, tmp_path / "tower2")
    from safetensors.torch import load_file, save_file

    w = load_file(tower2 / "model.safetensors")
    save_file({k: v + 0.01 for k, v in w.items()}, tower2 / "model.safetensors")
    res = _cli([*base[:4], tower2, *base[5:]])
    assert res.exit_code == 2 and "vision_tower_fingerprint" in res.output, res.output
    # the changed tower really changes Z (the fingerprint is not guarding a no-op)
    stack, *_ = run_matprobe(KIT / "llava-v1.5-tiny", vision_tower=tower2, reference=reference)
    assert _rel(stack[0, -1, 1], reference["llava-v1.5-tiny|llava_v1|0|pools"][-1, 1]) > TOL


def test_cli_refuses_a_missing_tower_in_one_line(tmp_path, reference):
    data = _manifest(tmp_path, reference)
    res = _cli(["extract", "--ckpt", KIT / "llava-v1.5-tiny", "--data", data, "--out", tmp_path / "z.h5",
                "--layers", "-1"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith("error:") and "--vision-tower" in res.output
    assert not (tmp_path / "z.h5").exists()


@pytest.mark.parametrize("ckpt,template", [("llava-v1.5-tiny", "llava_v1"), ("llava-v1.5-tiny", "vicuna_v1"),
                                           ("llava-v1.5-tiny", "plain"),
                                           ("llava-med-v1.5-mistral-tiny", "mistral_instruct")])
def test_tokenizer_model_only_tokenises_as_the_slow_tokenizer(tmp_path, reference, ckpt, template):
    """Published LLaVA-1.5 folders have tokenizer.model and no tokenizer.json: read with
    sentencepiece, the ids equal those of the slow LlamaTokenizer LLaVA loads (use_fast=False)."""
    pytest.importorskip("sentencepiece")
    from matprobe.extract.original_llava import ChunkTokenizer, OriginalProcessor
    from matprobe.extract.templates import get_template

    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(KIT / ckpt / name, folder / name)
    tok = ChunkTokenizer(folder)
    assert tok.kind == "sentencepiece:tokenizer.model"
    proc = OriginalProcessor(tok, None, get_template(template), 1)
    for i, (_, question, options) in enumerate(_items(reference)):
        prompt, span = proc.render(question, options)
        ids, mask = tok.image_token_ids(prompt, span)
        np.testing.assert_array_equal(ids, reference[f"{ckpt}|{template}|{i}|input_ids"])
        fast, fast_mask = ChunkTokenizer(KIT / ckpt).image_token_ids(prompt, span)
        assert mask == fast_mask  # the question span covers the same tokens either way
    assert [tok.encode(x, add_special_tokens=False) for x in "ABCD"] == \
        [[i] for i in reference[f"{ckpt}|{template}|0|letter_ids"]]


def test_question_pool_covers_the_question_and_options(reference):
    """The `question` pool's tokens decode to the question and option lines, nothing else."""
    from matprobe.extract.original_llava import ChunkTokenizer

    tok = ChunkTokenizer(KIT / "llava-v1.5-tiny")
    from matprobe.extract.original_llava import OriginalProcessor
    from matprobe.extract.templates import get_template

    proc = OriginalProcessor(tok, None, get_template("llava_v1"), 1)
    _, question, options = _items(reference)[0]
    prompt, span = proc.render(question, options)
    ids, mask = tok.image_token_ids(prompt, span)
    picked = [i for i, m in zip(ids, mask) if m]
    text = tok.backend.tok.decode(picked)
    assert text.replace(" ", "") == (question + "".join(f"\n{letter}. {o}" for letter, o in
                                                        zip("ABCD", options))).replace(" ", "")


def test_tokenizer_model_without_sentencepiece_is_one_line(tmp_path, monkeypatch):
    import sys

    from matprobe.extract.original_llava import ChunkTokenizer

    folder = tmp_path / "tok"
    folder.mkdir()
    for name in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(KIT / "llava-v1.5-tiny" / name, folder / name)
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # import fails as if not installed
    with pytest.raises(ExtractError, match=r"tokenizer.model \(sentencepiece\) only; install sentencepiece"):
        ChunkTokenizer(folder)


def test_a_local_tower_path_in_the_config_is_used_as_is(tmp_path, reference):
    """mm_vision_tower naming a folder that exists here needs no --vision-tower."""
    ckpt = shutil.copytree(KIT / "llava-v1.5-tiny", tmp_path / "llava-v1.5-local")
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["mm_vision_tower"] = str(TOWER.resolve())
    (ckpt / "config.json").write_text(json.dumps(cfg))
    stack, _, full, _, loaded = run_matprobe(ckpt, vision_tower=None, reference=reference)
    assert loaded.info["vision_tower"] == str(TOWER.resolve())
    ref = reference["llava-v1.5-tiny|llava_v1|0|pools"]
    assert max(_rel(stack[0, la, p], ref[la, p]) for la in range(ref.shape[0]) for p in range(3)) < TOL


def test_bf16_is_close_and_recorded(reference):
    """--dtype bf16 upcasts nothing it should not: the final-norm last token stays within bf16
    rounding of the fp32 reference (a few %), and the store would say bf16."""
    from matprobe.extract.checkpoints import load_model

    loaded = load_model(KIT / "llava-v1.5-tiny", vision_tower=TOWER, dtype="bf16")
    assert loaded.info["dtype"] == "bf16"
    assert {p.dtype for p in loaded.model.parameters()} == {torch.bfloat16}
    rotary = loaded.model.model.language_model.rotary_emb.inv_freq
    assert rotary.dtype == torch.float32  # as transformers keeps it under torch_dtype=bf16
    from PIL import Image

    from matprobe.extract.hooks import LayerPooler
    from matprobe.extract.tokens import last_token_index, pool_weights

    _, question, options = _items(reference)[0]
    batch = loaded.processor.build_batch([question], [options], [Image.open(KIT / "images" / "item0.png")])
    w = pool_weights(batch.inputs["input_ids"], batch.inputs["attention_mask"], batch.question_mask, -200, ["last"])
    with LayerPooler(loaded.model, ["final"], need_final_last=False) as pooler:
        z = pooler.run(batch.inputs, w, last_token_index(batch.inputs["attention_mask"]))["final"][0, 0].numpy()
    err = _rel(z, reference["llava-v1.5-tiny|llava_v1|0|pools"][-1, 0])
    assert 1e-5 < err < 5e-2  # bf16 really ran (not fp32), and is close


def test_cli_refuses_a_pickle_with_code_in_one_line(tmp_path, reference):
    ckpt, marker = _poisoned_copy(tmp_path, "pytorch_model-00002-of-00004.bin", "x")
    data = _manifest(tmp_path, reference)
    res = _cli(["extract", "--ckpt", ckpt, "--vision-tower", TOWER, "--data", data, "--out", tmp_path / "z.h5",
                "--layers", "-1"])
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1].startswith("error:") and "needs code to unpickle" in res.output
    assert not marker.exists() and not (tmp_path / "z.h5").exists()


def test_an_item_longer_than_the_original_truncation_is_refused(reference):
    """LLaVA cuts sequences at tokenizer_model_max_length (the answer position with them): refused."""
    from PIL import Image

    from matprobe.extract.checkpoints import load_model

    loaded = load_model(KIT / "llava-v1.5-tiny", vision_tower=TOWER)
    assert loaded.processor.max_length == 2048  # from config.json
    loaded.processor.max_length = 50
    _, question, options = _items(reference)[0]
    with pytest.raises(ExtractError, match="tokenizer_model_max_length 50"):
        loaded.processor.build_batch([question], [options], [Image.open(KIT / "images" / "item0.png")])


def test_hf_llava_with_a_llava_template(tmp_path, reference):
    """--template llava_v1 on a Hugging Face llava checkpoint: the prompt is the original code's string
    (with the processor's <image>), the question pool covers the question and options, the answer
    is read after "ASSISTANT:", and the store records the template (a resume with chat is refused)."""
    from PIL import Image

    from matprobe.extract.checkpoints import load_model
    from matprobe.extract.tiny import build_tiny_checkpoint
    from matprobe.extract.tokens import build_batch, last_token_index
    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    ckpt = build_tiny_checkpoint(tmp_path / "llava-hf", "llava", seed=0)
    loaded = load_model(ckpt, template="llava_v1")
    conv = loaded.info["conversation_template"]
    _, question, options = _items(reference)[0]
    batch = build_batch(loaded.processor, [question], [options], [Image.open(KIT / "images" / "item0.png")],
                        template=conv)
    assert batch.prompts[0] == str(reference["llava-v1.5-tiny|llava_v1|0|prompt"])
    tok = loaded.processor.tokenizer
    ids = batch.inputs["input_ids"][0]
    picked = ids[batch.question_mask[0]].tolist()
    assert tok.decode(picked).strip() == question + "".join(f"\n{x}. {o}" for x, o in zip("ABCD", options))
    last = int(last_token_index(batch.inputs["attention_mask"])[0])
    assert tok.decode(ids[last - 3:last + 1].tolist()).endswith("ASSISTANT:")
    data = _manifest(tmp_path, reference)
    out = tmp_path / "hf.h5"
    args = ["extract", "--ckpt", ckpt, "--data", data, "--out", out, "--layers", "1", "--pool", "last,question"]
    res = _cli([*args, "--template", "llava_v1"])
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as st:
        assert st.provenance["prompt_template"]["name"] == "llava_v1"
    res = _cli(args)  # resume with the checkpoint's chat template: refused, naming the field
    assert res.exit_code == 2 and "prompt_template" in res.output, res.output


def test_template_file(tmp_path, reference):
    """--template FILE: the whole prompt with one {message}; llava_v1 written out by hand gives the
    original code's llava_v1 prompt, and a file without the placeholder is refused."""
    from matprobe.extract.original_llava import ChunkTokenizer, OriginalProcessor
    from matprobe.extract.templates import get_template

    path = tmp_path / "llava_v1.txt"
    path.write_text("A chat between a curious human and an artificial intelligence assistant. The assistant gives "
                    "helpful, detailed, and polite answers to the human's questions. USER: {message} ASSISTANT:")
    proc = OriginalProcessor(ChunkTokenizer(KIT / "llava-v1.5-tiny"), None, get_template(str(path)), 1)
    for i, (_, question, options) in enumerate(_items(reference)):
        prompt, _ = proc.render(question, options)
        assert prompt == str(reference[f"llava-v1.5-tiny|llava_v1|{i}|prompt"])
    path.write_text("USER: ASSISTANT:")
    with pytest.raises(ExtractError, match=r"must contain \{message\} exactly once \(found 0\)"):
        get_template(str(path))
    with pytest.raises(ExtractError, match="--template 'llava_v2': use one of chat, llava_v1"):
        get_template("llava_v2")


@pytest.mark.parametrize("ckpt", ["llava-v1.5-tiny-lora", "llava-v1.5-tiny-pretrain"])
def test_cli_extract_of_a_run_on_its_base_equals_original_code(tmp_path, reference, ckpt):
    """The README's commands for a LoRA and a projector-only run (`--ckpt RUN --base BASE
    --vision-tower DIR`): the checks before loading once read the base's config (a plain llama)
    as the model's and refused both."""
    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    out = tmp_path / "z.h5"
    res = _cli(["extract", "--ckpt", KIT / ckpt, "--base", KIT / "vicuna-tiny", "--vision-tower", TOWER,
                "--data", _manifest(tmp_path, reference), "--out", out, "--layers", "embed,0,1,2,final",
                "--pool", "last,image,mean", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    with EmbeddingStore.open(out) as st:
        for i in range(len(_items(reference))):
            ref = reference[f"{ckpt}|llava_v1|{i}|pools"]
            for li, layer in enumerate(["embed", "0", "1", "2", "final"]):
                for p, pool in enumerate(["last", "image", "mean"]):
                    assert _rel(st.read(layer, pool)[i], ref[li, p]) < TOL, (ckpt, i, layer, pool)


def _study(tmp_path, reference) -> Path:
    """Two copies of the LoRA run named by condition and seed, and a manifest of the kit's three
    images under a held-out triplet, a related one and an unrelated one (10 rows each)."""
    for name in ("related-s0", "unrelated-s0"):
        shutil.copytree(KIT / "llava-v1.5-tiny-lora", tmp_path / "ckpts" / name)
    trips = [("MRI", "Head", "Orientation"), ("MRI", "Head", "Classification"), ("CT", "Chest", "Classification")]
    rows = []
    for j in range(30):
        _, question, options = _items(reference)[j % 3]
        m, a, t = trips[j // 10]
        rows.append(dict(id=f"q{j}", image=str(KIT / "images" / f"item{j % 3}.png"), question=question,
                         options=options, answer=j % len(options), modality=m, anatomy=a, task=t))
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "items.jsonl"


def test_init_and_run_take_original_llava_runs(tmp_path, reference):
    """`init` and `run` on a study of original-format LoRA runs: each refusal names the option or the
    pipeline key that fixes it, before anything is written; with --base, --vision-tower and
    --template the file carries them and `run`'s stores equal `extract`'s."""
    import tomllib

    from matprobe.store import EmbeddingStore

    torch.set_num_threads(1)
    data = _study(tmp_path, reference)
    ckpts = [tmp_path / "ckpts" / "related-s0", tmp_path / "ckpts" / "unrelated-s0"]
    toml = tmp_path / "study.toml"
    base = ["init", *ckpts, "--data", data, "--target", "MRI,Head,Orientation", "--seeds", "1", "--folds", "2",
            "--out", toml]
    res = _cli([*base, "--vision-tower", TOWER])  # the runs record another machine's base
    assert res.exit_code == 2 and "pass --base DIR" in res.output and not toml.exists(), res.output
    res = _cli([*base, "--base", KIT / "vicuna-tiny"])  # the config names a hub id for its tower
    assert res.exit_code == 2 and "pass --vision-tower DIR" in res.output and not toml.exists(), res.output
    res = _cli([*base, "--base", KIT / "vicuna-tiny", "--vision-tower", TOWER, "--template", "vicuna_v1"])
    assert res.exit_code == 0, res.output
    entries = tomllib.loads(toml.read_text())["checkpoints"]
    assert [(e["base"], e["vision_tower"], e["template"]) for e in entries] == \
        [(str(KIT / "vicuna-tiny"), str(TOWER), "vicuna_v1")] * 2
    # a file without the tower: `run` refuses it before extracting, naming the entry and the key
    text = toml.read_text()
    no_tower = tmp_path / "no_tower.toml"
    no_tower.write_text("\n".join(line for line in text.splitlines() if not line.startswith("vision_tower")))
    res = _cli(["run", no_tower])
    assert res.exit_code == 2, res.output
    assert "[[checkpoints]] 'related-s0'" in res.output and "pass vision_tower = DIR" in res.output, res.output
    assert not (tmp_path / "no_tower-run").exists() and not (tmp_path / "study-run").exists()
    res = _cli(["run", toml])
    assert res.exit_code == 0, res.output
    # the answers' texts (the label factor) have classes of 2-3 rows: merged for the MI, said before
    # extraction and in the report's design warnings, the label term flagged
    assert "merged into one class per factor" in res.output
    summary = json.loads((tmp_path / "study-run" / "run.json").read_text())
    assert any("merged into one class per factor" in w for w in summary["data_warnings"])
    [mi_file] = (tmp_path / "study-run" / "mi").glob("related-s0__*.json")
    doc = json.loads(mi_file.read_text())
    assert "label" in doc["merged_classes"]
    assert "merged-rare-classes" in next(t for t in doc["terms"] if t["target"] == "label")["flags"]
    summary = (tmp_path / "study-run" / "report.md").read_text().split("## Summary")[1].split("\n## ")[0]
    assert "the answer's rare classes merged into one for the MI" in " ".join(summary.split())
    out = tmp_path / "direct.h5"
    res = _cli(["extract", "--ckpt", ckpts[0], "--base", KIT / "vicuna-tiny", "--vision-tower", TOWER,
                "--template", "vicuna_v1", "--data", data, "--out", out, "--layers", "-1"])
    assert res.exit_code == 0, res.output
    [store] = (tmp_path / "study-run" / "stores").glob("related-s0*.h5")
    with EmbeddingStore.open(store) as ran, EmbeddingStore.open(out) as direct:
        assert ran.provenance["prompt_template"]["name"] == "vicuna_v1"
        assert ran.provenance["checkpoint_format"] == direct.provenance["checkpoint_format"]
        np.testing.assert_array_equal(ran.read("2", "last"), direct.read("2", "last"))
