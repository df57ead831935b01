"""Multi-process extraction: one data shard and one store shard per rank.

Launch with ``torchrun --nproc_per_node N -m matprobe extract ...`` or ``accelerate launch``.
The process group comes from accelerate's `PartialState` (gloo on CPU, nccl on GPUs).
Pitfall (docs/design.md §2): without CUDA a plain `PartialState()` ignores torchrun's
environment, so `cpu=` is set explicitly and the world size is checked against WORLD_SIZE.
The rank helpers live in `matprobe.parallel` (MI sweeps shard cells with them too).
"""

from __future__ import annotations

import os
from pathlib import Path

from matprobe.parallel import RankInfo, init_ranks, launched_world_size

__all__ = ["RankInfo", "init_ranks", "launched_world_size", "shard_path"]


def shard_path(out: str | os.PathLike, rank: int, world_size: int) -> Path:
    """Where rank `rank` writes its shard: <out>.shards/rank<r>-of-<w>.h5 beside `out`."""
    out = Path(out)
    return out.parent / f"{out.name}.shards" / f"rank{rank}-of-{world_size}.h5"
