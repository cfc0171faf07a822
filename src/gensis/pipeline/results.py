"""The demo's evaluation rows and its results table (paper Table 12 layout: methods as columns).

For an SSL method X the pipeline trains three variants, the columns of the paper's Tables 1-3 and 12:
``X`` (baseline), ``X w/ pixel disent.`` (ablation) and ``Gen-X`` (bank views + disentanglement loss).
DINO keeps its historical folder names (``dino``, ``pixel``, ``gendino``); another method X uses ``X``,
``X-pixel`` and ``gen-X``. Baselines (raw pixels, a random-init ViT) close the table.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gensis.pipeline.table import Table

FEATURE_BATCH = 256  # images per encoder call, as ``gensis eval knn`` / ``linear`` extract them
LINEAR_EPOCHS = {"smoke": 5, "demo": 30, "small": 100, "paper": 100, "gpu": 100}
BASELINES = [("pixels", "raw pixels"), ("random", "random-init ViT")]
DISPLAY = {"dino": "DINO", "ibot": "iBOT", "dinov2": "DINOv2", "simclr": "SimCLR"}


@dataclass(frozen=True)
class Variant:
    """One column of the table: the run folder ``name`` under the demo folder, and its label."""

    name: str
    label: str
    method: str
    kind: str  # base | pixel | gen


def variants(method: str) -> list[Variant]:
    """The three runs compared for ``method``: X | X w/ pixel disent. | Gen-X."""
    x = DISPLAY.get(method, method)
    if method == "dino":
        names = ("dino", "pixel", "gendino")
    else:
        names = (method, f"{method}-pixel", f"gen-{method}")
    return [Variant(names[0], x, method, "base"), Variant(names[1], f"{x} w/ pixel disent.", method, "pixel"),
            Variant(names[2], f"Gen-{x}", method, "gen")]


def columns(methods: list[str] | tuple[str, ...] = ("dino",)) -> list[tuple[str, str]]:
    """(folder or baseline name, label) of every column, in table order."""
    return [(v.name, v.label) for m in methods for v in variants(m)] + BASELINES


METHODS = [(v.name, v.label) for v in variants("dino")]  # the default (DINO) columns


def evaluate(out: Path, data: str, preset: str, linear: bool, methods: tuple[str, ...] = ("dino",),
             only: set[str] | None = None) -> dict:
    """k-NN (and linear probe) of each finished run and of the two baselines; cached in ``results.json``.
    ``only``: just these columns (folder or baseline names; the demo's side lane evaluates the finished ones
    early, ``gensis.pipeline.early_eval``, and the final call finds them cached).

    The test images' features are extracted once per encoder, for the k-NN and the linear probe both.

    A cached row is reused only when its identity (encoder weights, train and test images, probe epochs) is the
    same, so a retrained run is always re-evaluated.
    """
    from gensis.data.sources import cache_key, open_data
    from gensis.device import pick_device
    from gensis.errors import UserError
    from gensis.eval.features import extract_features
    from gensis.eval.knn import knn_eval
    from gensis.models.encoder import load_encoder
    from gensis.rundir import RunDir, atomic_write_json

    dev = pick_device("auto")  # the GPU when there is one, as every stage's train.device=auto
    path = out / "results.json"
    try:
        cache = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        cache = {}  # a damaged cache is recomputed
    rows = {}
    first = out / variants(methods[0])[0].name
    cfg = RunDir(first).config() if (first / "config.yaml").is_file() else None
    vf = cfg["data"]["val_fraction"] if cfg else 0.2
    seed = cfg["data"]["split_seed"] if cfg else 0
    skip = bool(cfg["data"].get("skip_bad_images", False)) if cfg else False  # as the pretraining read the data
    train_ds, test_ds = open_data(data, "train", vf, seed, skip_bad_images=skip), \
        open_data(data, "val", vf, seed, skip_bad_images=skip)
    if train_ds.labels is None or test_ds.labels is None:
        raise UserError(f"the demo evaluates with labels, and {data} has none")
    size = cfg["data"]["image_size"] if cfg else 28
    specs = [(name, str(out / name), label) for name, label in columns(methods)[:-len(BASELINES)]
             if RunDir(out / name).is_done()]
    specs += [(name, name, label) for name, label in BASELINES]
    if only is not None:
        specs = [sp for sp in specs if sp[0] in only]
    for name, spec, label in specs:
        enc = load_encoder(spec, image_size=size, like=str(first) if name == "random" and cfg else None)
        ident = (f"{enc.identity}|{json.dumps(cache_key(train_ds), sort_keys=True)}|"
                 f"{json.dumps(cache_key(test_ds), sort_keys=True)}|{linear and LINEAR_EPOCHS[preset]}")
        if cache.get(name, {}).get("identity") == ident:
            rows[name] = cache[name]
            continue
        print(f"[eval] {label}", file=sys.stderr, flush=True)
        t0 = time.time()
        f_train = extract_features(enc, train_ds, FEATURE_BATCH, dev, desc="train features")
        f_test = extract_features(enc, test_ds, FEATURE_BATCH, dev, desc="test features")  # k-NN's and the probe's
        t_feat = time.time() - t0
        knn = knn_eval(enc, train_ds, test_ds, device=dev, batch_size=FEATURE_BATCH, features=(f_train, f_test))
        knn["seconds"] = {"features": round(t_feat, 2), "total": round(time.time() - t0, 2)}  # extraction included
        row = {"label": label, "identity": ident, "knn": knn}
        if linear:
            from gensis.eval.linear import LinearConfig, linear_eval

            # fewer probe epochs at the small presets keep the demo in budget (DINO's protocol: 100)
            row["linear"] = linear_eval(enc, train_ds, test_ds, LinearConfig(epochs=LINEAR_EPOCHS[preset]),
                                        device=dev, batch_size=FEATURE_BATCH, test_features=f_test)
        rows[name] = row
        cache[name] = row
        atomic_write_json(path, cache)
    return rows


def metrics(row: dict) -> dict[str, float]:
    """The table's numbers of one evaluation row: '<k>-NN' top-1 for each k, and 'linear probe'."""
    m = {f"{r['k']}-NN": float(r["top1"]) for r in row["knn"]["results"]}
    if "linear" in row:
        m["linear probe"] = float(row["linear"]["top1"])
    return m


def score_text(x: float) -> str:
    """A score as every results table prints it (one decimal)."""
    return f"{x:.1f}"


def n_test_images(row: dict) -> int | None:
    """The number of test images behind one evaluation row's k-NN scores (``knn.test.size``), when recorded."""
    size = row.get("knn", {}).get("test", {}).get("size")
    return int(size) if isinstance(size, (int, float)) and size > 0 else None


def results_table(rows: dict, methods: tuple[str, ...] | None = None) -> Table:
    """Methods as columns, '<k>-NN' and 'linear probe' top-1 (%) as rows (paper Table 12)."""
    order = [n for n, _ in columns(methods or methods_in(rows))]
    names = [n for n in order if n in rows] + [n for n in rows if n not in order]
    t = Table([rows[n]["label"] for n in names], title="top-1 accuracy (%) on the held-out split")
    per = [metrics(rows[n]) for n in names]
    keys = sorted({k for m in per for k in m if k.endswith("-NN")}, key=lambda k: int(k.split("-")[0]))
    if all("linear probe" in m for m in per):
        keys.append("linear probe")
    for k in keys:
        t.add(k, [score_text(m[k]) if k in m else "–" for m in per])
    return t


COLUMN_MEANINGS = {"base": "trained with {x} alone (the baseline)",
                   "pixel": "{x} plus the disentanglement loss on pixel-space mixes of two images (the ablation of "
                            "paper Table 12)",
                   "gen": "{x} with the E-LDM's generated and interpolated views from the bank, plus the "
                          "disentanglement loss"}
BASELINE_MEANINGS = {"pixels": "the images' pixels as the embedding (no training)",
                     "random": "the same ViT, randomly initialised and untrained"}


def _size(desc: object, unrecorded: str) -> str:
    """``animal-mnist@val (2,000 images)`` from an evaluation's ``train``/``test`` record; ``unrecorded`` without."""
    if not isinstance(desc, dict) or not desc.get("name"):
        return unrecorded
    n = desc.get("size")
    return f"{desc['name']}" + (f" ({n:,} images)" if isinstance(n, int) else "")


def describe_results(rows: dict) -> str:
    """What the results table's numbers are (metric, splits and their sizes, k, the probe's settings) and what
    each column is: the paragraph above the table in the report."""
    knn = next((r["knn"] for r in rows.values() if isinstance(r.get("knn"), dict) and r["knn"].get("train")), {})
    lin = next((r["linear"] for r in rows.values() if isinstance(r.get("linear"), dict)), None)
    ks = sorted({int(x["k"]) for r in rows.values() for x in r["knn"]["results"]})
    parts = [f"Top-1 accuracy (%) on {_size(knn.get('test'), 'the held-out split')}, each encoder frozen, its CLS "
             f"embedding classified from the labelled images of {_size(knn.get('train'), 'the training split')}.",
             f"Rows k-NN: DINO's weighted k-NN vote (cosine similarity, temperature {knn.get('temperature', 0.07)}) "
             f"among the k = {', '.join(map(str, ks))} nearest training images."]
    if lin is not None:
        cfg = lin.get("config", {})
        lrs = cfg.get("lrs", [])
        parts.append(f"Row linear probe: a linear classifier trained on the frozen embeddings ({cfg.get('epochs', '?')} "
                     f"epochs), the best of {len(lrs)} learning rates on the same held-out images (DINO's protocol).")
    cols = []
    order = [n for n, _ in columns(methods_in(rows)) if n in rows]
    for name, row in [(n, rows[n]) for n in order] + [(n, r) for n, r in rows.items() if n not in order]:
        v = next((v for m in DISPLAY for v in variants(m) if v.name == name), None)
        meaning = (COLUMN_MEANINGS[v.kind].format(x=DISPLAY.get(v.method, v.method)) if v is not None
                   else BASELINE_MEANINGS.get(name))
        if meaning:
            cols.append(f"{row['label']}: {meaning}")
    if cols:
        parts.append("Columns: " + "; ".join(cols) + ".")
    return " ".join(parts)


def methods_in(rows: dict) -> tuple[str, ...]:
    """The SSL methods (registry names, table order) that have at least one column in ``rows``; DINO if none."""
    found = [m for m in DISPLAY if any(v.name in rows for v in variants(m))]
    return tuple(found) or ("dino",)


def format_table(rows: dict) -> str:
    return results_table(rows).text()

