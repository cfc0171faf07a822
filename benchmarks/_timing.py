"""Timing helpers shared by the benchmark scripts: interleaved repetitions, medians, the machine's load."""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

import torch


def sync(device: torch.device | str) -> None:
    """Wait for queued device work (CUDA), so that a timer measures the work, not its launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str = "cpu") -> float:
    """Seconds one call of ``fn`` takes (device work included)."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 0,
                device: torch.device | str = "cpu",
                cpu: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """``reps`` timed calls of every function, interleaved A B, B A, A B ... so that load from other
    processes hits each alike; ``warmup`` untimed calls of each first. Returns the seconds per call; ``cpu``,
    if given, receives this process's CPU seconds per call (all its threads), steadier than wall time on a
    machine shared with other jobs."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for n in (names if r % 2 == 0 else names[::-1]):
            c0 = time.process_time()
            times[n].append(timed(fns[n], device))
            if cpu is not None:
                cpu.setdefault(n, []).append(time.process_time() - c0)
    return times


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def load_line() -> str:
    """The machine's load (as ``uptime``) and core count, printed with every result (shared machines)."""
    la = os.getloadavg()
    return f"load average {la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f} on {os.cpu_count()} cores"


def table(title: str, times: dict[str, list[float]], images: int, ours: str = "gensis",
          theirs: str = "lightly") -> float:
    """Print median / min ms and images/s per entry and the speedup theirs/ours; returns the speedup."""
    med = {n: median(t) for n, t in times.items()}
    print(f"\n{title}")
    print(f"{'':10}{'median ms':>11}{'min ms':>9}{'images/s':>10}")
    for n, t in times.items():
        print(f"{n:10}{1000 * med[n]:11.1f}{1000 * min(t):9.1f}{images / med[n]:10.1f}")
    speedup = med[theirs] / med[ours]
    print(f"time {ours}/{theirs}: {med[ours] / med[theirs]:.3f}   speedup ({ours} images/s ÷ {theirs}): {speedup:.3f}")
    return speedup


class PrecisionProbe:
    """The dtype a side's matrix multiplies actually ran in, observed, not inferred from its settings.

    While active (``with PrecisionProbe() as p:``), a global module forward hook records the output dtype of every
    ``nn.Linear`` call (training forwards and the EMA teacher's, made without gradients) until ``limit`` calls
    with gradients enabled have been seen (a step or two), then removes itself, so that the timed work is not
    slowed beyond its first steps. ``name``
    is ``'bf16'`` if any recorded output was bfloat16 (autocast), ``'fp16'`` if float16, ``'fp32'`` if all were
    float32, ``'none'`` if no Linear ran. Written after a benchmark compared gensis in bf16 (``train.amp=off`` read
    by YAML as the boolean false, taken for ``auto`` until commit d54810f) against lightly in fp32 while it said
    fp32 on both sides."""

    def __init__(self, limit: int = 64):
        self.limit, self.dtypes, self.calls, self._handle = limit, set(), 0, None

    def _hook(self, module, _inputs, output) -> None:
        if not isinstance(module, torch.nn.Linear) or not isinstance(output, torch.Tensor):
            return
        self.dtypes.add(output.dtype)
        self.calls += torch.is_grad_enabled()
        if self.calls >= self.limit and self._handle is not None:
            self._handle.remove()
            self._handle = None

    def __enter__(self) -> "PrecisionProbe":
        self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def name(self) -> str:
        if torch.bfloat16 in self.dtypes:
            return "bf16"
        if torch.float16 in self.dtypes:
            return "fp16"
        return "fp32" if self.dtypes else "none"


def require_precision(side: str, seen: str, want: str) -> None:
    """Stop the benchmark (exit status 1, one line) when ``side`` ran in another precision than ``want``: a ratio of
    bf16 against fp32 presented as fp32 against fp32 is what this prevents."""
    if seen != want:
        raise SystemExit(f"error: {side} ran in {seen}, the benchmark asked for {want}: its timings would not "
                         f"compare what the table says (no result printed)")
