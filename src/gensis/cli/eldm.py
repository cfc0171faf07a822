"""``gensis eldm``: the embedding-conditioned latent diffusion model (train-ae, train, sample, eval)."""

from __future__ import annotations

import argparse

from gensis.cli.main import RawDefaultsHelp as _Fmt, examples
from gensis.cli.main import add_common, print_config
from gensis.config import preset_names
from gensis.configs.schema import AMP_MODES
from gensis.errors import on_main_rank, same_on_every_rank

DEFAULT_DATA = "builtin:animal-mnist"  # for train-ae (no run to read the data from)


def _config_args(p: argparse.ArgumentParser, example: str = "optim.epochs=3 cond.mode=both sample.guidance=2") -> None:
    p.add_argument("--preset", default="demo", help=f"config preset: {', '.join(preset_names('eldm'))}, or a YAML file of deltas "
                                                    "(see src/gensis/configs/eldm/base.yaml for every key)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"dotted config overrides, e.g. {example}")


def _settings_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance scale w (1: the conditional model alone; 0: the unconditional one, the "
                        "embedding ignored; default: the run's sample.guidance)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: the run's sample.steps)")
    p.add_argument("--sampler", choices=["ddim", "dpmpp"], default=None,
                   help="ddim (ours, CFG halves in one batch) or dpmpp (DPM-Solver++ 2M; default steps sample.dpmpp_steps)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--amp", default="auto", choices=AMP_MODES,
                   help="bf16 autocast while sampling: auto (CUDA, CPUs with AMX or AVX512-BF16), bf16 (force), off")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eldm", help="train and use the embedding-conditioned diffusion model (E-LDM)",
        description="E-LDM: a diffusion model trained on the same unlabeled images as the encoder and conditioned "
                    "on the frozen encoder's embedding (no text, no outside data).\n\n"
                    "  gensis eldm train-ae --data DATA --out AE_RUN             # VQ-f4 autoencoder (space=vq)\n"
                    "  gensis eldm train --encoder RUN --data DATA --out ELDM_RUN [--ae AE_RUN]\n"
                    "  gensis eldm sample --eldm ELDM_RUN --data DATA --out DIR  # PNG grids\n"
                    "  gensis eldm eval --eldm ELDM_RUN --data DATA [--json FILE] # fidelity numbers",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(p)
    s = p.add_subparsers(dest="eldm_cmd", metavar="SUBCOMMAND")

    a = s.add_parser(
        "train-ae", help="train the VQ-f4 autoencoder (latent space of the E-LDM)", formatter_class=_Fmt,
        epilog=examples("gensis eldm train-ae --data imagenet/ --out runs/ae --preset paper",
                        "gensis eldm train-ae --data imagenet/ --out runs/ae --preset paper --resume   # after a kill"),
        description="Train a VQ autoencoder (diffusers VQModel; len(ae.model.block_out_channels)-1 halvings, 3 levels "
                    "= f4, as the paper's 256x256x3 -> 64x64x3) on the training split with L1 + L2 + codebook/"
                    "commitment losses (offline: no perceptual loss) and an optional PatchGAN discriminator "
                    "(ae.loss.disc_weight > 0). Reports the reconstruction error on held-out images and writes "
                    "AE_RUN/autoencoder.safetensors + autoencoder.json. Only needed for space=vq.")
    a.add_argument("--data", default=DEFAULT_DATA, help="dataset: builtin:NAME, an image folder or an .npz")
    a.add_argument("--out", required=True, help="run directory to create (or to resume)")
    a.add_argument("--resume", action="store_true", help="continue a killed run from its last epoch checkpoint")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    _config_args(a, "ae.optim.epochs=8 data.image_size=64 (it reads data.*, ae.*, train.*)")
    add_common(a)
    a.set_defaults(func=run_train_ae, several_processes=True)  # torchrun splits its work

    t = s.add_parser(
        "train", help="train the embedding-conditioned denoiser", formatter_class=_Fmt,
        epilog=examples("gensis eldm train --encoder runs/dino --ae runs/ae --out runs/eldm --preset paper",
                        "gensis eldm train --encoder runs/dino --out runs/eldm-pixel space=pixel optim.epochs=5",
                        "gensis eldm train --encoder runs/dino --out runs/eldm --resume      # after a kill"),
        description="Train a UNet (diffusers UNet2DConditionModel, from scratch) to denoise images (space=pixel) or "
                    "VQ latents (--ae AE_RUN) conditioned on the frozen encoder's CLS embedding of the image, "
                    "projected to unet.context_dim; cond.mode: cross_attn (cond.tokens context tokens, 1 in the "
                    "paper's family), time (added to the timestep embedding) or both. The condition is replaced by a learned null "
                    "embedding with probability cond.drop_prob for classifier-free guidance. Embeddings of the "
                    "training set are computed once and cached in ELDM_RUN/cache (keyed by the encoder's hash). "
                    "Writes config.yaml, manifest.json, metrics.jsonl, an atomic checkpoint every epoch "
                    "(--resume), and at the end denoiser_ema.safetensors + eldm.json with copies of the encoder and "
                    "autoencoder. Multi-process: torchrun --nproc_per_node=N -m gensis.cli.main eldm train ...")
    t.add_argument("--encoder", required=True, help="pretraining run directory whose teacher backbone conditions "
                                                    "the generator (cond.which=student for the student)")
    t.add_argument("--data", default=None,
                   help="dataset (the training split is used; default: the data the --encoder run was pretrained "
                        "on, as its manifest records)")
    t.add_argument("--out", required=True, help="run directory to create (or to resume)")
    t.add_argument("--ae", default=None, help="autoencoder run from `gensis eldm train-ae` (sets space=vq)")
    t.add_argument("--resume", action="store_true", help="continue a killed run from its last epoch checkpoint")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    _config_args(t)
    add_common(t)
    t.set_defaults(func=run_train, several_processes=True)

    m = s.add_parser(
        "sample", help="PNG grids: generative (Fig. 7-9) and interpolation (Fig. 11-13)", formatter_class=_Fmt,
        epilog=examples("gensis eldm sample --eldm runs/eldm --out figures",
                        "gensis eldm sample --eldm runs/eldm --out figures --guidance 3 --steps 50 figures.rows=10"),
        description="Write DIR/generative.png (each row: a held-out real image, then figures.per_image samples "
                    "generated from its embedding) and DIR/interpolation.png (each row: real image 1 at alpha=1, "
                    "samples from the interpolated embedding at figures.alphas, real image 2 at alpha=0; same seed "
                    "along a row). Settings come from the E-LDM run's config; override figures.* as key=value.")
    m.add_argument("--eldm", required=True, help="finished `gensis eldm train` run")
    m.add_argument("--data", default=None, help="dataset whose held-out (val) images are shown (suffix @train/@all "
                                                 "for another split; default: the data the E-LDM was trained on)")
    m.add_argument("--out", required=True, help="folder for the PNG files")
    m.add_argument("--method", choices=["slerp", "lerp"], default=None, help="interpolation (default figures.method)")
    m.add_argument("--seed", type=int, default=None, help="seed of the rows and samples (default figures.seed)")
    _settings_args(m)
    m.add_argument("--quiet", action="store_true", help="no progress bar (as the other eldm commands)")
    m.add_argument("overrides", nargs="*", metavar="key=value",
                   help="figures.* overrides, e.g. figures.rows=10 (and data.val_fraction, data.split_seed, "
                        "data.skip_bad_images; other keys are refused: the sampler is --guidance/--steps/--sampler)")
    add_common(m)
    m.set_defaults(func=run_sample)

    e = s.add_parser(
        "eval", help="fidelity numbers on held-out images", formatter_class=_Fmt,
        epilog=examples("gensis eldm eval --eldm runs/eldm --json fidelity.json",
                        "gensis eldm eval --eldm runs/eldm --n 500 --sampler dpmpp"),
        description="For eval.n held-out images: generate one sample from each image's embedding, embed it again "
                    "and report (a) source retrieval: top-1/top-5 rate at which the source image ranks first among "
                    "the n real embeddings by cosine; (b) label agreement: the k-NN label (over training-set "
                    "embeddings) of the sample equals the source's label (labelled data only); (c) the Frechet "
                    "distance between real and generated embeddings in the encoder's feature space.")
    e.add_argument("--eldm", required=True, help="finished `gensis eldm train` run")
    e.add_argument("--data", default=None, help="dataset; its val split is held out (train split: k-NN bank; "
                                                 "default: the data the E-LDM was trained on)")
    e.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    e.add_argument("--n", type=int, default=None, help="number of held-out images (default eval.n)")
    _settings_args(e)
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("overrides", nargs="*", metavar="key=value",
                   help="eval.* overrides, e.g. eval.knn_k=10 (and cond.encode_batch_size, data.val_fraction, "
                        "data.split_seed, data.skip_bad_images; other keys are refused: the sampler is "
                        "--guidance/--steps/--sampler)")
    add_common(e)
    e.set_defaults(func=run_eval)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_train_ae(args) -> int:
    from gensis.api import eldm_config, train_autoencoder
    from gensis.rundir import RunDir

    if args.print_config:
        return print_config("eldm-ae", eldm_config(preset=args.preset, overrides=args.overrides))
    run = train_autoencoder(args.data, args.out, preset=args.preset, overrides=args.overrides, resume=args.resume,
                            quiet=args.quiet)
    val = RunDir(run).manifest().get("val", {})
    if on_main_rank():  # once under torchrun, not once per process
        print(f"autoencoder done: {run} (held-out MSE {val.get('val_mse', float('nan')):.5f}, "
              f"PSNR {val.get('val_psnr', float('nan')):.2f} dB)")
    return 0


def run_train(args) -> int:
    from gensis.api import eldm_config, train_eldm

    if args.print_config:
        return print_config("eldm", eldm_config(preset=args.preset, overrides=args.overrides, autoencoder=args.ae))
    from gensis.data.recorded import data_or_recorded
    from gensis.models.encoder import check_encoder_run

    from gensis.folder_kind import require_kind

    overrides = list(args.overrides)
    with same_on_every_rank():  # every rank reads the same runs: a wrong one is one line, from rank 0
        if args.ae is not None:
            require_kind(args.ae, "eldm-ae", "--ae")
        if args.data is None:  # a bad setting, then a wrong --encoder, are named before its data
            cfg = eldm_config(preset=args.preset, overrides=overrides, autoencoder=args.ae)
            check_encoder_run(args.encoder)
        data = data_or_recorded(args.data, args.encoder, "--data DATA", "the --encoder run", keep_split=True)
        if args.data is None:  # the encoder's data, read as its pretraining read it (broken files, held-out split)
            from gensis.data.recorded import recorded_reading

            overrides += recorded_reading(args.encoder, cfg.to_dict()["data"], overrides, "the --encoder run")
    run = train_eldm(args.encoder, data, args.out, autoencoder=args.ae, preset=args.preset,
                     overrides=overrides, resume=args.resume, quiet=args.quiet)
    if on_main_rank():
        print(f"E-LDM training done: {run}")
    return 0


def _settings(args) -> dict:
    return {"guidance": args.guidance, "steps": args.steps, "sampler": args.sampler, "device": args.device,
            "amp": args.amp}


def _eldm_data(args) -> str:
    """``--data``, else the data the finished E-LDM run was trained on (its held-out split is what is shown)."""
    from gensis.data.recorded import data_or_recorded
    from gensis.eldm.model import finished_run_config

    if args.data is None:
        finished_run_config(args.eldm)  # a wrong --eldm is named before its data
    return str(data_or_recorded(args.data, args.eldm, "--data DATA", "the E-LDM run"))


def run_sample(args) -> int:
    from gensis.api import eldm_figures

    for p in eldm_figures(args.eldm, _eldm_data(args), args.out, overrides=args.overrides, method=args.method,
                          seed=args.seed, **_settings(args)):
        print(p)
    return 0


def run_eval(args) -> int:
    from gensis.api import evaluate_eldm
    from gensis.eldm.evaluate import format_report
    from gensis.eval.registry import check_result_path, write_result

    check_result_path(args.json)  # before the evaluation: never over a run's own files
    r = evaluate_eldm(args.eldm, _eldm_data(args), n=args.n, overrides=args.overrides, quiet=args.quiet, **_settings(args))
    print(format_report(r))
    if args.json:
        write_result(args.json, r)
    return 0
