"""A second lane for a pipeline's independent stages: a child process beside the main chain.

On a CPU the demo's main chain (DINO → E-LDM → bank → Gen-DINO) is serial, and its small models use a second
core poorly: one demo pretraining step at batch 32 is mostly small matrix products, and two OpenMP threads on
two cores are slower than one thread plus the trainer's helper thread (``gensis.train.overlap``; session 21, 2-core
Intel CPU with AMX, the `demo` preset on Animal-MNIST, images/s: DINO 230 against 362, Gen-DINO 174 against 248, the
E-LDM 476 against 615; only the bank's sampling was faster on two: 13 shards in 45 s against 8). So the chain's
training stages keep one thread even after the side lane is done (``Stage.lane_threads``), and the bank takes both.
Stages that read nothing of the chain's later stages (the autoencoder, the pixel-interpolation ablation, the
E-LDM's figures and fidelity numbers, the evaluation of the columns finished by then: ``gensis.pipeline.early_eval``)
can run at the same time instead, each in its own process with its own threads::

    main lane (this process, T − t threads)   dino ─▶ [eldm-ae done?] eldm ─▶ bank ─▶ gendino ─▶ [join] eval
    side lane (child processes, t threads)    eldm-ae ─▶ pixel ─▶ [eldm done?] eldm-figures ─▶ eldm-eval
                                              ─▶ eval-early (k-NN / linear of dino, pixel and the baselines)

T is torch's thread count in this process (on a 2-core machine 2: one thread per lane). A side stage runs as
the ``gensis`` command line its stage prints (``Stage.argv``, ``--resume`` added when it resumes) in a child
process, one at a time in the order they were submitted, each submitted after the main-lane stages it reads
have finished; a main stage waits for the side stages it reads (``Stage.after``), and ``Pipeline.join`` for
all of them before the evaluation. The child's output is copied to this process's stderr (progress bars off).
Keys, skipping, resuming and redoing are the pipeline's (``gensis.pipeline.runner``), the same as in a serial
run; only where the work happens differs (and the thread count, which can change the last bits of a result).

A failed side stage stops the demo with its own error (printed by the child) and the stage's name; a failed
main stage or an interrupt stops the side lane's child. A child never outlives the demo: it is killed when the
demo process ends (Linux: ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import functools
import os
import queue
import resource
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from gensis.errors import INTERRUPTED, UserError
from gensis.owner import die_with_parent

DISABLE_ENV = "GENSIS_DEMO_SERIAL"  # "1": every stage in this process, one after another (as ``--serial``)


def side_threads() -> int:
    """Threads the side lane gets (0: no side lane): half of this process's torch threads, when the stages run
    on a CPU with at least 2 of them and the lanes are not switched off (``GENSIS_DEMO_SERIAL=1``)."""
    import torch

    if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
        return 0
    if torch.cuda.is_available():  # the stages run on the GPU (device auto): nothing to share
        return 0
    n = torch.get_num_threads()
    return n // 2 if n >= 2 else 0


WARNING = "gensis: warning: "  # how every gensis warning line begins


class SideLane:
    """Runs stages, one at a time, as ``gensis`` child processes on a worker thread (see the module docstring).

    ``runner(stage, execute)`` is the pipeline's own stage logic (key check, skip, clear, state); ``execute``
    is what actually runs the stage (here: the child process), called with the stage's argv. ``done(name)``:
    the event set when the side stage ``name`` has finished (None: not a side stage of this pass).
    """

    def __init__(self, threads: int, runner: Callable[[Any, Callable[[list[str]], None]], None],
                 done: Callable[[str], threading.Event | None]):
        self.threads = int(threads)
        self._runner, self._done = runner, done
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None
        self.error: BaseException | None = None
        self.stopped = threading.Event()
        self.cpu_seconds: dict[str, float] = {}
        self._warned: set[str] = set()  # warning lines already relayed from a child (said once per demo pass)
        self._thread = threading.Thread(target=self._work, name="gensis-side-lane", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """A stage is queued or running."""
        with self._lock:
            return self._pending > 0

    def submit(self, stage: Any) -> None:
        with self._lock:
            self._pending += 1
        self._queue.put(stage)

    def join(self) -> None:
        """Wait until every submitted stage has run; raise the first failure."""
        self._queue.put(None)
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Stop at once: no further stage starts, a running child is terminated (killed after 30 s)."""
        self.stopped.set()
        self._queue.put(None)
        child = self._child
        if child is not None:
            try:
                child.terminate()
            except OSError:
                pass
        self._thread.join(timeout=30)
        if self._thread.is_alive() and self._child is not None:
            try:
                self._child.kill()
            except OSError:
                pass
            self._thread.join(timeout=10)

    def wait_for(self, names: tuple[str, ...] | list[str]) -> None:
        """Block until each named stage submitted to this lane is done; raise if the side lane failed."""
        for name in names:
            ev = self._done(name)
            while ev is not None and not ev.wait(timeout=0.5):
                if self.error is not None or not self._thread.is_alive():
                    break
            self.check()

    # -- the worker thread ----------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            stage = self._queue.get()
            if stage is None or self.stopped.is_set():
                return
            try:
                self._runner(stage, functools.partial(self._execute, stage))
            except BaseException as e:  # surfaced in the main lane (wait_for, join, check)
                self.error = e
                return
            finally:
                with self._lock:
                    self._pending -= 1

    def _execute(self, stage: Any, argv: list[str]) -> None:
        from gensis.train.next_step import IN_DEMO

        # IN_DEMO: a stopped training run's line says what to do next in the demo's terms (no --resume)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads), "GENSIS_NO_PROGRESS": "1", IN_DEMO: stage.name}
        env.setdefault("GENSIS_OVERLAP", "off")  # its share is its threads: no helper thread (gensis.train.overlap)
        cmd = [sys.executable, "-m", stage.extra.get("module", "gensis.cli.main"), *argv]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
                                 errors="replace", bufsize=1,
                                 preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        self._child = child
        assert child.stdout is not None
        held: list[str] = []  # the child's Ctrl-C line: this process says it (once), not both
        for line in child.stdout:  # the child's output, line by line, on this process's stderr
            if line.startswith(INTERRUPTED):
                held.append(line)
                continue
            if line.startswith(WARNING):  # each stage's process opens the data again and would repeat its warnings
                if line in self._warned:
                    continue
                self._warned.add(line)
            print(line, end="", file=sys.stderr, flush=True)
        child.stdout.close()
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        self._child = None
        self.cpu_seconds[stage.name] = round(usage.ru_utime + usage.ru_stime, 1)
        if held and child.returncode == 130:
            # a Ctrl-C reaches the whole process group: the child's line and the demo's were printed one under
            # the other; the demo is interrupted now (here, or at its next check if only the child was)
            raise KeyboardInterrupt
        if not self.stopped.is_set():  # stopped: this process terminated the child and says why itself
            for line in held:
                print(line, end="", file=sys.stderr, flush=True)
        if self.stopped.is_set():
            raise UserError(f"stage '{stage.name}' stopped")
        if child.returncode != 0:
            raise UserError(f"stage '{stage.name}' failed (its error is above; it ran as `gensis "
                            f"{shlex.join(argv)}` beside the main stages); fix the cause and run the demo again to resume")


def process_cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime

