"""The one exception type that the CLI turns into a single clear line on stderr."""

import os


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
    return not getattr(error, "all_ranks", False) or os.environ.get("RANK", "0") in ("", "0")
