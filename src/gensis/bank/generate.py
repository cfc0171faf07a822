"""``gensis bank generate``: embed the dataset once, then generate and store every entry, shard by shard.

Two phases, both split across ``torchrun`` ranks by shard (round robin over the shards still missing):

1. embeddings: the encoder embedding of every image, one ``embeddings/emb-SSSSSS.npy`` per shard (skipped when
   present), so each image is encoded once and secondaries' embeddings are at hand for interpolation;
2. entries: per shard, the conditioning embeddings (the image's own for generative entries; slerp with the
   secondary's for interpolated ones, paper Sec. 9.5.2), generated in batches of ``run.batch_size``. A writer
   thread compresses finished batches and writes each complete shard atomically while the next batch is being
   generated, so storage overlaps generation. Each generated batch is embedded again, in the same pass, to score
   every entry's fidelity (cosine to its conditioning embedding; ``scores.py``).

Every batch is a fixed slice of one shard, and every seed and secondary a pure function of the bank seed
(``plan.py``): a rerun after a kill skips complete shards and produces the same bytes, whatever the number of
processes.
"""

from __future__ import annotations

import importlib
import io
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, cast

import numpy as np
import torch

from gensis.bank.format import (CODECS, EMB_DIR, ENTRY_DTYPE, SHARD_DIR, SHARD_RE, Codec, ShardFormatError, emb_name,
                                read_shard_header, shard_name, write_shard)
from gensis.bank.header import (HEADER, IMAGENET_TRAIN, header_diff, layout_dict, make_header, read_header,
                                settings_from_cfg, write_header)
from gensis.bank.plan import Layout, ShardPlan, plan_shard
from gensis.bank.scores import SCORE_DIR, SCORES_INFO, cosine_scores, has_scores, score_name, write_scores
from gensis.config import dump
from gensis.data.loader import _root
from gensis.data.sources import ArrayImageSet, DataSpec, ImageSet, SubsetImageSet, content_change, open_data
from gensis.device import apply_thread_share, pick_device
from gensis.distributed import all_reduce_sum, barrier, broadcast_object, init_distributed
from gensis.eldm.generator import INTERPOLATIONS, EmbeddingConditionedGenerator
from gensis.errors import UserError, same_on_every_rank
from gensis.progress import progress
from gensis.rundir import (LOCK_NAME, atomic_write_bytes, atomic_write_text, is_temp_name, lock_folder, make_folder,
                           release_folder, remove_stale_temps)


# ---------------------------------------------------------------------------------------------------------
# the generator

# Rows per denoiser call of the bank's E-LDM (``load_generator``'s default: 32), at most the entries of one
# shard (so that a small bank pads nothing more than before). Measured on a 2-core AVX512-BF16 CPU, 1 thread,
# bf16, the demo's E-LDM (DPM-Solver++ 10 steps, guidance 2, 256 entries): 14.8 ms of CPU per image at 32,
# 12.7 at 128, 12.7 at 256, the same images bit for bit (``benchmarks/bench_bank_micro_batch.py``). Banks
# begun before it (at 32) are finished at 32 (``_as_begun``).
BANK_MICRO_BATCH = 128
# a shard's entries are held (encoded) in memory until the shard is written: above this many bytes of pixels
# (e.g. gen.num_generative in the hundreds) a note says so
SHARD_MEMORY_NOTE = 4 * 2**30
OLDER_MICRO_BATCH = 32


def load_generator(eldm: str | None, device: torch.device, gen_cfg: dict,
                   generator_spec: str | None = None) -> EmbeddingConditionedGenerator:
    """The E-LDM of run ``eldm`` (``gensis.eldm.load_generator``), or ``generator_spec`` = "module:factory", a
    callable ``factory(eldm, device=..., guidance=..., steps=..., sampler=...)`` returning an adapter that
    implements ``EmbeddingConditionedGenerator`` (how an off-the-shelf generator plugs in)."""
    kw = dict(device=str(device), guidance=gen_cfg["guidance"], steps=gen_cfg["steps"], sampler=gen_cfg["sampler"])
    if generator_spec:
        mod_name, _, attr = generator_spec.partition(":")
        if not mod_name or not attr:
            raise UserError(f"--generator must look like module:factory, got '{generator_spec}'")
        try:
            factory = getattr(importlib.import_module(mod_name), attr)
        except ModuleNotFoundError as e:
            raise UserError(f"--generator: cannot import module '{mod_name}' ({e})") from None
        except AttributeError:
            raise UserError(f"--generator: module '{mod_name}' has no '{attr}'") from None
        gen = factory(eldm, **kw)
    else:
        if eldm is None:
            raise UserError("give --eldm RUN (an E-LDM run directory) or --generator module:factory")
        try:
            from gensis.eldm import load_generator as load_eldm
        except ImportError:
            raise UserError("this gensis build has no E-LDM loader (gensis.eldm.load_generator); "
                            "use --generator module:factory") from None
        gen = load_eldm(eldm, **kw)
    return check_generator(gen)


def check_generator(gen: Any) -> EmbeddingConditionedGenerator:
    """``gen``, when it has every member of the ``EmbeddingConditionedGenerator`` contract; else a UserError naming
    the missing ones (for a factory's adapter and for an object passed as ``generator=``, which was used unchecked:
    an AttributeError traceback from inside the bank)."""
    missing = [m for m in ("encode", "generate", "identity", "image_size") if not hasattr(gen, m)]
    if missing:
        raise UserError(f"generator {type(gen).__name__} lacks {', '.join(missing)} (see gensis.eldm.generator)")
    return cast(EmbeddingConditionedGenerator, gen)


# ---------------------------------------------------------------------------------------------------------
# embeddings


def _array_backed(ds: ImageSet) -> bool:
    while isinstance(ds, SubsetImageSet):
        ds = ds.parent
    return isinstance(ds, ArrayImageSet)


class _Images(torch.utils.data.Dataset):
    """Images as uint8 (3, S, S); folder images of any size are resized (shorter side) and centre-cropped."""

    def __init__(self, ds: ImageSet, size: int):
        self.ds, self.size = ds, size

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        x = torch.from_numpy(np.ascontiguousarray(self.ds.get(i))).permute(2, 0, 1)  # (3, H, W)
        if x.shape[1:] != (self.size, self.size):
            x = TF.center_crop(TF.resize(x, self.size, antialias=True), [self.size, self.size])
        return x.contiguous()


def image_batches(ds: ImageSet, batches: list[np.ndarray], size: int, num_workers: int = 0) -> Iterator[torch.Tensor]:
    """uint8 (B, 3, H, W) for each index array in ``batches``, in order."""
    if _array_backed(ds):
        for b in batches:
            yield torch.from_numpy(ds.stack(b)).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
        return
    from gensis.data.workers import WorkerLoader

    dl = WorkerLoader(_Images(ds, size), batch_sampler=[b.tolist() for b in batches], num_workers=num_workers)
    yield from dl


class EmbeddingStore:
    """Per-shard embedding files, memory-mapped on demand (at most ``max_open`` at once)."""

    def __init__(self, root: Path, layout: Layout, max_open: int = 256):
        self.root, self.layout, self.max_open = root, layout, max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()

    def path(self, s: int) -> Path:
        return self.root / EMB_DIR / emb_name(s)

    def shard(self, s: int) -> np.ndarray:
        a = self._open.get(s)
        if a is None:
            try:
                a = np.load(self.path(s), mmap_mode="r")
            except (OSError, ValueError) as e:
                raise UserError(f"cannot read embeddings {self.path(s)}: {e}") from None
            self._open[s] = a
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(s)
        return a

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """float32 (len(idx), D)."""
        idx = np.asarray(idx, np.int64)
        shard = idx // self.layout.shard_size
        out = None
        for s in np.unique(shard):
            sel = shard == s
            a = self.shard(int(s))
            if out is None:
                out = np.empty((len(idx), a.shape[1]), dtype=np.float32)
            out[sel] = a[idx[sel] - int(s) * self.layout.shard_size]
        return out if out is not None else np.zeros((0, 0), np.float32)


def embed_shards(gen: EmbeddingConditionedGenerator, ds: ImageSet, layout: Layout, shards: list[int],
                 store: EmbeddingStore, batch_size: int, num_workers: int = 0, bar=None) -> None:
    """Encode the images of ``shards`` (fixed batches within each shard) and write one .npy per shard."""
    batches, owner = [], []
    for s in shards:
        start, stop = layout.shard_range(s)
        for b in range(start, stop, batch_size):
            batches.append(np.arange(b, min(b + batch_size, stop)))
            owner.append(s)
    parts: dict[int, list[np.ndarray]] = {}
    for s, imgs in zip(owner, image_batches(ds, batches, int(gen.image_size), num_workers)):
        with torch.no_grad():
            e = gen.encode(imgs)
        parts.setdefault(s, []).append(e.detach().float().cpu().numpy())
        if bar is not None:
            bar.update(len(imgs))
        start, stop = layout.shard_range(s)
        if sum(len(p) for p in parts[s]) == stop - start:
            buf = io.BytesIO()
            np.save(buf, np.concatenate(parts.pop(s)).astype(np.float32), allow_pickle=False)
            atomic_write_bytes(store.path(s), buf.getvalue())


def conditioning(plan: ShardPlan, store: EmbeddingStore, interpolation: str) -> torch.Tensor:
    """The generator input of every entry of a shard: float32 (E_s, D)."""
    e = torch.from_numpy(store.rows(plan.primary))  # (E_s, D)
    interp = plan.kind == 1
    if interp.any():
        e2 = torch.from_numpy(store.rows(plan.secondary[interp]))   # (n_int, D)
        alpha = torch.from_numpy(plan.alpha[interp].astype(np.float32))  # (n_int,)
        e[torch.from_numpy(interp)] = INTERPOLATIONS[interpolation](e[torch.from_numpy(interp)], e2, alpha).float()
    return e


# ---------------------------------------------------------------------------------------------------------
# the writer thread


def shard_rows(plan: ShardPlan) -> np.ndarray:
    rows = np.zeros(len(plan), dtype=ENTRY_DTYPE)
    rows["primary"], rows["secondary"], rows["kind"] = plan.primary, plan.secondary, plan.kind
    rows["k"], rows["alpha"], rows["seed"] = plan.k, plan.alpha, plan.seed
    return rows


class ShardWriter:
    """Compresses batches on a background thread (``threads`` encoders) and writes each complete shard
    atomically, while the caller generates the next batch. Errors surface in the caller at ``add``/``close``."""

    def __init__(self, root: Path, codec: Codec, meta: dict, threads: int = 2, max_pending: int = 4):
        self.root, self.codec, self.meta = root, codec, meta
        self.q: queue.Queue = queue.Queue(maxsize=max_pending)
        self.error: BaseException | None = None
        self.written: list[int] = []
        self.encode_seconds = 0.0
        self.abort = False
        self.pool = ThreadPoolExecutor(threads) if threads > 1 and codec.name != "raw" else None
        self.thread = threading.Thread(target=self._run, name="bank-writer", daemon=True)
        self.thread.start()

    def add(self, plan: ShardPlan, start: int, images: np.ndarray, scores: np.ndarray) -> None:
        """``images``: uint8 (B, S, S, 3), the entries ``start:start+B`` of ``plan``; ``scores``: float32 (B,)."""
        self._put((plan, start, images, scores))

    def close(self, abort: bool = False) -> None:
        """Wait until every complete shard is written; re-raise a writer error. ``abort`` (the producer failed):
        drop incomplete shards silently and keep the producer's exception."""
        self.abort = abort
        if self.error is None:
            self._put(None)
        self.thread.join()
        if self.pool is not None:
            self.pool.shutdown()
        if self.error is not None and not abort:
            raise self.error

    def _put(self, item) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        pending: dict[int, tuple[ShardPlan, list, list]] = {}
        try:
            while True:
                item = self.q.get()
                if item is None:
                    if pending and not self.abort:
                        raise RuntimeError(f"shards {sorted(pending)} were not completed")
                    return
                plan, start, images, scores = item
                t0 = time.perf_counter()
                enc = list(self.pool.map(self.codec.encode, images)) if self.pool else [self.codec.encode(im) for im in images]
                self.encode_seconds += time.perf_counter() - t0
                p = pending.setdefault(plan.shard, (plan, [None] * len(plan), [0],
                                                    np.zeros(len(plan), np.float32)))
                p[1][start:start + len(enc)] = enc
                p[3][start:start + len(enc)] = scores
                p[2][0] += len(enc)
                if p[2][0] == len(plan):
                    del pending[plan.shard]
                    meta = {**self.meta, "shard": plan.shard, "start": plan.start, "stop": plan.stop,
                            "entries": len(plan)}
                    # scores first: a complete shard always has its scores (a kill in between regenerates both)
                    write_scores(self.root / SCORE_DIR / score_name(plan.shard), p[3])
                    write_shard(self.root / SHARD_DIR / shard_name(plan.shard), p[1], shard_rows(plan), meta)
                    self.written.append(plan.shard)
        except BaseException as e:  # surfaced in the producer
            self.error = e


# ---------------------------------------------------------------------------------------------------------
# the whole command


def _duration(secs: float) -> str:
    """``secs`` as seconds, minutes or hours, whichever reads best."""
    if secs < 120:
        return f"{secs:.1f} s" if secs < 10 else f"{secs:.0f} s"
    return f"{secs / 60:.0f} min" if secs < 7200 else f"{secs / 3600:.1f} h"


@dataclass
class BankResult:
    path: Path
    identity: str
    generated: int = 0            # entries generated by this run (all processes)
    shards_written: int = 0
    shards_skipped: int = 0
    embedded: int = 0             # images encoded by this run
    seconds: float = 0.0          # wall time of the generation phase
    embed_seconds: float = 0.0
    world: int = 1
    complete: bool = False
    entries_per_image: int = 0
    num_images: int = 0
    full_images: int = 0          # images of the data without data.limit (0: unknown)
    tiles: bool = False           # slide tiles: the paper's ImageNet-1K projection does not apply
    extra: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.generated / self.seconds if self.seconds > 0 else float("nan")

    def _hours(self, images: int) -> str:
        """The time ``images`` entries take at this run's rate (and in process-time with several processes)."""
        secs = images / self.images_per_s
        return _duration(secs) + (f" ({secs * self.world / 3600:.1f} process-hours)" if self.world > 1 else "")

    def summary(self) -> str:
        lines = []
        if self.generated:
            lines.append(f"bank {self.path}: {self.generated} images generated in {self.seconds:.1f} s "
                         f"({self.world} process{'es' if self.world > 1 else ''}) = {self.images_per_s:.2f} images/s; "
                         f"embedding pass {self.embed_seconds:.1f} s for {self.embedded} images; "
                         f"{self.shards_written} shards written, {self.shards_skipped} already complete")
            if self.full_images > self.num_images:  # data.limit kept a subset: the user's whole data
                n = self.full_images * self.entries_per_image
                lines.append(f"projected for all {self.full_images:,} images of the data (without data.limit): "
                             f"{self.full_images:,} x {self.entries_per_image} entries = {n:,} images -> "
                             f"{self._hours(n)} at this rate")
            if not self.tiles:  # a natural-image scale; tiles of slides have no such reference
                paper = IMAGENET_TRAIN * 5
                lines.append(f"projected paper ImageNet-1K bank: {IMAGENET_TRAIN:,} images x (4 generative + 1 "
                             f"interpolated) = {paper:,} images -> {self._hours(paper)} at this rate")
        else:
            lines.append(f"bank {self.path}: nothing to generate ({self.shards_skipped} shards already complete)")
        lines.append(f"bank {'complete' if self.complete else 'INCOMPLETE'}: {self.num_images} images x "
                     f"{self.entries_per_image} entries, identity {self.identity}")
        return "\n".join(lines)


def _validate_cfg(cfg: dict) -> None:
    g, st, r = cfg["gen"], cfg["storage"], cfg["run"]
    if int(g["num_generative"]) < 0:
        raise UserError("gen.num_generative must be >= 0")
    if not isinstance(g["alphas"], list) or not all(isinstance(a, (int, float)) and 0 <= a <= 1 for a in g["alphas"]):
        raise UserError(f"gen.alphas must be a list of numbers in [0, 1], got {g['alphas']!r}")
    if len(set(round(float(a), 6) for a in g["alphas"])) != len(g["alphas"]):
        raise UserError(f"gen.alphas has duplicates: {g['alphas']}")
    if int(g["num_generative"]) + len(g["alphas"]) == 0:
        raise UserError("nothing to generate: gen.num_generative is 0 and gen.alphas is empty")
    if g["secondary"] not in ("auto", "random", "group"):
        raise UserError(f"gen.secondary must be auto, random or group, got '{g['secondary']}'")
    if g["interpolation"] not in INTERPOLATIONS:
        raise UserError(f"gen.interpolation must be one of {', '.join(INTERPOLATIONS)}, got '{g['interpolation']}'")
    if st["codec"] not in CODECS:
        raise UserError(f"storage.codec must be one of {', '.join(CODECS)}, got '{st['codec']}'")
    if int(st["shard_size"]) < 1 or int(r["batch_size"]) < 1 or int(r["encode_batch_size"]) < 1:
        raise UserError("storage.shard_size, run.batch_size and run.encode_batch_size must be >= 1")


def _check_out(out: Path) -> None:
    """Before the data and the generator are loaded: ``out`` that is a file, or lies under one, is one line (it
    was ``preparing OUT failed: NotADirectoryError: ...`` once the generator had been loaded)."""
    from gensis.eval.options import file_in_the_way

    q = file_in_the_way(out)
    if q is not None:
        raise UserError(f"--out {out} is a file, not a folder: give a new or empty folder" if q == out.expanduser()
                        else f"--out {out} cannot be made: {q} is a file, not a folder; give a new or empty folder")


def _secondary_mode(mode: str, ds: ImageSet) -> tuple[str, np.ndarray | None]:
    groups = getattr(ds, "groups", None)
    has_groups = groups is not None and len(np.unique(groups)) > 1
    if mode == "auto":
        mode = "group" if has_groups else "random"
    if mode == "group" and not has_groups:
        raise UserError("gen.secondary=group needs a dataset with 'groups' (e.g. an .npz with a groups array) "
                        "holding at least 2 distinct groups")
    return mode, (np.asarray(groups, np.int64) if mode == "group" else None)


def _encoder_identity(gen) -> str:
    """The conditioning encoder's identity: ``gen.encoder_identity``, else ``gen.encoder.identity``, else the
    generator's own identity (which covers its encoder)."""
    ident = getattr(gen, "encoder_identity", None) or getattr(getattr(gen, "encoder", None), "identity", None)
    return str(ident or gen.identity)


def _shard_ok(path: Path, identity: str, s: int, layout: Layout) -> str | None:
    """None if ``path`` is a complete shard s of this bank, else the reason."""
    try:
        rows, meta, _ = read_shard_header(path)
    except (OSError, ShardFormatError) as e:
        return str(e)
    start, stop = layout.shard_range(s)
    if meta.get("bank") != identity or meta.get("shard") != s:
        return f"belongs to bank {meta.get('bank')} shard {meta.get('shard')}"
    if len(rows) != (stop - start) * layout.entries_per_image:
        return f"{len(rows)} entries, expected {(stop - start) * layout.entries_per_image}"
    return None


def _as_begun(out: Path, generator) -> tuple[bool, str | None]:
    """A bank begun at ``out`` by this E-LDM with another micro-batch (OLDER_MICRO_BATCH: banks begun before
    BANK_MICRO_BATCH) or in another precision (bf16 autocast on or off: ``auto`` picks by machine, so a bank
    begun on one machine and continued on another differed only in that): the generator is switched to how the
    bank was begun, so that it stays one bank. Returns (switched, a note for the user when the precision was)."""
    if not (out / HEADER).is_file():
        return False, None
    try:
        old = read_header(out).get("sources", {}).get("eldm_identity")
    except (UserError, OSError, ValueError):
        return False, None
    if old == str(generator.identity):
        return False, None
    micro, bf16 = generator.micro_batch, generator.bf16
    for m in (micro, OLDER_MICRO_BATCH):
        for b in (bf16, not bf16):
            generator.micro_batch, generator.bf16 = m, b
            if old == str(generator.identity):
                note = None if b == bf16 else (
                    f"[gensis] note: {out} was begun {'in bf16' if b else 'in fp32 (without bf16 autocast)'}; it is "
                    f"continued so, to stay one bank (this machine samples {'in fp32' if b else 'in bf16'} by "
                    f"default)")
                return True, note
    generator.micro_batch, generator.bf16 = micro, bf16
    return False, None


def _embeddings_to_make(out: Path, layout: Layout, quiet: bool) -> list[int]:
    """The shards whose embedding file is missing or damaged (removed here; a damaged one, e.g. from a bank copied
    in part, stopped every rerun at 'cannot read embeddings': the file is recomputed, to the same bytes)."""
    todo = []
    for s in range(layout.num_shards):
        p = out / EMB_DIR / emb_name(s)
        if p.is_file():
            start, stop = layout.shard_range(s)
            try:
                a = np.load(p, mmap_mode="r")  # header and length only
                why = None if a.ndim == 2 and a.shape[0] == stop - start and a.dtype == np.float32 else (
                    f"shape {a.shape} {a.dtype}, expected ({stop - start}, D) float32")
                del a
            except (OSError, ValueError) as e:
                why = str(e)
            if why is None:
                continue
            if not quiet:
                print(f"[gensis] {p.name} is damaged ({why}): computing it again", file=sys.stderr)
            p.unlink()
        todo.append(s)
    return todo


def _prepare(out: Path, header: dict, cfg: dict, groups: np.ndarray | None, layout: Layout,
             quiet: bool) -> tuple[list[int], list[int], dict]:
    """Rank 0: create or check the bank folder; return (shards to generate, embedding files to make, header)."""
    if (out / HEADER).is_file():
        old = read_header(out)
        if old["identity"] != header["identity"]:
            diff = header_diff(old, header)
            raise UserError(f"{out} holds a bank made with other settings ({'; '.join(diff[:4])}"
                            f"{'; ...' if len(diff) > 4 else ''}): use another --out or the same settings")
        changed = content_change(old["sources"].get("data_content"), header["sources"].get("data_content") or {})
        if changed is not None:
            raise UserError(f"{out} holds a bank begun from other images than --data {header['sources']['data']} "
                            f"holds now ({changed}): use another --out, or restore the images")
        header = {**old, "status": old.get("status", "running")}
    elif out.exists() and any(not is_temp_name(p.name, {HEADER}.__contains__) and p.name != LOCK_NAME
                              for p in out.iterdir()):  # (a kill can leave the temporary file of bank.json)
        from gensis.folder_kind import refuse_other_kind

        refuse_other_kind(out, "bank")  # a run of another stage: named
        raise UserError(f"{out} exists and is not an augmentation bank: give a new or empty folder")
    make_folder(out)
    lock_folder(out)  # one process (group) per bank folder; released at exit
    if not (out / HEADER).is_file():  # first: from now on the folder is a bank (running)
        write_header(out, header)
    for sub in (SHARD_DIR, EMB_DIR, SCORE_DIR):
        (out / sub).mkdir(exist_ok=True)
    for folder in (out, out / EMB_DIR, out / SCORE_DIR):
        remove_stale_temps(folder)  # left by a killed run: never a valid file
    remove_stale_temps(out / SHARD_DIR, SHARD_RE.match)  # (and an older version's, of a shard)
    atomic_write_text(out / "config.yaml", dump(cfg))
    if groups is not None and not (out / "groups.npy").is_file():
        buf = io.BytesIO()
        np.save(buf, groups, allow_pickle=False)
        atomic_write_bytes(out / "groups.npy", buf.getvalue())
    pending = []
    for s in range(layout.num_shards):
        p = out / SHARD_DIR / shard_name(s)
        if not p.exists():
            pending.append(s)
            continue
        why = _shard_ok(p, header["identity"], s, layout)
        if why is None and has_scores(header) and not (out / SCORE_DIR / score_name(s)).is_file():
            why = "its fidelity scores are missing"
        if why is not None:
            if not quiet:
                print(f"[gensis] {p.name} is damaged ({why}): regenerating it", file=sys.stderr)
            p.unlink()
            pending.append(s)
    emb = _embeddings_to_make(out, layout, quiet) if pending else []
    if pending and header.get("status") != "running":
        header = {**header, "status": "running"}
        write_header(out, header)
    return pending, emb, header


def generate_bank(cfg: dict, data: str, out: str | Path, eldm: str | None = None,
                  generator: EmbeddingConditionedGenerator | None = None, generator_spec: str | None = None,
                  quiet: bool = False) -> BankResult:
    """Create (or finish) the bank at ``out`` for dataset ``data`` (default split: train)."""
    g, st, r, d = cfg["gen"], cfg["storage"], cfg["run"], cfg["data"]
    out = Path(out)
    with same_on_every_rank():  # the same verdict on every rank of a torchrun job: printed once, by rank 0
        _validate_cfg(cfg)
        _check_out(out)
    device = pick_device(r["device"])
    if r.get("threads"):
        torch.set_num_threads(int(r["threads"]))
    dist_info = init_distributed(device.type)
    if g["guidance"] is not None and float(g["guidance"]) == 0 and dist_info.is_main and not quiet:
        print("[gensis] note: gen.guidance=0 samples the unconditional model: every entry ignores its image's "
              "embedding (1 is the conditional model alone; null the E-LDM run's default)", file=sys.stderr)
    with same_on_every_rank():  # every rank opens the same data and generator
        ds = open_data(data, "train", d["val_fraction"], d["split_seed"], d["limit"],
                       d.get("skip_bad_images", False))
        if len(ds) == 0:  # it made a 'complete' bank of 0 images
            of = f" of the {ds.source_size} images" if getattr(ds, "source_size", None) else ""
            raise UserError(f"no image to augment: the {getattr(ds, 'split', None) or 'train'} split{of} of {data} "
                            f"holds none; give more images or another split (DATA@train, DATA@all)")
        own = generator is None and generator_spec is None  # gensis' own E-LDM, loaded here
        if generator is None:
            generator = load_generator(eldm, device, g, generator_spec)
        else:
            check_generator(generator)
        secondary_mode, groups = _secondary_mode(g["secondary"], ds)
        layout = Layout(len(ds), int(g["num_generative"]), tuple(float(a) for a in g["alphas"]),
                        int(st["shard_size"]))
        if own:  # a pure function of the bank's settings: the same on resume, whatever run.batch_size
            generator.micro_batch = min(BANK_MICRO_BATCH, layout.shard_size * layout.entries_per_image)
        if layout.alphas and len(ds) < 2:
            raise UserError("interpolated augmentations need a dataset of at least 2 images")
        out_size = int(g["image_size"] or generator.image_size)
        held = layout.shard_size * layout.entries_per_image * out_size * out_size * 3  # one shard's images, uint8
        if held > SHARD_MEMORY_NOTE and dist_info.is_main and not quiet:
            print(f"[gensis] note: a shard holds {layout.shard_size} images x {layout.entries_per_image} entries, "
                  f"{held / 2**30:.1f} GiB of pixels, kept in memory until it is written (and redone whole after a "
                  f"kill): lower storage.shard_size for this many entries per image", file=sys.stderr)
        settings = settings_from_cfg(cfg, secondary_mode)
        sources = {"data": data, "split": DataSpec.parse(data).split or "train",
                   "val_fraction": d["val_fraction"], "split_seed": d["split_seed"], "limit": d["limit"],
                   "dataset_name": getattr(ds, "name", None), "data_identity": ds.identity, "num_images": len(ds),
                   "data_content": ds.content,  # not in the identity: checked apart (content_change)
                   "encoder_identity": _encoder_identity(generator),
                   "eldm_identity": str(generator.identity), "eldm": None if eldm is None else str(eldm),
                   "generator": generator_spec or ("gensis.eldm:load_generator" if eldm
                                                   else type(generator).__name__)}
        header = make_header(settings, sources, layout_dict(layout, out_size))
        header["scores"] = dict(SCORES_INFO)  # not part of the identity: a bank made before scores is the same bank

    # --- rank 0 checks/creates the folder; every rank learns the work list (or the error)
    msg, pending, pending_emb = None, [], []
    switched, note = _as_begun(out, generator) if own else (False, None)
    if switched:
        header = make_header(settings, {**sources, "eldm_identity": str(generator.identity)},
                             layout_dict(layout, out_size))
        header["scores"] = dict(SCORES_INFO)
        if note and dist_info.is_main:
            print(note, file=sys.stderr)
    if dist_info.is_main:
        try:
            pending, pending_emb, header = _prepare(out, header, cfg, groups, layout, quiet)
        except UserError as e:
            msg = str(e)
        except Exception as e:  # told to every rank as one line
            from gensis.errors import environment_error

            line = environment_error(e) if isinstance(e, OSError) else None
            msg = (f"{line} (fix the cause and run the same command again)" if line is not None
                   else f"preparing {out} failed: {type(e).__name__}: {e}")
    msg, pending, pending_emb = broadcast_object((msg, pending, pending_emb))
    if msg is not None:
        with same_on_every_rank():  # rank 0's verdict, now every rank's: printed once
            raise UserError(msg)
    result = BankResult(out, header["identity"], world=dist_info.world, shards_skipped=layout.num_shards - len(pending),
                        entries_per_image=layout.entries_per_image, num_images=layout.num_images,
                        full_images=ds.limited_from or len(ds), tiles=bool(getattr(_root(ds), "tiles", False)))
    show = dist_info.is_main and not quiet

    # --- phase 1: embeddings
    store = EmbeddingStore(out, layout)
    t0 = time.perf_counter()
    mine_emb = pending_emb[dist_info.rank::dist_info.world]
    if mine_emb:
        n_emb = sum(layout.shard_range(s)[1] - layout.shard_range(s)[0] for s in mine_emb)
        bar = progress(total=n_emb, desc="bank embed", unit="img", disable=not show)
        embed_shards(generator, ds, layout, mine_emb, store, int(r["encode_batch_size"]), int(r["num_workers"]), bar)
        bar.close()
    barrier()
    result.embed_seconds = time.perf_counter() - t0
    result.embedded = sum(layout.shard_range(s)[1] - layout.shard_range(s)[0] for s in pending_emb)

    # --- phase 2: entries
    t0 = time.perf_counter()
    mine = pending[dist_info.rank::dist_info.world]
    codec = Codec(st["codec"], int(st["quality"]), int(st["png_level"]))
    meta = {"bank": header["identity"], "codec": codec.name, "image_size": out_size}
    n_mine = sum((layout.shard_range(s)[1] - layout.shard_range(s)[0]) * layout.entries_per_image for s in mine)
    bar = progress(total=n_mine, desc=f"bank generate{' (rank 0)' if dist_info.world > 1 else ''}", unit="img",
                   disable=not show or not n_mine)  # nothing left (a finished bank rerun): no empty '0img' bar
    writer = ShardWriter(out, codec, meta, threads=int(r["writer_threads"]))
    # entries per generator call: run.batch_size rounded up to whole micro-batches (a partial one is padded)
    micro = int(getattr(generator, "micro_batch", 1) or 1)
    call = -(-int(r["batch_size"]) // micro) * micro
    generated, finished = 0, False
    try:
        for s in mine:
            plan = plan_shard(layout, s, int(g["seed"]), groups)
            cond = conditioning(plan, store, g["interpolation"])  # (E_s, D)
            for b in range(0, len(plan), call):
                apply_thread_share()  # a demo's side lane finished: its threads come back (gensis.device)
                sl = slice(b, min(b + call, len(plan)))
                with torch.no_grad():
                    imgs = generator.generate(cond[sl], [int(x) for x in plan.seed[sl]], guidance=g["guidance"],
                                              steps=g["steps"], sampler=g["sampler"])  # (B, 3, S', S') uint8
                    scores = cosine_scores(generator, imgs, cond[sl])  # (B,), same batch, encoder's device
                if imgs.shape[-1] != out_size or imgs.shape[-2] != out_size:
                    from torchvision.transforms.v2 import functional as TF

                    imgs = TF.resize(imgs, [out_size, out_size], antialias=True)
                writer.add(plan, b, imgs.permute(0, 2, 3, 1).contiguous().cpu().numpy(),  # (B, S, S, 3)
                           scores.cpu().numpy().astype(np.float32))
                generated += sl.stop - sl.start
                bar.update(sl.stop - sl.start)
        finished = True
    finally:
        try:
            writer.close(abort=not finished)
        finally:
            bar.close()
    written = len(writer.written)
    generated, written = (int(v) for v in all_reduce_sum([float(generated), float(written)], device))
    barrier()
    result.seconds = time.perf_counter() - t0
    result.generated, result.shards_written = generated, written
    result.extra["encode_seconds_rank0"] = writer.encode_seconds

    # --- rank 0 seals the bank
    if dist_info.is_main:
        missing = [s for s in range(layout.num_shards) if not (out / SHARD_DIR / shard_name(s)).is_file()]
        result.complete = not missing
        h = read_header(out)
        if result.complete and h.get("status") != "done":
            h.update(status="done", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
        if generated:
            h.setdefault("runs", []).append({
                "generated": generated, "seconds": round(result.seconds, 3), "images_per_s": round(result.images_per_s, 3),
                "embed_seconds": round(result.embed_seconds, 3), "processes": dist_info.world,
                "device": str(device), "batch_size": int(r["batch_size"]), "at": time.strftime("%Y-%m-%dT%H:%M:%S")})
        write_header(out, h)
        release_folder(out)
    result.complete = bool(broadcast_object(result.complete))
    barrier()
    return result
