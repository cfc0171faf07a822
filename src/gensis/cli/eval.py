"""``gensis eval knn|linear``: DINO's k-NN and linear-probe evaluations of a frozen encoder.

The encoder is a pretraining run directory (its teacher backbone) or one of the two baselines,
``pixels`` (raw pixels) and ``random`` (a randomly initialised ViT of the demo preset's architecture).
Without an ``@split`` suffix, ``--train`` is read as its train split and ``--test`` as its val split, with
the same deterministic split as pretraining (taken from the run's config when the encoder is a run).
"""

from __future__ import annotations

import argparse
import sys

from gensis.cli.main import add_common

DEFAULT_DATA = "builtin:animal-mnist"


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except empty ones and those the help text already explains."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate a frozen encoder: weighted k-NN or linear probe (DINO protocols)",
        description="Evaluate a frozen encoder with DINO's protocols. Sub-commands: knn, linear.")
    verbs = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)

    knn = verbs.add_parser(
        "knn", help="weighted k-NN classifier on L2-normalized features (DINO, T=0.07, k=10/20)",
        description="Weighted k-NN (DINO): cosine similarity to the k nearest training features, votes "
                    "weighted by exp(similarity / T); top-1 and top-5 accuracy on the test set.",
        formatter_class=_Help)
    _common(knn)
    knn.add_argument("--k", type=int, nargs="+", default=[10, 20], metavar="K",
                     help="numbers of neighbours to evaluate (one result row each)")
    knn.add_argument("--temperature", type=float, default=0.07, metavar="T",
                     help="temperature T of the vote weights exp(similarity / T)")
    knn.set_defaults(func=run_knn)

    lin = verbs.add_parser(
        "linear", help="linear classifier on frozen features with a learning-rate sweep (DINO)",
        description="Linear probe (DINO): a linear layer on the frozen CLS feature, SGD (momentum 0.9, "
                    "weight decay 0, cosine lr), RandomResizedCrop + flip on train, whole image on test. "
                    "All learning rates train at once as parallel heads; the best top-1 is reported. "
                    "Train features are extracted once for --aug-copies augmented copies of the train set "
                    "(epoch e uses copy e mod K) instead of re-running the backbone every epoch.",
        formatter_class=_Help)
    _common(lin)
    from gensis.eval.linear import LinearConfig

    d = LinearConfig()
    lin.add_argument("--lrs", type=float, nargs="+", default=list(d.lrs), metavar="LR",
                     help="learning rates to sweep, at batch 256 (scaled by batch-size/256, as DINO)")
    lin.add_argument("--epochs", type=int, default=d.epochs, metavar="N", help="training epochs of the linear heads")
    lin.add_argument("--batch-size", type=int, default=d.batch_size, metavar="N", help="SGD batch size of the linear heads")
    lin.add_argument("--aug-copies", type=int, default=d.aug_copies, metavar="K",
                     help="augmented copies of the train set whose features are precomputed")
    lin.add_argument("--crop-scale", type=float, nargs=2, default=list(d.crop_scale), metavar=("MIN", "MAX"),
                     help="area range of RandomResizedCrop on train images")
    lin.add_argument("--momentum", type=float, default=d.momentum, metavar="M", help="SGD momentum")
    lin.add_argument("--weight-decay", type=float, default=d.weight_decay, metavar="WD", help="SGD weight decay")
    lin.add_argument("--seed", type=int, default=d.seed, metavar="SEED", help="seed of the augmentations, shuffling and head init")
    lin.set_defaults(func=run_linear)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder", required=True, metavar="RUN|pixels|random",
                   help="a pretraining run directory (its exported backbone), or a baseline: 'pixels' "
                        "(flattened raw pixels) or 'random' (randomly initialised ViT)")
    p.add_argument("--train", default=DEFAULT_DATA, metavar="DATA",
                   help="labelled training data: builtin:NAME, an ImageFolder folder or an .npz; without "
                        "an @train/@val/@all suffix its train split is used")
    p.add_argument("--test", default=None, metavar="DATA",
                   help="labelled test data (same forms); without a suffix its val split is used "
                        "(default: the --train data)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results to FILE (JSON, atomically)")
    p.add_argument("--backbone", choices=["teacher", "student"], default="teacher",
                   help="which exported backbone of a run to evaluate (DINO evaluates the teacher)")
    p.add_argument("--val-fraction", type=float, default=None, metavar="F",
                   help="held-out share for data without its own split (default: the run's data.val_fraction, "
                        "else 0.2)")
    p.add_argument("--split-seed", type=int, default=None, metavar="SEED",
                   help="seed of that split (default: the run's data.split_seed, else 0)")
    p.add_argument("--init-seed", type=int, default=0, metavar="SEED", help="initialisation seed of --encoder random")
    p.add_argument("--device", default="auto", metavar="DEV", help="auto (CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--feature-batch-size", type=int, default=256, metavar="N",
                   help="images per forward pass when extracting features")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice). On cores shared with other busy processes, "
                        "1 thread or the environment variable OMP_WAIT_POLICY=PASSIVE can be several times faster")
    add_common(p)


def _split_defaults(args) -> tuple[float, int]:
    """The pretraining run's split (so its held-out images stay held out), else 0.2 / seed 0."""
    val_fraction, split_seed = 0.2, 0
    if args.encoder not in ("pixels", "random"):
        from pathlib import Path

        from gensis.rundir import RunDir

        if (Path(args.encoder) / "config.yaml").is_file():
            data = RunDir(args.encoder).config().get("data", {})
            val_fraction = float(data.get("val_fraction", val_fraction))
            split_seed = int(data.get("split_seed", split_seed))
    if args.val_fraction is not None:
        val_fraction = args.val_fraction
    if args.split_seed is not None:
        split_seed = args.split_seed
    return val_fraction, split_seed


def _prepare(args):
    """(encoder, train_ds, test_ds, device) from the shared options; user mistakes raise UserError."""
    import torch

    from gensis.eval.common import open_train_test
    from gensis.device import pick_device
    from gensis.errors import UserError
    from gensis.models.encoder import load_encoder

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.feature_batch_size < 1:
        raise UserError(f"--feature-batch-size must be >= 1, got {args.feature_batch_size}")
    val_fraction, split_seed = _split_defaults(args)
    if not 0 < val_fraction < 1:
        raise UserError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    try:
        device = pick_device(args.device)
    except RuntimeError as e:
        raise UserError(f"bad --device '{args.device}': {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {args.device}: CUDA is not available")
    train_ds, test_ds = open_train_test(args.train, args.test, val_fraction, split_seed)
    if train_ds.identity == test_ds.identity:
        print(f"gensis: warning: the test set is the training set ({test_ds.name})", file=sys.stderr)
    encoder = load_encoder(args.encoder, args.backbone, seed=args.init_seed)
    return encoder, train_ds, test_ds, device


def _header(title: str, res: dict) -> list[str]:
    e, tr, te = res["encoder"], res["train"], res["test"]
    lines = [f"{title}  encoder: {e['name']} ({e['identity']}, {e['dim']}-d)",
             f"train: {tr['name']} ({tr['size']} images, {tr['identity']})  "
             f"test: {te['name']} ({te['size']} images, {te['identity']})"]
    return lines


def _footer(res: dict) -> list[str]:
    from gensis.eval.common import split_note

    note = split_note(res["train"], res["test"])
    return [note] if note else []


def format_knn(res: dict) -> str:
    lines = _header(f"k-NN (T={res['temperature']:g})", res)
    lines.append(f"{'k':>6}  {'top-1':>7}  {'top-5':>7}")
    lines += [f"{r['k']:>6}  {r['top1']:7.2f}  {r['top5']:7.2f}" for r in res["results"]]
    return "\n".join(lines + _footer(res))


def format_linear(res: dict) -> str:
    c = res["config"]
    lines = _header(f"linear probe ({c['epochs']} epochs, batch {c['batch_size']}, {c['aug_copies']} aug. copies)",
                    res)
    lines.append(f"{'lr':>8}  {'top-1':>7}  {'top-5':>7}")
    for r in res["results"]:
        if r["diverged"]:
            lines.append(f"{r['lr']:>8g}  {'diverged':>16}")
        else:
            lines.append(f"{r['lr']:>8g}  {r['top1']:7.2f}  {r['top5']:7.2f}")
    lines.append(f"best: lr {res['lr']:g}  top-1 {res['top1']:.2f}  top-5 {res['top5']:.2f}")
    return "\n".join(lines + _footer(res))


def _finish(res: dict, text: str, json_path: str | None) -> int:
    import gensis
    from gensis.rundir import atomic_write_json

    print(text)
    if json_path:
        atomic_write_json(json_path, {**res, "gensis_version": getattr(gensis, "__version__", None)})
        print(f"results written to {json_path}")
    return 0


def run_knn(args) -> int:
    from gensis.eval.knn import knn_eval

    encoder, train_ds, test_ds, device = _prepare(args)
    res = knn_eval(encoder, train_ds, test_ds, ks=args.k, T=args.temperature, device=device,
                   batch_size=args.feature_batch_size)
    return _finish(res, format_knn(res), args.json)


def run_linear(args) -> int:
    from gensis.eval.linear import LinearConfig, linear_eval

    cfg = LinearConfig(lrs=tuple(args.lrs), epochs=args.epochs, batch_size=args.batch_size,
                       momentum=args.momentum, weight_decay=args.weight_decay, aug_copies=args.aug_copies,
                       crop_scale=tuple(args.crop_scale), seed=args.seed)
    cfg.check()  # before the (slow) data and encoder loading
    encoder, train_ds, test_ds, device = _prepare(args)
    res = linear_eval(encoder, train_ds, test_ds, cfg, device=device, batch_size=args.feature_batch_size)
    return _finish(res, format_linear(res), args.json)
