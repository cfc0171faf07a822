"""Where tiles are and how to read them: target resolution → pyramid level, read size and level-0 grid.

Notation (per slide)
    s        slide resolution, µm per level-0 pixel (``mpp``)
    t        target resolution, µm per output pixel (10× = 1.0, 20× = 0.5, 40× = 0.25)
    d = t/s  wanted downsample from level 0
    ℓ, dsℓ   the chosen pyramid level and its downsample: the coarsest level with dsℓ <= d·(1 + tol)
    P        output tile size (px); O overlap (px at the target resolution)

If dsℓ is within ``tol`` of d the tile is read at level ℓ at its own size (no resampling; 0.499 µm/px slides
read "as 20×"). Otherwise R = round(P·d/dsℓ) pixels are read at level ℓ and resized to P (antialiased).
The tile's footprint on level 0 is S0 = round(R·dsℓ) pixels; the grid steps by round((P−O)·S0/P) level-0
pixels and keeps only tiles that lie wholly inside the slide. A target finer than the slide (d < 1 − tol)
would invent pixels and is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gensis.errors import UserError

LEVEL_TOLERANCE = 0.05


def magnification_to_mpp(mag: float) -> float:
    """The usual convention: 10× = 1 µm/px, so mpp = 10 / magnification."""
    if mag <= 0:
        raise UserError(f"magnification must be positive, got {mag}")
    return 10.0 / mag


def resolution_name(mpp: float) -> str:
    """``20x`` for 0.5 µm/px (Trident's folder naming); ``0.7mpp`` when the magnification is not a round number."""
    mag = 10.0 / mpp
    if abs(mag - round(mag)) < 1e-6:
        return f"{int(round(mag))}x"
    return f"{mpp:g}mpp"


@dataclass(frozen=True)
class TileGeometry:
    """How one slide is tiled at one target resolution (stored with its coordinates, see ``tilefile``)."""

    slide_mpp: float
    target_mpp: float
    patch_size: int          # P: output tile size
    overlap: int             # O: at the target resolution
    level: int               # ℓ
    level_downsample: float  # dsℓ
    read_size: int           # R: pixels read at level ℓ
    patch_size_level0: int   # S0: footprint on level 0
    step_level0: int         # grid step on level 0
    level0_width: int
    level0_height: int

    @property
    def resampled(self) -> bool:
        return self.read_size != self.patch_size

    def grid(self) -> np.ndarray:
        """(N, 2) int64 level-0 (x, y) of every tile wholly inside the slide, row-major (y, then x)."""
        xs = np.arange(0, self.level0_width - self.patch_size_level0 + 1, self.step_level0, dtype=np.int64)
        ys = np.arange(0, self.level0_height - self.patch_size_level0 + 1, self.step_level0, dtype=np.int64)
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], axis=1)

    def to_attrs(self) -> dict:
        d = asdict(self)
        d["resampled"] = self.resampled
        return d

    @classmethod
    def from_attrs(cls, attrs) -> "TileGeometry":
        floats = {"slide_mpp", "target_mpp", "level_downsample"}
        return cls(**{k: float(attrs[k]) if k in floats else int(attrs[k]) for k in cls.__dataclass_fields__})


def plan_geometry(slide_mpp: float, target_mpp: float, downsamples: list[float], dimensions: tuple[int, int],
                  patch_size: int = 256, overlap: int = 0, tol: float = LEVEL_TOLERANCE,
                  name: str = "slide") -> TileGeometry:
    """Choose the level and sizes for ``target_mpp`` on a slide of ``slide_mpp`` with pyramid ``downsamples``."""
    if patch_size < 1:
        raise UserError(f"tile size must be >= 1, got {patch_size}")
    if not 0 <= overlap < patch_size:
        raise UserError(f"overlap must be in [0, tile size), got {overlap}")
    d = target_mpp / slide_mpp
    if d < 1 - tol:
        raise UserError(f"slide {name} is at {slide_mpp:g} µm/px, finer tiles ({target_mpp:g} µm/px) would be "
                        f"upsampled: choose a lower magnification")
    ok = [(ds, i) for i, ds in enumerate(downsamples) if ds <= d * (1 + tol)]
    ds, level = max(ok) if ok else (downsamples[0], 0)
    if abs(ds - d) <= tol * d:
        read = patch_size
    else:
        read = int(round(patch_size * d / ds))
    size0 = int(round(read * ds))
    step0 = max(1, int(round((patch_size - overlap) * size0 / patch_size)))
    return TileGeometry(float(slide_mpp), float(target_mpp), int(patch_size), int(overlap), int(level), float(ds),
                        read, size0, step0, int(dimensions[0]), int(dimensions[1]))


def read_tile(slide, geom: TileGeometry, x: int, y: int) -> np.ndarray:
    """The P×P×3 uint8 tile whose level-0 top-left corner is (x, y)."""
    img = slide.read_region(x, y, geom.level, geom.read_size, geom.read_size)
    if geom.resampled:
        from PIL import Image

        img = np.array(Image.fromarray(img).resize((geom.patch_size, geom.patch_size), Image.Resampling.BILINEAR))
    return img
