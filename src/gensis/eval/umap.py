"""Embedding maps (Gen-SIS supplementary Sec. 9.4, Fig. 6): real images of a few classes and the bank's
interpolated images between them, projected to 2-D by one mapping per encoder.

Steps, per encoder
    1. CLS features (L2-normalized) of up to ``per_class`` images of each chosen class (``--classes``,
       default: the first three); unlabelled data: up to 3 × ``per_class`` of its images, in one colour.
    2. UMAP (McInnes et al., 2018; cosine metric, 15 neighbours, min_dist 0.1, seeded) fitted on the real
       features only; the interpolated images of the bank (``--bank``: entries whose two source images are
       of two different chosen classes, every stored α) are mapped by the same projection (``transform``),
       as in the paper. Fallback without umap-learn: t-SNE fitted on real and interpolated features together
       (t-SNE has no out-of-sample mapping; the map is then not the same projection).
    3. One panel per encoder, side by side, in one PNG (written atomically); the JSON gives the silhouette
       of the real classes in feature space (cosine) and, per encoder, where the interpolations fall.

``embedding_map`` is the library entry point (the demo report calls it).
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np

from gensis.errors import UserError
from gensis.figure_file import KEY


def choose_classes(ds, classes: list[str] | None, n_default: int = 3) -> list[int]:
    """Class indices from names (or integers); the first ``n_default`` classes present by default."""
    if ds.labels is None:
        raise UserError(f"{ds.name} has no labels: the map colours real images by class")
    present = sorted(set(np.unique(ds.labels).tolist()))
    if not classes:
        return present[:n_default]
    names = list(ds.classes or [])
    out = []
    for c in classes:
        if c in names:
            out.append(names.index(c))
        elif c.isdigit() and int(c) in present:
            out.append(int(c))
        else:
            raise UserError(f"class '{c}' is not in {ds.name} ({', '.join(names[:10]) or 'integer labels'})")
    return out


def _bank_images(reader, ds):
    """The images the bank's entries are indexed on: ``ds`` when the bank was made from it, else the bank's recorded
    data read as its generation read it (its split and ``data.limit``, which no ``--data`` can name), when that is
    here and has ``ds``'s classes (so the chosen classes are the same labels in both)."""
    from gensis.data.sources import open_data

    src = reader.header["sources"]
    if src.get("data_identity") == ds.identity and reader.num_images == len(ds):
        return ds
    try:
        own = open_data(str(src.get("data")), "train", src.get("val_fraction", 0.2), src.get("split_seed", 0),
                        src.get("limit"), reader.skip_bad_images)
    except UserError:
        own = None
    if (own is not None and own.identity == src.get("data_identity") and own.labels is not None
            and list(own.classes or []) == list(ds.classes or [])):
        return own
    spec = str(src.get("data"))
    if "@" not in spec and src.get("split"):
        spec = f"{spec}@{src['split']}"  # the split the bank was made from, not the whole source
    raise UserError(f"bank {reader.path} was generated from '{src.get('dataset_name')}' ({src.get('num_images')} "
                    f"images), which is not here with the classes of {ds.name}: give --data the bank's data and "
                    f"split ({spec})")


def _bank_interpolations(bank: str | Path, ds, chosen: list[int], limit: int, seed: int):
    """(uint8 (M, 3, S, S) interpolated images, (M,) alphas, (M, 2) source classes) between chosen classes."""
    from gensis.bank.reader import BankReader

    reader = BankReader(bank)
    own = _bank_images(reader, ds)
    if not reader.alphas:
        raise UserError(f"bank {bank} holds no interpolated images")
    labels = np.asarray(own.labels)
    idx = np.flatnonzero(np.isin(labels, chosen))
    sec = reader.secondary(idx)
    keep = np.isin(labels[sec], chosen) & (labels[sec] != labels[idx])
    idx, sec = idx[keep], sec[keep]
    if len(idx) == 0:
        return None
    rng = np.random.default_rng(seed)
    n_pairs = max(1, limit // len(reader.alphas))
    if len(idx) > n_pairs:
        pick = np.sort(rng.choice(len(idx), n_pairs, replace=False))
        idx, sec = idx[pick], sec[pick]
    images, alphas, pairs = [], [], []
    for a in reader.alphas:
        imgs, _ = reader.interpolated_batch(idx, np.full(len(idx), a))
        images.append(imgs)
        alphas += [a] * len(idx)
        pairs.append(np.stack([labels[idx], labels[sec]], 1))
    import torch

    return torch.cat(images), np.asarray(alphas), np.concatenate(pairs)


_umap_compiled = False  # has this process fitted a UMAP yet (numba compiles on the first fit only)


def _project(real: np.ndarray, interp: np.ndarray | None, method: str, seed: int):
    n = len(real)
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            method = "tsne"
    if method == "umap":
        import sys
        import warnings

        # no progress to show: umap-learn's numba code compiles in each new process (15 s of CPU here, a minute of
        # wall time on busy cores) before a fit of any size; say so rather than sit silent
        global _umap_compiled
        print(f"[gensis] fitting UMAP on {n} images" + ("" if _umap_compiled else
              " (its numba code compiles first in each run: up to a minute)"), file=sys.stderr, flush=True)
        _umap_compiled = True  # a second fit in this process (the report's Gen-DINO panel) compiles nothing
        import umap

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, metric="cosine", random_state=seed,
                          n_components=2).fit(real)
            return m.embedding_, (m.transform(interp) if interp is not None and len(interp) else None), "umap"
    from sklearn.manifold import TSNE

    both = real if interp is None else np.concatenate([real, interp])
    xy = TSNE(2, perplexity=min(30.0, max(2.0, (len(both) - 1) / 3)), random_state=seed, init="pca",
              metric="cosine").fit_transform(both)
    return xy[:n], (xy[n:] if interp is not None else None), "tsne"


def embedding_map(encoders: list, ds, out_png: str | Path, bank: str | Path | None = None,
                  classes: list[str] | None = None, per_class: int = 150, interp_limit: int = 150,
                  method: str = "umap", seed: int = 0, batch_size: int = 128, cache=None,
                  interpolations=None) -> dict:
    """Fit and draw the maps (see module doc); returns a JSON-ready summary. ``encoders``: ``Encoder`` objects.

    ``interpolations``: instead of a bank's, interpolated images given directly, as (uint8 (M, 3, S, S)
    images, (M,) alphas, (M, 2) class pairs of their two sources) (the demo report passes E-LDM samples)."""
    import torch
    from sklearn.metrics import silhouette_score

    from gensis.eval.common import describe_encoder
    from gensis.eval.features import FeatureSpec, dataset_features, encode
    from gensis.eval.knn import l2_normalize
    from gensis.plots import pyplot

    if per_class < 2:
        raise UserError(f"--per-class must be >= 2, got {per_class}")
    pyplot(MAP_NEEDS)  # before the features and the fit, not after them
    if ds.labels is None:  # one colour: up to as many images as a map of three classes shows
        if classes or bank or interpolations is not None:
            raise UserError(f"{ds.name} has no labels: --classes and --bank (interpolations between classes) need "
                            f"them; without them the map shows up to {3 * per_class} of its images in one colour")
        chosen, labels, names, take = [0], np.zeros(len(ds), np.int64), [UNLABELLED], 3 * per_class
    else:
        chosen, labels, take = choose_classes(ds, classes), np.asarray(ds.labels), per_class
        names = [ds.classes[c] if ds.classes else str(c) for c in chosen]
    rng = np.random.default_rng(seed)
    sel = []
    for c in chosen:
        idx = np.flatnonzero(labels == c)
        sel.append(np.sort(rng.choice(idx, min(take, len(idx)), replace=False)))
    sel = np.concatenate(sel)
    if len(sel) < 3:  # umap-learn needs 2 neighbours, t-SNE a perplexity below the count: their tracebacks
        raise UserError(f"a map needs at least 3 images; classes {', '.join(names)} of {ds.name} have {len(sel)}: "
                        f"add images or classes (--classes)")
    sub = ds.subset(sel, f"{ds.name}[{len(sel)}]")
    y = labels[sel]
    inter = interpolations if interpolations is not None else (
        _bank_interpolations(bank, ds, chosen, interp_limit, seed) if bank else None)
    if bank and inter is None:
        from gensis.eval.options import warn

        warn(f"bank {bank} has no interpolation between the chosen classes; the map shows real images only")
    t0 = time.time()
    panels = []
    for enc in encoders:
        f = l2_normalize(dataset_features(enc, sub, FeatureSpec("cls"), batch_size, cache, desc=f"{enc.name} features"))
        fi = None
        if inter is not None:
            with torch.no_grad():
                fi = l2_normalize(torch.cat([encode(enc, inter[0][s:s + batch_size], FeatureSpec("cls")).cpu()
                                             for s in range(0, len(inter[0]), batch_size)]).numpy())
        xy, xyi, used = _project(f, fi, method, seed)
        # defined for 2 .. n - 1 classes (one image per class: none; it was sklearn's ValueError traceback)
        sil = float(silhouette_score(f, y, metric="cosine")) if 1 < len(set(y.tolist())) < len(y) else None
        panel = {"encoder": describe_encoder(enc), "method": used, "silhouette_real": sil, "xy": xy, "xyi": xyi}
        if xyi is not None:
            # where interpolations land: distance to the segment between their two classes' 2-D centroids,
            # relative to the centroids' spread (small: "between the classes")
            cent = {c: xy[y == c].mean(0) for c in chosen}
            spread = np.mean([np.linalg.norm(xy[y == c] - cent[c], axis=1).mean() for c in chosen])
            d = []
            for p, (a, b) in zip(xyi, inter[2]):
                u, v = cent[int(a)], cent[int(b)]
                t = np.clip(np.dot(p - u, v - u) / max(np.dot(v - u, v - u), 1e-12), 0, 1)
                d.append(np.linalg.norm(p - (u + t * (v - u))))
            panel["interp_to_segment"] = float(np.mean(d) / max(spread, 1e-12))
        panels.append(panel)
    _draw(panels, y, chosen, names, inter, out_png, map_title(ds.name, len(sel), names, inter))
    return {"protocol": "umap", "data": ds.name, "classes": names, "real": int(len(sel)),
            "interpolated": 0 if inter is None else int(len(inter[0])), "bank": None if bank is None else str(bank),
            "png": str(out_png), "seconds": round(time.time() - t0, 1),
            "encoders": [{k: v for k, v in p.items() if k not in ("xy", "xyi")} for p in panels]}


MAP_NEEDS = "the embedding map (gensis eval umap)"


def class_colours(plt, n: int) -> list:
    """``n`` distinct colours: tab10 up to 10 classes, tab20 up to 20, then evenly spaced along turbo (tab10
    repeated itself from the 11th class: two classes drawn alike)."""
    if n <= 10:
        return [plt.get_cmap("tab10")(k) for k in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(k) for k in range(n)]
    return [plt.get_cmap("turbo")(k / (n - 1)) for k in range(n)]


UNLABELLED = "images (unlabelled)"  # the one group of a map of unlabelled data


def map_title(data: str, n_real: int, names: list[str], inter) -> str:
    """The figure's title: the data and what the points are."""
    text = (f"{data}: {n_real} unlabelled images (dots)" if names == [UNLABELLED]
            else f"{data}: {n_real} real images of {len(names)} classes (dots)")
    if inter is not None:
        alphas = sorted({float(a) for a in inter[1]})
        shade = f"α = {alphas[0]:g}" if len(alphas) == 1 else "darker: larger α"
        text += f", {len(inter[0])} interpolations between two of them (×, {shade})"
    return text


def _draw(panels, y, chosen, names, inter, out_png, title: str = "") -> None:
    from gensis.plots import pyplot
    from gensis.rundir import atomic_write_bytes

    plt = pyplot(MAP_NEEDS)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    colours = class_colours(plt, len(chosen))
    for ax, p in zip(axes[0], panels):
        for k, (c, n) in enumerate(zip(chosen, names)):
            pts = p["xy"][y == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color=colours[k], alpha=0.6, label=n)
        if p["xyi"] is not None:
            ax.scatter(p["xyi"][:, 0], p["xyi"][:, 1], s=14, c=inter[1], cmap="gray_r", vmin=0, vmax=1,
                       marker="x", linewidths=0.8, label="interpolated")
        name = p["encoder"]["name"]
        ax.set_title(short_name(name, 39) + f"  ({p['method']})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    entries = len(chosen) + (inter is not None)
    if entries <= 8:  # a few classes: inside the first panel
        axes[0][0].legend(fontsize=7, loc="best", markerscale=2)
    else:  # many: beside the last panel, in columns of 20, outside the points
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=2,
                           ncol=(entries + 19) // 20, borderaxespad=0)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    # bbox "tight": the legend beside the panels is kept in the picture; Software marks the map as ours
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": MAP_SOFTWARE})
    plt.close(fig)
    atomic_write_bytes(out_png, buf.getvalue())


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval umap


def _add_arguments(p) -> None:
    from gensis.cli.main import CommaList
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p, many=True, data_option="--data")
    p.add_argument("--data", default=None, metavar="DATA",
                   help="labelled images (any --data form; DATA@train ...) (default: the data the --encoder run, or "
                        "the --random-like run of --encoder random, was pretrained on, as its manifest records; "
                        "builtin:animal-mnist for the other baselines)")
    p.add_argument("--bank", default=None, metavar="BANK",
                   help="augmentation bank made from the same DATA: its interpolations between the classes are mapped too")
    p.add_argument("--classes", default=None, metavar="a,b,c", action=CommaList,
                   help="classes to show (names or labels, comma-separated or the option repeated; default: the first 3)")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="the PNG to write (a new file, or a map this command wrote before: other files are refused)")
    p.add_argument("--per-class", type=int, default=150, metavar="N", help="real images per class (unlabelled data: 3 x N images, one colour)")
    p.add_argument("--method", choices=["umap", "tsne"], default="umap", help="projection (t-SNE without umap-learn)")
    p.add_argument("--seed", type=int, default=0, metavar="SEED", help="sampling and projection seed")
    add_runtime_options(p)


MAP_SOFTWARE = "gensis eval umap"  # the PNG's Software text chunk: a map this command wrote, replaced on a rerun


def check_map_out(out: str | Path) -> None:
    """``--out``: a .png path that is new or a map written before by this command (its ``Software`` chunk); a
    folder or any other existing file (a figure of the user's) is a UserError before any work."""
    from gensis.figure_file import check_figure_out

    check_figure_out(out, MAP_SOFTWARE, "a map")


def _run(args) -> dict:
    from gensis.eval.options import encoder_specs, feature_cache, open_encoder, setup_runtime

    device = setup_runtime(args)
    check_map_out(args.out)
    specs = encoder_specs(args.encoder)
    ds = _open_map_data(args, specs)
    encs = [open_encoder(s, args, device=device) for s in specs]
    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    return embedding_map(encs, ds, args.out, args.bank, classes, args.per_class, method=args.method,
                         seed=args.seed, batch_size=args.feature_batch_size, cache=feature_cache(args))


GIVE_MAP_DATA = "--data DATA to say which labelled images to map"


def _open_map_data(args, specs: list[str]):
    """The images of the map: ``--data``; without it, the data the encoders' runs were pretrained on (the same
    default, and the same line saying which, as ``gensis eval knn``: ``gensis.eval.common.default_data``); runs
    pretrained on different data need ``--data``."""
    from gensis.data.sources import open_data
    from gensis.eval.common import data_run, default_data, recorded_data_error

    if args.data is not None:
        return open_data(args.data, "all")
    runs = {s: data_run(args, s) for s in specs}
    with_run = [s for s in specs if runs[s] is not None]
    if len({runs[s] for s in with_run}) > 1:
        from gensis.data.recorded import recorded_data
        from gensis.models.encoder import check_encoder_run

        for s in with_run:
            if runs[s] == s:
                check_encoder_run(s, getattr(args, "backbone", "teacher"))  # a wrong --encoder before its data

        sources = {runs[s]: recorded_data(str(runs[s]), GIVE_MAP_DATA) for s in with_run}
        if len(set(sources.values())) > 1:
            raise UserError("the encoders were pretrained on different data ("
                            + "; ".join(f"{r}: {d}" for r, d in sources.items()) + f"): pass {GIVE_MAP_DATA}")
    encoder = with_run[0] if with_run else specs[0]
    source, from_run = default_data(args, encoder, "data", "--data", GIVE_MAP_DATA)
    if not from_run:
        return open_data(source, "all")
    try:
        ds = open_data(source, "all")  # unlabelled (tiles): mapped in one colour
    except UserError as e:  # moved, an object of another Python session ...
        raise recorded_data_error(runs[encoder], source, e, GIVE_MAP_DATA) from None
    return ds


def short_name(name: str, width: int) -> str:
    """``name`` in at most ``width`` characters: its end after "…" when longer (a path cut at its start read as
    another path: 'ocsrun/runs/dino')."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def format_umap(res: dict) -> str:
    lines = [f"embedding map of {res['data']}: classes {', '.join(res['classes'])}; {res['real']} real images, "
             f"{res['interpolated']} interpolated" + (f" (bank {res['bank']})" if res["bank"] else ""),
             f"{'encoder':<40} {'method':>6} {'silhouette':>10} {'interp→segment':>15}"]
    for e in res["encoders"]:
        sil = "-" if e["silhouette_real"] is None else f"{e['silhouette_real']:.3f}"
        seg = f"{e['interp_to_segment']:.2f}" if e.get("interp_to_segment") is not None else "-"
        lines.append(f"{short_name(e['encoder']['name'], 40):<40} {e['method']:>6} {sil:>10} {seg:>15}")
    lines.append(f"map written to {res['png']}")
    return "\n".join(lines)


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="umap",
    summary="UMAP maps of real classes and the bank's interpolations, encoders side by side (Fig. 6)",
    description="Fits UMAP on the real embeddings of a few classes and maps the bank's interpolated images "
                "between them with the same projection; one panel per encoder in one PNG.",
    add_arguments=_add_arguments, run=_run, format=format_umap,
    headline=lambda r: [(f"silhouette ({short_name(e['encoder']['name'], 20)})", e["silhouette_real"])
                        for e in r["encoders"] if e["silhouette_real"] is not None],
    data_options=("out",),
)
