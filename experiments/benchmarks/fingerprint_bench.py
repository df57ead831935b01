"""Weights fingerprint cost on a 7B-sized checkpoint (issue 15).

The fingerprint reads a fixed number of 4 KiB samples (one per tensor plus 16 per file), so
its cost is set by the number of tensors and the disk's latency for small reads, not by the
file size. Two measurements:

1. layout: three sparse shards with the tensor layout of LLaVA-1.5-7B (LLaMA-7B decoder: 291
   tensors, CLIP ViT-L/14-336: 391, projector: 4; fp16, 14.1 GB in all). Holes read as zeros
   without disk I/O, so this times the work (header parsing, 700 seeks + reads, hashing).
2. cold reads: a real (written) file of `--real-gb` GB with the same number of tensors, evicted
   from the page cache with posix_fadvise(DONTNEED) before each run: the same number of 4 KiB
   reads hitting the disk. A full sha256 of the same real file is the reference.

Usage: python experiments/benchmarks/fingerprint_bench.py [--real-gb 2] [--dir /tmp/fpbench]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import time
from pathlib import Path

import numpy as np

from matprobe.provenance import weights_fingerprint


def llava7b_tensors() -> list[tuple[str, tuple[int, ...]]]:
    out = [("model.embed_tokens.weight", (32064, 4096)), ("lm_head.weight", (32064, 4096)),
           ("model.norm.weight", (4096,))]
    for i in range(32):
        out += [(f"model.layers.{i}.self_attn.{p}_proj.weight", (4096, 4096)) for p in "qkvo"]
        out += [(f"model.layers.{i}.mlp.{p}_proj.weight", (11008, 4096)) for p in ("gate", "up", "down")]
        out += [(f"model.layers.{i}.{p}_layernorm.weight", (4096,)) for p in ("input", "post_attention")]
    for i in range(24):  # CLIP ViT-L/14-336: 16 tensors per block
        for p in ("q", "k", "v", "out"):
            out += [(f"vision.layers.{i}.attn.{p}.weight", (1024, 1024)), (f"vision.layers.{i}.attn.{p}.bias", (1024,))]
        out += [(f"vision.layers.{i}.fc1.weight", (4096, 1024)), (f"vision.layers.{i}.fc1.bias", (4096,)),
                (f"vision.layers.{i}.fc2.weight", (1024, 4096)), (f"vision.layers.{i}.fc2.bias", (1024,))]
        out += [(f"vision.layers.{i}.ln{j}.{w}", (1024,)) for j in (1, 2) for w in ("weight", "bias")]
    out += [("vision.embeddings.patch.weight", (1024, 3, 14, 14)), ("vision.embeddings.class", (1024,)),
            ("vision.embeddings.position", (577, 1024)), ("vision.pre_ln.weight", (1024,)),
            ("vision.pre_ln.bias", (1024,)), ("vision.post_ln.weight", (1024,)), ("vision.post_ln.bias", (1024,))]
    out += [("projector.0.weight", (4096, 1024)), ("projector.0.bias", (4096,)),
            ("projector.2.weight", (4096, 4096)), ("projector.2.bias", (4096,))]
    return out


def write_shards(folder: Path, tensors, shards: int, scale: float, real: bool) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    per = int(np.ceil(len(tensors) / shards))
    total = 0
    rng = np.random.default_rng(0)
    for k in range(shards):
        part = tensors[k * per:(k + 1) * per]
        header, off = {}, 0
        for name, shape in part:
            nbytes = max(2, int(np.prod(shape) * 2 * scale) // 2 * 2)
            header[name] = {"dtype": "F16", "shape": [nbytes // 2], "data_offsets": [off, off + nbytes]}
            off += nbytes
        raw = json.dumps(header).encode()
        path = folder / f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        with open(path, "wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            if real:
                left = off
                while left:
                    step = min(left, 64 << 20)
                    fh.write(rng.integers(0, 256, step, dtype=np.uint8).tobytes())
                    left -= step
            else:
                fh.truncate(8 + len(raw) + off)  # sparse
        total += path.stat().st_size
    (folder / "config.json").write_text("{}")
    return total


def evict(folder: Path) -> None:
    for p in folder.iterdir():
        fd = os.open(p, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)


def timed(fn, repeats: int = 3, before=None) -> float:
    best = float("inf")
    for _ in range(repeats):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-gb", type=float, default=2.0)
    ap.add_argument("--dir", default="/tmp/fpbench")
    args = ap.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    tensors = llava7b_tensors()
    full = sum(int(np.prod(s)) * 2 for _, s in tensors)
    sparse = root / "sparse"
    size = write_shards(sparse, tensors, 3, 1.0, real=False)
    t_layout = timed(lambda: weights_fingerprint(sparse))
    print(f"layout: {len(tensors)} tensors, {size / 1e9:.1f} GB in 3 sparse shards: fingerprint {t_layout:.3f} s "
          "(page cache / holes: no disk reads)")
    real = root / "real"
    t0 = time.perf_counter()
    rsize = write_shards(real, tensors, 3, args.real_gb * 1e9 / full, real=True)
    os.sync()
    print(f"wrote real shards: {rsize / 1e9:.2f} GB, {len(tensors)} tensors in {time.perf_counter() - t0:.1f} s")
    t_cold = timed(lambda: weights_fingerprint(real), before=lambda: evict(real))
    t_warm = timed(lambda: weights_fingerprint(real))

    def sha_all():
        for p in sorted(real.glob("*.safetensors")):
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while chunk := fh.read(16 << 20):
                    h.update(chunk)

    t_sha = timed(sha_all, repeats=1, before=lambda: evict(real))
    print(f"real: fingerprint cold {t_cold:.3f} s, warm {t_warm:.3f} s; full sha256 cold {t_sha:.1f} s "
          f"({rsize / t_sha / 1e6:.0f} MB/s) -> full sha256 of 14.1 GB ~ {full / (rsize / t_sha):.0f} s")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
