"""Device choice and the few collective operations training needs, which do nothing in a single process.

Under ``torchrun`` (``WORLD_SIZE > 1``) :func:`setup` joins the process group: gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"``: this process's GPU if CUDA is available, else the CPU. ``"cuda"``: this process's GPU."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    if preference == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(preference)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job. With one process, every operation is the identity."""

    rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, order: Tensor) -> Tensor:
        """This rank's share of ``order`` ``(n,)``, padded by wrapping so that every rank gets the same count."""
        if not self.enabled:
            return order
        padding = -len(order) % self.world_size
        order = torch.cat([order, order[:padding]])
        return order[self.rank :: self.world_size]

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value``, on every rank."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def mean(self, tensor: Tensor) -> Tensor:
        """The mean of ``tensor`` over ranks."""
        if not self.enabled:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.world_size

    def any(self, flag: bool, device: torch.device | str = "cpu") -> bool:
        """True if ``flag`` is True on any rank (``device``: where the backend reduces, the GPU under nccl)."""
        if not self.enabled:
            return flag
        tensor = torch.tensor([int(flag)], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device_preference: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group when launched by ``torchrun``, and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    device = pick_device(device_preference, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size <= 1:
        return Distributed(), device
    if device.type == "cuda":
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), owns_group), device


def teardown(context: Distributed) -> None:
    """Leave the process group if :func:`setup` created it."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()
