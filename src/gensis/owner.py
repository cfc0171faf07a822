"""Which gensis process wrote a temporary name or holds a folder lock, and whether it is gone.

Every record of a writer goes through ``Writer``: temporary files and export staging folders carry it in their
name (``gensis.rundir.temp_path``: ``.gensis-tmp-<final name>.<pid>@<host tag>-<8 hex>.tmp``), a folder lock in
its ``.gensis.lock`` (``{"pid", "host", "start"}``). What may be done with a record follows from ``Writer.state``:

    mine       this process (same host, same pid)
    running    a live process on this host (its start time, where recorded, is the recorded one)
    gone       on this host, and its pid is not running (or now runs another program: another start time)
    elsewhere  recorded on another host (a folder on a network filesystem): a pid there cannot be checked from
               here, so its files are left and a lock it holds is reported with its host, never taken over

Older versions recorded the pid alone (temporary names ``.<pid>-<8 hex>.tmp``); such a record (``host`` None) is
checked on this host, as those versions did.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

State = Literal["mine", "running", "gone", "elsewhere"]

THIS_HOST = platform.node()
_TAG_MAX = 40


def host_tag(host: str) -> str:
    """``host`` as written into a temporary name: characters other than ``[A-Za-z0-9_-]`` become ``_`` (no dot:
    the name's pid is read before its last dot); longer than 40 characters: its first 31 and 8 hex of its hash."""
    tag = re.sub(r"[^A-Za-z0-9_-]", "_", host) or "_"
    if len(tag) > _TAG_MAX:
        tag = f"{tag[:_TAG_MAX - 9]}_{hashlib.sha256(host.encode()).hexdigest()[:8]}"
    return tag


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host (one we may not signal counts as running). A zombie (a process that
    ended and was not yet reaped, as an orphan stays where the container's init reaps none: a tiling worker of a
    killed ``wsi tile``) is not running: its temporary files were kept for ever, left after the rerun."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, OverflowError):
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): os.kill said it exists


def die_with_parent(parent: int | None = None) -> None:
    """In a child process gensis started: be sent SIGTERM when the process that started it ends, however it ends
    (SIGKILL by the OOM killer or a scheduler included), so that no child outlives it (Linux
    ``PR_SET_PDEATHSIG``; elsewhere nothing). ``parent``: that process's pid, when the call may come after it
    already ended (a worker's initializer): then this one ends at once. Safe between fork and exec (the demo's
    side lane calls it as ``preexec_fn``)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except Exception:
        return
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc, to tell a reused pid from the writer."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


@dataclass(frozen=True)
class Writer:
    """A gensis process as recorded: its pid, its host (the full name in a lock, ``host_tag`` in a temporary name;
    None in an older version's pid-only record) and its start time (locks only; None: not recorded)."""

    pid: int
    host: str | None = None
    start: str | None = None

    @classmethod
    def me(cls) -> "Writer":
        return cls(os.getpid(), THIS_HOST, start_time(os.getpid()))

    @classmethod
    def from_record(cls, record: Any) -> "Writer | None":
        """A lock's JSON object as a Writer; None when it is not one (torn, or written by something else)."""
        if not isinstance(record, dict):
            return None
        try:
            pid = int(record["pid"])
        except (KeyError, TypeError, ValueError):
            return None
        host, start = record.get("host"), record.get("start")
        return cls(pid, None if host is None else str(host), None if start is None else str(start))

    def record(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "start": self.start}

    @property
    def here(self) -> bool:
        """Recorded on this host (or by an older version, which recorded no host)."""
        return self.host is None or self.host in (THIS_HOST, host_tag(THIS_HOST))

    def state(self) -> State:
        """See the module docstring."""
        if not self.here:
            return "elsewhere"
        if self.pid == os.getpid():
            return "mine"
        if not pid_alive(self.pid):
            return "gone"
        if self.start is not None and start_time(self.pid) not in (None, self.start):
            return "gone"  # the pid now belongs to another process
        return "running"
