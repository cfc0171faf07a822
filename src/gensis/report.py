"""``gensis report RUN``: a Markdown and a self-contained HTML report of a demo/pipeline folder.

Contents: the results table (DINO | DINO w/ pixel disent. | Gen-DINO, plus baselines) and how to read it
(``gensis.pipeline.reading``: its differences with their noise), training curves of
each method, the real-vs-generated grid and an interpolation strip of the E-LDM, and the embedding-space
figure of the paper's Fig. 6: a UMAP (t-SNE from scikit-learn when umap-learn is missing) fitted on real
embeddings of three classes, with E-LDM interpolations between those classes mapped by the same projection,
for DINO and for Gen-DINO. Figures are PNG files next to the report; the HTML embeds them (base64).
"""

from __future__ import annotations

import base64
import html
import json
import sys
from pathlib import Path

import numpy as np

from gensis.pipeline.reading import Reading, read_results
from gensis.pipeline.results import DISPLAY, METHODS, describe_results, metrics, results_table, variants
from gensis.pipeline.table import Table
from gensis.rundir import atomic_savefig, atomic_write_text, read_jsonl


Body = str | Table | Reading | tuple[str, Table]  # a section's text, table or both (a caption, then the table)


def _plt():
    from gensis.plots import pyplot

    return pyplot("the report")


def _disent_weight(run: Path) -> float:
    """The run's ``gen.disent_weight`` (its config.yaml), 1.0 (the default) when unreadable."""
    from gensis.rundir import RunDir

    try:
        return float(RunDir(run).config()["gen"]["disent_weight"])
    except Exception:  # no config, another version's: the default
        return 1.0


def loss_series(out: Path, runs: list[tuple[str, str]] | None = None) -> dict[str, list[dict]]:
    """label -> the loss rows of every run (folder name, label) that has a metrics.jsonl (default: the DINO runs);
    each row gains ``loss_method``: the loss without the disentanglement term (``loss - gen.disent_weight ×
    loss_disent``), the objective every variant of a method shares."""
    series = {}
    for name, label in runs or METHODS:
        rows = read_jsonl(out / name / "metrics.jsonl")
        if rows:
            w = _disent_weight(out / name)
            series[label] = [{**r, "loss_method": r["loss"] - w * r.get("loss_disent", 0.0)}
                             for r in rows if "loss" in r and "step" in r]
    return series


def curves_figure(out: Path, dest: Path, runs: list[tuple[str, str]] | None = None,
                  series: dict[str, list[dict]] | None = None, method: str = "DINO") -> Path | None:
    """Loss per step of every run (folder name, label) that has a metrics.jsonl (default: the DINO runs), or of
    ``series`` (``loss_series``): the ``method``'s own loss, and the disentanglement loss of the runs that have
    one; a run has one colour in both panels."""
    plt = _plt()
    series = loss_series(out, runs) if series is None else series
    if not series:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    colours = plt.get_cmap("tab10")
    for k, (label, rows) in enumerate(series.items()):
        steps = [r["step"] for r in rows]
        own = [r.get("loss_method", r["loss"]) for r in rows]
        axes[0].plot(steps, own, label=label, lw=1.2, color=colours(k % 10))
        dis = [(r["step"], r["loss_disent"]) for r in rows if "loss_disent" in r]
        if dis:
            axes[1].plot(*zip(*dis), label=label, lw=1.2, color=colours(k % 10))
    axes[0].set(title=f"{method} loss (without the disentanglement term)", xlabel="step", ylabel="loss")
    axes[1].set(title="disentanglement loss", xlabel="step", ylabel="loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, dest, dpi=110)
    plt.close(fig)
    return dest


def embedding_figure(out: Path, data: str, dest: Path, n_per_class: int = 150, n_interp: int = 40,
                     seed: int = 0) -> Path | None:
    """Paper Fig. 6 for DINO and Gen-DINO: held-out embeddings of three classes and E-LDM interpolations
    (α = 0.5) between images of two different ones, mapped by the projection fitted on the real points
    (``gensis.eval.umap.embedding_map``, the map of ``gensis eval umap``)."""
    from gensis.data.sources import open_data
    from gensis.eldm import load_generator
    from gensis.eval.umap import choose_classes, embedding_map
    from gensis.models.encoder import load_encoder
    from gensis.rundir import RunDir

    methods = [(n, l) for n, l in METHODS if n in ("dino", "gendino") and RunDir(out / n).is_done()]
    if not methods or not (out / "eldm").is_dir():
        return None
    cfg = RunDir(out / "dino").config()
    ds = open_data(data, "val", cfg["data"]["val_fraction"], cfg["data"]["split_seed"],
                   skip_bad_images=bool(cfg["data"].get("skip_bad_images", False)))  # as DINO's pretraining read it
    if ds.labels is None:
        return None
    chosen = choose_classes(ds, None)
    if len(chosen) < 2:
        return None
    labels = np.asarray(ds.labels)
    by_class = {c: np.flatnonzero(labels == c) for c in chosen}
    pairs = [(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1:]]
    rng = np.random.default_rng(seed)
    firsts, seconds, classes = [], [], []
    for j in range(n_interp):  # interpolations between random images of two different chosen classes
        a, b = pairs[j % len(pairs)]
        firsts.append(int(rng.choice(by_class[a])))
        seconds.append(int(rng.choice(by_class[b])))
        classes.append((a, b))
    gen = load_generator(out / "eldm")
    import torch

    def load(idx: list[int]) -> torch.Tensor:  # uint8 (B, 3, S, S): a folder's images of any size
        from gensis.data.loader import load_images

        return load_images(ds, idx, gen.image_size)

    inter = gen.interpolate(gen.encode(load(firsts)), gen.encode(load(seconds)), 0.5, "slerp",
                            seeds=list(range(seed, seed + n_interp)))
    encoders = []
    for name, label in methods:
        enc = load_encoder(str(out / name))
        enc.name = label  # the panel's title
        encoders.append(enc)
    names = [ds.classes[c] if ds.classes else str(c) for c in chosen]
    embedding_map(encoders, ds, dest, classes=names, per_class=n_per_class, seed=seed,
                  interpolations=(inter, np.full(n_interp, 0.5), np.asarray(classes)))
    return dest


def _settings(out: Path) -> str | None:
    """The settings line (preset, data, seed, methods, config overrides) of the demo pass that wrote ``out``."""
    from gensis.pipeline.demo import SETTINGS

    try:
        s = json.loads((out / SETTINGS).read_text()).get("settings")
    except (OSError, ValueError, AttributeError):
        return None
    return s if isinstance(s, str) else None


def readable_results(results: object) -> tuple[dict, list[str]]:
    """The rows of ``results.json`` this version can read, and the names of the others (written by another gensis
    version, or damaged), which the report leaves out rather than stop with a traceback."""
    if not isinstance(results, dict):
        return {}, ["results.json"] if results else []
    rows, other = {}, []
    for name, row in results.items():
        try:
            metrics(row)
            ok = isinstance(row["label"], str)
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        if ok:
            rows[name] = row
        else:
            other.append(str(name))
    return rows, other


def _names(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def unfinished(out: Path, methods: tuple[str, ...], results: dict, unread: list[str]) -> str | None:
    """One line saying what a demo folder lacks (killed midway, run with --stages, or written by another gensis
    version) and how to finish it; None when it holds every stage's output."""
    from gensis.rundir import RunDir

    missing, partial = [], []
    for m in methods:
        eldm = "eldm" if m == "dino" else f"eldm-{m}"
        parts = [(v.name, v.label) for v in variants(m)]
        parts.insert(1, (eldm, "the E-LDM"))
        for name, label in parts:
            if not RunDir(out / name).is_done():
                (partial if (out / name).exists() else missing).append(f"{label} ({name}/)")
    said = []
    if missing:
        said.append(f"{_names(missing)} not trained")
    if partial:
        said.append(f"{_names(partial)} unfinished")
    if not results and not unread:
        said.append("no results table (the eval stage has not run)")
    if unread:
        which = "results.json is" if unread == ["results.json"] else f"the results of {_names(unread)} in results.json are"
        said.append(f"{which} in a form this gensis version does not read (another version's): left out")
    if not said:
        return None
    return ("This demo folder is incomplete (killed midway, run with --stages, or made by another gensis version): "
            + "; ".join(said) + ". Run the same `gensis demo` command again with this --out to finish it (finished "
            "stages are kept, results recomputed where needed).")


def _methods_here(out: Path) -> tuple[str, ...]:
    """The SSL methods whose runs this demo folder holds (``--methods``), DINO when none."""
    found = tuple(m for m in DISPLAY if any((out / v.name).is_dir() for v in variants(m)))
    return found or ("dino",)


def write_report(out: str | Path, data: str | None = None, methods: tuple[str, ...] | None = None) -> tuple[Path, Path]:
    """Write ``out/report.md`` and ``out/report.html`` (figures in ``out/report/``); one section per method
    (default: those whose runs the folder holds). A folder that lacks some stage's output (``unfinished``) gets
    one line saying what and how to finish it, at the top of the report and on stderr."""
    from gensis.errors import UserError
    from gensis.rundir import RunDir, make_folder

    from gensis.inputs import input_folder

    out = input_folder(out, "demo folder")  # missing, or a file: said as such (was "not a folder made by gensis demo")
    if RunDir(out).exists():  # a stage's own run folder: writing a report into it would only add clutter
        raise UserError(f"{out} is a {RunDir(out).manifest().get('stage', 'gensis')} run folder, not a folder made by "
                        f"`gensis demo` (give the demo's --out)")
    methods = methods or _methods_here(out)
    known = ["results.json", "stages.json", "eldm", *(v.name for m in methods for v in variants(m))]
    if not any((out / name).exists() for name in known):
        seeds = sorted(p.name for p in out.glob("seed-*") if (p / "stages.json").is_file())
        if seeds and (out / "seeds.md").is_file():  # `gensis demo --seeds`: one report per seed, a summary
            raise UserError(f"{out} is the folder of `gensis demo --seeds`, with a report per seed: give one of its "
                            f"seed folders ({', '.join(str(out / s) for s in seeds[:3])}); the over-seed summary "
                            f"is {out / 'seeds.md'}")
        raise UserError(f"{out} is not a folder made by `gensis demo` (it holds none of "
                        f"{', '.join(known[:4])} ...)")
    figs = out / "report"
    make_folder(figs)
    if data is None and RunDir(out / "dino").exists():  # a manifest without inputs (hand-made, older): no data
        inputs = RunDir(out / "dino").manifest().get("inputs")
        data = inputs.get("data") if isinstance(inputs, dict) else None
    try:
        results = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    except ValueError:
        results = {}  # damaged cache: the report goes on without the table
    results, unread = readable_results(results)
    note = unfinished(out, methods, results, unread)
    if note:
        print(f"gensis: note: {note}", file=sys.stderr)
    sections: list[tuple[str, Body, Path | None]] = []
    if results:
        sections.append(("Results", (describe_results(results), results_table(results, methods)), None))
        reading = read_results(results)  # every method with a column in the table (`gensis report` passes none)
        if reading is not None:
            sections.append(("How to read it", reading, None))
    for m in methods:
        runs = [(v.name, v.label) for v in variants(m)]
        series = loss_series(out, runs)  # the runs that were trained (--stages may leave some out)
        p = curves_figure(out, figs / ("curves.png" if m == "dino" else f"curves-{m}.png"), series=series,
                          method=runs[0][1])
        if p:
            title = "Training curves" + ("" if methods == ("dino",) else f": {runs[0][1]}")
            sections.append((title, f"Loss per step of {', '.join(series)} (same seed, epochs and batch). Left: "
                                    f"{runs[0][1]}'s own loss, which every run minimizes; right: the disentanglement "
                                    f"loss, which only the runs with interpolations add (weighted by "
                                    f"gen.disent_weight).", p))
    for png, title, text in [
        ("generative.png", "Generative augmentations",
         "Left: a real held-out image; right: images the E-LDM generated from its embedding (paper Fig. 7-9)."),
        ("interpolation.png", "Interpolated augmentations",
         "Two real images at the ends; between them, generations from the SLERP of their embeddings at "
         "α = 0.2 … 0.8 (paper Fig. 11-13)."),
    ]:
        src = out / "eldm-figures" / png
        if src.is_file():
            sections.append((title, text, src))
    if data is not None:
        try:
            p = embedding_figure(out, data, figs / "embedding.png")
        except Exception as e:  # the figure is a nicety; never lose the report over it
            p = None
            sections.append(("Embedding space", f"(figure skipped: {type(e).__name__}: {e})", None))
        if p:
            sections.append(("Embedding space (paper Fig. 6)",
                             "Real embeddings of three classes (dots) and E-LDM interpolations between images of two "
                             "of them at α = 0.5 (crosses), projected with the map fitted on the real points.", p))
    settings = _settings(out)
    md = ["# Gen-SIS report", f"Folder: `{out}`" + (f"; data: `{data}`" if data else ""),
          *([f"Settings: `{settings}`"] if settings else []), *(["", f"**{note}**"] if note else []), ""]
    h = ["<!doctype html><meta charset='utf-8'><title>Gen-SIS report</title>",
         "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}img{max-width:100%}</style>",
         f"<h1>Gen-SIS report</h1><p>Folder: <code>{html.escape(str(out))}</code>"
         + (f"; data: <code>{html.escape(data)}</code>" if data else "") + "</p>"
         + (f"<p>Settings: <code>{html.escape(settings)}</code></p>" if settings else "")
         + (f"<p><strong>{html.escape(note)}</strong></p>" if note else "")]
    for title, body, png in sections:
        md.append(f"## {title}")
        h.append(f"<h2>{html.escape(title)}</h2>")
        for text in body if isinstance(body, tuple) else (body,):
            md += ["", text if isinstance(text, str) else text.markdown()]
            h.append(f"<p>{html.escape(text)}</p>" if isinstance(text, str) else text.html())
        md.append("")
        if png is not None:
            rel = png.relative_to(out) if png.is_relative_to(out) else png
            md += [f"![{title}]({rel})", ""]
            b64 = base64.b64encode(png.read_bytes()).decode()
            h.append(f"<img alt='{html.escape(title)}' src='data:image/png;base64,{b64}'>")
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, "\n".join(md))
    atomic_write_text(html_path, "\n".join(h))
    return md_path, html_path
