"""torchrun / accelerate rank helpers shared by extraction and MI sweeps (a low-level module:
imports nothing from matprobe but `errors`).

The process group comes from accelerate's `PartialState` (gloo on CPU, nccl on GPUs).
Pitfall (docs/design.md §2): without CUDA a plain `PartialState()` ignores torchrun's
environment, so `cpu=` is set explicitly and the world size is checked against WORLD_SIZE.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from matprobe.errors import LaunchError


@dataclass
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    state: Any = None  # accelerate PartialState when distributed

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def split(self, items: list) -> list:
        """This rank's contiguous slice of `items` (earlier ranks take the remainder)."""
        if not self.distributed:
            return list(items)
        with self.state.split_between_processes(list(items)) as part:
            return list(part)

    def device(self, requested: str) -> str:
        """cuda -> cuda:<local_rank> under a launcher; cpu stays cpu."""
        if requested == "cuda" and self.distributed:
            return f"cuda:{self.local_rank}"
        return requested


def launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def init_ranks(device: str) -> RankInfo:
    """Join the launcher's process group if there is one; single-process otherwise."""
    world = launched_world_size()
    if world <= 1:
        return RankInfo()
    from accelerate import PartialState

    state = PartialState(cpu=not device.startswith("cuda"))
    if state.num_processes != world:
        raise LaunchError(
            f"launcher set WORLD_SIZE={world} but the process group has {state.num_processes} "
            f"process(es); launch with torchrun or accelerate launch and matching --device"
        )
    return RankInfo(
        rank=state.process_index, world_size=state.num_processes,
        local_rank=state.local_process_index, state=state,
    )
