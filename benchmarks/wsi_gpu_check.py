"""GPU check of the slide pipeline (not run yet on a GPU; a CPU dry run passes with SMALL=1):

tile 6 synthetic 6144² 3-level slides (+ the real CMU-1 region if copied to .whl/) with 4 processes ->
pretrain --preset histo for 1 epoch (ViT-S/16 at 256 px, tiles read lazily in 8 DataLoader workers) ->
embed on CUDA (tiles/s, then a resumed rerun that skips every slide) -> ABMIL with the paper's settings,
3-fold, on CUDA -> predict + attention heatmaps. Results: $OUT/gpu_check.json (+ heatmaps, a tile overlay).

    OUT=/tmp/out PYTHONPATH=src python benchmarks/wsi_gpu_check.py            # on the GPU machine
    SMALL=1 OUT=/tmp/out PYTHONPATH=src python benchmarks/wsi_gpu_check.py    # CPU dry run (small sizes)

The GPU image lacks openslide: carry `openslide-python` and `openslide-bin` wheels (pip download --no-deps
--only-binary=:all: --python-version 3.12 ... -d .whl) and install them with --target first.
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "wsi"))


def main() -> None:
    from wsi_slides import make_svs, slide_image

    from gensis.config import load_config
    from gensis.wsi.tiler import TileSettings, tile_slides

    OUT = Path(os.environ.get("OUT", "/tmp/out"))
    SMALL = bool(os.environ.get("SMALL"))  # CPU dry run of the same code paths
    W = Path("/tmp/gpuwsi")
    W.mkdir(exist_ok=True)

    res = {"cuda": torch.cuda.is_available(), "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(res, flush=True)
    t0 = time.time()
    slides = []
    rows = ["slide,label"]
    colors = {"pink": (210, 100, 170), "blue": (110, 90, 200)}
    for i in range(int(os.environ.get("NSLIDES", 6))):
        lab = "pink" if i % 2 == 0 else "blue"
        side = 2048 if SMALL else int(os.environ.get("SIDE", 6144))
        img = slide_image(side, side, [(side // 8, side // 8, side // 2 + 64 * i, side // 2)], seed=i, base=colors[lab])
        slides.append(make_svs(W / f"s{i}.svs", img, mpp=0.25, downsamples=(1, 4, 16), tile=256))
        rows.append(f"s{i},{lab}")
    real = Path(".whl/cmu-1-small-region.svs")
    if real.is_file() and not SMALL:
        slides.append(real)
    (W / "labels.csv").write_text("\n".join(rows) + "\n")
    res["make_slides_s"] = round(time.time() - t0, 1)
    t0 = time.time()
    out, rr = tile_slides(slides, W / "tiles", TileSettings(target_mpp=0.5, patch_size=256, overlap=128), workers=4,
                          quiet=True)
    res["tiling_s"] = round(time.time() - t0, 1)
    res["tiles"] = {r.slide: [r.status, r.n_tiles, r.info.get("level"), r.info.get("resampled")] for r in rr}
    print(res, flush=True)

    from gensis.ssl.train import train

    cfg = load_config("pretrain", "histo-cpu" if SMALL else "histo",
                      ["optim.epochs=1", "optim.batch_size=128", "optim.warmup_epochs=0", "data.num_workers=8"])
    t0 = time.time()
    run = train(cfg, f"tiles:{out}@all", W / "dino", quiet=True)
    res["pretrain_histo_1epoch_s"] = round(time.time() - t0, 1)
    lines = [json.loads(x) for x in (W / "dino" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    res["pretrain_last_row"] = lines[-1] if lines else None
    print(res, flush=True)

    from gensis.wsi.embed import embed_tiles

    t0 = time.time()
    st = embed_tiles(str(W / "dino"), out, W / "feats", batch_size=256, num_workers=8, device="cpu" if SMALL else "cuda", quiet=True)
    dt = time.time() - t0
    from gensis.wsi.dataset import TileImageSet

    n = len(TileImageSet(out))
    res["embed_s"], res["embed_tiles_per_s"] = round(dt, 1), round(n / dt, 1)
    t0 = time.time()
    st2 = embed_tiles(str(W / "dino"), out, W / "feats", batch_size=256, num_workers=8, device="cpu" if SMALL else "cuda", quiet=True)
    res["embed_resume_s"], res["embed_resume_status"] = round(time.time() - t0, 1), sorted(set(st2.values()))
    print(res, flush=True)

    from gensis.mil.predict import predict_slides
    from gensis.mil.train import train_mil

    mcfg = load_config("mil", "base", ["cv.folds=3", "run.device=" + ("cpu" if SMALL else "cuda")] + (["optim.epochs=2"] if SMALL else []))
    t0 = time.time()
    m = train_mil(mcfg, W / "feats", W / "labels.csv", W / "mil", quiet=False)
    res["mil_s"], res["mil_summary"] = round(time.time() - t0, 1), m["summary"]
    rows = predict_slides(W / "mil", W / "feats", OUT / "pred", slides=["s0", "s1"])
    res["predict"] = rows
    print(json.dumps(res, indent=1), flush=True)
    (OUT / "gpu_check.json").write_text(json.dumps(res, indent=1))
    import shutil

    shutil.copy(out / "visualization" / "s0.png", OUT / "vis_s0.png")


if __name__ == "__main__":  # tiling workers are spawned and import this module
    main()
