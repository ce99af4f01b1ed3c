"""Scale-out for meta-training: one process per device under ``torchrun``, DistributedDataParallel on top.

``torchrun --nproc-per-node N -m pudnet train ...`` starts N processes and tells each its rank through the
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``); a plain ``pudnet train``
is a world of one and never touches ``torch.distributed``. Gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, metrics and validation; every rank trains."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``device`` for this process: each rank of a multi-GPU run takes the GPU of its local rank."""
        if device.type == "cuda" and self.size > 1:
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, meta_batch: int) -> int:
        """Tasks per rank and step for a global meta-batch of ``meta_batch``."""
        if meta_batch % self.size:
            raise ValueError(f"the meta-batch ({meta_batch}) must be a multiple of the number of processes "
                             f"({self.size}): every rank draws the same number of tasks per step")
        return meta_batch // self.size


def launched_world_size() -> int:
    """How many processes ``torchrun`` started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join(device: torch.device) -> World:
    """This process's place in the world ``torchrun`` started, joining its process group (a no-op alone)."""
    if launched_world_size() == 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def leave(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: nn.Module, world: World, device: torch.device, find_unused: bool) -> nn.Module:
    """``module`` itself alone, else under DistributedDataParallel (gradients averaged over the ranks).
    Buffers are not re-broadcast each step: they are constants (a frozen base, a fixed temperature)."""
    if world.size == 1:
        return module
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, broadcast_buffers=False, find_unused_parameters=find_unused,
    )


def mean_over_ranks(values: Tensor, world: World) -> Tensor:
    """The mean of ``values`` over all ranks (every rank gets it); ``values`` itself alone."""
    if world.size == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world.size
