"""`--dtype bf16` on CPU against fp32, and the dtype / attention implementation in the store.

Stated tolerance (bf16 keeps 8 significant bits, ~0.4% per rounding; four blocks of a
64-wide decoder compound it): for every stored (layer, pool), the relative Frobenius error
||Z_bf16 - Z_fp32|| / ||Z_fp32|| <= 3% and the largest absolute difference <= 5% of
max |Z_fp32|; answer probabilities within 0.01, and the same predicted option wherever
fp32's top two probabilities differ by more than 0.02. Measured on the tiny checkpoints
(2026-11-25): relative Frobenius error 0.3-1.2%, probabilities within 7e-4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(1)

from matprobe.errors import ExtractError, ProvenanceMismatch  # noqa: E402

REL_FRO, REL_MAX, PROB_TOL, MARGIN = 0.03, 0.05, 0.01, 0.02


def _run(ckpt, data, out, **kw):
    from matprobe.extract.runner import ExtractConfig, extract
    from matprobe.store import EmbeddingStore

    extract(ExtractConfig(ckpt=str(ckpt), data=str(data), out=str(out), layers="0,2,final", batch_size=5, **kw))
    with EmbeddingStore.open(out) as store:
        return {k: store.read(*k) for k in store.feature_keys()}, store.answers(), store.provenance


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "gemma3"])
def test_bf16_matches_fp32_within_stated_tolerance(arch, tiny_ckpts, tiny_manifest, tmp_path):
    z32, a32, p32 = _run(tiny_ckpts[arch], tiny_manifest, tmp_path / "fp32.h5", dtype="fp32")
    z16, a16, p16 = _run(tiny_ckpts[arch], tiny_manifest, tmp_path / "bf16.h5", dtype="bf16")
    assert (p32["dtype"], p16["dtype"]) == ("fp32", "bf16")
    assert p16["feature_dtype"] == "float32" and p16["attn_implementation"] == "sdpa"
    for key in z32:
        x, y = z32[key], z16[key]
        assert y.dtype == np.float32
        fro = np.linalg.norm(x - y) / np.linalg.norm(x)
        assert 1e-4 < fro <= REL_FRO, (arch, key, fro)  # > 1e-4: bf16 really was used
        assert np.abs(x - y).max() <= REL_MAX * np.abs(x).max(), (arch, key)
    np.testing.assert_allclose(a16["probs"], a32["probs"], atol=PROB_TOL)
    top2 = np.sort(a32["probs"], axis=1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > MARGIN
    assert clear.sum() >= 3
    np.testing.assert_array_equal(a16["pred"][clear], a32["pred"][clear])


def test_store_records_attention_and_refuses_a_mixed_resume(tiny_ckpts, tiny_manifest, tmp_path):
    z_sdpa, _, p_sdpa = _run(tiny_ckpts["llava"], tiny_manifest, tmp_path / "sdpa.h5")
    z_eager, _, p_eager = _run(tiny_ckpts["llava"], tiny_manifest, tmp_path / "eager.h5",
                               attn_implementation="eager")
    assert (p_sdpa["attn_implementation"], p_eager["attn_implementation"]) == ("sdpa", "eager")
    for key in z_sdpa:  # same maths, other kernels
        np.testing.assert_allclose(z_eager[key], z_sdpa[key], atol=1e-5, rtol=0)
    # Resuming a store with another dtype or attention implementation is refused, naming the field.
    from matprobe.extract.runner import ExtractConfig, extract

    with pytest.raises(ProvenanceMismatch, match="dtype"):
        extract(ExtractConfig(ckpt=str(tiny_ckpts["llava"]), data=str(tiny_manifest), out=str(tmp_path / "sdpa.h5"),
                              layers="0,2,final", batch_size=5, dtype="bf16"))
    with pytest.raises(ProvenanceMismatch, match="attn_implementation"):
        extract(ExtractConfig(ckpt=str(tiny_ckpts["llava"]), data=str(tiny_manifest), out=str(tmp_path / "sdpa.h5"),
                              layers="0,2,final", batch_size=5, attn_implementation="eager"))
    with pytest.raises(ExtractError, match="--attn 'flash' is not one of"):
        extract(ExtractConfig(ckpt=str(tiny_ckpts["llava"]), data=str(tiny_manifest), out=str(tmp_path / "x.h5"),
                              attn_implementation="flash"))


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fp32_forwards_run_without_tf32_and_the_flags_are_restored(dtype, tiny_ckpts, tiny_manifest, tmp_path,
                                                                   monkeypatch):
    """torch lets cuDNN convolutions round to TF32 by default: under fp32 `extract` turns that off
    for its forwards (on an H200 it moved Qwen2-VL's Z by 2.5e-4, RESULTS.md issue 22) and puts the
    user's settings back; under bf16 it leaves them alone. The flags are read inside the forward."""
    from matprobe.extract.hooks import LayerPooler

    seen = []
    run = LayerPooler.run

    def spy(self, *a, **kw):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return run(self, *a, **kw)

    monkeypatch.setattr(LayerPooler, "run", spy)
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    # a user who turned both on (torch's defaults: cuDNN on, matmul off); monkeypatch cannot restore
    # torch.backends.cuda.matmul's attributes, hence the try
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _run(tiny_ckpts["qwen2_vl"], tiny_manifest, tmp_path / "z.h5", dtype=dtype)
        after = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    assert len(seen) == 2  # 10 samples in batches of 5
    assert set(seen) == ({(False, False)} if dtype == "fp32" else {(True, True)})
    assert after == (True, True)
