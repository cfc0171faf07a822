"""Run directories: resolved config, manifest, metrics log and atomic safetensors checkpoints.

Every pipeline stage reads and writes one folder::

    RUN/config.yaml       resolved config (plain YAML)
    RUN/manifest.json     stage, versions, seed, identities (hashes) of the inputs, status
    RUN/metrics.jsonl     one JSON object per logged step/epoch
    RUN/checkpoint.safetensors (+ .json)   last full training state, rewritten atomically every epoch
    RUN/<export>.safetensors               final weights (e.g. teacher_backbone.safetensors)

Writes go to a temporary name in the same folder and are renamed with ``os.replace`` (atomic on POSIX),
so a kill at any moment leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, cast

if TYPE_CHECKING:  # torch is imported where tensors are read or written: tiling workers import this module fast
    import torch

from gensis.errors import UserError, mark_write, reading, writing
from gensis.owner import THIS_HOST, Writer, host_tag

StrPath = str | os.PathLike[str]  # a path argument: a string or a Path

TMP_PREFIX, TMP_SUFFIX = ".gensis-tmp-", ".tmp"
# Our temporary names: ".gensis-tmp-<final name>.<pid>@<host tag>-<8 hex>.tmp" (``gensis.owner``: the process that
# writes it, which says when it is stale; versions before the host was recorded wrote ".<pid>-<8 hex>.tmp", still
# read). The fixed marker is what makes a name ours: a user's file does not start with ".gensis-tmp-", so it is never
# taken for one of our temporary files (counted as ours when a folder is claimed, or deleted as stale).
_TMP_RE = re.compile(r"^\.gensis-tmp-(?P<name>.+)\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9_-]+))?-[0-9a-f]{8}\.tmp$")
_HOST_TAG = host_tag(THIS_HOST)
# Older versions wrote ".<final name>.<pid>-<8 hex>.tmp" (before them: mkstemp's ".<final name>.<8 of [a-z0-9_]>.tmp").
# That shape alone proves nothing: a user's ".notes.backup.tmp" or ".notes.20240101.tmp" has it. Such a name is taken
# as ours only where the caller says which files gensis writes in that folder (``finals``) and the name minus its
# random part is one of them (".manifest.json.<random>.tmp" before a run's manifest, ".shard-000003.gsb.<random>.tmp"
# in a bank's shards/): a user would not name a file after the file gensis writes there plus a random tail. Without
# ``finals`` an old-style name is not ours: never deleted (at worst left behind by an old version), and a folder
# holding one is not taken for an empty one.
_LEGACY_TMP_RE = re.compile(r"^\.(?P<name>.+)\.(?:(?P<pid>\d+)-[0-9a-f]{8}|[a-z0-9_]{8})\.tmp$")

Finals = Callable[[str], object]  # which final names gensis writes in a folder: name -> truthy


_NAME_MAX = 255  # bytes in a file name (ext4, xfs, btrfs, NFS)


def _tmp_path(path: Path) -> Path:
    tail = f".{os.getpid()}@{_HOST_TAG}-{secrets.token_hex(4)}{TMP_SUFFIX}"
    name, room = path.name, _NAME_MAX - len(TMP_PREFIX) - len(tail)
    while len(os.fsencode(name)) > room:  # a long final name: its start is kept (the marker and the writer decide)
        name = name[:-1]
    return path.parent / f"{TMP_PREFIX}{name}{tail}"


def temp_path(path: StrPath) -> Path:
    """A fresh temporary name for ``path`` in its folder (``.gensis-tmp-<name>.<this pid>@<host tag>-<8 hex>.tmp``)."""
    return _tmp_path(Path(path))


def _writer(m: re.Match[str]) -> Writer | None:
    """The process a temporary name records (None: an older version's random name, without a pid)."""
    pid = m.group("pid")
    if pid is None:
        return None
    return Writer(int(pid), m.groupdict().get("host"))


def _temp_match(name: str, finals: Finals | None = None) -> re.Match[str] | None:
    m = _TMP_RE.match(name)
    if m is None and finals is not None:
        m = _LEGACY_TMP_RE.match(name)
        if m is not None and not finals(m.group("name")):
            m = None
    return m


def fsync_dir(folder: StrPath) -> None:
    """Make a rename inside ``folder`` durable (no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _commit(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it onto ``path``, fsync the folder; ``tmp`` is removed on any failure."""
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_path(path: StrPath) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` with any library (e.g. h5py); committed like every kept file."""
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        yield tmp
    except BaseException as e:
        _unlink_quietly(tmp)
        if isinstance(e, OSError) and e.filename is not None and Path(e.filename) == tmp:
            mark_write(e)  # the temporary file is only ever written: an error on it is a write error
        raise
    with writing():
        _commit(tmp, path)


def make_folder(path: StrPath) -> Path:
    """``mkdir -p path`` for an output; an error is tagged as a write (``gensis.errors.writing``)."""
    path = Path(path)
    with writing():
        path.mkdir(parents=True, exist_ok=True)
    return path


def _unlink_quietly(p: Path) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def atomic_write_bytes(path: StrPath, data: bytes | Iterable[bytes | memoryview]) -> None:
    """Write ``data`` (bytes, or pieces written in order) durably and atomically.

    temporary name in the same folder -> fsync -> ``os.replace`` -> fsync(folder): a kill or a power cut at any
    moment leaves either the old file or the new one. The file is created with mode 0666 & ~umask, like any
    other tool's output (``mkstemp`` would make it 0600).
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = _tmp_path(path)
    try:
        with writing():
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:  # the pieces may come from a read (atomic_copy): only writes are tagged
            for piece in ([data] if isinstance(data, (bytes, bytearray, memoryview)) else data):
                with writing():
                    f.write(piece)
        with writing():
            _commit(tmp, path)
    except OSError as e:  # name the file the user knows, not our temporary one
        _unlink_quietly(tmp)
        if e.filename in (None, str(tmp)):
            e.filename = str(path)
        raise
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_copy(src: StrPath, dst: StrPath) -> None:
    """Copy ``src`` to ``dst`` atomically and durably (streamed in 1 MiB pieces)."""
    def pieces() -> Iterator[bytes]:
        with open(src, "rb") as f:
            yield from iter(lambda: f.read(1 << 20), b"")

    atomic_write_bytes(dst, pieces())


def atomic_write_text(path: StrPath, text: str) -> None:
    """UTF-8; a file name that is not UTF-8 (Latin-1 ``café.svs``, held as a str with surrogate escapes) is
    written as its own bytes (was UnicodeEncodeError, e.g. in `mil predict`'s predictions.csv)."""
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"))


def atomic_write_json(path: StrPath, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_image(image: Any, path: StrPath, format: str | None = None, **kw: Any) -> Path:
    """Save a PIL image atomically (format from the suffix, as PIL maps it, unless given)."""
    import io

    from PIL import Image

    path = Path(path)
    buf = io.BytesIO()
    image.save(buf, format=format or Image.registered_extensions().get(path.suffix.lower(), "PNG"), **kw)
    atomic_write_bytes(path, buf.getvalue())
    return path


def atomic_savefig(fig: Any, path: StrPath, **kw: Any) -> Path:
    """``matplotlib`` ``fig.savefig`` to ``path`` atomically."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lstrip(".") or "png", **kw)
    atomic_write_bytes(path, buf.getvalue())
    return path


def is_temp_name(name: str, finals: Finals | None = None) -> bool:
    """Whether ``name`` is one of our temporary names (``.gensis-tmp-<final name>.<pid>[@<host>]-<8 hex>.tmp``), or
    an older version's (``.<final name>.<random>.tmp``) for a final name ``finals`` accepts (see ``_LEGACY_TMP_RE``)."""
    return _temp_match(name, finals) is not None


def remove_stale_temps(folder: StrPath, finals: Finals | None = None) -> list[Path]:
    """Delete temporary files a killed gensis process left in ``folder`` (``is_temp_name(name, finals)`` only).

    A file whose writer (``gensis.owner.Writer.state``) is still running on this host is kept (another rank may be
    writing it), and so is one written on another host (its pid cannot be checked from here; it blocks nothing:
    temporary names are never taken for the user's files). This process's own are removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _temp_match(p.name, finals)
        if not m or not p.is_file():
            continue
        w = _writer(m)
        if w is not None and w.state() not in ("mine", "gone"):
            continue
        _unlink_quietly(p)
        removed.append(p)
    return removed


def remove_stale_temp_dirs(folder: StrPath) -> list[Path]:
    """Delete the staging folders (``gensis.export.atomic.staged_folder``) a killed gensis process left in
    ``folder``: a real directory (not a link) named ``.gensis-tmp-<final name>.<pid>[@<host tag>]-<8 hex>.tmp``
    whose writer is gone (``gensis.owner.Writer.state``: on this host, pid not running). A name without a pid (an
    older version's ``mkdtemp`` name) cannot be proved stale and is kept, as is a directory of a live pid (another
    export in progress), of this process, or written on another host (its pid cannot be checked from here)."""
    import shutil

    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP_RE.match(p.name)
        if not m or p.is_symlink() or not p.is_dir():
            continue
        w = _writer(m)
        if w is None or w.state() != "gone":
            continue
        shutil.rmtree(p, ignore_errors=True)
        if not p.exists():
            removed.append(p)
    return removed


def _metadata_in_key_order(data: bytes) -> list[bytes | memoryview]:
    """The pieces of a serialised safetensors file whose header lists ``__metadata__`` in key order.

    safetensors writes the metadata from a Rust ``HashMap``, in an order drawn at random on every save: the same
    tensors and metadata gave other bytes each time (1 in 6 alike for 3 keys), so a weights file's hash (the
    identity of an encoder: ``gensis.models.encoder``, recorded by the E-LDM, the bank and every evaluation)
    differed between two runs equal bit for bit, a run killed and resumed included. The header is the JSON that
    follows its 8-byte little-endian length, padded with spaces to a multiple of 8 bytes (as safetensors pads
    it); the tensor data after it is passed on as it is (a view, no copy)."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", None)
    if not meta or len(meta) < 2:
        return [data]
    text = json.dumps({"__metadata__": dict(sorted(meta.items())), **header}, separators=(",", ":"),
                      ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return [len(text).to_bytes(8, "little") + text, memoryview(data)[8 + n:]]


def save_tensors(path: StrPath, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any] | None = None) -> None:
    """Atomic, durable ``safetensors`` save (tensors made contiguous and moved to CPU); the same tensors and
    metadata give the same bytes (``_metadata_in_key_order``)."""
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    # serialised in memory, then written like every other file (safetensors' own save_file makes 0600 files)
    data = save(flat, metadata={k: str(v) for k, v in (metadata or {}).items()})
    atomic_write_bytes(path, _metadata_in_key_order(data))


# ---------------------------------------------------------------------------------------------------------
# one process per run folder


LOCK_NAME = ".gensis.lock"


_HELD: dict[Path, "RunLock"] = {}


class RunLock:
    """``FOLDER/.gensis.lock`` holding ``{pid, host, start}`` (``gensis.owner.Writer``): a second process on the
    folder is refused.

    A lock whose process is gone (same host, pid dead or reused) is stale and taken over; one held on another host
    is never (its pid cannot be checked from here): the refusal names that host. The same process may take its own
    lock again (stages run in one process by the demo). Released by ``release()`` or at exit.
    """

    def __init__(self, folder: StrPath):
        self.folder = Path(folder).resolve()
        self.path = self.folder / LOCK_NAME
        self.me = Writer.me()
        self.thread = threading.get_ident()  # the thread that took it (``releasing_locks`` frees only its own)

    def _holder(self) -> dict[str, Any] | None:
        try:
            return cast("dict[str, Any] | None", json.loads(self.path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # torn or unreadable: written by a process killed while writing it

    def acquire(self) -> "RunLock":
        make_folder(self.folder)
        body = json.dumps(self.me.record()).encode()
        for _ in range(5):
            try:
                with writing():
                    fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                h = self._holder()
                if h is None:
                    continue  # released meanwhile
                holder = Writer.from_record(h)
                state = "gone" if holder is None else holder.state()  # torn: a process killed while writing it
                if state == "mine":
                    break  # ours already
                if state == "gone":
                    _unlink_quietly(self.path)  # a dead process's lock: take it over
                    continue
                assert holder is not None
                where = (f"on {holder.host}, another host: its process cannot be checked from {THIS_HOST}"
                         if state == "elsewhere" else f"on {holder.host}")
                raise UserError(f"{self.folder} is in use by another gensis process (pid {holder.pid} {where}); "
                                f"wait for it to finish, or delete {self.path} if that process is gone") from None
            with writing(), os.fdopen(fd, "wb") as f:
                f.write(body)
            break
        else:
            raise UserError(f"cannot take the lock {self.path}: it keeps changing")
        _HELD[self.folder] = self
        return self

    def release(self) -> None:
        holder = Writer.from_record(self._holder())
        if holder is not None and holder.state() == "mine":
            _unlink_quietly(self.path)
        _HELD.pop(self.folder, None)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_folder(folder: StrPath) -> RunLock:
    """Take (or re-take) this process's lock on ``folder``; released at exit unless released earlier."""
    return RunLock(folder).acquire()


def held_locks() -> set[Path]:
    """Folders this process holds locks on."""
    return set(_HELD)


def release_folder(folder: StrPath) -> None:
    lock = _HELD.get(Path(folder).resolve())
    if lock is not None:
        lock.release()


@contextlib.contextmanager
def releasing_locks() -> Iterator[None]:
    """The folders this thread locks inside are free again when it ends, returning or raising (a
    KeyboardInterrupt included): what the command line does for a command, and the Python API for each stage
    call, so that an interrupted or failed ``gensis.pretrain`` in a notebook does not hold its run folder until
    the kernel exits (a ``gensis pretrain --resume`` from a terminal was refused: 'in use by another gensis
    process')."""
    before, me = held_locks(), threading.get_ident()
    try:
        yield
    finally:
        for folder in held_locks() - before:
            lock = _HELD.get(folder)
            if lock is not None and lock.thread == me:  # not a lock another thread's stage took meanwhile
                lock.release()


@contextlib.contextmanager
def removed_if_left_empty(folder: StrPath) -> Iterator[None]:
    """For a command that makes its ``--out`` ``folder`` (when it takes the lock or first writes): on an error or an
    interrupt inside, the folders this call found missing (``folder`` and the parents made for it) are removed
    again, this process's lock on ``folder`` released first, so a refused command leaves no empty folder behind.
    Each goes with ``os.rmdir``, which removes only an empty folder: anything written there (by this command before
    it failed, or by another process meanwhile) is kept, and so is a folder that existed before."""
    folder = Path(folder).absolute()
    missing: list[Path] = []
    p = folder
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)  # deepest first
        p = p.parent
    try:
        yield
    except BaseException:
        if missing:
            release_folder(folder)
            for p in missing:
                try:
                    os.rmdir(p)
                except OSError:
                    break  # not empty (or already gone): kept, and so are its parents
        raise


@atexit.register
def _release_all() -> None:
    for lock in list(_HELD.values()):
        lock.release()


@contextlib.contextmanager
def safetensors_name(path: StrPath) -> Iterator[str]:
    """A name safetensors can open ``path`` by (``safe_open``, ``load_file``): its Rust side takes UTF-8 names only,
    so a path that is not UTF-8 (a Latin-1 ``café/`` folder, held as a str with surrogate escapes) is opened here
    and given as ``/proc/self/fd/N`` (was "Path ... is not valid UTF-8": such a run could not be read)."""
    name = os.fspath(path)
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        fd = os.open(name, os.O_RDONLY)
        try:
            yield f"/proc/self/fd/{fd}"
        finally:
            os.close(fd)
        return
    yield name


def load_tensors(path: StrPath) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"missing weights file {path}")
    from safetensors.torch import load_file

    try:
        with safetensors_name(path) as name:
            return cast("dict[str, torch.Tensor]", load_file(name))
    except Exception as e:
        raise UserError(f"cannot read {path}: {e}") from None


def file_hash(path: StrPath, n: int = 16) -> str:
    """The first ``n`` hex digits of the file's SHA-256; a refused read is "cannot read PATH" (``reading``)."""
    h = hashlib.sha256()
    with reading(os.fspath(path)), open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def read_json(path: StrPath, what: str) -> dict[str, Any]:
    """The JSON object of a file gensis wrote (a run's manifest, an E-LDM run's eldm.json ...; ``what``: "run
    manifest"): one UserError line naming the file when it is damaged (truncated, emptied, not a JSON object)
    instead of a JSONDecodeError traceback; a refused read is "cannot read PATH" (``gensis.errors.reading``)."""
    path = Path(path)
    try:
        with reading(str(path)):
            d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}); it is not a readable {what}") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is damaged (not a JSON object); it is not a readable {what}")
    return d


@contextlib.contextmanager
def described_by(path: StrPath, what: str) -> Iterator[None]:
    """Around the lines that take their values from a description gensis wrote (``read_json``: an E-LDM run's
    eldm.json, an autoencoder.json, a mil.json): one that parses but has not the shape gensis writes (``{}``,
    ``"model": 3``, a string for a size; edited by hand, or another tool's file of that name) raised a KeyError or
    TypeError traceback from deep inside; now one UserError line naming the file (the cause chained for --debug)."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise UserError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); it is not a readable {what}") from e


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("gensis", "torch", "torchvision", "timm", "diffusers", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


# the sections every run of a training stage has held since its first version (those its readers index)
RUN_SECTIONS: dict[str, tuple[str, ...]] = {"pretrain": ("data", "model", "optim", "train"),
                                            "eldm-ae": ("data", "ae", "train"),
                                            "eldm": ("data", "unet", "cond", "diffusion", "train")}


class RunDir:
    """A stage's output folder (see module docstring)."""

    def __init__(self, path: StrPath):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        if not self.exists():
            raise UserError(f"{self.path} is not a gensis run directory (no manifest.json)")
        return read_json(self.manifest_path, "run manifest")

    def config(self) -> dict[str, Any]:
        import yaml

        p = self.path / "config.yaml"
        if not p.is_file():
            raise UserError(f"{self.path} has no config.yaml")
        try:
            with reading(str(p)):
                cfg = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UserError(f"{p} is damaged ({type(e).__name__})") from None
        if not isinstance(cfg, dict):
            raise UserError(f"{p} is damaged (not a mapping of config keys)")
        stage = self.manifest().get("stage") if self.exists() else None
        for section in RUN_SECTIONS.get(str(stage), ()):  # e.g. `{}` or `model: 3`: a KeyError traceback later
            if not isinstance(cfg.get(section), dict):
                what = f"no '{section}' section" if section not in cfg else \
                    f"'{section}' is not a section: {type(cfg[section]).__name__}"
                raise UserError(f"{p} is damaged ({what}); it is not a readable {stage} config")
        return cfg

    def claim(self, stage: str, resume: bool = False) -> None:
        """Before a stage writes anything here: lock the folder against a second process, refuse a folder
        that holds another stage's run, a finished run (unless resuming) or files gensis did not write, and
        remove temporary files a killed run left. Idempotent within one process."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path} is a file, not a folder")
        lock_folder(self.path)
        try:
            if self.exists():
                m = self.manifest()
                if m.get("stage") != stage:
                    from gensis.folder_kind import describe

                    raise UserError(f"{self.path} holds {describe(str(m.get('stage')))}, not {describe(stage)}; "
                                    f"use another --out")
                if m.get("status") == "done" and not resume:
                    raise UserError(f"{self.path} already holds a finished {stage} run; use another --out")
            else:
                foreign = sorted(p.name for p in self.path.iterdir() if not _before_manifest(p))
                if foreign:
                    from gensis.folder_kind import refuse_other_kind

                    refuse_other_kind(self.path, stage)  # a bank, a demo folder, tiles ...: gensis's, no manifest
                    raise UserError(f"{self.path} is not empty and not a gensis run folder (holds {foreign[0]}"
                                    f"{' ...' if len(foreign) > 1 else ''}): give a new or empty folder")
            remove_stale_temps(self.path, RUN_WRITES.__contains__)
            for folder in (p for p in self.path.iterdir() if p.is_dir()):
                remove_stale_temps(folder, _cache_file if folder.name == CACHE_DIR else None)
        except BaseException:
            release_folder(self.path)
            raise

    def start(self, stage: str, cfg: dict[str, Any], seed: int, inputs: dict[str, str], resume: bool = False) -> None:
        """Claim the folder (``claim``), then write the manifest (status 'running') and then config.yaml.

        The manifest comes first: it is what makes a folder a gensis run, so a folder holding a ``config.yaml``
        and no manifest is never one of ours (``claim`` refuses it: it may be the user's own config)."""
        from gensis.config import dump

        make_folder(self.path)
        self.claim(stage, resume)
        prev = self.manifest() if (self.exists() and resume) else {}
        manifest = {
            "stage": stage,
            "status": "running",
            "seed": seed,
            "inputs": inputs,
            "versions": versions(),
            "created": prev.get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
        }
        atomic_write_json(self.manifest_path, manifest)
        atomic_write_text(self.path / "config.yaml", dump(cfg))

    def killed_before_config(self) -> bool:
        """A manifest and no ``config.yaml``: a run killed between its first two writes (``start``), before it
        wrote anything else (a resume has nothing to compare and nothing to continue)."""
        return self.exists() and not (self.path / "config.yaml").exists() and all(
            p.name in RUN_FILES or is_temp_name(p.name, FIRST_WRITES.__contains__) for p in self.path.iterdir())

    def finish(self, **extra: Any) -> None:
        m = self.manifest()
        m.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)
        atomic_write_json(self.manifest_path, m)
        release_folder(self.path)

    def is_done(self) -> bool:
        return self.exists() and self.manifest().get("status") == "done"


# what a stage may have written before its manifest (a run killed early): not "foreign" files. Its config.yaml,
# log, checkpoint and TensorBoard events come after the manifest: without one they are not ours (a fresh run would
# overwrite the user's config.yaml, delete the log and the events, overwrite the checkpoint), so a folder holding
# them and no manifest is refused. A cache/ only when it holds nothing but the E-LDM trainer's cache (``is_own_cache``).
CACHE_DIR = "cache"
RUN_FILES = {LOCK_NAME, "manifest.json", CACHE_DIR}
FIRST_WRITES = {"manifest.json", "config.yaml"}  # a run's first two files (``start``), whose older temporaries are ours
# files every training run writes at its top: an older version's temporary file of one of them is ours (stale)
RUN_WRITES = FIRST_WRITES | {"metrics.jsonl", "checkpoint.safetensors"}


# The E-LDM trainer's caches (``gensis.eldm.train.cached_embeddings`` / ``cached_latents``), computed into RUN/cache/
# before the run's manifest is written: their names, and the cache key their safetensors metadata holds.
_CACHE_FILES = ((re.compile(r"^embeddings-[\w.-]+\.safetensors$"), ("encoder", "data")),
                (re.compile(r"^latents-train\.safetensors$"), ("autoencoder", "data", "size", "flip")))


def _cache_file(name: str) -> bool:
    return any(rx.match(name) for rx, _ in _CACHE_FILES)


def _safetensors_metadata(path: Path) -> dict[str, Any] | None:
    """The ``__metadata__`` of a safetensors file's header (read without torch), None if it is not one."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            head = json.loads(f.read(n)) if 2 <= n <= 100_000_000 else None
    except (OSError, ValueError):
        return None
    meta = head.get("__metadata__") if isinstance(head, dict) else None
    return meta if isinstance(meta, dict) else None


def is_own_cache(folder: StrPath) -> bool:
    """Whether ``folder`` (a ``cache/`` found without a manifest) is the E-LDM trainer's: a folder (not a link)
    holding nothing but its cache files (their names, safetensors whose metadata holds the cache key) and temporary
    files of them. A user's own ``cache/`` (anything else in it) is not, and the folder holding it is not claimed."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    for p in folder.iterdir():
        if p.is_symlink() or not p.is_file():
            return False
        if is_temp_name(p.name, _cache_file):
            continue
        keys = next((k for rx, k in _CACHE_FILES if rx.match(p.name)), None)
        meta = _safetensors_metadata(p) if keys is not None else None
        if meta is None or not all(k in meta for k in (keys or ())):
            return False
    return True


def _before_manifest(p: Path) -> bool:
    """What a stage may have written into its folder before its manifest (see ``RUN_FILES``)."""
    if p.name == CACHE_DIR:
        return is_own_cache(p)
    return p.name in RUN_FILES or is_temp_name(p.name, {"manifest.json"}.__contains__)


def read_jsonl(path: StrPath) -> list[dict[str, Any]]:
    """Rows of a JSON-lines log; a line that does not parse (a torn last line after a kill) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


LOGGERS = ("jsonl", "tensorboard")
TB_DIR = "tensorboard"


def _tensorboard_writer(folder: Path, purge_step: int | None) -> Any:
    from gensis.tensorboard_log import TensorBoardWriter

    return TensorBoardWriter(folder, purge_step)


class MetricsLog:
    """Append-only ``metrics.jsonl``; on resume, rows past the restored point are dropped.

    ``logger="tensorboard"`` (or the environment variable ``GENSIS_LOGGER=tensorboard`` when ``logger`` is None)
    also writes TensorBoard event files to ``RUN/tensorboard/``: every number of every row as a scalar named by
    its key, at the row's ``step`` (or ``epoch``), and images given to ``log_image``; on resume TensorBoard
    discards the events past the restored step, as the JSON log does.
    """

    def __init__(self, path: StrPath, keep_until_step: int | None = None, logger: str | None = None):
        self.path = Path(path)
        if keep_until_step is not None and self.path.exists():
            rows = [r for r in read_jsonl(self.path) if r.get("step", -1) < keep_until_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        elif keep_until_step is None and self.path.exists():
            self.path.unlink()
        self.logger = logger or os.environ.get("GENSIS_LOGGER") or "jsonl"
        if self.logger not in LOGGERS:
            raise UserError(f"unknown logger '{self.logger}'; valid: {', '.join(LOGGERS)}")
        self._tb: Any = None
        if self.logger == "tensorboard":
            folder = self.path.parent / TB_DIR
            if keep_until_step is None and folder.is_dir():  # a fresh run: no events of an earlier one
                for f in folder.glob("events.out.tfevents.*"):
                    f.unlink()
            self._tb = _tensorboard_writer(folder, keep_until_step)

    def log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            step = int(row.get("step", row.get("epoch", 0)))
            self._tb.add_scalars({k: v for k, v in _numbers(row) if k != "step"}, step)

    @property
    def wants_images(self) -> bool:
        """True when images given to ``log_image`` are written (TensorBoard on)."""
        return self._tb is not None

    def log_image(self, tag: str, image: Any, step: int) -> None:
        """An image (uint8 or float in [0, 1]; (3, H, W) or (H, W, 3)) to TensorBoard; nothing with jsonl."""
        if self._tb is None:
            return
        import numpy as np

        arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
        fmt = "HWC" if arr.ndim == 3 and arr.shape[-1] in (1, 3, 4) and arr.shape[0] not in (1, 3, 4) else "CHW"
        self._tb.add_image(tag, arr, int(step), dataformats=fmt)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def rows(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path)


def _numbers(row: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, float]]:
    """(key, value) of every finite-or-not number of a metrics row; nested dicts as ``outer/inner``."""
    for k, v in row.items():
        if isinstance(v, dict):
            yield from _numbers(v, f"{prefix}{k}/")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield f"{prefix}{k}", float(v)
