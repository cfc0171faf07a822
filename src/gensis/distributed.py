"""torch.distributed set-up for ``torchrun``: NCCL on GPU, gloo on CPU; rank 0 is the only writer."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # no rank tears its connections down while a peer still uses them
        dist.destroy_process_group()


def broadcast_object(obj, src: int = 0):
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def setup_training(train_cfg: dict) -> tuple[torch.device, DistInfo, bool, int]:
    """Common start of every trainer: device, CPU threads, process group, bf16 choice and seed.

    ``train_cfg`` is a config's ``train`` section (device, threads, amp, seed).
    """
    from gensis.device import pick_device, use_bf16

    device = pick_device(train_cfg["device"])
    if train_cfg.get("threads"):
        torch.set_num_threads(int(train_cfg["threads"]))
    info = init_distributed(device.type)
    return device, info, use_bf16(device, train_cfg["amp"]), int(train_cfg["seed"])
