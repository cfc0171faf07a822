"""Resumable stages of a pipeline folder, keyed by a hash of their resolved config and inputs.

Each stage writes one folder under the pipeline folder by calling the library (``gensis.api`` with a typed
config object) in this process; it also carries the equivalent ``gensis`` command line, printed when the stage
starts (with ``--resume`` when it resumes), so what it runs can be read, copied and re-run by hand. Both demos run
on it: ``gensis demo`` (``gensis.pipeline.demo``) and the slide demo (``gensis.wsi.demo``). ``OUT/stages.json`` records, per stage, the key
it was made with:

- same key, finished        -> skipped ("up to date")
- same key, not finished    -> resumed (``resume=True``, as ``--resume``)
- other key                 -> redone; the old folder is removed only when gensis can prove it wrote it (its
                               manifest names the same stage kind); anything else is refused with one line.

The key is a hash of the stage's resolved config (preset + overrides, after the schema check), the identity of
its data and the keys of the stages it reads, so editing a preset redoes exactly the stages it changes.

Keys added to a ``base.yaml`` later do not redo anything: the resolved config is hashed through
``gensis.configs.added.without_added``, which leaves out every key registered in ``gensis.configs.added.ADDED``
(the registry ``--resume`` reads too) while it holds the value that reproduces runs made before it existed. So
a new key with such a default keeps every existing demo folder's keys; setting it to another value changes the
keys of the stages that read it. A new key whose default reproduces older runs goes into that registry.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gensis.errors import UserError
from gensis.pipeline.eta import Overall
from gensis.pipeline.lanes import SideLane, process_cpu_seconds
from gensis.rundir import atomic_write_json, held_locks, is_temp_name, lock_folder, release_folder
from gensis.train.next_step import next_step_of

STATE = "stages.json"


def stage_key(*parts: Any) -> str:
    """Short hash of JSON-able parts (resolved configs, data identities, upstream keys)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_reads(cfg: Mapping[str, Any], unread: Iterable[str]) -> dict[str, Any]:
    """The part of a resolved config a stage reads, for its key: ``cfg`` without the sections (or dotted keys)
    ``unread``, which are its Task's ``resume_ignore`` (the same list ``--resume`` skips; e.g. ``eldm train``
    reads no ``figures.*`` / ``eval.*``), so that changing them neither redoes nor blocks the resume of it."""
    drop = set(unread)

    def keep(d: Mapping[str, Any], prefix: str) -> dict[str, Any]:
        return {k: keep(v, f"{prefix}{k}.") if isinstance(v, Mapping) else v
                for k, v in d.items() if f"{prefix}{k}" not in drop}
    return keep(cfg, "")


@dataclass
class Stage:
    """A library call writing ``OUT/<name>``: ``call(resume)`` runs it; ``argv`` is the equivalent ``gensis``
    command line (printed, never parsed).

    ``kind``: the manifest stage that proves a folder is this stage's output (``pretrain``, ``eldm-ae``,
    ``eldm``, ``bank``; ``tiles``, ``features``, ``mil`` by ``PROOFS``); ``None`` for stages whose files are simply rewritten in place (figures, eval JSON).
    ``done_file``: the file whose presence (and ``status: done`` for JSON) says the stage finished.
    """

    name: str
    argv: list[str]
    key: str
    kind: str | None = None
    done_file: str = "manifest.json"
    resumable: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # "module": a side-lane stage run as ``python -m module``
    call: Callable[[bool], Any] | None = None
    # may run in the side lane (a child process running ``argv``) beside the main chain (``gensis.pipeline.lanes``)
    background: bool = False
    after: tuple[str, ...] = ()  # side-lane stages this one reads: waited for before it starts
    # a main-lane training stage of small models: it keeps the main lane's share of the threads (T − t) from start
    # to end, even once the side lane is idle (one thread plus the trainer's helper thread is faster than two
    # threads for the demo's models, and a stage's thread count no longer depends on when the side lane ends)
    lane_threads: bool = False


DONE = "stage-done.json"  # written by ``mark_done`` into a stage folder whose writer leaves no manifest


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _is_bank(path: Path) -> bool:
    h = _json(path / "bank.json")
    return isinstance(h, dict) and h.get("format") == "gensis-bank"


def _is_tiles(path: Path) -> bool:
    """``gensis wsi tile`` output: ``tiling.json`` (with its settings) at the top or in one resolution folder."""
    return any(isinstance(m := _json(f), dict) and "settings" in m and "slides" in m
               for f in [path / "tiling.json", *path.glob("*/tiling.json")])


def _is_features(path: Path) -> bool:
    """``gensis wsi embed`` output: bags (``*.h5``), each naming the encoder that wrote it, and nothing else (but
    the temporary file of a bag being written when the stage was killed)."""
    from gensis.mil.bags import read_bag_attrs

    bags = sorted(path.glob("*.h5"))
    others = [p for p in path.iterdir() if p.suffix != ".h5" and p.name != DONE
              and not is_temp_name(p.name, lambda n: n.endswith(".h5"))]  # (an older version's, of a bag)
    return bool(bags) and not others and all("encoder_identity" in (read_bag_attrs(b) or {}) for b in bags)


REGIONS = "regions.json"  # written first into a folder of region bags (``gensis.wsi.demo.region_bags``)
REGIONS_FORMAT = "gensis-regions"


_REGION_BAG = re.compile(r"^.+_r\d+_c\d+\.h5$")  # <slide>_r<row>_c<col>.h5


def _is_regions(path: Path) -> bool:
    """Region bags of the slide demo: its ``regions.json`` marker and, besides it, only region bags that name the
    encoder that wrote them and their own region (or the temporary file of a bag being written when the demo was
    killed). A folder of such bags without the marker (written before it existed) is proven by its bags alone."""
    from gensis.mil.bags import read_bag_attrs

    m = _json(path / REGIONS)
    marked = isinstance(m, dict) and m.get("format") == REGIONS_FORMAT
    others = [p for p in path.iterdir() if p.name != REGIONS
              and not (is_temp_name(p.name, lambda n: n == REGIONS or _REGION_BAG.match(n)) and p.is_file())]
    if not marked and (path / REGIONS).exists() or not marked and not any(p.suffix == ".h5" for p in others):
        return False
    for p in others:
        a = read_bag_attrs(p) if _REGION_BAG.match(p.name) and p.is_file() else None
        if a is None or "encoder_identity" not in a or a.get("slide_id") != p.stem:
            return False
    return True


def _is_mil(path: Path) -> bool:
    m = _json(path / "mil.json")
    return isinstance(m, dict) and "classes" in m and "splits" in m


# kinds whose writer records no ``manifest.json`` stage: what proves a folder is theirs
PROOFS: dict[str, Callable[[Path], bool]] = {"bank": _is_bank, "tiles": _is_tiles, "features": _is_features,
                                             "mil": _is_mil, "regions": _is_regions}


def proves_kind(path: Path, kind: str) -> bool:
    """True when ``path`` is a folder gensis wrote as a ``kind`` stage: its manifest names the stage, or (kinds
    in ``PROOFS``) the files its writer leaves say so, or ``mark_done`` recorded it."""
    done = _json(path / DONE)
    if isinstance(done, dict) and done.get("stage") == kind:
        return True
    proof = PROOFS.get(kind)
    if proof is not None:
        return proof(path)
    m = _json(path / "manifest.json")
    return isinstance(m, dict) and m.get("stage") == kind


def mark_done(path: Path, kind: str) -> None:
    """Record in ``path`` that its stage (of ``kind``) finished: the ``done_file`` of stages whose writer leaves
    no file that says so (``gensis wsi tile``/``embed``)."""
    atomic_write_json(path / DONE, {"status": "done", "stage": kind})


class Pipeline:
    """Runs stages in order in one folder; each stage is a library call executed in this process, or, with
    ``side_threads`` > 0, a ``background`` stage is a child process in the side lane (``gensis.pipeline.lanes``)
    while the main stages go on here with the remaining threads. ``join()`` waits for the side lane."""

    def __init__(self, out: Path, quiet: bool = False, side_threads: int = 0):
        """Lock ``out`` (created if missing) for this process: a second demo on the same folder stops with one
        line (``rundir.RunLock``) before it writes anything; the lock is released at exit."""
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is a file, not a folder")
        lock_folder(self.out)
        self.quiet = quiet
        self.state_path = self.out / STATE
        try:
            self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {}
        except ValueError:
            self.state = {}  # damaged: every stage is checked again (finished ones are proven by their folder)
        if not isinstance(self.state, dict):
            self.state = {}
        self.times: dict[str, float] = self.state.get("_seconds", {})
        self.cpu: dict[str, float] = self.state.get("_cpu_seconds", {})
        self._lock = threading.RLock()  # state and times: the side lane's worker thread writes them too
        self._side_done: dict[str, threading.Event] = {}
        self.side: SideLane | None = None
        self.overall: Overall | None = None  # the whole pass's progress line after each stage (gensis.pipeline.eta)
        if side_threads > 0:
            import torch

            from gensis.device import set_thread_share

            self.threads = torch.get_num_threads()
            self._pinned = False  # the running main stage keeps the lane's share (``Stage.lane_threads``)
            self.side = SideLane(side_threads, self._run_side, self._side_done.get)
            set_thread_share(self._main_share)  # applied at each main stage's start and inside its loop

    def _save(self) -> None:
        with self._lock:
            self.state["_seconds"] = self.times
            self.state["_cpu_seconds"] = self.cpu
            atomic_write_json(self.state_path, self.state)

    def finished(self, stage: Stage) -> bool:
        f = self.out / stage.name / stage.done_file
        if not f.is_file():
            return False
        if f.suffix != ".json":
            return True
        try:
            return bool(json.loads(f.read_text()).get("status", "done") == "done")
        except (OSError, ValueError, AttributeError):
            return False

    def _clear(self, stage: Stage) -> None:
        """Remove ``OUT/<name>`` made with other settings, only if gensis provably wrote it."""
        path = self.out / stage.name
        if not path.exists():
            return
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
            return
        if stage.kind is None:
            return  # outputs rewritten in place; nothing is removed
        if not path.is_dir() or not proves_kind(path, stage.kind):
            raise UserError(f"{path} exists but is not a {stage.kind} folder this demo wrote (no manifest naming "
                            f"it); gensis removes only what it made: move it away or use another --out")
        self.say(f"[{stage.name}] made with other settings: redoing")
        shutil.rmtree(path)

    def run(self, stage: Stage) -> Path:
        """Run ``stage`` unless it already finished with the same key (in the side lane when it has one and
        the stage is ``background``: then this returns at once)."""
        if stage.call is None:
            raise ValueError(f"stage '{stage.name}' has nothing to call")
        path = self.out / stage.name
        if self.side is None:
            self._run(stage, lambda resume, argv: stage.call(resume))  # type: ignore[misc]
            return path
        from gensis.device import apply_thread_share

        try:
            self.side.check()  # a failed side stage stops the demo at the next stage
            if stage.background:
                self._side_done[stage.name] = threading.Event()
                self.side.submit(stage)
                return path
            self.side.wait_for(stage.after)
            self._pinned = stage.lane_threads
            apply_thread_share()  # while the side lane works, this lane keeps to its share of the threads
            try:
                self._run(stage, lambda resume, argv: stage.call(resume))  # type: ignore[misc]
            finally:
                self._pinned = False
        except BaseException:
            self._end_side(stop=True)
            raise
        return path

    def join(self) -> None:
        """Wait for the side lane's stages (a failure there is raised here); a no-op without a side lane."""
        if self.side is None:
            return
        try:
            self.side.join()
        except BaseException:
            self._end_side(stop=True)
            raise
        self._end_side()

    def _end_side(self, stop: bool = False) -> None:
        """The side lane is done (``stop``: stopped, its child terminated): this process gets its threads back."""
        import torch

        from gensis.device import set_thread_share

        if stop and self.side is not None:
            self.side.stop()
        set_thread_share(None)
        torch.set_num_threads(self.threads)

    def _main_share(self) -> int:
        """Threads of the main lane now: all of them, less the side lane's while it has work or while the running
        stage keeps the lane's share (``Stage.lane_threads``)."""
        if self.side is not None and (self.side.busy or self._pinned):
            return self.threads - self.side.threads
        return self.threads

    def _run_side(self, stage: Stage, execute: Callable[[list[str]], None]) -> None:
        """A side-lane stage, on the side lane's worker thread: the same logic as a main stage, the work done by
        ``execute(argv)`` (a child process); its event is set when it is done or up to date."""
        self._run(stage, lambda resume, argv: execute(argv))
        self._side_done[stage.name].set()

    def _run(self, stage: Stage, execute: Callable[[bool, list[str]], Any]) -> None:
        path = self.out / stage.name
        with self._lock:
            up_to_date = self.state.get(stage.name) == stage.key and self.finished(stage)
        if up_to_date:
            self.say(f"[{stage.name}] up to date, skipped ({path})")
            self._progress(stage.name, ran=False)
            return
        if self.state.get(stage.name) != stage.key:
            self._clear(stage)
        resume = stage.resumable and path.exists()
        from gensis.cli.main import as_written

        # the command that continues it by hand (a path starting with '-' joined to its option)
        argv = as_written([*stage.argv, "--resume"] if resume else stage.argv)
        lane = " (side lane)" if stage.background and self.side is not None else ""
        prog = f"python -m {stage.extra['module']}" if "module" in stage.extra else "gensis"
        self.say(f"[{stage.name}] {'resuming' if resume else 'running'}{lane}: {prog} {shlex.join(argv)}")  # paste-able: quoted paths
        t0, c0 = time.time(), process_cpu_seconds()
        with self._lock:
            self.state[stage.name] = stage.key
            self._save()
        locks_before = held_locks()
        try:
            execute(resume, argv)
        except UserError as e:
            if lane:
                raise
            raise _failed(stage.name, e) from e
        finally:  # the run folders the stage locked are free again, as after a separate command
            if not lane:
                for folder in held_locks() - locks_before:
                    release_folder(folder)
        with self._lock:
            self.times[stage.name] = round(self.times.get(stage.name, 0.0) * resume + time.time() - t0, 1)
            cpu = self.side.cpu_seconds.get(stage.name, 0.0) if lane and self.side else process_cpu_seconds() - c0
            self.cpu[stage.name] = round(self.cpu.get(stage.name, 0.0) * resume + cpu, 1)
            self._save()
        self._progress(stage.name, ran=True)

    def _progress(self, name: str, ran: bool) -> None:
        """The overall progress line after a stage that ran; one found up to date is counted without a line (its
        own 'up to date, skipped' says it, and a resumed demo printed one useless estimate per skipped stage)."""
        if self.overall is not None:
            line = self.overall.finished(name, ran)
            if ran:
                self.say(line)

    def say(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)


def _failed(name: str, e: UserError) -> UserError:
    """The stage's own one-line error, naming the stage and how to continue: a stopped training run's own
    advice in the demo's terms (``gensis.train.next_step``: no --resume, no stage --out), else the general one."""
    step = next_step_of(e)
    if step is not None:
        err = UserError(f"stage '{name}' failed: {step.line(demo=True)}")
    else:
        err = UserError(f"stage '{name}' failed: {e}; fix the cause and run the demo again to resume")
    err.all_ranks = e.all_ranks
    return err
