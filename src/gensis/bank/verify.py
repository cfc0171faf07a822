"""``gensis bank verify``: counts, manifest consistency and checksums of every entry, with exact complaints.

Checks, in order: the header parses and its identity matches its content; generation finished; no partial or
foreign files; every shard present, well-formed (footer, index/meta checksum), of this bank and at its place;
every entry's primary, kind, k/α, seed and secondary equal to the pure functions that define them (``plan.py``);
payloads contiguous and matching their crc32; optionally (``decode``) every image decodes to S×S×3; for a bank
with fidelity scores, every shard's score file present, of the right length and finite (the summary then shows
the score quantiles).
"""

from __future__ import annotations

import shlex
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gensis.bank.format import SHARD_DIR, SHARD_RE, Codec, ShardFormatError, read_tail, shard_name
from gensis.bank.header import compute_identity, layout_of, read_header
from gensis.bank.plan import KIND_NAMES, plan_shard
from gensis.bank.scores import SCORE_DIR, has_scores, quantile_table, score_name
from gensis.rundir import is_temp_name

MAX_PER_SHARD = 5


@dataclass
class VerifyReport:
    path: Path
    problems: list[str] = field(default_factory=list)
    shards_ok: int = 0
    num_shards: int = 0
    entries_ok: int = 0
    num_entries: int = 0
    identity: str = ""
    deleted: list[str] = field(default_factory=list)
    score_table: str = ""
    faulty: list[str] = field(default_factory=list)  # shards that fail a check (what --delete-bad deletes)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        if self.ok:
            return (f"OK: bank {self.path}: {self.entries_ok} entries in {self.shards_ok} shards, "
                    f"checksums and manifest consistent (identity {self.identity})"
                + (f"\n{self.score_table}" if self.score_table else ""))
        head = (f"FAILED: bank {self.path}: {len(self.problems)} problem(s); {self.shards_ok}/{self.num_shards} "
                f"shards and {self.entries_ok}/{self.num_entries} entries OK")
        if self.deleted:
            tail = (f"deleted {len(self.deleted)} bad file(s) ({', '.join(self.deleted[:3])}"
                    f"{', ...' if len(self.deleted) > 3 else ''}): rerun the same `gensis bank generate` command "
                    f"to regenerate them")
        elif self.faulty:
            tail = (f"to repair: `gensis bank verify --delete-bad {shlex.quote(str(self.path))}`, then rerun the same "
                    "`gensis bank generate` command (it regenerates missing shards only)")
        else:  # nothing to delete (missing shards, a killed run's partial files): generate finishes it
            tail = ("to finish it: rerun the same `gensis bank generate` command (it generates the missing shards "
                    "only and removes partial files)")
        return "\n".join([head] + [f"  - {p}" for p in self.problems] + [tail])


def _entry_name(row) -> str:
    kind = KIND_NAMES.get(int(row["kind"]), f"kind {int(row['kind'])}")
    what = f"k={int(row['k'])}" if kind == "gen" else f"alpha={float(row['alpha']):g}"
    return f"image {int(row['primary'])} {kind} {what}"


def verify_bank(path: str | Path, decode: bool = False, delete_bad: bool = False) -> VerifyReport:
    """Check the bank at ``path``; with ``delete_bad``, delete every faulty shard and temporary file (so that
    rerunning ``gensis bank generate`` regenerates exactly those)."""
    path = Path(path)
    h = read_header(path)
    layout = layout_of(h)
    st = h["settings"]
    rep = VerifyReport(path, num_shards=layout.num_shards, num_entries=layout.num_entries, identity=h["identity"])
    if compute_identity(h) != h["identity"]:
        rep.problems.append(f"bank.json: identity {h['identity']} does not match its content "
                            f"({compute_identity(h)}): the header was edited")
    if h.get("status") != "done":
        rep.problems.append(f"bank.json: status '{h.get('status')}': generation did not finish "
                            f"(rerun the same `gensis bank generate` command)")
    groups = None
    if st["secondary"] == "group":
        gp = path / "groups.npy"
        try:
            groups = np.load(gp, allow_pickle=False)
            if len(groups) != layout.num_images:
                rep.problems.append(f"groups.npy: {len(groups)} groups for {layout.num_images} images")
                groups = None
        except (OSError, ValueError) as e:
            rep.problems.append(f"groups.npy: unreadable ({e}); secondaries not checked")
    sdir = path / SHARD_DIR
    if not sdir.is_dir():
        rep.problems.append(f"{SHARD_DIR}/: missing")
        return rep
    for p in sorted(sdir.iterdir()):
        m = SHARD_RE.match(p.name)
        if is_temp_name(p.name, SHARD_RE.match):  # ours only (or an older version's of a shard): a user's *.tmp is kept
            rep.problems.append(f"{SHARD_DIR}/{p.name}: partial temporary file left by a killed run "
                                f"(rerun `gensis bank generate` to finish and clean up)")
            if delete_bad:
                p.unlink()
                rep.deleted.append(p.name)
        elif m is None:
            rep.problems.append(f"{SHARD_DIR}/{p.name}: unexpected file")
        elif int(m.group(1)) >= layout.num_shards:
            rep.problems.append(f"{SHARD_DIR}/{p.name}: extra shard (the bank has {layout.num_shards})")
    missing = [s for s in range(layout.num_shards) if not (sdir / shard_name(s)).is_file()]
    if missing:
        names = ", ".join(shard_name(s) for s in missing[:5])
        rep.problems.append(f"{len(missing)} of {layout.num_shards} shards missing: {names}"
                            f"{', ...' if len(missing) > 5 else ''}")
    codec = Codec(st["codec"], st.get("quality") or 95, st.get("png_level") or 1)
    size = int(h["layout"]["image_size"])
    for s in range(layout.num_shards):
        f = sdir / shard_name(s)
        if s in missing:
            continue
        problems, n_ok = _check_shard(f, s, h, layout, groups, codec, size, decode)
        if has_scores(h):
            problems += _check_scores(path, s, layout)
        rep.entries_ok += n_ok
        if problems:
            shown = problems[:MAX_PER_SHARD]
            rep.problems += [f"{SHARD_DIR}/{f.name}: {p}" for p in shown]
            if len(problems) > len(shown):
                rep.problems.append(f"{SHARD_DIR}/{f.name}: ... and {len(problems) - len(shown)} more problems")
            rep.faulty.append(f.name)
            if delete_bad:
                f.unlink()
                rep.deleted.append(f.name)
        else:
            rep.shards_ok += 1
    if has_scores(h) and rep.ok:
        from gensis.bank.reader import BankReader

        rep.score_table = quantile_table(BankReader(path).scores(), layout.num_generative)
    elif not has_scores(h) and rep.ok:
        rep.score_table = "no fidelity scores (bank made before gensis recorded them)"
    return rep


def _check_scores(path: Path, s: int, layout) -> list[str]:
    start, stop = layout.shard_range(s)
    f = path / SCORE_DIR / score_name(s)
    if not f.is_file():
        return [f"its fidelity scores {SCORE_DIR}/{f.name} are missing"]
    try:
        a = np.load(f, allow_pickle=False)
    except (OSError, ValueError) as e:
        return [f"fidelity scores {SCORE_DIR}/{f.name} unreadable ({e})"]
    n = (stop - start) * layout.entries_per_image
    if a.shape != (n,) or a.dtype != np.float32:
        return [f"fidelity scores {SCORE_DIR}/{f.name}: shape {a.shape} {a.dtype}, expected ({n},) float32"]
    if not np.all(np.isfinite(a)) or np.abs(a).max(initial=0) > 1.0 + 1e-4:
        return [f"fidelity scores {SCORE_DIR}/{f.name}: values outside [-1, 1]"]
    return []


def _check_shard(f: Path, s: int, h: dict, layout, groups, codec: Codec, size: int,
                 decode: bool) -> tuple[list[str], int]:
    """(problems, number of entries found correct)."""
    try:
        data = f.read_bytes()
    except OSError as e:
        return [f"unreadable ({e})"], 0
    try:
        rows, meta, index_offset = read_tail(data, len(data))
    except ShardFormatError as e:
        return [f"damaged: {e}"], 0
    out = []
    start, stop = layout.shard_range(s)
    expect_meta = {"bank": h["identity"], "shard": s, "start": start, "stop": stop, "codec": codec.name,
                   "image_size": size, "entries": (stop - start) * layout.entries_per_image}
    for k, v in expect_meta.items():
        if meta.get(k) != v:
            out.append(f"meta {k} is {meta.get(k)!r}, expected {v!r}"
                       + (" (a shard of another bank)" if k == "bank" else ""))
    if out:
        return out, 0
    plan = plan_shard(layout, s, int(h["settings"]["seed"]), groups)
    if len(rows) != len(plan):
        return [f"{len(rows)} entries, expected {len(plan)}"], 0
    expected = {"primary": plan.primary, "kind": plan.kind, "k": plan.k, "seed": plan.seed}
    if groups is not None or h["settings"]["secondary"] == "random":
        expected["secondary"] = plan.secondary
    why: dict[int, list[str]] = {}
    for name, exp in expected.items():
        diff = rows[name] != exp
        for j in np.flatnonzero(diff):
            why.setdefault(int(j), []).append(f"{name} {rows[name][j]} != expected {exp[j]}")
    adiff = ~((rows["alpha"] == plan.alpha) | (np.isnan(rows["alpha"]) & np.isnan(plan.alpha)))
    for j in np.flatnonzero(adiff):
        why.setdefault(int(j), []).append(f"alpha {rows['alpha'][j]} != expected {plan.alpha[j]}")
    is_int = plan.kind == 1
    if "secondary" not in expected:  # group mode without groups.npy: at least range and consistency
        sec = rows["secondary"]
        for j in np.flatnonzero(is_int & ((sec < 0) | (sec >= layout.num_images) | (sec == rows["primary"]))):
            why.setdefault(int(j), []).append(f"secondary {sec[j]} invalid")
    offsets, lengths = rows["offset"].astype(np.int64), rows["length"].astype(np.int64)
    ends = np.concatenate([[0], np.cumsum(lengths)])
    if not np.array_equal(offsets, ends[:-1]) or ends[-1] != index_offset:
        out.append(f"payload offsets are not contiguous up to the index at byte {index_offset}")
        return out, 0
    for j in range(len(rows)):
        o, n = int(offsets[j]), int(lengths[j])
        payload = data[o:o + n]
        if zlib.crc32(payload) != int(rows["crc32"][j]):
            why.setdefault(j, []).append("checksum mismatch (corrupt image bytes)")
        elif decode:
            try:
                img = codec.decode(payload, size)
                if img.shape != (size, size, 3):
                    why.setdefault(j, []).append(f"decodes to {img.shape}, expected {(size, size, 3)}")
            except Exception as e:
                why.setdefault(j, []).append(f"does not decode: {type(e).__name__}: {e}")
    for j in sorted(why):
        out.append(f"entry {j} ({_entry_name(rows[j])}): {'; '.join(why[j])}")
    return out, len(rows) - len(why)
