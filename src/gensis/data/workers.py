"""A ``DataLoader`` whose worker processes hand their errors back unchanged: ``WorkerLoader``.

torch re-raises an exception from a worker process as ``type(e)(text)``, where ``text`` is
"Caught X in DataLoader worker process 0.\\nOriginal Traceback ...": a ``UserError`` (an unreadable image, a
slide moved or damaged since it was tiled) then reaches the user as a multi-line message instead of its own
line, its attributes are lost (an ``OSError``'s errno and file name), and a type whose constructor takes other
arguments comes back as a ``RuntimeError``. So the same mistake read differently with ``--workers 0`` and 2.

``WorkerLoader`` (with ``num_workers > 0``) catches an item's or a batch's exception inside the worker, sends
the exception object itself (pickled, as torch sends batches) as that batch, and raises it again in the main
process: the same type, message and attributes as without workers. The worker's traceback is kept as a note
on the exception (``--debug`` prints it). An exception that does not survive pickling is sent as a
``UserError`` (if it was one) or ``RuntimeError`` with the same text. ``KeyboardInterrupt`` is not caught:
a Ctrl-C stops the workers as torch's own loader does, and is a ``KeyboardInterrupt`` even when it lands while
the workers start (see ``_on_sigint``).
"""

from __future__ import annotations

import pickle
import signal
import sys
import threading
import traceback
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, Dataset, default_collate

from gensis import signals
from gensis.errors import Terminated, UserError


class WorkerFailure:
    """An exception raised in a worker process, carried back to the main process as a batch."""

    def __init__(self, error: BaseException, trace: str):
        self.error, self.trace = error, trace

    @classmethod
    def capture(cls, e: Exception) -> "WorkerFailure":
        trace = "".join(traceback.format_exception(e)).rstrip()
        try:
            # round trip of this process's own exception object (no file, nothing untrusted): does it survive
            # the DataLoader's transport to the main process unchanged?
            back = pickle.loads(pickle.dumps(e))
            if type(back) is not type(e) or str(back) != str(e):
                raise TypeError("changed by pickling")
            error: BaseException = e
        except Exception:  # e.g. a constructor with other arguments than the exception's args
            error = UserError(str(e)) if isinstance(e, UserError) else RuntimeError(f"{type(e).__name__}: {e}")
        return cls(error, trace)

    def reraise(self) -> None:
        e = self.error
        e.add_note(f"(raised in a DataLoader worker process)\n{self.trace}")
        raise e


class _Guarded(Dataset[Any]):
    """``dataset[i]``, or the ``WorkerFailure`` of its exception."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: Any) -> Any:
        try:
            return self.dataset[i]
        except Exception as e:
            return WorkerFailure.capture(e)


class _GuardedCollate:
    """A batch's first ``WorkerFailure``, else ``collate(items)`` (or the ``WorkerFailure`` of its exception)."""

    def __init__(self, collate: Callable[[list[Any]], Any]):
        self.collate = collate

    def __call__(self, items: list[Any]) -> Any:
        for x in items:
            if isinstance(x, WorkerFailure):
                return x
        try:
            return self.collate(items)
        except Exception as e:
            return WorkerFailure.capture(e)


class WorkerLoader(DataLoader[Any]):
    """``torch.utils.data.DataLoader`` (map-style dataset, batched) that raises a worker's exception in the
    main process as it was raised in the worker (see the module docstring). With ``num_workers=0`` it is a
    plain ``DataLoader``."""

    def __init__(self, dataset: Any, *, collate_fn: Callable[[list[Any]], Any] | None = None,
                 num_workers: int = 0, **kwargs: Any):
        self._guarded = num_workers > 0
        if self._guarded:
            dataset, collate_fn = _Guarded(dataset), _GuardedCollate(collate_fn or default_collate)
        super().__init__(dataset, collate_fn=collate_fn, num_workers=num_workers, **kwargs)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        if not self._guarded:
            return super().__iter__()
        return _raising(super().__iter__)


def _raising(start: Callable[[], Iterator[Any]]) -> Iterator[Any]:
    """The batches of ``start()`` (which forks the workers); a ``WorkerFailure`` raised as its exception, a Ctrl-C
    recorded by ``_on_sigint`` raised as ``KeyboardInterrupt`` even when Python swallowed it."""
    global _interrupted
    _watch_interrupts()
    batches = start()
    try:
        while True:
            if _interrupted or signals.terminated:
                raise _interrupt()
            try:
                b = next(batches)
            except StopIteration:
                return
            except RuntimeError:  # "DataLoader worker (pid ...) exited unexpectedly": it had the Ctrl-C too
                if _interrupted or signals.terminated:
                    raise _interrupt() from None
                raise
            if isinstance(b, WorkerFailure):
                _stop(batches)
                b.reraise()
            yield b
    except KeyboardInterrupt:
        _interrupted = False
        try:
            _stop(batches)
        except Exception:  # a worker the Ctrl-C killed: its shutdown error must not replace the interrupt
            pass
        raise


def _interrupt() -> KeyboardInterrupt:
    """What a recorded stop raises: ``Terminated`` after a SIGTERM (``gensis.signals``), else a Ctrl-C's."""
    return Terminated() if signals.terminated else KeyboardInterrupt()


def _stop(batches: Iterator[Any]) -> None:
    """Shut the workers down now, not when the traceback that holds the iterator is let go."""
    stop = getattr(batches, "_shutdown_workers", None)
    if stop is not None:
        stop()


# A Ctrl-C that lands while the workers are forked is swallowed: Python runs the after-fork hooks (logging's
# _releaseLock) in the parent, prints "Exception ignored in ... KeyboardInterrupt" and carries on, while the
# new worker, interrupted too, dies; the parent then failed 5 s later with torch's RuntimeError "DataLoader
# worker exited unexpectedly" (exit 1 and two tracebacks instead of "gensis: interrupted", exit 130). So the
# SIGINT handler also records the interrupt, and the swallowed KeyboardInterrupt is not printed.
_interrupted = False


def _on_sigint(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _watch_interrupts() -> None:
    """Clear the record; on the main thread, put ``_on_sigint`` in place of Python's default SIGINT handler
    (another handler, e.g. a notebook's, is left alone) and hide swallowed KeyboardInterrupts it recorded."""
    global _interrupted
    if threading.current_thread() is not threading.main_thread():
        return  # the record is the main thread's (its SIGINT handler): a helper thread's loader must not clear it
    _interrupted = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
        previous = sys.unraisablehook

        def hook(u: Any) -> None:
            if not ((_interrupted or signals.terminated) and u.exc_type is not None
                    and issubclass(u.exc_type, KeyboardInterrupt)):
                previous(u)

        sys.unraisablehook = hook
