"""``gensis eval <protocol>``: generated from the evaluation registry (``gensis.eval.registry``).

Every protocol prints its table and, with ``--json FILE``, writes its results atomically. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import functools


def _help_formatter():
    from gensis.cli.main import DefaultsHelp

    return DefaultsHelp


# example command lines of each evaluation's --help (tests/cli/test_help_examples.py parses them)
EXAMPLES = {
    "knn": ("gensis eval knn --encoder runs/dino", "gensis eval knn --encoder runs/dino --k 10 20 --json knn.json",
            "gensis eval knn --encoder random --random-like runs/dino   # the random-init baseline"),
    "linear": ("gensis eval linear --encoder runs/dino --json linear.json",
               "gensis eval linear --encoder runs/dino --train imagenet/@train --test imagenet/@val --epochs 100"),
    "robustness": ("gensis eval robustness --encoder runs/dino --train imagenet/ --ood imagenet-a/,imagenet-r/",),
    "copydetect": ("gensis eval copydetect --encoder runs/dino --data copydays/ --distractors yfcc-10k/",),
    "retrieval": ("gensis eval retrieval --encoder runs/dino --data revisitop/ --dataset roxford5k --multiscale",),
    "davis": ("gensis eval davis --encoder runs/dino --data DAVIS/ --out davis-masks --json davis.json",),
    "umap": ("gensis eval umap --encoder runs/dino,runs/gen-dino --bank banks/am --out umap.png",),
    "all": ("gensis eval all --encoder runs/dino --config evals.yaml --json all.json",),
}


def _examples(name: str) -> str | None:
    from gensis.cli.main import examples

    return examples(*EXAMPLES[name]) if name in EXAMPLES else None


def add_parser(sub) -> None:
    from gensis.cli.main import add_common
    from gensis.eval.registry import evaluations

    evs = evaluations()
    p = sub.add_parser(
        "eval", help="evaluate frozen encoders: " + ", ".join(evs),
        description="Evaluate frozen encoders with the protocols of DINO and the benchmarks' own code. "
                    "Sub-commands: " + ", ".join(evs) + ".")
    verbs = p.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    for name, ev in evs.items():
        q = verbs.add_parser(name, help=ev.summary, description=ev.description, formatter_class=_help_formatter(),
                             epilog=_examples(name))
        ev.add_arguments(q)
        add_common(q)
        q.set_defaults(func=functools.partial(run_evaluation, name))


def run_evaluation(name: str, args) -> int:
    """Run the registered evaluation ``name``; print its table; write ``--json``."""
    from gensis.eval.options import check_cache_option
    from gensis.eval.registry import check_result_path, get_evaluation, replaced_note, run_parsed, write_result

    ev = get_evaluation(name)
    check_result_path(getattr(args, "json", None))
    check_cache_option(args)
    res = run_parsed(name, args)
    json_path = getattr(args, "json", None)
    note = replaced_note(json_path)
    if json_path:  # first: the file is written even when the reader of the table goes away (`| head`)
        write_result(json_path, res)
    print(ev.format(res))
    if json_path:
        print(f"results written to {json_path}{note}")
    return 0
