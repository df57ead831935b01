"""Forward hooks that pool hidden states inside the hook and stop after the deepest layer.

Layer convention (stored as the store's `layer_convention`, docs/ARCHITECTURE.md):
``"0".."L-1"`` is the output of decoder block i; negative indices count from the end and
are resolved to absolute ones; ``"final"`` is after the final norm; ``"embed"`` is the
input to block 0 (token embeddings with image features merged in).

In `output_hidden_states` terms: ``hidden_states[0]`` = "embed", ``hidden_states[i+1]`` =
block i for i < L-1, and ``hidden_states[-1]`` = "final" (transformers applies the norm
to the last entry, so block L-1's raw output only exists through a hook).
"""

from __future__ import annotations

from matprobe.errors import ExtractError


class StopForward(Exception):
    """Raised inside the deepest hook: nothing after it is needed."""


def parse_layers(spec, num_layers: int) -> list[str]:
    """'8,16,-1,final' -> ['8', '16', '31', 'final'] for a 32-block decoder (order kept, unique)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            continue
        if item in ("final", "embed"):
            name = item
        else:
            try:
                index = int(item)
            except ValueError:
                raise ExtractError(
                    f"--layers: {item!r} is not a layer; use integers, 'final' or 'embed'"
                ) from None
            if not -num_layers <= index < num_layers:
                raise ExtractError(
                    f"--layers: index {index} is out of range for a {num_layers}-block decoder; "
                    f"use {-num_layers}..{num_layers - 1}, 'final' or 'embed'"
                )
            name = str(index % num_layers)
        if name not in out:
            out.append(name)
    if not out:
        raise ExtractError("--layers is empty; give e.g. 8,16,-1")
    return out


def _hidden_from_output(output):
    # Transformers 5 decoder layers return a tensor; older ones a tuple. Indexing a tensor
    # with [0] would silently take batch row 0 (docs/design.md §2), so check the type.
    return output[0] if isinstance(output, tuple) else output


class LayerPooler:
    """Context manager that installs pooling hooks for one extraction forward.

    Set `weights` ([B, P, T] float32, from tokens.pool_weights) and `last_index` before
    each forward; after it, `pooled[layer]` is [B, P, D] float32 and `last_final` is the
    final-norm hidden state at each row's last real token (for the LM head).
    """

    def __init__(self, model, layers: list[str], need_final_last: bool):
        from matprobe.extract.checkpoints import decoder_layers, final_norm

        self.model = model
        self.layers = layers
        self.blocks = decoder_layers(model)
        self.norm = final_norm(model)
        self.need_final_last = need_final_last
        numeric = [int(x) for x in layers if x not in ("final", "embed")]
        if "final" in layers or need_final_last:
            self.stop_after = None  # run every block and the norm
        elif numeric:
            self.stop_after = max(numeric)
        else:  # only 'embed'
            self.stop_after = -1
        self.weights = None
        self.last_index = None
        self.pooled: dict[str, object] = {}
        self.last_final = None
        self._handles = []

    def _pool(self, name: str, hidden) -> None:
        import torch

        self.pooled[name] = torch.bmm(self.weights, hidden.float())

    def _block_hook(self, index: int):
        name = str(index)

        def hook(module, args, output):
            hidden = _hidden_from_output(output)
            if name in self.layers:
                self._pool(name, hidden)
            if self.stop_after == index:
                raise StopForward

        return hook

    def _embed_hook(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        self._pool("embed", hidden)
        if self.stop_after == -1:
            raise StopForward

    def _norm_hook(self, module, args, output):
        import torch

        if "final" in self.layers:
            self._pool("final", output)
        if self.need_final_last:
            rows = torch.arange(output.shape[0], device=output.device)
            self.last_final = output[rows, self.last_index]

    def __enter__(self):
        numeric = {int(x) for x in self.layers if x not in ("final", "embed")}
        if self.stop_after is not None and self.stop_after >= 0:
            numeric.add(self.stop_after)
        for i in sorted(numeric):
            self._handles.append(self.blocks[i].register_forward_hook(self._block_hook(i)))
        if "embed" in self.layers:
            self._handles.append(
                self.blocks[0].register_forward_pre_hook(self._embed_hook, with_kwargs=True)
            )
        if "final" in self.layers or self.need_final_last:
            self._handles.append(self.norm.register_forward_hook(self._norm_hook))
        return self

    def __exit__(self, *exc):
        for h in self._handles:
            h.remove()
        self._handles.clear()
        return False

    def run(self, inputs: dict, weights, last_index):
        """One forward of the multimodal backbone (no LM head); returns `pooled`."""
        import torch

        self.weights, self.last_index = weights, last_index
        self.pooled, self.last_final = {}, None
        with torch.inference_mode():
            try:
                self.model.model(**inputs, use_cache=False)
            except StopForward:
                pass
        missing = [x for x in self.layers if x not in self.pooled]
        if missing:
            raise ExtractError(f"layers {missing} produced no output; this model variant is not supported")
        return self.pooled


def letter_logits(model, last_hidden, letter_ids: list[list[int]]):
    """Option-letter logits [B, K] from the LM head applied to the last position only.

    Each letter's logit is the log-sum-exp over its token spellings (tokens.option_letter_token_ids).
    """
    import torch

    with torch.inference_mode():
        logits = model.lm_head(last_hidden).float()  # [B, V]: one position per row, not T
    columns = []
    for ids in letter_ids:
        columns.append(torch.logsumexp(logits[:, ids], dim=1))
    return torch.stack(columns, dim=1)


def check_finite(pooled: dict, dtype: str) -> None:
    import torch

    for name, value in pooled.items():
        if not bool(torch.isfinite(value).all()):
            hint = "use --dtype bf16 (fp16 overflows Qwen2-VL)" if dtype == "fp16" else "check the checkpoint"
            raise ExtractError(f"non-finite activations at layer {name} in {dtype}; {hint}")
