"""SIGTERM stops a ``gensis`` command as a Ctrl-C does.

A scheduler's time limit (SLURM signals every process of the job step), ``kill`` and ``timeout`` send SIGTERM.
Python's default is to die at once: no line, no clean-up, the run folder's lock left behind (its files were intact
all the same: every write is atomic). ``stop_on_sigterm`` (called by the CLI, never by the library: a program that
imports gensis keeps its own handlers) makes it raise ``gensis.errors.Terminated``, a ``KeyboardInterrupt``, so
every place that already stops cleanly on Ctrl-C does so on SIGTERM too, and the CLI prints one line and exits
143. A second SIGTERM kills at once, as before.

Forked children (DataLoader workers) inherit the handler; there it ends the worker at once with status 0, as a
worker that a Ctrl-C stopped ends (torch's worker loop swallows the ``KeyboardInterrupt``): raising in a worker
printed multiprocessing's tracebacks, and dying by the signal made torch's SIGCHLD handler raise "DataLoader worker
... is killed by signal" in the main process over its own clean stop.

Not under torchrun, which owns its workers' lifetime: when one rank fails it sends the others SIGTERM while they
wait quietly for rank 0's line (``gensis.cli.main.QUIET_RANK_GRACE_S``), and they must die there silently.
"""

from __future__ import annotations

import os
import signal
import threading

from gensis.errors import Terminated

_main_pid: int | None = None
terminated = False  # set once SIGTERM arrived: Python may swallow the exception (an after-fork hook), not this


def stop_on_sigterm() -> None:
    """In the main thread of a CLI process not started by torchrun: SIGTERM raises ``Terminated``."""
    global _main_pid
    if threading.current_thread() is not threading.main_thread():
        return
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return  # someone else's handler
    _main_pid = os.getpid()
    signal.signal(signal.SIGTERM, _on_sigterm)


def _on_sigterm(signum: int, frame: object) -> None:
    global terminated
    if os.getpid() != _main_pid:  # a forked worker: gone now, quietly (see the module's docstring)
        os._exit(0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the second one kills
    terminated = True
    raise Terminated
