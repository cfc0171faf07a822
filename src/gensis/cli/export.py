"""``gensis export``: a run's models in other tools' formats (library: ``gensis.export``)."""

from __future__ import annotations

import argparse

from gensis.cli.main import add_common

EPILOG = """\
examples:
  gensis export runs/dino --to timm export/dino-vit        # then, without gensis:
      python -c "import timm; m = timm.create_model('local-dir:export/dino-vit', pretrained=True)"
  gensis export runs/dino --to safetensors export/dino.safetensors
  gensis export runs/eldm --to diffusers export/eldm        # UNet2DConditionModel, VQModel, DDIMScheduler
"""


def add_parser(sub) -> None:  # type: ignore[no-untyped-def]
    p = sub.add_parser(
        "export", help="export an encoder to timm / safetensors, an E-LDM to diffusers",
        description="Write a run's models in formats other tools load without gensis: a pretraining run's "
                    "encoder as a timm folder (config.json + model.safetensors) or a plain state_dict; an E-LDM "
                    "run as diffusers save_pretrained folders (see docs/api.md).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (pretrain run for timm/safetensors, E-LDM run for diffusers; "
                               "timm/safetensors on an E-LDM run export its conditioning encoder)")
    p.add_argument("--to", required=True, choices=["timm", "safetensors", "diffusers"], help="format")
    p.add_argument("out", nargs="?", help="folder (or, for --to safetensors, a new *.safetensors file) to write: new, or an empty folder (a symbolic "
                                           "link: its target)")
    p.add_argument("--out", dest="out_option", metavar="OUT", help="OUT given as an option, as other commands take it")
    p.add_argument("--which", default="teacher", choices=["teacher", "student"],
                   help="which backbone of a pretraining run (DINO evaluates the teacher; default: %(default)s)")
    add_common(p)
    p.set_defaults(func=run, late_positional="out")


def run(args: argparse.Namespace) -> int:
    from gensis.errors import UserError
    from gensis.export import export

    if args.out is not None and args.out_option is not None and args.out != args.out_option:
        raise UserError(f"two outputs given: OUT {args.out} and --out {args.out_option}; give one")
    target = args.out if args.out is not None else args.out_option
    if target is None:
        raise UserError("no output given: gensis export RUN --to FORMAT OUT (or --out OUT)")
    out = export(args.run, args.to, target, args.which)
    print(f"exported {args.run} as {args.to}: {out}")
    return 0
