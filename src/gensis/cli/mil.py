"""``gensis mil``: slide classification from bags of tile embeddings (ABMIL), cross-validated; predictions."""

from __future__ import annotations

import argparse

from gensis.cli.main import CommaList, DefaultsHelp, add_common, examples, print_config

TRAIN_EPILOG = """\
labels CSV columns: slide,label (+ patient: folds never split a patient, a blank cell is the slide's own;
+ split: train/test rows, trained with cv.seeds seeds instead of k-fold). slide: the slide id (its file name
without extension, as the bags are named) or its file name. Labels may be names or integers; classes are
ordered by sorting them (integers numerically: ISUP grades 0..5 keep their order), and quadratic kappa treats
that order as the grade order, so name ordinal classes so that they sort in order (e.g. 0-benign, 1-low).
examples:
  gensis mil train --feats feats --labels slides.csv --out mil              (5-fold, paper settings)
  gensis mil train --feats feats --labels slides.csv --out mil cv.folds=10 optim.epochs=20
  gensis mil predict --run mil --feats feats --out preds                      (+ attention heatmaps)
"""


def add_parser(sub) -> None:
    p = sub.add_parser("mil", help="ABMIL slide classification on embedding bags: train (CV), predict, heatmaps",
                       description="Multiple-instance learning on slide bags from `gensis wsi embed`.")
    add_common(p)
    msub = p.add_subparsers(dest="mil_cmd", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = msub.add_parser("train", help="k-fold (or seeds on a split) ABMIL; metrics mean ± std, table + JSON",
                        description="Gated-attention ABMIL (Ilse et al. 2018) with the paper's settings: AdamW lr "
                                    "1e-4, weight decay 0.01, 50 epochs, batch 1 with 8 steps of gradient "
                                    "accumulation. Metrics: accuracy, balanced accuracy, macro F1, macro one-vs-rest "
                                    "AUC, quadratic weighted kappa. Config: preset then key=value overrides.",
                        epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--feats", required=True, help="features folder (one <slide>.h5 bag per slide)")
    t.add_argument("--labels", required=True, help="CSV with columns slide,label[,patient][,split]")
    t.add_argument("--out", required=True, help="MIL run directory (finished splits are kept on a rerun)")
    t.add_argument("--preset", default="base", help="config preset (base = paper settings, smoke) or a YAML file (default: %(default)s)")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="no progress bars (the table is still printed)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    add_common(t)
    t.set_defaults(func=run_train)

    q = msub.add_parser("predict", help="predict slides with a trained run; attention heatmap PNGs",
                        description="Class probabilities of each bag (mean over the run's fold/seed models) and "
                                    "an attention heatmap over each slide's thumbnail.",
                        formatter_class=DefaultsHelp,
                        epilog=examples("gensis mil predict --run mil --feats feats --out preds",
                                        "gensis mil predict --run mil --feats new-feats --out preds --slides A,B --no-heatmaps"))
    q.add_argument("--run", required=True, help="MIL run directory")
    q.add_argument("--feats", required=True, help="features folder")
    q.add_argument("--out", required=True, help="folder for predictions.csv and heatmaps/ (a rerun with the same "
                   "--run and --feats adds or redoes slides)")
    q.add_argument("--slides", default=None, action=CommaList,
                   help="comma-separated slide ids or file names (A, A.svs), or the option repeated (default: "
                        "every bag)")
    q.add_argument("--no-heatmaps", action="store_true", help="predictions.csv only")
    q.add_argument("--quiet", action="store_true", help="no progress bars")
    add_common(q)
    q.set_defaults(func=run_predict)


def run_train(args) -> int:
    import os

    from gensis.api import mil_config, train_mil

    cfg = mil_config(preset=args.preset, overrides=args.overrides)
    if args.print_config:
        return print_config("mil", cfg)
    if args.quiet:
        os.environ["GENSIS_NO_PROGRESS"] = "1"
    res = train_mil(args.feats, args.labels, args.out, config=cfg, quiet=False)
    print(f"MIL run: {args.out} (metrics.json, metrics.md, predictions.csv); {res['n_slides']} slides, "
          f"{len(res['splits'])} {res['mode']} splits")
    return 0


def run_predict(args) -> int:
    from gensis.mil.predict import predict_slides

    import os

    if args.quiet:
        os.environ["GENSIS_NO_PROGRESS"] = "1"
    slides = [s for s in args.slides.split(",") if s] if args.slides else None
    rows = predict_slides(args.run, args.feats, args.out, heatmaps=not args.no_heatmaps, slides=slides)
    print(f"predicted {len(rows)} slide(s) -> {args.out}/predictions.csv"
          + ("" if args.no_heatmaps else f", heatmaps in {args.out}/heatmaps/"))
    return 0
