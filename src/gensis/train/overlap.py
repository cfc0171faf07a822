"""A second CPU core for the work of a training step that the step does not need at once.

On a CPU whose torch intra-op threads leave a core free (``train.threads=1`` on a 2-core machine, the setting
that is fastest on a busy machine; see ``benchmarks/README.md``), a training step would otherwise use one core.
``Overlap`` runs two kinds of work on one helper thread while the main thread computes:

- ``prefetch(fn, items)``: ``fn(item)`` one item ahead (the pretraining loop makes the next batch's crops,
  Gen- views and masks while the current step runs; what lightly's examples do in DataLoader workers);
- ``submit(fn, ...)``: one call whose result the step collects later (the teacher's forward, which needs no
  gradient, runs next to the student's; not under bf16 autocast: two bf16 forwards at once on a CPU made the
  student's gradients differ from run to run, by ~1e-4 of the gradient norm on a loaded machine, so the
  teacher's runs first on the training thread there).

Results are bit for bit those of running the same calls in order on one thread: the helper runs one call at a
time, in submission order, so every random generator a call draws from is consumed in the same order; torch
ops take no global state from the thread they run on except grad mode and autocast, which are thread-local
(a submitted function sets its own). The intra-op thread count is the process's (``torch.set_num_threads``),
so the helper adds one thread in all. Torch releases the GIL inside its ops, so the two threads run in parallel.

``enabled=False`` (a GPU, DDP, or intra-op threads using every core) runs every call inline, at once: the
same code path without a thread. ``GENSIS_OVERLAP=off`` disables it everywhere, ``on`` forces it on a CPU.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

import torch

from gensis.errors import UserError

T = TypeVar("T")
R = TypeVar("R")
MODES = ("auto", "on", "off")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def overlap_enabled(device: torch.device, distributed: bool) -> bool:
    """Whether a trainer on ``device`` uses the helper thread (``GENSIS_OVERLAP``: auto | on | off).

    auto: on a CPU, without DDP (each rank is a process of its own there, the cores are taken), when the torch
    intra-op threads leave at least one usable core free."""
    mode = os.environ.get("GENSIS_OVERLAP", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise UserError(f"GENSIS_OVERLAP={mode}: must be one of {', '.join(MODES)}")
    if mode == "off" or device.type != "cpu":
        return False
    return mode == "on" or (not distributed and torch.get_num_threads() < usable_cores())


def free_a_core(device: torch.device, distributed: bool) -> None:
    """``train.threads: null`` on a CPU: torch's intra-op threads on all usable cores but one, which the helper
    thread takes. Measured on a 2-core Intel CPU with AMX, ``gensis pretrain --preset demo --data
    builtin:animal-mnist optim.epochs=1`` (``images_per_s``): one thread + helper against torch's two threads,
    DINO 362 vs 230, the E-LDM 615 vs 476, the autoencoder 434 vs 391 (README, "Scale").
    Left alone: a GPU, DDP (each rank is a process of its own), ``OMP_NUM_THREADS`` set (the user's or the
    demo's side lane's choice), a thread share set (the demo's main lane, ``gensis.device``), one usable core,
    or torch already on fewer threads than cores. ``gensis.api`` puts the thread count back after the stage."""
    from gensis.device import thread_share_active

    cores = usable_cores()
    if (device.type != "cpu" or distributed or os.environ.get("OMP_NUM_THREADS") or thread_share_active()
            or cores < 2 or torch.get_num_threads() < cores):
        return
    torch.set_num_threads(cores - 1)


def done_now(fn: Callable[..., R], *args) -> "Future[R]":
    """``fn(*args)`` run now, as a completed future (its exception kept for ``result()``)."""
    fut: Future = Future()
    try:
        fut.set_result(fn(*args))
    except BaseException as e:  # noqa: BLE001 (re-raised by result(), as from a thread)
        fut.set_exception(e)
    return fut


class Overlap:
    """One helper thread (or none: ``enabled=False`` runs every call inline)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable[..., R], *args) -> "Future[R]":
        """``fn(*args)`` on the helper thread, after everything submitted before; ``.result()`` waits for it."""
        if not self.enabled:
            return done_now(fn, *args)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="gensis-overlap")
        return self._pool.submit(fn, *args)

    def prefetch(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn(item)`` for every item, in order, each computed while the consumer works on the previous one.

        ``items`` is iterated on the calling thread (a DataLoader starts its workers there); nothing is made
        past the last item, so random generators that ``fn`` draws from stand, after the last result, where a
        plain ``map`` would leave them (what an end-of-epoch checkpoint saves)."""
        it = iter(items)
        try:
            nxt = next(it)
        except StopIteration:
            return
        job = self.submit(fn, nxt)
        for item in it:
            done = job.result()
            job = self.submit(fn, item)  # the next one is on its way before the consumer gets this one
            yield done
        yield job.result()

    def close(self) -> None:
        """Stop the helper thread (after its current call)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
