"""``gensis bank``: generate, verify and look at the augmentation bank (paper Sec. 9.5.2)."""

from __future__ import annotations

import argparse
import sys
import textwrap

from gensis.cli.main import CommaList, DefaultsHelp, add_common, examples, print_config
from gensis.config import preset_names

DEFAULT_DATA = "builtin:animal-mnist"  # with --generator only (no run to read the data from)

GENERATE_EPILOG = """\
examples:
  gensis bank generate --eldm runs/eldm --data builtin:animal-mnist --out banks/am --preset demo
  gensis bank generate --eldm runs/eldm --data imagenet/ --out banks/in1k --preset paper
  torchrun --nproc_per_node=8 $(which gensis) bank generate --eldm runs/eldm --data imagenet/ --out banks/in1k --preset paper
  gensis bank generate ... --preset paper gen.num_generative=1 "gen.alphas=[0.2,0.4,0.6,0.8]" gen.guidance=1.75 \\
      gen.secondary=group          (histopathology: secondary tile from another slide)

Killed? Run the same command again: complete shards are kept, the rest is generated, the result is identical.
"""


def add_parser(sub) -> None:
    p = sub.add_parser("bank", help="generate / verify / show the bank of generative augmentations",
                       description="The augmentation bank: generative and interpolated augmentations of every "
                                   "image, generated once by the E-LDM and read from disk by `gensis pretrain --bank`.")
    add_common(p)
    bsub = p.add_subparsers(dest="bank_cmd", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    g = bsub.add_parser(
        "generate", help="generate a bank (resumable; torchrun for several processes/GPUs)",
        description=textwrap.fill(
            "Generate K generative augmentations per image and one interpolated augmentation per image and alpha "
            "(with a secondary image chosen by seed, or from another group/slide), and store them in sharded "
            "files (format: docs/bank.md). Config: a preset, then key=value overrides (e.g. gen.num_generative=2 "
            "gen.steps=25 storage.codec=jpeg). Under torchrun each rank writes its own shards; the result equals "
            "a single-process run. At the end it prints images/s, the time the whole data would take when "
            "data.limit kept a subset, and (not for slide tiles) the projected cost of the paper's ImageNet-1K "
            "bank.", 100),
        epilog=GENERATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("--eldm", default=None, help="E-LDM run directory (from `gensis eldm train`)")
    g.add_argument("--data", default=None,
                   help="dataset, as for `gensis pretrain`: builtin:NAME, an ImageFolder folder or an .npz "
                        "(suffix @train/@val/@all picks a split; default: train). Default: the data the --eldm run "
                        f"was trained on, as its manifest records ({DEFAULT_DATA} with --generator only)")
    g.add_argument("--out", required=True, help="bank folder to create, or to finish after a kill")
    g.add_argument("--preset", default="demo", help=f"config preset: {', '.join(preset_names('bank'))}, or a YAML file "
                                                     "(default: demo)")
    g.add_argument("--generator", default=None, metavar="MODULE:FACTORY",
                   help="use another generator: FACTORY(eldm, device=, guidance=, steps=, sampler=) returns an "
                        "adapter implementing gensis.eldm.generator.EmbeddingConditionedGenerator "
                        "(e.g. gensis.bank.fake:FakeGenerator for a dry run). WARNING: this imports MODULE and runs "
                        "its code with your permissions, like `python -c 'import MODULE'`: only name modules you trust")
    g.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    add_common(g)
    g.set_defaults(func=run_generate, several_processes=True)  # torchrun splits its work

    v = bsub.add_parser("verify", help="check counts, manifest consistency and checksums of a bank",
                        description="Check a bank: header identity, every shard present and of this bank, every "
                                    "entry's index/kind/alpha/seed/secondary, payload checksums. Exit status 0 when "
                                    "all is well, 1 with one line per problem otherwise.",
                        formatter_class=DefaultsHelp,
                        epilog=examples("gensis bank verify banks/in1k",
                                        "gensis bank verify banks/in1k --decode",
                                        "gensis bank verify banks/in1k --delete-bad   # then bank generate again"))
    v.add_argument("bank", help="bank folder")
    v.add_argument("--decode", action="store_true", help="also decode every image (slower)")
    v.add_argument("--delete-bad", action="store_true",
                   help="delete faulty shards and partial files, so that rerunning `gensis bank generate` "
                        "regenerates exactly them")
    add_common(v)
    v.set_defaults(func=run_verify)

    s = bsub.add_parser("show", help="write a PNG grid of bank entries",
                        description="One row per image: real, its generative augmentations, and for each alpha its "
                                    "interpolation followed by the secondary image.",
                        formatter_class=DefaultsHelp,
                        epilog=examples("gensis bank show banks/in1k --out grid.png",
                                        "gensis bank show banks/in1k --out grid.png --indices 3,17 --data imagenet/"))
    s.add_argument("bank", help="bank folder")
    s.add_argument("--out", required=True, help="PNG file to write (name ending in .png)")
    s.add_argument("--n", type=int, default=6, help="number of images (rows), drawn at random by --seed (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="which images to draw (default: %(default)s)")
    s.add_argument("--indices", default=None, action=CommaList,
                   help="comma-separated image indices, or the option repeated (instead of --n/--seed)")
    s.add_argument("--data", default=None, help="dataset for the real images (default: the one recorded in the bank)")
    add_common(s)
    s.set_defaults(func=run_show)


def run_generate(args) -> int:
    from gensis.api import bank_config

    cfg = bank_config(preset=args.preset, overrides=args.overrides)
    if args.print_config:
        return print_config("bank", cfg)
    from gensis.bank.generate import generate_bank  # the library call (the result's summary, exit 1 if partial)
    from gensis.distributed import cleanup

    from gensis.data.recorded import data_or_recorded
    from gensis.errors import on_main_rank, same_on_every_rank

    with same_on_every_rank():  # every rank reads the same --eldm run: a wrong one is one line, from rank 0
        if args.data is None and args.eldm is not None:
            from gensis.eldm.model import finished_run_config

            finished_run_config(args.eldm)  # a wrong --eldm is named before its data
        data = data_or_recorded(args.data, args.eldm, "--data DATA", "the --eldm run", keep_split=True) \
            or DEFAULT_DATA
        if args.data is None and args.eldm is not None:  # the E-LDM's data, read as its training read it
            from gensis.data.recorded import recorded_reading

            extra = recorded_reading(args.eldm, cfg.to_dict()["data"], list(args.overrides), "the --eldm run")
            if extra:
                cfg = bank_config(preset=args.preset, overrides=[*args.overrides, *extra])
    result = generate_bank(cfg.to_dict(), data, args.out, eldm=args.eldm, generator_spec=args.generator,
                           quiet=args.quiet)
    cleanup()  # not on errors: main() reports them to the other ranks and leaves the group without waiting
    if on_main_rank():
        print(result.summary())
    return 0 if result.complete else 1


def run_verify(args) -> int:
    from gensis.bank.verify import verify_bank

    rep = verify_bank(args.bank, decode=args.decode, delete_bad=args.delete_bad)
    print(rep.summary(), file=sys.stdout if rep.ok else sys.stderr)
    return 0 if rep.ok else 1


def run_show(args) -> int:
    from gensis.bank.show import show_bank
    from gensis.errors import UserError

    indices = None
    if args.indices:
        try:
            indices = [int(x) for x in args.indices.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"--indices must be comma-separated integers, got '{args.indices}'") from None
    out = show_bank(args.bank, args.out, n=args.n, data=args.data, seed=args.seed, indices=indices)
    print(f"wrote {out}")
    from gensis.bank.reader import BankReader
    from gensis.bank.scores import quantile_table

    reader = BankReader(args.bank)
    if reader.has_scores:
        print(quantile_table(reader.scores(), reader.num_generative))
    return 0
