"""torch.distributed set-up for ``torchrun``: NCCL on GPU, gloo on CPU; rank 0 is the only writer.

Teardown. ``torch.distributed.nn.functional`` declares ``group=group.WORLD`` as a default argument, evaluated
when the module is imported; timm and diffusers import it (through ``torch._dynamo`` and
``torch.distributed._shard``). Imported *after* ``init_process_group`` (``bank generate`` did, when writing the
header's version list), ten functions held the default process group, so ``destroy_process_group`` could not
free it: gloo's three threads (two ``pt_gloo_runloop`` workers and the ``gloo_tcp_loop``) stayed alive until
the interpreter tore the group down at exit, in no fixed order with the interpreter's own finalisation, and
some runs ended in "terminate called without an active exception". ``init_distributed`` therefore imports
that module before creating the group (its defaults then hold ``None``); a test checks that no gloo thread
outlives ``cleanup``.

Failures. A rank that fails records its message in the process group's store (``report_failure``, called by
the command line for any error); every ``barrier`` polls the store while it waits, so the other ranks stop
within a fraction of a second with one line naming the failed rank, instead of waiting in a collective until
the timeout (``GENSIS_DIST_TIMEOUT`` seconds, default 1800). Collectives in this module are preceded by such
a barrier, so a rank never enters one that a failed peer will not join.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from gensis.errors import UserError, prints_error  # noqa: F401 (re-exported: its old home)

FAILED_KEY = "gensis/failed"
PRINTED_KEY = "gensis/failed-printed"  # set when rank 0 printed the failure itself (an ``all_ranks`` error)
ACK_KEY = "gensis/failed-seen"  # ranks that have read FAILED_KEY
LEFT_KEY = "gensis/left"  # ranks past the last barrier of cleanup(), no longer reading the store
_BARRIER_POLL_MAX = 0.2  # seconds between store polls while waiting (start at 1 ms, doubling)
_barrier_count = 0


class PeerFailed(UserError):
    """Another rank of this run failed: this one stops (one line, exit status 2; none when rank 0 printed the
    failure itself, an ``all_ranks`` error)."""


def _peer_failed(store, rank: int, msg: str) -> PeerFailed:
    """This rank's stop on a peer's failure ``msg``: quiet (``all_ranks``) when rank 0 printed it already."""
    err = PeerFailed(f"stopping process {rank}: {msg}")
    try:
        err.all_ranks = bool(store.check([PRINTED_KEY]))
    except Exception:
        pass
    return err


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


def default_timeout() -> timedelta:
    """The collective timeout: ``GENSIS_DIST_TIMEOUT`` seconds (default 30 min, torch's default)."""
    try:
        return timedelta(seconds=float(os.environ.get("GENSIS_DIST_TIMEOUT", "1800")))
    except ValueError:
        raise UserError(f"GENSIS_DIST_TIMEOUT must be a number of seconds, got "
                        f"'{os.environ['GENSIS_DIST_TIMEOUT']}'") from None


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init_distributed(device_type: str, timeout: timedelta | None = None) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        try:  # before the group exists: its functions' `group=group.WORLD` defaults must not capture it
            import torch.distributed.nn  # noqa: F401
        except ImportError:
            pass
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo",
                                timeout=timeout or default_timeout())
    info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    return info


def _store():
    from torch.distributed.distributed_c10d import _get_default_store

    return _get_default_store()


def _peer_failure(store) -> str | None:
    """The failure message a rank left in the store, or None."""
    try:
        if not store.check([FAILED_KEY]):
            return None
        return store.get(FAILED_KEY).decode(errors="replace")
    except Exception as e:  # the store's host (torchrun's agent, or rank 0 without one) is gone
        return f"lost the process group's store ({type(e).__name__}); another process has ended"


def barrier() -> None:
    """All ranks wait here. Waits poll the store, so a failed peer (``report_failure``) stops this rank at
    once with ``PeerFailed`` (a one-line error) instead of a hang."""
    global _barrier_count
    if not _initialized():
        return
    _barrier_count += 1  # every rank passes the same barriers in the same order
    key = f"gensis/barrier/{_barrier_count}"
    store, world, rank = _store(), dist.get_world_size(), dist.get_rank()
    delay, step = 0.001, 1
    while True:
        try:
            if store.add(key, step) >= world:
                return
        except Exception as e:  # the store's host (torchrun's agent, or rank 0 without one) is gone
            raise PeerFailed(f"stopping process {rank}: lost the process group's store "
                             f"({type(e).__name__}); another process has ended") from None
        step = 0
        msg = _peer_failure(store)
        if msg is not None:
            try:
                store.add(ACK_KEY, 1)
            except Exception:
                pass
            raise _peer_failed(store, rank, msg)
        time.sleep(delay)
        delay = min(2 * delay, _BARRIER_POLL_MAX)


def as_peer_failure(error: BaseException) -> PeerFailed | None:
    """A collective's error (gloo: "Connection closed by peer") raised here because another rank failed or was
    interrupted and left the process group: that rank's message (``report_failure``) as ``PeerFailed``, one line
    instead of this rank's traceback; None for any other error, or when no rank left a message."""
    if not isinstance(error, RuntimeError) or isinstance(error, UserError) or not _initialized():
        return None
    try:
        store = _store()
        msg = _peer_failure(store)
        rank = dist.get_rank()
    except Exception:
        return None
    return _peer_failed(store, rank, msg) if msg is not None else None


def report_failure(error: BaseException | str) -> None:
    """Tell the other ranks that this one failed (a no-op outside a process group and for ``PeerFailed``).

    An error every rank raises together (``UserError.all_ranks``) is printed by rank 0 alone: reported by rank
    0 as printed, so that a rank that did not raise it (rank 0's verdict on the run folder) stops at its next
    wait without a second line; reported by another rank (while printing nothing) as not printed, so that
    should rank 0 not raise it after all, rank 0 stops at its next wait with that rank's line, instead of the
    run ending without one."""
    if not _initialized() or isinstance(error, PeerFailed):
        return
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    text = (text.splitlines() or [type(error).__name__])[0]
    try:
        store = _store()
        if getattr(error, "all_ranks", False) and dist.get_rank() == 0:
            store.set(PRINTED_KEY, "1")  # before the message: a peer that reads it knows at once
        store.set(FAILED_KEY, f"process {dist.get_rank()} failed: {text[:300]}")
        if dist.get_rank() == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            # rank 0 hosts the store (no torchrun agent): give the others up to 3 s to read the message
            # before this process, and the store with it, goes away
            t0 = time.time()
            while store.add(ACK_KEY, 0) < dist.get_world_size() - 1 and time.time() - t0 < 3.0:
                time.sleep(0.02)
    except Exception:
        pass  # the store is gone: the others notice that themselves


def abort() -> None:
    """After a failure: leave the process group without waiting for anyone."""
    if _initialized():
        try:
            dist.destroy_process_group()
        except Exception:
            pass


def cleanup() -> None:
    """Normal end of a distributed command: wait for every rank, then free the group (and its threads)."""
    if not _initialized():
        return
    barrier()  # no rank tears its connections down while a peer still uses them
    _wait_before_store_goes(dist.get_rank(), dist.get_world_size())
    dist.destroy_process_group()


def _wait_before_store_goes(rank: int, world: int, timeout: float = 10.0) -> None:
    """Without torchrun's agent, rank 0 hosts the store: the last rank to reach a barrier returns at once,
    while the others are still polling the store to see that it is complete. If that last rank is rank 0
    and it exits, a peer's next poll finds the store gone and fails a run that ended well. So every other
    rank says it has left the barrier, and rank 0 waits for that (at most ``timeout`` s) before going."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        return  # the agent hosts the store; it outlives every rank
    try:
        store = _store()
        if rank != 0:
            store.add(LEFT_KEY, 1)
            return
        t0, delay = time.time(), 0.001
        while store.add(LEFT_KEY, 0) < world - 1 and time.time() - t0 < timeout:
            time.sleep(delay)
            delay = min(2 * delay, _BARRIER_POLL_MAX)
    except Exception:
        pass  # the store is gone: nothing left to wait for


def broadcast_object(obj, src: int = 0):
    if not _initialized():
        return obj
    barrier()
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Sums of ``values`` over the ranks (float64; on the GPU under NCCL)."""
    if not _initialized():
        return values
    barrier()
    dev = torch.device(device)
    t = torch.tensor(values, dtype=torch.float64, device=dev if dev.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with its BatchNorm layers synchronised over the ranks (``SyncBatchNorm``, as ``main_dino.py``
    and StableRep convert their heads under DDP) when the process group runs on GPUs (NCCL); else unchanged, each
    rank normalising its own batch: torch's SyncBatchNorm runs on GPUs only. The backend decides, not
    ``torch.cuda.is_available()``: with ``train.device=cpu`` on a GPU machine the group is gloo, on the CPU."""
    if _initialized() and dist.get_backend() == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return module


def setup_training(train_cfg: dict) -> tuple[torch.device, DistInfo, bool, int]:
    """Common start of every trainer: device, CPU threads, process group, bf16 choice and seed.

    ``train_cfg`` is a config's ``train`` section (device, threads, amp, seed).
    """
    from gensis.device import pick_device, use_bf16

    device = pick_device(train_cfg["device"])
    if train_cfg.get("threads"):
        torch.set_num_threads(int(train_cfg["threads"]))
    info = init_distributed(device.type)
    if not train_cfg.get("threads"):
        from gensis.train.overlap import free_a_core

        free_a_core(device, info.enabled)
    return device, info, use_bf16(device, train_cfg["amp"]), int(train_cfg["seed"])
