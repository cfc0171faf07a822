"""Device and precision choice: CUDA + bf16 when present; on a CPU, bf16 autocast where its instructions make it
pay: AMX (Intel Sapphire Rapids+) or AVX512-BF16 (e.g. AMD Zen 4/5).

On an AVX512-BF16 CPU without AMX, bf16 was measured faster than fp32 for every training step (interleaved,
bf16/fp32 step time: DINO 0.76, E-LDM denoiser 0.65, VQ autoencoder 0.62) with the same accuracy (docs/pretrain.md
and docs/eldm.md, "bf16 on CPUs without AMX"). ``GENSIS_CPU_BF16`` narrows what ``auto`` accepts: ``amx``
(AMX only, the behaviour before AVX512-BF16 was measured) or ``off`` (the test suite pins it so that its numbers
do not depend on the CPU it runs on).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable

import torch


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; a device this machine does
    not have is a one-line ``UserError`` (not torch's traceback at the first tensor moved there)."""
    from gensis.errors import UserError

    if name == "auto":
        if torch.cuda.is_available():
            lr = os.environ.get("LOCAL_RANK")
            return torch.device(f"cuda:{lr}" if lr is not None else "cuda")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"unknown device '{name}' (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{name}' asked for, but CUDA is not available here (torch "
                            f"{torch.__version__}, no usable GPU): use device auto or cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device '{name}' asked for, but this machine has {torch.cuda.device_count()} "
                            f"CUDA device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})")
    elif dev.type != "cpu":
        raise UserError(f"device '{name}' is not supported (use auto, cpu, cuda or cuda:N)")
    return dev


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_amx() -> bool:
    return "amx_bf16" in _cpu_flags()


def cpu_has_avx512_bf16() -> bool:
    return "avx512_bf16" in _cpu_flags()


def cpu_bf16_pays() -> bool:
    """Whether ``amp=auto`` turns on bf16 autocast on this CPU (see the module docstring)."""
    mode = os.environ.get("GENSIS_CPU_BF16", "auto")
    if mode == "off":
        return False
    if mode == "amx":
        return cpu_has_amx()
    return cpu_has_amx() or cpu_has_avx512_bf16()


def use_bf16(device: torch.device, amp: str | bool = "auto") -> bool:
    """``amp``: 'auto' (bf16 on CUDA, and on CPUs with AMX or AVX512-BF16), 'bf16' (force), 'off'. ``False`` is
    'off': YAML 1.1 reads ``train.amp=off`` as the boolean, and the config keeps it so."""
    if amp == "off" or amp is False:
        return False
    if amp == "bf16":
        return True
    if amp != "auto":  # amp="fp32" (or "fp16") from Python was taken as "auto": bf16 on a bf16 CPU or GPU
        from gensis.configs.schema import AMP_MODES
        from gensis.errors import UserError

        raise UserError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return cpu_bf16_pays()


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


# -- the thread share of a process that runs beside another one (the demo's side lane) ---------------------------
_thread_share: Callable[[], int] | None = None


def set_thread_share(share: Callable[[], int] | None) -> None:
    """``share()``: how many torch threads this process should use now (None: leave them alone). The demo sets
    it while its side lane runs (``gensis.pipeline.lanes``); long loops apply it at safe points."""
    global _thread_share
    _thread_share = share


def thread_share_active() -> bool:
    """Whether a thread share is set (the demo's main lane while it has a side lane)."""
    return _thread_share is not None


def apply_thread_share() -> None:
    """Set torch's thread count to the current share, if one is set and it changed (training loops call this
    at each metrics row, the bank once per batch): a stage that started while the side lane was busy gets
    the freed threads back when the side lane is done."""
    if _thread_share is None:
        return
    want = _thread_share()
    if want >= 1 and torch.get_num_threads() != want:
        torch.set_num_threads(want)
