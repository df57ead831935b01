"""LoRA adapters as published: key layouts, renames to the current module names, checks.

Most adapters published so far were saved before transformers 4.52, when e.g. LLaVA kept
its decoder at `language_model.model.layers` and Qwen2-VL its vision tower at `visual`.
Transformers 5 renames such checkpoint keys on load (its conversion mapping); adapters
need the same renames, which each architecture lists (`Architecture.legacy_key_renames`).

An adapter is classified before peft sees it:
- every key names a module/parameter of the loaded model: the current layout, loaded as is;
- every key does after the architecture's renames: the pre-4.52 layout, remapped (weights
  and the module names in adapter_config.json) into a temporary copy that peft loads;
- otherwise an error that names the layout expected and the one found. Shapes are
  compared too, so "pass the base it was trained on (--base)" is said only when the
  base really differs (a LoRA or saved module whose shape disagrees with the model's).
"""

from __future__ import annotations

import json
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from matprobe.errors import ExtractError

PEFT_PREFIX = "base_model.model."
CURRENT_LAYOUT = "current (transformers >= 4.52)"
_LORA_KEY = re.compile(
    r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)"
    r"(?:\.weight)?$"
)


@dataclass
class AdapterWeights:
    path: Path
    config: dict
    tensors: dict  # key without the peft prefix -> tensor
    file_name: str


def read_adapter(adapter_dir: Path) -> AdapterWeights:
    """The adapter's config and weights (safetensors or the older .bin), peft prefix removed."""
    import torch

    cfg_path = adapter_dir / "adapter_config.json"
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise ExtractError(f"{cfg_path}: not valid JSON ({exc}); re-save the adapter") from None
    st, binary = adapter_dir / "adapter_model.safetensors", adapter_dir / "adapter_model.bin"
    if st.is_file():
        from safetensors.torch import load_file

        raw, file_name = load_file(st), st.name
    elif binary.is_file():
        raw, file_name = torch.load(binary, map_location="cpu", weights_only=True), binary.name
    else:
        raise ExtractError(
            f"adapter {adapter_dir}: no adapter_model.safetensors or adapter_model.bin; "
            f"pass a complete peft adapter folder"
        )
    tensors = {}
    for key, value in raw.items():
        if not key.startswith(PEFT_PREFIX):
            raise ExtractError(
                f"adapter {adapter_dir}/{file_name}: key {key!r} lacks peft's {PEFT_PREFIX!r} prefix; "
                f"only LoRA adapters saved by peft are supported"
            )
        tensors[key[len(PEFT_PREFIX):]] = value
    return AdapterWeights(adapter_dir, config, tensors, file_name)


def _target(key: str) -> tuple[str, str | None]:
    """(module or parameter name the key belongs to, LoRA kind or None for a saved module)."""
    m = _LORA_KEY.match(key)
    return (m.group("module"), m.group("kind")) if m else (key, None)


def unmatched_keys(keys, modules: dict, params: dict) -> list[str]:
    """Keys that name no module (LoRA weights) or parameter (modules_to_save) of the model."""
    out = []
    for key in keys:
        name, kind = _target(key)
        if (kind is not None and name not in modules) or (kind is None and name not in params):
            out.append(key)
    return out


def shape_mismatches(tensors: dict, modules: dict, params: dict) -> list[str]:
    """'key: adapter shape vs model shape' for weights that cannot belong to this base."""
    out = []
    for key, value in tensors.items():
        name, kind = _target(key)
        shape = tuple(value.shape)
        if kind is None:
            if name in params and tuple(params[name].shape) != shape:
                out.append(f"{key}: {shape} vs {tuple(params[name].shape)}")
            continue
        module = modules.get(name)
        if module is None or len(shape) != 2:
            continue
        n_in = getattr(module, "in_features", None) or getattr(module, "num_embeddings", None)
        n_out = getattr(module, "out_features", None) or getattr(module, "embedding_dim", None)
        if kind == "lora_A" and n_in is not None and shape[1] != n_in:
            out.append(f"{key}: input {shape[1]} vs the model's {n_in}")
        elif kind == "lora_B" and n_out is not None and shape[0] != n_out:
            out.append(f"{key}: output {shape[0]} vs the model's {n_out}")
    return out


def _rename_config(config: dict, rename, lora_modules: list[str]) -> dict:
    """adapter_config.json with module names moved to the current layout."""
    cfg = dict(config)
    target = cfg.get("target_modules")
    if target is not None:
        names = [target] if isinstance(target, str) else list(target)
        if isinstance(target, str):
            hits = all(re.fullmatch(target, m) for m in lora_modules)
        else:
            hits = all(any(m == t or m.endswith("." + t) for t in names) for m in lora_modules)
        if not hits:
            # The pattern spelt old module paths: name the (renamed) modules exactly.
            cfg["target_modules"] = sorted(lora_modules)
    if isinstance(cfg.get("modules_to_save"), list):
        cfg["modules_to_save"] = [rename(x) for x in cfg["modules_to_save"]]
    for field in ("rank_pattern", "alpha_pattern"):
        if isinstance(cfg.get(field), dict):
            cfg[field] = {rename(k): v for k, v in cfg[field].items()}
    return cfg


def classify_and_remap(model, arch, weights: AdapterWeights, base_dir: Path) -> tuple[dict, dict, str]:
    """(tensors in the current layout, config, layout name) or ExtractError."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters(remove_duplicate=False))  # a tied lm_head is a name of its own too
    keys = list(weights.tensors)
    where = f"adapter {weights.path}"
    missing_now = unmatched_keys(keys, modules, params)
    if not missing_now:
        tensors, config, layout = weights.tensors, weights.config, CURRENT_LAYOUT
    else:
        renamed = {arch.rename_legacy_key(k): v for k, v in weights.tensors.items()}
        missing_old = unmatched_keys(renamed, modules, params) if arch.legacy_key_renames else keys
        if len(renamed) != len(weights.tensors):
            missing_old = missing_old or ["(two keys renamed to one)"]
        if missing_old:
            changed = sum(arch.rename_legacy_key(k) != k for k in keys)
            found = (f"{arch.legacy_layout_name} ({changed} of {len(keys)} keys renamed)" if changed
                     else "neither the current nor the pre-4.52 layout")
            example = next((n for n in modules if "language_model" in n and n.endswith("q_proj")),
                           next((n for n in modules if n.endswith("q_proj")), ""))
            raise ExtractError(
                f"{where}/{weights.file_name}: {len(missing_old)} key(s) name no module of "
                f"{type(model).__name__} ({arch.name}) even after the {arch.legacy_layout_name} "
                f"renames, first {missing_old[0]!r}; expected the current layout (e.g. "
                f"{PEFT_PREFIX}{example}.lora_A.weight), found {found}; the adapter was saved from another "
                f"model class or with a custom wrapper: re-save it with peft from a "
                f"{type(model).__name__}"
            )
        lora_modules = sorted({_target(k)[0] for k in renamed if _target(k)[1] is not None})
        tensors = renamed
        config = _rename_config(weights.config, arch.rename_legacy_key, lora_modules)
        layout = arch.legacy_layout_name
    bad = shape_mismatches(tensors, modules, params)
    if bad:
        raise ExtractError(
            f"{where} was trained on a base with other shapes than {base_dir} ({len(bad)} weight(s), "
            f"first {bad[0]}); pass the base it was trained on with --base"
        )
    return tensors, config, layout


def _vocabulary_rows(weights: AdapterWeights, params: dict) -> int | None:
    """The vocabulary the adapter's saved embeddings or head hold (modules_to_save), where it is not the
    model's; None where they agree or the adapter saves neither."""
    for key, value in weights.tensors.items():
        name, kind = _target(key)
        if kind is None and name.endswith(("embed_tokens.weight", "lm_head.weight")) and name in params:
            if value.shape[0] != params[name].shape[0] and value.shape[1:] == params[name].shape[1:]:
                return int(value.shape[0])
    return None


def _resize_to_the_adapters_vocabulary(model, weights: AdapterWeights, adapter_dir: Path) -> int | None:
    """Tokens added in training (`resize_token_embeddings` before the adapter): the base is resized to
    the adapter's vocabulary where the adapter folder holds the tokenizer with those tokens, as the
    training code did; else None (the shape check then refuses the base)."""
    rows = _vocabulary_rows(weights, dict(model.named_parameters(remove_duplicate=False)))
    if rows is None:
        return None
    try:
        from transformers import AutoTokenizer

        n_tokens = len(AutoTokenizer.from_pretrained(adapter_dir))
    except (OSError, ValueError):
        return None  # no tokenizer in the adapter folder: nothing says the base should grow
    if not n_tokens <= rows < n_tokens + 128:  # resize_token_embeddings pads to a multiple at most 128
        return None
    model.resize_token_embeddings(rows, mean_resizing=False)
    return rows


def check_base_class(adapter_config: dict, base_classes: list[str], adapter_dir: Path, base_dir: Path) -> None:
    """Refuse an adapter whose peft record (`auto_mapping.base_model_class`) names another model class
    than its base's: the loaded model's, or (`init`, no model loaded) its config.json `architectures`."""
    trained_on = (adapter_config.get("auto_mapping") or {}).get("base_model_class")
    if trained_on and base_classes and trained_on not in base_classes:
        raise ExtractError(
            f"adapter {adapter_dir} was trained on a {trained_on} but base {base_dir} is a "
            f"{base_classes[0]}; pass the matching checkpoint with --base"
        )


def attach_adapter(model, arch, adapter_dir: Path, base_dir: Path, merge: bool):
    """Apply a peft adapter (any supported layout); returns (model, info).

    Missing or unexpected keys are an error, never a warning.
    """
    from peft import PeftModel
    from safetensors.torch import save_file

    weights = read_adapter(adapter_dir)
    cfg = weights.config
    check_base_class(cfg, [type(model).__name__], adapter_dir, base_dir)
    stored = cfg.get("base_model_name_or_path")
    if stored and Path(stored).is_dir() and Path(stored).resolve() != base_dir.resolve():
        # Both bases are here: their shapes must agree (a renamed copy is fine).
        def shape(path):
            c = json.loads((Path(path) / "config.json").read_text())
            text = c.get("text_config") or c
            return (c.get("model_type"), text.get("hidden_size"), text.get("num_hidden_layers"),
                    text.get("vocab_size"))

        if shape(stored) != shape(base_dir):
            raise ExtractError(
                f"adapter {adapter_dir} was trained on {stored} (model_type, hidden, layers, vocab "
                f"= {shape(stored)}) but base {base_dir} has {shape(base_dir)}; pass the matching --base"
            )
    resized = _resize_to_the_adapters_vocabulary(model, weights, adapter_dir)
    tensors, config, layout = classify_and_remap(model, arch, weights, base_dir)

    with tempfile.TemporaryDirectory(prefix="matprobe-adapter-") as tmp, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_from = adapter_dir
        if layout != CURRENT_LAYOUT:
            load_from = Path(tmp)
            (load_from / "adapter_config.json").write_text(json.dumps(config, indent=2))
            save_file({PEFT_PREFIX + k: v.contiguous() for k, v in tensors.items()},
                      load_from / "adapter_model.safetensors")
        try:
            peft_model = PeftModel.from_pretrained(model, load_from, is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExtractError(
                f"adapter {adapter_dir} ({layout} layout) cannot be applied to {base_dir}: "
                f"{first[:300]}"
            ) from None
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text or "unexpected" in text.lower():
            raise ExtractError(
                f"adapter {adapter_dir}: {text[:300]}; the adapter is incomplete or was saved "
                f"with other target modules; re-save the adapter"
            )
    info = {"adapter_layout": layout, "adapter_keys": len(tensors)}
    if resized is not None:  # the base grown to the tokens the training added (the adapter folder's tokenizer)
        info["vocabulary_resized_to"] = resized
    if merge:
        return peft_model.merge_and_unload(), info
    return peft_model.get_base_model(), info
