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
