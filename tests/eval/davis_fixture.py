"""A tiny DAVIS-2017 folder: coloured squares moving over a textured background, palette PNG masks."""

from pathlib import Path

import numpy as np
from PIL import Image

from gensis.eval.davis import davis_palette


def make_davis(root: Path, sequences=("squares", "pair"), frames: int = 6, h: int = 48, w: int = 64) -> Path:
    g = np.random.default_rng(0)
    for s, name in enumerate(sequences):
        n_obj = 1 if s == 0 else 2
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        bg = (g.random((h, w, 3)) * 60 + 40).astype(np.uint8)
        for t in range(frames):
            img, lab = bg.copy(), np.zeros((h, w), np.uint8)
            for o in range(1, n_obj + 1):
                y0, x0 = 8 + 18 * (o - 1), 6 + 3 * t + 20 * (o - 1)
                img[y0:y0 + 14, x0:x0 + 14] = [(230, 40, 40), (40, 220, 60)][o - 1]
                lab[y0:y0 + 14, x0:x0 + 14] = o
            Image.fromarray(img).save(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg", quality=95)
            m = Image.fromarray(lab, mode="P")
            m.putpalette(davis_palette())
            m.save(root / "Annotations" / "480p" / name / f"{t:05d}.png")
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(sequences) + "\n")
    return root
