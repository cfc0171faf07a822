"""What kind of gensis folder a path is (pretraining run, E-LDM run, bank, ...), named from the files its writer
leaves there, so that a folder passed to the wrong option (``--eldm`` given a pretraining run, ``--encoder`` given a
bank, ...) is one line naming both kinds and the command that writes the right one.

One registry (``KINDS``) and one check (``require_kind``), used by every command that reads a folder made by
another command; a folder of no known kind is left to the caller's own check (its "not found"/"no X.json" line).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gensis.errors import UserError


def _json(path: Path) -> dict[str, Any] | None:
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def _stage(path: Path) -> str | None:
    """The ``stage`` of the folder's ``manifest.json`` (written by ``RunDir.start``), else of the ``stage-done.json``
    a pipeline writes into the folder of a stage whose writer leaves no manifest (``pipeline.runner.mark_done``)."""
    from gensis.pipeline.runner import DONE

    for name in ("manifest.json", DONE):
        m = _json(path / name)
        s = m.get("stage") if m is not None else None
        if isinstance(s, str):
            return s
    return None


_STAGE_KEY = re.compile(r"^[0-9a-f]{8,64}$")
_SEED_DIR = re.compile(r"^seed-\d+$")


def _demo_state(path: Path) -> dict[str, Any] | None:
    """The ``stages.json`` a demo's ``Pipeline`` writes (``gensis.pipeline.runner.STATE``): each stage's name with
    its key (hex; older demos: ``{key, done, seconds}``) and its timings (``_seconds``, ``_cpu_seconds``: names
    starting with ``_``, each a dict); None for any other file (a user's own stages.json), a damaged one or none."""
    d = _json(path / "stages.json")
    if not d or all(k.startswith("_") for k in d):
        return None
    for k, v in d.items():
        ok = (isinstance(v, dict) if k.startswith("_") else
              bool(_STAGE_KEY.match(v)) if isinstance(v, str) else isinstance(v, dict) and isinstance(v.get("key"), str))
        if not ok:
            return None
    return d


def _is_slide_demo(path: Path) -> bool:
    """``gensis wsi demo`` (= ``gensis demo --preset wsi``): its stages.json, whose first stage is ``tiles``."""
    state = _demo_state(path)
    return state is not None and "tiles" in state


def _only_ours(path: Path) -> bool:
    """A folder holding nothing but what a gensis process leaves first (its lock, temporary files)."""
    from gensis.rundir import LOCK_NAME, is_temp_name

    return path.is_dir() and all(p.name == LOCK_NAME or is_temp_name(p.name) for p in path.iterdir())


def _is_demo(path: Path, seeds: bool = True) -> bool:
    """``gensis demo``: its stages.json (not the slide demo's), its ``demo-settings.json`` (written first), or, for
    ``--seeds``, its ``seeds.json`` or ``seed-S`` folders (each a demo pass, or holding only what a pass writes
    first)."""
    state = _demo_state(path)
    if state is not None:
        return "tiles" not in state
    settings = _json(path / "demo-settings.json")
    if settings is not None and isinstance(settings.get("settings"), str) and "overrides" in settings:
        return True
    if not seeds:
        return False
    summary = _json(path / "seeds.json")
    if summary is not None and isinstance(summary.get("seeds"), list):
        return True
    passes = [p for p in path.glob("seed-*") if _SEED_DIR.match(p.name) and p.is_dir()]
    return bool(passes) and all(_is_demo(p, seeds=False) or _only_ours(p) for p in passes)


FIGURES_MARKER = "figures.json"  # written first into the --out of `gensis eldm sample` (gensis.eldm.figures)
FIGURES_FORMAT = "gensis-eldm-figures"
FIGURES_PNGS = ("generative.png", "interpolation.png")


def _is_figures(path: Path) -> bool:
    """``gensis eldm sample``: its ``figures.json`` marker, or (written before the marker existed) exactly its two
    PNG files, besides a lock, temporary files or a demo's ``stage-done.json``."""
    from gensis.pipeline.runner import DONE
    from gensis.rundir import LOCK_NAME, is_temp_name

    m = _json(path / FIGURES_MARKER)
    if m is not None and m.get("format") == FIGURES_FORMAT:
        return True
    names = {p.name for p in path.iterdir() if p.name not in (LOCK_NAME, DONE) and not is_temp_name(p.name)}
    return names == set(FIGURES_PNGS) and all((path / n).is_file() for n in FIGURES_PNGS)


def _is_mil_predictions(path: Path) -> bool:
    """``gensis mil predict``: its ``predictions.csv`` (header ``slide,predicted,p_<class>...``; a MIL run's own
    starts with ``split,``)."""
    try:
        with open(path / "predictions.csv", encoding="utf-8") as f:
            return f.readline().startswith("slide,predicted,p_")
    except (OSError, ValueError):
        return False


DAVIS_MARKER = "davis-predictions.json"  # written first into the --out of `gensis eval davis` (gensis.eval.davis)
DAVIS_FORMAT = "gensis-davis-predictions"


def _is_davis_predictions(path: Path) -> bool:
    """``gensis eval davis --out``: its ``davis-predictions.json`` marker, or (written before the marker existed) only
    ``<sequence>-overlay.png`` strips and ``<sequence>/`` folders of PNGs, each with its strip."""
    from gensis.rundir import LOCK_NAME, is_temp_name

    m = _json(path / DAVIS_MARKER)
    if m is not None and m.get("format") == DAVIS_FORMAT:
        return True
    entries = [p for p in path.iterdir() if p.name != LOCK_NAME and not is_temp_name(p.name)]
    strips = {p.name[:-len("-overlay.png")] for p in entries if p.is_file() and p.name.endswith("-overlay.png")}
    dirs = [p for p in entries if p.is_dir()]
    return (bool(strips) and len(strips) + len(dirs) == len(entries) and all(d.name in strips for d in dirs)
            and all(f.suffix == ".png" for d in dirs for f in d.iterdir()))


@dataclass(frozen=True)
class Kind:
    name: str        # the manifest stage, where the writer records one
    noun: str        # "a pretraining run"
    writer: str      # the command that writes such a folder
    has: Callable[[Path], bool]  # whether a folder holds what that writer leaves (besides its manifest stage)


# in the order they are tried: a folder can hold another's files (an E-LDM run holds copies of its encoder and
# autoencoder in sub-folders, never at its top level; a bank holds config.yaml like a run)
KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("bank", "an augmentation bank", "gensis bank generate",
         lambda p: (_json(p / "bank.json") or {}).get("format") == "gensis-bank"),
    Kind("eldm", "an E-LDM run", "gensis eldm train", lambda p: (p / "eldm.json").is_file()),
    Kind("eldm-ae", "an autoencoder run", "gensis eldm train-ae", lambda p: (p / "autoencoder.json").is_file()),
    Kind("pretrain", "a pretraining run", "gensis pretrain",
         lambda p: (p / "teacher_backbone.safetensors").is_file()),
    Kind("mil", "a MIL run", "gensis mil train", lambda p: (p / "mil.json").is_file()),
    Kind("wsi-demo", "a slide demo folder", "gensis wsi demo", _is_slide_demo),
    Kind("demo", "a demo folder", "gensis demo", _is_demo),
    Kind("tiles", "a tiles folder", "gensis wsi tile",
         lambda p: (p / "tiling.json").is_file() or (p / "patches").is_dir() or any(p.glob("*/tiling.json"))),
    Kind("features", "a features folder (slide bags)", "gensis wsi embed", lambda p: any(p.glob("*.h5"))),
    Kind("eldm-figures", "an E-LDM figures folder", "gensis eldm sample", _is_figures),
    Kind("mil-predictions", "a MIL predictions folder", "gensis mil predict", _is_mil_predictions),
    Kind("davis-predictions", "a DAVIS predictions folder", "gensis eval davis", _is_davis_predictions),
)}


def folder_kind(path: str | Path) -> str | None:
    """The ``KINDS`` name of the folder ``path`` (its manifest stage first, then the files it holds); None when it
    is no folder or of no known kind. Cheap: reads at most two small JSON files."""
    p = Path(path).expanduser()
    if not p.is_dir():
        return None
    stage = _stage(p)
    if stage in KINDS:
        return stage
    return next((k.name for k in KINDS.values() if k.has(p)), None)


def describe(kind: str) -> str:
    """``a pretraining run`` for ``pretrain``; an unknown stage name as ``a X run``."""
    k = KINDS.get(kind)
    return k.noun if k is not None else f"a {kind} run"


def require_kind(path: str | Path, kind: str, option: str | None = None) -> None:
    """A UserError when ``path`` is a gensis folder of another kind than ``kind``:
    ``[--option ]X is a pretraining run, not an E-LDM run: pass the folder written by `gensis eldm train```.
    A folder of no known kind (or a missing path) passes: the caller's own checks name what is missing."""
    found = folder_kind(path)
    if found is None or found == kind:
        return
    want = KINDS[kind]
    where = f"{option} {path}" if option else str(path)
    raise UserError(f"{where} is {describe(found)}, not {want.noun}: pass the folder written by `{want.writer}`")


def refuse_other_kind(out: str | Path, kind: str, option: str = "--out") -> None:
    """Before a ``kind`` writer writes into ``out``: a UserError when ``out`` holds another kind of gensis folder
    (whose files it would overwrite)."""
    found = folder_kind(out)
    if found is not None and found != kind:
        raise UserError(f"{option} {out} is {describe(found)}, not {describe(kind)}: use another {option}")


def require_own_or_empty(out: str | Path, kind: str, option: str = "--out", again: str = "to resume it") -> None:
    """Before a ``kind`` writer that rewrites files at the top of ``out`` (the demos: ``stages.json``, results, the
    report) writes anything: a UserError unless ``out`` is missing, empty (but for a lock or temporary files a
    killed gensis left) or a ``kind`` folder, i.e. one that writer made (resumed). Nothing is written or deleted.
    ``again`` ends the error line's hint (what giving that writer's earlier ``out`` does)."""
    p = Path(out).expanduser()
    if not p.exists():
        return
    if not p.is_dir():
        raise UserError(f"{option} {out} is a file, not a folder")
    if _only_ours(p):
        return
    found = folder_kind(p)
    if found == kind:
        return
    want = KINDS[kind]
    if found is not None:
        raise UserError(f"{option} {out} is {describe(found)}, not {want.noun}: `{want.writer}` would rewrite files "
                        f"at its top; use another {option}")
    from gensis.rundir import LOCK_NAME, is_temp_name

    names = sorted(q.name for q in p.iterdir() if q.name != LOCK_NAME and not is_temp_name(q.name))
    raise UserError(f"{option} {out} is not empty and not {want.noun} (holds {names[0]}{' ...' if len(names) > 1 else ''}"
                    f"): give a new or empty folder, or the {option} of an earlier `{want.writer}` {again}")
