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
a Ctrl-C stops the workers as torch's own loader does.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any, Callable, Iterator

from torch.utils.data import DataLoader, Dataset, default_collate

from gensis.errors import UserError


class WorkerFailure:
    """An exception raised in a worker process, carried back to the main process as a batch."""

    def __init__(self, error: BaseException, trace: str):
        self.error, self.trace = error, trace

    @classmethod
    def capture(cls, e: Exception) -> "WorkerFailure":
        trace = "".join(traceback.format_exception(e)).rstrip()
        try:
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
        it = super().__iter__()
        if not self._guarded:
            return it
        return _raising(it)


def _raising(batches: Iterator[Any]) -> Iterator[Any]:
    for b in batches:
        if isinstance(b, WorkerFailure):
            stop = getattr(batches, "_shutdown_workers", None)  # now, not when the traceback is let go
            if stop is not None:
                stop()
            b.reraise()
        yield b
