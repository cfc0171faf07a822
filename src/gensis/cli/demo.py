"""``gensis demo``: argument parsing for the whole pipeline (``gensis.pipeline.demo``)."""

from __future__ import annotations

import argparse

from gensis.cli.main import CommaList, DefaultsHelp, add_common

PRESETS = ("smoke", "demo", "small", "paper", "gpu")

DEMO_DATA = "builtin:animal-mnist"


def add_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="run the whole pipeline (DINO, E-LDM, bank, Gen-DINO, ablation, eval, report) on a dataset",
        description="Run Gen-SIS end to end and print DINO | DINO w/ pixel disent. | Gen-DINO (paper Table 12). "
                    "Stages are resumable: run the same command again after an interruption; a stage whose "
                    "settings changed is redone (gensis only removes folders it can prove it wrote). "
                    "Presets: smoke (~2 min, tests), demo (~8 min on 2 idle CPU cores, measured: README), small (~35 min per "
                    "seed), paper (GPU nodes). With --seeds 0,1,2 every number comes as mean ± std over seeds. "
                    "Config overrides take the prefix of the stages they change: pretrain. (DINO, Gen-DINO, the "
                    "pixel ablation), eldm. (autoencoder and E-LDM; eldm.eval.* and eldm.figures.* only its "
                    "evaluation and figures; refused with --preset wsi, which has neither), bank.; the rest is a "
                    "key=value of `gensis pretrain`, `gensis eldm train`, `gensis bank generate`, checked the same "
                    "way. A stage whose overrides changed is redone with the stages that read it.",
        epilog="example: gensis demo --preset smoke pretrain.optim.epochs=5 eldm.optim.epochs=4 bank.gen.num_generative=2 "
               "(images of any size are resized to the preset's input size, 28 px for smoke and demo; the demo "
               "preset at 32 px, a multiple of the ViT's patch size: gensis demo --data cifar.npz "
               "pretrain.data.image_size=32 pretrain.model.patch_size=8 eldm.data.image_size=32)",
        formatter_class=DefaultsHelp)
    p.add_argument("--preset", default="demo", choices=PRESETS + ("wsi",),
                   help="size of every stage; wsi: the whole-slide demo (`gensis wsi demo`: a real slide, tiles, "
                        "DINO vs Gen-DINO, ABMIL on region bags with synthetic labels)")
    p.add_argument("--data", default=DEMO_DATA,
                   help="labelled dataset (builtin:NAME, folder or .npz); pretraining uses its train split, "
                        "evaluation its val split")
    p.add_argument("--out", default="gensis-demo",
                   help="folder for all stages' outputs: new, empty, or an earlier demo's (resumed)")
    p.add_argument("--seed", type=int, default=0, help="seed of every stage")
    p.add_argument("--seeds", default=None, action=CommaList,
                   help="comma-separated seeds (e.g. 0,1,2; or the option repeated): run the whole pipeline once per seed in OUT/seed-S, "
                        "then print every number as mean ± std over the seeds (also OUT/seeds.md, seeds.json)")
    p.add_argument("--stages", default=None, action=CommaList,
                   help="comma-separated (or repeated) subset of stages to run (dino,eldm,bank,gendino,pixel,eval,report)")
    p.add_argument("--methods", default="dino", action=CommaList,
                   help="comma-separated (or repeated) SSL methods (e.g. dino,ibot,dinov2,simclr): for each method X the table "
                        "shows X | X w/ pixel disent. | Gen-X and the report gets a section (needs `gensis pretrain "
                        "--method`)")
    p.add_argument("--no-linear", action="store_true", help="skip the linear probe (k-NN only)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--serial", action="store_true",
                   help="run every stage in this process, one after another (default on a CPU with 2+ threads: "
                        "the stages that do not wait for the DINO -> E-LDM -> bank -> Gen-DINO chain (autoencoder, "
                        "pixel ablation, E-LDM figures and fidelity) run beside it in a second process, the threads "
                        "split between the two; same stages, keys and results)")
    p.add_argument("overrides", nargs="*", metavar="STAGE.key=value",
                   help="config overrides of a stage family, e.g. pretrain.optim.epochs=5 (prefixes: pretrain, "
                        "eldm, bank; with --preset wsi also mil)")
    add_common(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import os

    from gensis.pipeline.demo import DemoOptions, parse_methods, parse_seeds, parse_stages, run_demo

    if args.quiet:  # stages run in this process: one switch silences every progress bar
        os.environ["GENSIS_NO_PROGRESS"] = "1"
    if args.preset == "wsi":  # the slide pipeline lives in gensis.wsi.demo (one entry point)
        from gensis.errors import UserError
        from gensis.wsi.demo import run_wsi_demo

        given = [opt for opt, on in (("--data", args.data != DEMO_DATA),
                                     ("--seeds", args.seeds is not None), ("--stages", args.stages is not None),
                                     ("--methods", str(args.methods) != "dino"), ("--no-linear", args.no_linear),
                                     ("--serial", args.serial)) if on]
        if given:  # never ignored silently: the slide demo has its own slide, one seed, DINO vs Gen-DINO
            raise UserError(f"{given[0]} does not apply to --preset wsi (the slide demo: its own slide, one --seed, "
                            f"DINO against Gen-DINO); see `gensis wsi demo --help`")

        run_wsi_demo(args.out, seed=args.seed, quiet=args.quiet, debug=args.debug,
                     overrides=tuple(args.overrides or ()))
        return 0
    run_demo(DemoOptions(preset=args.preset, data=args.data, out=args.out, seed=args.seed,
                         seeds=None if args.seeds is None else parse_seeds(args.seeds),
                         stages=parse_stages(args.stages), linear=not args.no_linear, quiet=args.quiet,
                         debug=args.debug, methods=parse_methods(args.methods),
                         overrides=tuple(args.overrides or ()), serial=args.serial))
    return 0
