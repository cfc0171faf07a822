"""``gensis pretrain``: a registered SSL method (``--method``, default dino), Gen- with --bank / --interp pixel."""

from __future__ import annotations

import argparse

from gensis.cli.main import DefaultsHelp, add_common, examples, print_config
from gensis.config import preset_names
from gensis.ssl.methods import METHODS


def add_parser(sub) -> None:
    p = sub.add_parser(
        "pretrain", help="self-supervised pretraining of a ViT (--method dino ...; Gen- variant with --bank)",
        description="Pretrain a ViT with a self-supervised method (--method, default dino). With --bank, train "
                    "its Gen- variant (Gen-DINO ...): views from the bank's generative augmentations and the "
                    "disentanglement loss on its interpolations. "
                    "Config: a preset, then key=value overrides (e.g. optim.epochs=3 data.limit=1000; data.image_size must be a multiple of the ViT's model.patch_size).",
        formatter_class=DefaultsHelp, epilog=examples(
            "gensis pretrain --data builtin:animal-mnist --out runs/dino --preset demo",
            "gensis pretrain --data imagenet/ --out runs/dino --preset paper optim.epochs=100",
            "gensis pretrain --data imagenet/ --out runs/dino --preset paper --resume      # after a kill",
            "gensis pretrain --data cifar.npz --out runs/ibot --method ibot --preset small",
            "gensis pretrain --data imagenet/ --bank banks/in1k --out runs/gen-dino --preset paper   # Gen-DINO",
            "gensis pretrain --data imagenet/ --interp pixel --out runs/pixel --preset paper  # pixel ablation"))
    p.add_argument("--data", default="builtin:animal-mnist",
                   help="dataset: builtin:NAME, an ImageFolder folder, or an .npz; a suffix @train/@val/@all picks "
                        "a split, else the train split is used")
    p.add_argument("--out", required=True, help="run directory to create (or to resume)")
    p.add_argument("--preset", default="demo", help=f"config preset: {', '.join(preset_names('pretrain'))}, or a YAML file")
    p.add_argument("--resume", action="store_true", help="continue a killed run from its last epoch checkpoint")
    p.add_argument("--method", default=None,
                   help=f"self-supervised method: {', '.join(METHODS)} (default: the config's 'method', dino)")
    p.add_argument("--bank", default=None,
                   help="augmentation bank (from `gensis bank generate`): trains the method's Gen- variant "
                        "(Gen-DINO, Gen-iBOT ...)")
    p.add_argument("--interp", choices=["bank", "pixel", "none"], default=None,
                   help="disentanglement source: bank interpolations, pixel interpolation (ablation) or none "
                        "(default: bank when --bank is given, else none; a gen.interp=... override does the same, and "
                        "one that disagrees with --interp is refused)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar or start message (errors and the final line still print)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    add_common(p)
    p.set_defaults(func=run, several_processes=True)  # torchrun splits its work


def _check_method_sections(overrides: list[str], method: str) -> None:
    """A ``key=value`` under another method's section (``ibot.*`` with dino) would change nothing, since each
    method reads its own section only: one line, as every rank reaches it (a preset may set every section)."""
    from gensis.errors import UserError

    for item in overrides:
        section = item.split("=", 1)[0].strip().split(".", 1)[0]
        if section in METHODS and section != method:
            err = UserError(f"{item}: the method is {method}, which reads no {section}.* key (each method reads its "
                            f"own section, {method}.*): drop it, or give --method {section}")
            err.all_ranks = True
            raise err


def run(args) -> int:
    from gensis.api import pretrain, pretrain_config

    kw = {"preset": args.preset, "overrides": args.overrides, "method": args.method, "interp": args.interp,
          "bank": args.bank}
    cfg = pretrain_config(**kw)
    _check_method_sections(args.overrides, cfg.method)
    if args.print_config:
        return print_config("pretrain", cfg)
    if args.quiet:  # also the bars of anything the run calls (e.g. a k-NN monitor's feature extraction)
        import os

        os.environ["GENSIS_NO_PROGRESS"] = "1"
    run_dir = pretrain(args.data, args.out, resume=args.resume, quiet=args.quiet, **kw)
    from gensis.errors import on_main_rank

    if on_main_rank():  # once under torchrun, not once per process
        print(f"pretraining done: {run_dir}")
    return 0
