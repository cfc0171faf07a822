"""Robustness to distribution shift (Gen-SIS supplementary Sec. 9.1, Tab. 10): a linear probe trained on the
in-distribution set, applied unchanged to out-of-distribution test folders (ImageNet-A, -R, -Sketch).

Steps
    1. DINO's linear probe (``gensis.eval.linear``) on the frozen CLS features of ``--train`` (default, as for
       knn and linear: the data the ``--encoder`` run was pretrained on, ``gensis.eval.common.resolve_data``,
       with one line saying so); its best head
       (top-1 on ``--test``) is kept, and saved as safetensors with its class names and the settings and data it was trained with (``--probe FILE``; an
       existing FILE made for the same encoder, data and settings is loaded instead of training again, one made for
       others is refused).
    2. Each ``--ood`` folder is an ImageFolder whose class folders are named like the training classes
       (ImageNet: wnids such as ``n01498041``). Its labels are the training classes of the same name.
    3. Sets that cover a subset of the classes (ImageNet-A and -R: 200 of 1,000) are scored with the logits
       restricted to that subset, a class-index mask built from the folder names, as their authors do
       (Hendrycks et al.'s ``eval.py``: ``output[:, indices_in_1k]``); a set covering every class (Sketch)
       uses all logits. Top-1 per set.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from gensis.errors import UserError


def class_mask(train_classes: list[str], folder: Path) -> np.ndarray:
    """Boolean (C,) mask of the training classes that have a folder in ``folder`` (by name)."""
    names = {d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")}
    unknown = sorted(names - set(train_classes))
    if unknown:
        raise UserError(f"{folder}: class folder '{unknown[0]}' is not a training class")
    return np.array([c in names for c in train_classes])


def masked_top1(features: np.ndarray, labels: np.ndarray, weight, bias, mask: np.ndarray) -> float:
    """Top-1 (%) of the linear head with the logits of classes outside ``mask`` removed."""
    import torch

    logits = torch.from_numpy(features).float() @ weight.T + bias  # (N, C)
    logits[:, torch.from_numpy(~mask)] = float("-inf")
    return float(100.0 * (logits.argmax(1).numpy() == labels).mean())


def save_probe(path: Path, weight, bias, classes: list[str], encoder_identity: str, top1: float,
               linear: dict | None = None) -> None:
    """The probe as safetensors, with its class names, encoder and, from ``linear`` (``linear_eval``'s result), the
    settings and data it was trained with, so that a later run reuses it only for the same ones."""
    from gensis.rundir import save_tensors

    meta = {"classes": json.dumps(classes), "encoder": encoder_identity, "top1": f"{top1:.4f}"}
    if linear is not None:
        meta["linear"] = json.dumps(linear)
    save_tensors(path, {"weight": weight, "bias": bias}, metadata=meta)


def probe_settings(linear: dict) -> dict:
    """What a probe was trained with, from a ``linear_eval`` result: its config and the train and test data
    (the test data picks the learning rate)."""
    return {"config": linear.get("config"), "train": (linear.get("train") or {}).get("identity"),
            "test": (linear.get("test") or {}).get("identity")}


def check_probe_settings(path: Path, saved: dict | None, cfg, train_ds, test_ds) -> None:
    """Reusing ``--probe FILE`` for the same settings only: a UserError naming the first difference between the
    settings it was trained with (``saved``: its ``linear_eval`` result) and this run's; a warning when the file
    does not record them (written by an older gensis)."""
    from dataclasses import asdict

    from gensis.eval.options import warn

    if saved is None:
        warn(f"probe {path} does not record the settings it was trained with (an older gensis): reused without "
             f"checking --train, --test and the probe options; remove it to train again")
        return
    now = asdict(cfg)
    now["lrs"], now["crop_scale"] = list(cfg.lrs), list(cfg.crop_scale)
    was = probe_settings(saved)
    diffs = [f"--{k.replace('_', '-')} {was['config'].get(k)} (now {v})" for k, v in now.items()
             if (was["config"] or {}).get(k) != v]
    for role, ds in (("train", train_ds), ("test", test_ds)):
        if was[role] != ds.identity:
            diffs.append(f"--{role} data {saved[role].get('name')} ({was[role]}; now {ds.name}, {ds.identity})")
    if diffs:
        raise UserError(f"--probe {path} was trained with other settings: {diffs[0]}"
                        f"{f' and {len(diffs) - 1} more' if len(diffs) > 1 else ''}; remove it to train again, or "
                        f"name another --probe")


def load_probe(path: Path, encoder_identity: str):
    from safetensors import safe_open

    from gensis.rundir import load_tensors, safetensors_name

    try:
        with safetensors_name(path) as name, safe_open(name, "pt") as f:
            meta = f.metadata() or {}
        t = load_tensors(path)
    except Exception as e:
        raise UserError(f"cannot read probe {path}: {type(e).__name__}: {e}") from None
    if meta.get("encoder") != encoder_identity:
        raise UserError(f"probe {path} was trained for encoder {meta.get('encoder')}, not {encoder_identity}")
    linear = json.loads(meta["linear"]) if "linear" in meta else None
    return t["weight"], t["bias"], json.loads(meta.get("classes", "[]")), float(meta.get("top1", "nan")), linear


def robustness_eval(encoder, train_ds, test_ds, ood: list[str], cfg=None, device="cpu", batch_size: int = 128,
                    cache=None, probe: str | Path | None = None, skip_bad_images: bool = False) -> dict:
    """``skip_bad_images``: unreadable images of the OOD folders are left out and counted (``--skip-bad-images``)."""
    from gensis.data.sources import match_classes, open_data
    from gensis.eval.common import describe_data, describe_encoder, labels_of, warn_if_test_is_train
    from gensis.eval.features import extract_features
    from gensis.eval.linear import linear_eval

    if not train_ds.classes:
        raise UserError(f"{train_ds.name} has no class names: robustness matches OOD folders to classes by name")
    ood_paths = []
    for o in ood:
        p = Path(o).expanduser()
        if not p.is_dir():
            raise UserError(_not_a_folder(p))
        ood_paths.append(p)
    classes = list(train_ds.classes)
    folder_masks = [class_mask(classes, p) for p in ood_paths]  # a folder of no training class: before any work
    t0 = time.time()
    probe_path = Path(probe).expanduser() if probe else None
    lin, reused = None, False
    if probe_path is not None and probe_path.is_file():
        from gensis.eval.linear import LinearConfig

        weight, bias, saved_classes, _, lin = load_probe(probe_path, encoder.identity)
        if saved_classes != classes:
            raise UserError(f"probe {probe_path} was trained on other classes than {train_ds.name}")
        check_probe_settings(probe_path, lin, cfg or LinearConfig(), train_ds, test_ds)
        reused = True
        f_test = extract_features(encoder, test_ds, batch_size, device, "test features", cache)
        id_top1 = masked_top1(f_test, labels_of(test_ds, "test"), weight, bias, np.ones(len(classes), bool))
    else:
        lin, (weight, bias) = linear_eval(encoder, train_ds, test_ds, cfg, device=device, batch_size=batch_size,
                                          cache=cache, return_heads=True)
        id_top1 = lin["top1"]
        if probe_path is not None:
            save_probe(probe_path, weight, bias, classes, encoder.identity, id_top1, lin)
    weight, bias = weight.float().cpu(), bias.float().cpu()
    sets = []
    for p, folders in zip(ood_paths, folder_masks):
        ds = match_classes(train_ds, open_data(str(p), "all", skip_bad_images=skip_bad_images))
        warn_if_test_is_train(train_ds, ds, "--ood", "give --ood folders of images the probe was not trained on")
        y = labels_of(ds, p.name)
        # the classes the set has images of (an empty class folder competed in the masked argmax)
        mask = folders & np.isin(np.arange(len(classes)), y)
        if (folders & ~mask).any():
            from gensis.eval.options import warn

            empty = [c for c, f, m in zip(classes, folders, mask) if f and not m]
            warn(f"--ood {p.name}: class folder{'s' if len(empty) > 1 else ''} {', '.join(empty[:5])}"
                 f"{' ...' if len(empty) > 5 else ''} hold{'' if len(empty) > 1 else 's'} no images: left out of the "
                 f"classes its logits are restricted to")
        f = extract_features(encoder, ds, batch_size, device, f"{p.name} features", cache)
        sets.append({"name": p.name, "path": str(p), "images": len(ds), "classes": int(mask.sum()),
                     "top1": masked_top1(f, y, weight, bias, mask), "masked": bool(not mask.all())})
    return {"protocol": "robustness", "encoder": describe_encoder(encoder), "train": describe_data(train_ds),
            "test": describe_data(test_ds), "probe": None if probe_path is None else str(probe_path),
            "probe_reused": reused, "linear": lin, "in_distribution": {"name": test_ds.name, "top1": id_top1}, "ood": sets,
            "seconds": round(time.time() - t0, 1)}


# ---------------------------------------------------------------------------------------------------------
# command line: gensis eval robustness


def _add_arguments(p) -> None:
    from gensis.cli.main import CommaList
    from gensis.eval.common import add_data_options
    from gensis.eval.linear import add_probe_arguments
    from gensis.eval.options import add_encoder_options, add_runtime_options

    add_encoder_options(p)
    add_data_options(p)
    p.add_argument("--ood", required=True, metavar="DIR[,DIR...]", action=CommaList,
                   help="out-of-distribution ImageFolders whose class folders are named like the training classes "
                        "(comma-separated or the option repeated)")
    p.add_argument("--probe", default=None, metavar="FILE",
                   help="save the trained linear probe here (safetensors, with the settings and data it was "
                        "trained with); if FILE exists, use it instead of training, for the same encoder, --train, "
                        "--test and probe options only (others are refused)")
    add_probe_arguments(p)
    add_runtime_options(p)


def _run(args) -> dict:
    from gensis.eval.common import prepare_classification
    from gensis.eval.linear import probe_config

    cfg = probe_config(args)
    if args.probe:  # before the probe is trained: a path that cannot be written would lose it
        from gensis.eval.options import check_output_folder

        check_output_folder(Path(args.probe).expanduser().absolute().parent, "--probe", args.probe)
    ood = [s.strip() for s in args.ood.split(",") if s.strip()]
    for o in ood:
        if not Path(o).expanduser().is_dir():
            raise UserError(_not_a_folder(Path(o)))
    encoder, train_ds, test_ds, device, cache = prepare_classification(args)
    return robustness_eval(encoder, train_ds, test_ds, ood, cfg, device, args.feature_batch_size, cache, args.probe,
                           bool(getattr(args, "skip_bad_images", False)))


def format_robustness(res: dict) -> str:
    e = res["encoder"]
    names = [res["in_distribution"]["name"]] + [s["name"] for s in res["ood"]]
    width, first = max(8, *(len(n) for n in names)), max(12, len(e["name"]))  # the encoder whole (was its last 12)
    lines = [f"robustness (linear probe top-1 %)  encoder: {e['name']} ({e['identity']})",
             f"{'encoder':<{first}} " + " ".join(f"{n:>{width}}" for n in names),
             f"{e['name']:<{first}} " + " ".join(
                 f"{v:>{width}.2f}" for v in [res["in_distribution"]["top1"]] + [s["top1"] for s in res["ood"]])]
    for s in res["ood"]:
        lines.append(f"  {s['name']}: {s['images']} images, {s['classes']} classes"
                     + (" (logits masked to these classes)" if s["masked"] else ""))
    if res.get("probe"):
        how = "" if not res.get("probe_reused") else (" (reused: trained earlier with the same settings and data)"
                                                      if res.get("linear") else " (reused; its settings are not recorded)")
        lines.append(f"probe: {res['probe']}{how}")
    return "\n".join(lines)


from gensis.eval.registry import Evaluation  # noqa: E402

EVALUATION = Evaluation(
    name="robustness",
    summary="linear probe trained in-distribution, applied to OOD folders (ImageNet-A/R/Sketch; Tab. 10)",
    description="Trains DINO's linear probe on --train (default: the encoder run's own data; best lr on --test), "
                "then scores it on each --ood "
                "ImageFolder, with the logits restricted to the classes present there (as the ImageNet-A/R authors).",
    add_arguments=_add_arguments, run=_run, format=format_robustness,
    headline=lambda r: [(f"ID top-1 ({r['in_distribution']['name']})", r["in_distribution"]["top1"])]
    + [(f"OOD top-1 ({s['name']})", s["top1"]) for s in r["ood"]],
    data_options=("train", "ood"),
)


def _not_a_folder(p: Path) -> str:
    """``--ood`` names folders of class sub-folders: a file (an .npz, an archive) was called 'not found'."""
    if p.expanduser().exists():
        return f"--ood {p} is a file, not a folder (give folders of class sub-folders, comma-separated)"
    return f"--ood folder not found: {p}"
