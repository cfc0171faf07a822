"""What the bank holds, and the pure functions that decide every entry's seed and secondary image.

Notation
    N          images in the dataset split (primary indices 0..N-1)
    K          generative augmentations per image (``gen.num_generative``)
    A          interpolation ratios α_1..α_A (``gen.alphas``)
    E = K + A  entries per image, in slot order: gen k=0..K-1, then interp α_1..α_A
    s          shard number; shard s holds primaries [s·shard_size, min((s+1)·shard_size, N))

Everything an entry depends on is a pure function of (bank seed, primary index, slot) (+ the dataset's groups
for the secondary), computed with a counter-based hash (SplitMix64), never with a stateful RNG. So any split of
the work into processes, and any kill/resume, gives the same entries, and ``verify`` can recompute them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gensis.errors import UserError

KIND_GEN, KIND_INTERP = 0, 1
KIND_NAMES = {KIND_GEN: "gen", KIND_INTERP: "interp"}
_MASK63 = np.uint64((1 << 63) - 1)
_SALT_SECONDARY = 0x5EC0


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer (Steele et al., 2014), vectorised on uint64 (wrap-around arithmetic)."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash64(*parts) -> np.ndarray:
    """Hash of a tuple of non-negative integers (scalars or arrays that broadcast) → uint64 array."""
    with np.errstate(over="ignore"):
        h = np.zeros(np.broadcast(*[np.asarray(p) for p in parts]).shape, dtype=np.uint64)
        for p in parts:
            h = splitmix64(h ^ splitmix64(np.asarray(p).astype(np.uint64)))
    return h


def slot_code(kind: int, k: int = 0, alpha: float = 0.0) -> int:
    """An integer naming (kind, k or α): α enters rounded to 1e-6, so adding an α never changes the others."""
    if kind == KIND_GEN:
        return 1_000_000_000 + int(k)
    return 2_000_000_000 + int(round(float(alpha) * 1e6))


def entry_seeds(bank_seed: int, primary: np.ndarray, code: np.ndarray | int) -> np.ndarray:
    """The generator seed (63-bit, fits torch.Generator.manual_seed) of entries (primary, slot code)."""
    return (hash64(int(bank_seed), primary, code) & _MASK63).astype(np.uint64)


def _uniform_int(h: np.ndarray, m: np.ndarray | int) -> np.ndarray:
    """Map uint64 hashes to integers in [0, m) (53-bit fraction; bias < m / 2^53)."""
    u = (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)
    return np.minimum((u * np.asarray(m, np.float64)).astype(np.int64), np.asarray(m, np.int64) - 1)


_BLOCKS: list = [None, None]  # (groups array, (order, sorted groups)) of the last call: one sort per bank


def _group_blocks(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images sorted by group (stable), so that each group is one contiguous block."""
    if _BLOCKS[0] is not groups:
        g = np.asarray(groups)
        order = np.argsort(g, kind="stable")
        _BLOCKS[:] = [groups, (order, g[order])]
    return _BLOCKS[1]


def secondaries(bank_seed: int, primary: np.ndarray, n: int, groups: np.ndarray | None = None) -> np.ndarray:
    """The secondary image of each primary: uniform over the other N-1 images, or, with ``groups``, uniform over
    the images of every other group (e.g. tiles of another slide; paper Sec. 9.5.2)."""
    primary = np.asarray(primary, dtype=np.int64)
    h = hash64(int(bank_seed), _SALT_SECONDARY, primary)
    if groups is None:
        if n < 2:
            raise UserError("interpolated augmentations need at least 2 images")
        r = _uniform_int(h, n - 1)
        return r + (r >= primary)  # skip the primary itself
    order, sorted_groups = _group_blocks(groups)
    g = np.asarray(groups)[primary]
    start = np.searchsorted(sorted_groups, g, side="left")
    stop = np.searchsorted(sorted_groups, g, side="right")
    others = n - (stop - start)
    if np.any(others <= 0):
        raise UserError("gen.secondary=group needs at least 2 groups in the dataset's 'groups'")
    r = _uniform_int(h, others)
    pos = np.where(r < start, r, r + (stop - start))  # skip the primary's block
    return order[pos].astype(np.int64)


@dataclass(frozen=True)
class Layout:
    """Where each entry lives: shard and row from (primary, slot)."""

    num_images: int
    num_generative: int
    alphas: tuple[float, ...]
    shard_size: int

    @property
    def entries_per_image(self) -> int:
        return self.num_generative + len(self.alphas)

    @property
    def num_shards(self) -> int:
        return -(-self.num_images // self.shard_size)

    @property
    def num_entries(self) -> int:
        return self.num_images * self.entries_per_image

    def shard_range(self, s: int) -> tuple[int, int]:
        return s * self.shard_size, min((s + 1) * self.shard_size, self.num_images)

    def slots(self) -> list[dict]:
        """[{kind, k, alpha}] in slot order."""
        out = [{"kind": "gen", "k": k, "alpha": None} for k in range(self.num_generative)]
        out += [{"kind": "interp", "k": j, "alpha": a} for j, a in enumerate(self.alphas)]
        return out

    def slot_codes(self) -> np.ndarray:
        codes = [slot_code(KIND_GEN, k) for k in range(self.num_generative)]
        codes += [slot_code(KIND_INTERP, alpha=a) for a in self.alphas]
        return np.asarray(codes, dtype=np.int64)

    def alpha_slot(self, alpha: np.ndarray) -> np.ndarray:
        """Slot of the stored α nearest to each requested α."""
        if not self.alphas:
            raise UserError("this bank holds no interpolated augmentations (gen.alphas was empty)")
        stored = np.asarray(self.alphas, dtype=np.float64)
        j = np.abs(np.asarray(alpha, np.float64)[:, None] - stored[None, :]).argmin(1)
        return self.num_generative + j

    def locate(self, primary: np.ndarray, slot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, row in shard) of entries (primary, slot)."""
        primary = np.asarray(primary, dtype=np.int64)
        if primary.size and (primary.min() < 0 or primary.max() >= self.num_images):
            bad = primary[(primary < 0) | (primary >= self.num_images)][0]
            raise IndexError(f"image index {bad} out of range for a bank of {self.num_images} images")
        shard = primary // self.shard_size
        row = (primary - shard * self.shard_size) * self.entries_per_image + np.asarray(slot, np.int64)
        return shard, row


@dataclass
class ShardPlan:
    """The entries of one shard, in file order (image-major, then slot)."""

    shard: int
    start: int
    stop: int
    primary: np.ndarray    # (E_s,) int64
    slot: np.ndarray       # (E_s,) int64
    kind: np.ndarray       # (E_s,) uint8
    k: np.ndarray          # (E_s,) int16 (gen: k; interp: index of alpha)
    alpha: np.ndarray      # (E_s,) float32 (gen: nan)
    seed: np.ndarray       # (E_s,) uint64
    secondary: np.ndarray  # (E_s,) int64 (gen: -1)

    def __len__(self) -> int:
        return len(self.primary)


def plan_shard(layout: Layout, s: int, bank_seed: int, groups: np.ndarray | None) -> ShardPlan:
    start, stop = layout.shard_range(s)
    e = layout.entries_per_image
    imgs = np.arange(start, stop, dtype=np.int64)
    primary = np.repeat(imgs, e)                                 # (n·E,)
    slot = np.tile(np.arange(e, dtype=np.int64), len(imgs))      # (n·E,)
    is_gen = slot < layout.num_generative
    kind = np.where(is_gen, KIND_GEN, KIND_INTERP).astype(np.uint8)
    k = np.where(is_gen, slot, slot - layout.num_generative).astype(np.int16)
    alphas = np.asarray(layout.alphas + (np.nan,), dtype=np.float32)
    alpha = np.where(is_gen, np.float32(np.nan), alphas[np.where(is_gen, len(layout.alphas), k)])
    seed = entry_seeds(bank_seed, primary, layout.slot_codes()[slot])
    secondary = np.full(len(primary), -1, dtype=np.int64)
    if layout.alphas:
        sec = secondaries(bank_seed, imgs, layout.num_images, groups)  # (n,)
        secondary[~is_gen] = np.repeat(sec, len(layout.alphas))
    return ShardPlan(s, start, stop, primary, slot, kind, k, alpha.astype(np.float32), seed, secondary)
