"""``gensis eval <protocol>``: generated from the evaluation registry (``gensis.eval.registry``).

Every protocol prints its table and, with ``--json FILE``, writes its results atomically. See docs/eval.md.
"""

from __future__ import annotations

import argparse
import functools


def _help_formatter():
    from gensis.cli.main import DefaultsHelp

    return DefaultsHelp


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
        q = verbs.add_parser(name, help=ev.summary, description=ev.description, formatter_class=_help_formatter())
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
