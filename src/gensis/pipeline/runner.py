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
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gensis.errors import UserError
from gensis.rundir import atomic_write_json, held_locks, is_temp_name, lock_folder, release_folder

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
    extra: dict[str, Any] = field(default_factory=dict)
    call: Callable[[bool], Any] | None = None


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
    """Runs stages in order in one folder; each stage is a library call executed in this process."""

    def __init__(self, out: Path, quiet: bool = False):
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

    def _save(self) -> None:
        self.state["_seconds"] = self.times
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
        """Run ``stage`` unless it already finished with the same key."""
        if stage.call is None:
            raise ValueError(f"stage '{stage.name}' has nothing to call")
        path = self.out / stage.name
        if self.state.get(stage.name) == stage.key and self.finished(stage):
            self.say(f"[{stage.name}] up to date, skipped ({path})")
            return path
        if self.state.get(stage.name) != stage.key:
            self._clear(stage)
        resume = stage.resumable and path.exists()
        argv = [*stage.argv, "--resume"] if resume else stage.argv  # the command that continues it by hand
        self.say(f"[{stage.name}] {'resuming' if resume else 'running'}: gensis {' '.join(argv)}")
        t0 = time.time()
        self.state[stage.name] = stage.key
        self._save()
        locks_before = held_locks()
        try:
            stage.call(resume)
        except UserError as e:
            if "\n" in str(e):  # e.g. raised in a DataLoader worker: the command line keeps its own last line
                raise
            raise _failed(stage.name, e) from e
        finally:  # the run folders the stage locked are free again, as after a separate command
            for folder in held_locks() - locks_before:
                release_folder(folder)
        self.times[stage.name] = round(self.times.get(stage.name, 0.0) * resume + time.time() - t0, 1)
        self._save()
        return path

    def say(self, msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)


def _failed(name: str, e: UserError) -> UserError:
    """The stage's own one-line error, naming the stage and how to continue."""
    err = UserError(f"stage '{name}' failed: {e}; fix the cause and run the demo again to resume")
    err.all_ranks = e.all_ranks
    return err
