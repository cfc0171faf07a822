"""The one exception type that the CLI turns into a single clear line on stderr, and what an ``OSError`` was
doing when it happened (reading or writing), which the OS does not say: an access error (EACCES, EPERM) is
either. Where gensis reads its inputs it says so (``reading``: a ``UserError`` naming what and where, exit 2);
where it writes its outputs it tags the error (``writing``), so the CLI's last-resort line says "cannot write"
only when it knows."""

import errno
import os
from contextlib import contextmanager
from typing import Iterator

ACCESS_ERRNOS = frozenset({errno.EACCES, errno.EPERM})  # refused access: a read or a write, the OS does not say
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})  # only ever from a write
INTERRUPTED = "gensis: interrupted"  # how the line of a command stopped by Ctrl-C begins (exit status 130)


class Terminated(KeyboardInterrupt):
    """SIGTERM reached a ``gensis`` command (a scheduler's time limit, ``kill``, ``timeout``): raised by the CLI's
    handler (``gensis.cli.main``) so that it stops as a Ctrl-C does (the same clean-up, the same "continue with"
    line) with the status a shell reports for SIGTERM, 143. A ``KeyboardInterrupt``, so every place that already
    stops cleanly on Ctrl-C (DataLoader workers, the demo's side lane, the tiler) does so on SIGTERM too."""


class UserError(Exception):
    """A mistake in the user's input (path, data, config key): reported as one line, exit status 2.

    ``all_ranks``: a verdict every rank of a ``torchrun`` job reaches at the same point (e.g. a non-finite loss,
    all-reduced): only rank 0 prints it, the other ranks exit with the same status quietly, and no rank
    reports it to the others as its own failure (``gensis.distributed.report_failure``)."""

    all_ranks: bool = False


def prints_error(error: BaseException) -> bool:
    """Whether this process prints ``error``: always, except an ``all_ranks`` error on a rank other than 0
    (``RANK`` as torchrun sets it; the process group may already be gone). Here, not in ``gensis.distributed``,
    so that the CLI reports an error without importing torch."""
    return not getattr(error, "all_ranks", False) or on_main_rank()


@contextmanager
def same_on_every_rank() -> Iterator[None]:
    """Around a check every rank of a ``torchrun`` job makes on the same inputs (the command line's config, the
    training set's size): a UserError raised inside is marked ``all_ranks``, so that rank 0 alone prints it."""
    try:
        yield
    except UserError as e:
        e.all_ranks = True
        raise


def on_main_rank() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` job, or runs alone: the one that prints a command's
    result lines (``RANK`` as torchrun sets it, read without importing torch)."""
    return os.environ.get("RANK", "0") in ("", "0")


@contextmanager
def reading(what: str) -> Iterator[None]:
    """Around a read of an input (``what``: e.g. "the data DIR"): an access error (EACCES, EPERM) becomes one
    ``UserError`` line "cannot read WHAT: permission denied on PATH ..." (PATH: the exception's own filename;
    exit 2). A write error tagged inside (``writing``) passes unchanged."""
    try:
        yield
    except OSError as e:
        if e.errno not in ACCESS_ERRNOS or operation(e) == "write":
            raise
        raise read_error(what, e) from e


def read_error(what: str, e: OSError) -> UserError:
    """The one line for an access error ``e`` while reading ``what``: "cannot read WHAT: permission denied on
    PATH (check ...)" (PATH: ``e``'s filename, which may be a file inside ``what``)."""
    named = e.filename is not None and (what == str(e.filename) or what.endswith(f" {e.filename}"))
    where = f" on {e.filename}" if e.filename and not named else ""
    return UserError(f"cannot read {what}: {(e.strerror or 'permission denied').lower()}{where} (check the "
                     f"permissions of that path and of the folders above it)")


@contextmanager
def writing() -> Iterator[None]:
    """Around a write of an output: an ``OSError`` raised inside is tagged as a write (``operation``)."""
    try:
        yield
    except OSError as e:
        mark_write(e)
        raise


def mark_write(e: OSError) -> None:
    """Tag ``e`` as an error of a write (``operation``), unless it is tagged already."""
    if getattr(e, "gensis_operation", None) is None:
        e.gensis_operation = "write"  # type: ignore[attr-defined]


def operation(e: OSError) -> str | None:
    """"write" when ``e`` is known to come from a write (tagged by ``writing``, or an errno only a write
    gets: disk full, quota, file too large, read-only file system), else None (unknown)."""
    op = getattr(e, "gensis_operation", None)
    return op if op is not None else ("write" if e.errno in WRITE_ERRNOS else None)


def environment_error(e: OSError) -> str | None:
    """"cannot write PATH: No space left on device" for an error of the environment (a refused access, a full
    disk, a read-only filesystem: ``ACCESS_ERRNOS`` | ``WRITE_ERRNOS``), "write" when known (``operation``), else
    "access"; None for any other error. The start of the CLI's line for it, and of a rank's line to the others."""
    if e.errno not in ACCESS_ERRNOS | WRITE_ERRNOS:
        return None
    verb = "write" if operation(e) == "write" else "access"
    where = f" {e.filename}" if e.filename else ""
    return f"cannot {verb}{where}: {e.strerror or e}"
