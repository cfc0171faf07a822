"""``gensis mil train``: ABMIL on slide bags, k-fold by slide/patient or seeds on a split; metrics mean ± std.

MIL_RUN layout::

    config.yaml              resolved config (configs/mil)
    mil.json                 classes, embedding dim, features folder, labels CSV, splits (slide ids per fold)
    <fold-i|seed-s>/model.safetensors   weights of that split's model (after the last epoch)
    <fold-i|seed-s>/predictions.json    its test slides' probabilities (the unit of resume)
    predictions.csv          every test prediction: split, slide, label, predicted, p_<class>...
    metrics.json, metrics.md per split, mean ± sample std (ddof=1) over splits, and (k-fold) the metrics of
                             all out-of-fold predictions pooled (every slide is predicted once)

Training follows the paper (Sec. 9.5.6): one bag per step (batch size 1), the loss divided by and the
gradients accumulated over ``optim.accumulation`` bags, then one AdamW step; bags in a new random order every
epoch; the model after the last epoch is evaluated (no early stopping, no model selection on the test fold).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gensis.errors import UserError
from gensis.mil.abmil import ABMIL
from gensis.mil.bags import list_bags, read_bag
from gensis.mil.cv import Split, kfold, seeded
from gensis.mil.metrics import METRICS, all_metrics


@dataclass
class Cohort:
    slides: list[str]
    bags: list[np.ndarray]       # (K_i, D) float32 each
    y: np.ndarray                # (N,) int64 class index
    classes: list[str]
    patients: np.ndarray         # (N,) group of each slide: 'patient:P', or 'slide:S' without a patient
    split: list[str] | None      # the CSV's split column (lower case), if any
    encoder_identity: str = ""   # the bags' encoder (their encoder_identity attribute; "" when they name none)

    @property
    def dim(self) -> int:
        return int(self.bags[0].shape[1])

    @property
    def fingerprint(self) -> str:
        """sha256 of what the splits train and test on: slides, labels, groups, split column and features. A
        rerun into the same ``--out`` keeps finished splits only when it matches (was: re-embedded bags or
        relabelled slides silently reused the old folds' predictions)."""
        import hashlib

        h = hashlib.sha256()
        for i, s in enumerate(self.slides):
            h.update(f"{s}|{self.classes[self.y[i]]}|{self.patients[i]}|"
                     f"{self.split[i] if self.split else ''}|{self.bags[i].shape}\n".encode("utf-8", "surrogateescape"))
            h.update(np.ascontiguousarray(self.bags[i], np.float32).data)
        return h.hexdigest()[:16]


def load_cohort(feats: str | Path, labels_csv: str | Path) -> Cohort:
    """The labelled slides that have bags. One ``UserError`` line, before any training, for what would make
    the numbers wrong: bags from two encoders in one folder (a second ``wsi embed`` into the same ``--out``),
    a ``split`` value other than train / test / val (that slide was silently dropped), a class only on test rows,
    a patient with slides on both sides of the ``split`` column. Slides with a blank ``patient`` cell are their
    own patient (was: one blank cell dropped the grouping of every slide, folds then split patients)."""
    from gensis.wsi.dataset import class_names, match_label_rows, read_label_rows, warn_alike_labels

    bags = list_bags(feats)
    path = Path(labels_csv).expanduser()
    rows = all_rows = read_label_rows(path)  # stripped; one row per slide, each with a label
    matched, missing = match_label_rows(rows, bags, path)
    if missing:
        print(f"gensis: warning: {len(missing)} labelled slides have no bag in {feats} and are left out "
              f"(e.g. {missing[0]})", file=sys.stderr)
    if len(matched) < 2:
        raise UserError(f"{path}: fewer than 2 labelled slides have bags in {feats} (bags are named by slide id, "
                        f"the file name without extension, e.g. {next(iter(bags))})")
    unlabelled = len(bags) - len(matched)
    if unlabelled:
        print(f"gensis: note: {unlabelled} bags in {feats} have no row in {path} and are not used", file=sys.stderr)
    slides = list(matched)
    rows = [matched[s] for s in slides]
    classes = class_names(r["label"] for r in rows)
    if len(classes) < 2:
        others = sorted({r["label"] for r in all_rows} - set(classes))  # in the CSV, on slides without bags
        where = (f"every slide with a bag in {feats} has the label '{classes[0]}' (no slide of "
                 f"{', '.join(repr(o) for o in others)} has one)" if others
                 else f"every slide has the label '{classes[0]}'")
        raise UserError(f"{path}: {where}; MIL needs at least 2 classes")
    warn_alike_labels(classes, path)
    loaded = [read_bag(bags[s]) for s in slides]
    encoders: dict[str, int] = {}  # encoder identity -> first slide embedded with it
    for i, b in enumerate(loaded):
        if b.attrs.get("encoder_identity"):
            encoders.setdefault(str(b.attrs["encoder_identity"]), i)
    if len(encoders) > 1:
        i, j = list(encoders.values())[:2]
        raise UserError(f"bags in {feats} come from different encoders: {slides[i]} from "
                        f"{loaded[i].attrs.get('encoder')}, {slides[j]} from {loaded[j].attrs.get('encoder')}; embed "
                        f"every slide with one encoder, each encoder into its own folder")
    dims = {b.features.shape[1] for b in loaded}
    if len(dims) > 1:
        raise UserError(f"bags in {feats} have different embedding sizes {sorted(dims)}: embed them with one encoder")
    empty = [s for s, b in zip(slides, loaded) if len(b.features) == 0]
    if empty:
        raise UserError(f"slide {empty[0]} has an empty bag (no tissue tile): drop it from {path}")
    y = np.array([classes.index(r["label"]) for r in rows], np.int64)
    cells = [(r.get("patient") or "").strip() for r in rows]
    blank = sum(not c for c in cells)
    if any(cells) and blank:
        print(f"gensis: warning: {blank} slides have no patient in {path}; each is taken as its own patient",
              file=sys.stderr)
    patients = np.array([f"patient:{c}" if c else f"slide:{s}" for c, s in zip(cells, slides)])
    split = None
    if any((r.get("split") or "").strip() for r in rows):
        split = [(r.get("split") or "").strip().lower() for r in rows]
        _check_split(path, slides, split, patients, [r["label"] for r in rows])
    return Cohort(slides, [b.features for b in loaded], y, classes, patients, split, next(iter(encoders), ""))


def _check_split(path: Path, slides: list[str], split: list[str], patients: np.ndarray, labels: list[str]) -> None:
    for s, v in zip(slides, split):
        if v not in ("train", "test", "val"):
            raise UserError(f"{path}: slide {s} has split '{v}' (expected train, test or val; every row needs one "
                            f"when the column is used)")
    test_name = "test" if "test" in split else "val"
    unused = [s for s, v in zip(slides, split) if v == "val"] if test_name == "test" else []
    if unused:  # they were left out without a word (and counted among the run's slides)
        print(f"gensis: note: {len(unused)} val row(s) of {path} are not used (e.g. {unused[0]}): the test rows are "
              f"the test set, and val rows are neither trained nor tested on", file=sys.stderr)
    side = {"train": "train", test_name: "test"}
    where: dict[str, tuple[str, str]] = {}
    for s, v, p in zip(slides, split, patients):
        if v not in side:
            continue
        if p in where and where[p][0] != side[v]:
            raise UserError(f"{path}: {p.split(':', 1)[1]} has slides on both sides of the split ({where[p][1]}: "
                            f"{where[p][0]}, {s}: {side[v]}); a patient's slides go to one side")
        where.setdefault(p, (side[v], s))
    trained = {lab for lab, v in zip(labels, split) if v == "train"}
    untrained = sorted({lab for lab, v in zip(labels, split) if v == test_name} - trained)
    if untrained:
        raise UserError(f"{path}: label '{untrained[0]}' is only on {test_name} rows; ABMIL never sees it in "
                        f"training: add train slides of that class or drop those rows")


def _what_differs(old: dict, meta: dict, conf: Path, cfg: dict) -> str:
    """What a rerun changes in a MIL run folder, for its refusal line (it said only "other settings or slides",
    so a user could not tell an edited option from an edited labels CSV): the config keys with both values, else
    the slides or their splits."""
    from gensis.config import flatten, load_yaml

    try:
        before = flatten(load_yaml(conf.read_text()) or {}) if conf.is_file() else {}
    except Exception:  # a damaged config.yaml: say so in general terms
        before = {}
    now = flatten(cfg)
    keys = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)] if before else []
    if keys:
        shown = ", ".join(f"{k}={before.get(k)!r} (now {now.get(k)!r})" for k in keys[:3])
        return f"other settings: {shown}{' ...' if len(keys) > 3 else ''}"
    if set(old.get("splits", {})) != set(meta["splits"]):
        return f"other splits ({', '.join(old.get('splits', {}))} there, {', '.join(meta['splits'])} now)"
    return "other slides in its splits (the labels CSV or the bags changed)"


def make_splits(cohort: Cohort, cfg: dict) -> list[Split]:
    if cohort.split is not None:
        return seeded(cohort.split, int(cfg["cv"]["seeds"]), int(cfg["cv"]["seed"]))
    _, groups = np.unique(cohort.patients, return_inverse=True)
    return kfold(cohort.y, groups, int(cfg["cv"]["folds"]), int(cfg["cv"]["seed"]), cohort.classes)


def build_model(cfg: dict, in_dim: int, n_classes: int) -> ABMIL:
    m = cfg["model"]
    return ABMIL(in_dim, n_classes, int(m["hidden"]), int(m["attn_dim"]), float(m["dropout"]), bool(m["gated"]))


def fit(cfg: dict, bags: list[np.ndarray], y: np.ndarray, n_classes: int, seed: int,
        device: torch.device, desc: str = "mil", quiet: bool = False) -> tuple[ABMIL, list[float]]:
    """Train one ABMIL; returns it (eval mode) and the mean training loss of each epoch. ``quiet``: no
    progress bar."""
    from gensis.progress import progress

    torch.manual_seed(seed)
    model = build_model(cfg, bags[0].shape[1], n_classes).to(device)
    o = cfg["optim"]
    opt = torch.optim.AdamW(model.parameters(), lr=float(o["lr"]), weight_decay=float(o["weight_decay"]))
    accum = int(o["accumulation"])
    xs = [torch.from_numpy(b).to(device) for b in bags]
    ys = torch.as_tensor(y, device=device)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in progress(range(int(o["epochs"])), desc=desc, unit="epoch", leave=False, disable=quiet):
        model.train()
        order = rng.permutation(len(xs))
        total = 0.0
        opt.zero_grad(set_to_none=True)
        for step, i in enumerate(order, start=1):
            logits, _ = model(xs[i])
            loss = torch.nn.functional.cross_entropy(logits[None], ys[i][None])
            (loss / accum).backward()
            total += float(loss.detach())
            if step % accum == 0 or step == len(order):
                opt.step()
                opt.zero_grad(set_to_none=True)
        losses.append(total / len(order))
    return model.eval(), losses


@torch.no_grad()
def predict(model: ABMIL, bags: list[np.ndarray], device: torch.device) -> tuple[np.ndarray, list[np.ndarray]]:
    """(probabilities (N, C), attention (K_i,) per bag)."""
    probs, attn = [], []
    for b in bags:
        logits, a = model(torch.from_numpy(b).to(device))
        probs.append(torch.softmax(logits.float(), 0).cpu().numpy())
        attn.append(a.float().cpu().numpy())
    return np.stack(probs), attn


def summarize(per_split: dict[str, dict[str, float]]) -> dict:
    out = {}
    for k in METRICS:
        v = np.array([m[k] for m in per_split.values()], float)
        ok = v[~np.isnan(v)]
        out[k] = {"mean": float(ok.mean()) if len(ok) else float("nan"),
                  "std": float(ok.std(ddof=1)) if len(ok) > 1 else 0.0, "n": int(len(ok))}
    return out


def mean_std_text(s: dict, total: int, sep: str = "±") -> str:
    """``0.667±0.471`` of a ``summarize`` entry; over fewer splits than ``total`` (a metric undefined in some,
    e.g. AUC of a one-class fold) it says over how many, and a std of one split or a mean of none is ``n/a``,
    not 0."""
    n = int(s.get("n", total))
    if n == 0:
        return "n/a"
    text = f"{s['mean']:.3f}" + (f"{sep}{s['std']:.3f}" if n > 1 else f"{sep}n/a")
    return text if n == total else f"{text} ({n}/{total})"


def format_table(per_split: dict[str, dict[str, float]], summary: dict, pooled: dict | None = None) -> str:
    names = list(METRICS)
    total = len(per_split)
    w = max([len(n) for n in names] + [len(mean_std_text(summary[n], total)) for n in names]) + 2
    lines = [f"{'':<10}" + "".join(f"{n:>{w}}" for n in names)]
    for s, m in per_split.items():
        lines.append(f"{s:<10}" + "".join(f"{m[n]:>{w}.3f}" for n in names))
    lines.append(f"{'mean±std':<10}" + "".join(mean_std_text(summary[n], total).rjust(w) for n in names))
    if pooled is not None:
        lines.append(f"{'pooled':<10}" + "".join(f"{pooled[n]:>{w}.3f}" for n in names))
    return "\n".join(lines)


def _json_safe(x):
    """NaN (an undefined metric, e.g. AUC of a one-class fold) → null, so metrics.json is strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return None if isinstance(x, float) and x != x else x


def train_mil(cfg: dict, feats: str | Path, labels_csv: str | Path, out: str | Path, quiet: bool = False) -> dict:
    """Train and evaluate every split; returns {'splits': {name: metrics}, 'summary': {metric: mean/std}}.
    A run refused before its first file leaves no empty ``out`` behind (``rundir.removed_if_left_empty``)."""
    from gensis.rundir import removed_if_left_empty

    with removed_if_left_empty(out):
        return _train_mil(cfg, feats, labels_csv, out, quiet)


def _train_mil(cfg: dict, feats: str | Path, labels_csv: str | Path, out: str | Path, quiet: bool) -> dict:
    from gensis.config import dump
    from gensis.device import pick_device
    from gensis.rundir import atomic_write_json, atomic_write_text, lock_folder, remove_stale_temps, save_tensors

    from gensis.folder_kind import require_own_or_empty

    # never into a pretraining run, a bank ... or a user's folder (its config.yaml, predictions.csv were replaced)
    require_own_or_empty(out, "mil")
    cohort = load_cohort(feats, labels_csv)
    splits = make_splits(cohort, cfg)
    out = Path(out)
    lock_folder(out)  # one process per MIL run (makes the folder)
    require_own_or_empty(out, "mil")  # again under the lock
    meta = {"classes": cohort.classes, "in_dim": cohort.dim, "feats": str(Path(feats).resolve()),
            "labels": str(Path(labels_csv).resolve()), "mode": "seeds" if cohort.split is not None else "kfold",
            "grouped_by": "patient" if any(p.startswith("patient:") for p in cohort.patients) else "slide",
            "encoder_identity": cohort.encoder_identity, "inputs": cohort.fingerprint,
            "splits": {s.name: {"seed": s.seed, "train": [cohort.slides[i] for i in s.train],
                                "test": [cohort.slides[i] for i in s.test]} for s in splits}}
    old = json.loads((out / "mil.json").read_text()) if (out / "mil.json").is_file() else None
    conf = out / "config.yaml"
    if old is not None and (old.get("splits") != meta["splits"] or conf.is_file() and conf.read_text() != dump(cfg)):
        raise UserError(f"{out} holds a MIL run with {_what_differs(old, meta, conf, cfg)}: use another --out (or "
                        f"the same settings to finish or reuse it)")
    if old is not None and old.get("inputs", meta["inputs"]) != meta["inputs"]:
        raise UserError(f"{out} holds a MIL run on other features or labels (its finished splits would be reused "
                        f"as they are): use another --out")
    for folder in (out, *(out / sp.name for sp in splits)):
        remove_stale_temps(folder)  # left by a killed run
    atomic_write_json(out / "mil.json", meta)  # first: it marks the folder as a MIL run (folder_kind)
    atomic_write_text(conf, dump(cfg))
    device = pick_device(cfg["run"]["device"])
    per_split, rows = {}, []
    pooled_y, pooled_p = [], []
    C = len(cohort.classes)
    for sp in splits:
        d = out / sp.name
        pred_path = d / "predictions.json"
        if pred_path.is_file() and (d / "model.safetensors").is_file():
            res = json.loads(pred_path.read_text())
        else:
            model, losses = fit(cfg, [cohort.bags[i] for i in sp.train], cohort.y[sp.train], C, sp.seed, device,
                                desc=sp.name, quiet=quiet)
            probs, _ = predict(model, [cohort.bags[i] for i in sp.test], device)
            res = {"slides": [cohort.slides[i] for i in sp.test], "y": cohort.y[sp.test].tolist(),
                   "probs": probs.tolist(), "train_loss": losses}
            save_tensors(d / "model.safetensors", model.state_dict(), {"split": sp.name})
            atomic_write_json(pred_path, res)
        probs = np.asarray(res["probs"], float)
        per_split[sp.name] = all_metrics(np.asarray(res["y"]), probs)
        pooled_y += list(res["y"])
        pooled_p += [probs]
        for s, yy, p in zip(res["slides"], res["y"], probs):
            rows.append([sp.name, s, cohort.classes[yy], cohort.classes[int(np.argmax(p))], *[f"{v:.6f}" for v in p]])
    summary = summarize(per_split)
    # k-fold predicts every slide once: metrics over all out-of-fold predictions too (stable on small cohorts,
    # where a fold may hold one class only and its AUC / kappa is undefined)
    pooled = all_metrics(np.asarray(pooled_y), np.concatenate(pooled_p)) if meta["mode"] == "kfold" else None
    table = format_table(per_split, summary, pooled)
    from gensis.textfile import csv_text

    header = ["split", "slide", "label", "predicted", *[f"p_{c}" for c in cohort.classes]]
    atomic_write_text(out / "predictions.csv", csv_text([header, *rows]))
    result = {"mode": meta["mode"], "classes": cohort.classes, "n_slides": len(cohort.slides),
              "splits": per_split, "summary": summary, "pooled_out_of_fold": pooled}
    atomic_write_json(out / "metrics.json", _json_safe(result))
    md = [f"# ABMIL ({meta['mode']}, {len(splits)} splits, {len(cohort.slides)} slides, classes {cohort.classes})", "",
          "| split | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    md += [f"| {s} | " + " | ".join(f"{m[k]:.3f}" for k in METRICS) + " |" for s, m in per_split.items()]
    md.append("| mean ± std | " + " | ".join(mean_std_text(summary[k], len(per_split), " ± ") for k in METRICS)
              + " |")
    if pooled is not None:
        md.append("| pooled out-of-fold | " + " | ".join(f"{pooled[k]:.3f}" for k in METRICS) + " |")
    atomic_write_text(out / "metrics.md", "\n".join(md) + "\n")
    if not quiet:
        print(table)
    return result
