"""gensis.data.workers.WorkerLoader: an exception raised in a DataLoader worker process reaches the caller as it
was raised (type, one-line message, attributes), the same as with num_workers=0; torch's own loader turns it
into "Caught X in DataLoader worker process 0. Original Traceback ..." (or a RuntimeError)."""

from __future__ import annotations

import errno

import pytest
import torch

from gensis.data.sources import BadImageError
from gensis.data.workers import WorkerLoader
from gensis.errors import UserError


class Refused(UserError):
    """A UserError whose constructor takes other arguments than its message: torch's re-raise cannot rebuild it."""

    def __init__(self, path: str, why: str):
        super().__init__(f"cannot use {path}: {why}")


ERRORS = {
    "bad-image": lambda: BadImageError("/data/a/3.png", "OSError: image file is truncated"),
    "refused": lambda: Refused("/data/s.svs", "moved"),
    "oserror": lambda: PermissionError(errno.EACCES, "Permission denied", "/data/a/3.png"),
}


class Failing(torch.utils.data.Dataset):
    def __init__(self, kind: str, bad: int = 5):
        self.kind, self.bad = kind, bad

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        if i == self.bad:
            raise ERRORS[self.kind]()
        return torch.full((2,), i)


def _raised(kind: str, workers: int, **kw) -> BaseException:
    with pytest.raises(Exception) as e:
        for _ in WorkerLoader(Failing(kind), batch_size=2, num_workers=workers, **kw):
            pass
    return e.value


@pytest.mark.parametrize("kind", list(ERRORS))
def test_worker_error_is_the_error_raised_without_workers(kind):
    plain, worker = _raised(kind, 0), _raised(kind, 2)
    assert str(worker) == str(plain) and "\n" not in str(worker)
    if kind == "refused":  # not rebuildable from its message: the same text, still a UserError (one CLI line)
        assert type(plain) is Refused and type(worker) is UserError
    else:
        assert type(worker) is type(plain)
    if kind == "bad-image":
        assert (worker.path, worker.why) == (plain.path, plain.why)
    if kind == "oserror":
        assert (worker.errno, worker.filename) == (errno.EACCES, "/data/a/3.png")
    # --debug shows where it happened in the worker
    notes = "\n".join(getattr(worker, "__notes__", []))
    assert "DataLoader worker process" in notes and "__getitem__" in notes


def test_torch_loader_loses_what_worker_loader_keeps():
    """The failure this module exists for, with torch's own DataLoader (if torch changes, this says so)."""
    with pytest.raises(Exception) as e:
        list(torch.utils.data.DataLoader(Failing("refused"), batch_size=2, num_workers=1))
    assert not isinstance(e.value, UserError) and "\n" in str(e.value)


def test_collate_error_and_good_batches():
    def collate(items):
        if any(int(x[0]) == 3 for x in items):
            raise UserError("item 3 cannot be batched")
        return torch.stack(items)

    got = []
    with pytest.raises(UserError) as e:
        for b in WorkerLoader(Failing("bad-image", bad=99), batch_size=2, num_workers=1, collate_fn=collate):
            got.append(b)
    assert str(e.value) == "item 3 cannot be batched"
    assert [b[:, 0].tolist() for b in got] == [[0, 1]]
    loader = WorkerLoader(Failing("bad-image", bad=99), batch_size=3, num_workers=1)
    assert torch.equal(torch.cat(list(loader))[:, 0], torch.arange(8)) and len(loader) == 3
