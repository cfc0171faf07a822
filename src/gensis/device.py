"""Device and precision choice: CUDA + bf16 when present; on CPU bf16 autocast only where AMX makes it pay."""

from __future__ import annotations

import contextlib
import functools
import os

import torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            lr = os.environ.get("LOCAL_RANK")
            return torch.device(f"cuda:{lr}" if lr is not None else "cuda")
        return torch.device("cpu")
    return torch.device(name)


@functools.lru_cache(maxsize=1)
def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return "amx_bf16" in f.read()
    except OSError:
        return False


def use_bf16(device: torch.device, amp: str = "auto") -> bool:
    """``amp``: 'auto' (bf16 on CUDA, and on CPUs with AMX), 'bf16' (force), 'off'."""
    if amp == "off":
        return False
    if amp == "bf16":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_amx()


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
