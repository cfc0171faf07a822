"""The evaluation registry: one module per protocol, each defining ``EVALUATION = Evaluation(...)``.

``gensis eval <name>`` is generated from this registry (``gensis.cli.eval``), and ``gensis eval all``
runs every registered evaluation whose data is given. To add a protocol, write ``gensis/eval/<name>.py``
with an ``EVALUATION`` and add its name to ``PROTOCOLS`` (one line).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
import os
from collections.abc import Mapping
from typing import Any, Callable, NoReturn

# the order is that of `gensis eval --help` and of `gensis eval all`
PROTOCOLS = ("knn", "linear", "robustness", "copydetect", "retrieval", "davis", "umap", "all")


@dataclass(frozen=True)
class Evaluation:
    """A protocol as the command line and ``eval all`` see it."""

    name: str
    summary: str  # one line for `gensis eval --help`
    description: str  # the sub-command's --help text
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], dict[str, Any]]  # parsed options → JSON-ready result
    format: Callable[[dict[str, Any]], str]  # result → the printed table
    headline: Callable[[dict[str, Any]], list[tuple[str, float]]] = lambda res: []  # (metric, value) for `eval all`
    data_options: tuple[str, ...] = field(default=())  # options that `eval all` needs set to run it


def evaluations() -> dict[str, Evaluation]:
    """Every registered evaluation, by name (imports each protocol module)."""
    out = {}
    for name in PROTOCOLS:
        module = importlib.import_module(f"gensis.eval.{name}")
        ev = module.EVALUATION
        if ev.name != name:
            raise RuntimeError(f"gensis.eval.{name} registers '{ev.name}'")
        out[name] = ev
    return out


def get_evaluation(name: str) -> Evaluation:
    """The evaluation registered as ``name``; a UserError listing the valid names otherwise."""
    from gensis.errors import UserError

    if name not in PROTOCOLS:
        raise UserError(f"unknown evaluation '{name}'; available: {', '.join(PROTOCOLS)}")
    return evaluations()[name]


class _Parser(argparse.ArgumentParser):
    """An evaluation's own option parser, raising ``UserError`` (prefixed by ``where``) instead of exiting."""

    where = ""

    def error(self, message: str) -> NoReturn:
        from gensis.errors import UserError

        raise UserError(f"{self.where or self.prog}: {message}")


def option_parser(name: str, where: str = "") -> argparse.ArgumentParser:
    """The option parser of ``gensis eval NAME`` (without ``--help``/``--debug``); errors name ``where``."""
    ev = get_evaluation(name)
    parser = _Parser(prog=f"gensis eval {name}", add_help=False)
    parser.where = where
    ev.add_arguments(parser)
    return parser


def options_to_argv(parser: argparse.ArgumentParser, options: Mapping[str, Any], where: str = "") -> list[str]:
    """Keyword options (``per_class=12``, ``encoder=[run, "pixels"]``, ``k=[10, 20]``, ``multiscale=True``) as
    the command line of ``parser``: keys are option names without dashes (``-``/``_`` alike); lists give an
    option that takes several values (``--k 10 20``) each value, and any other option one comma-separated
    value; paths become strings, ``True`` a bare flag, ``None``/``False`` nothing."""
    import difflib

    from gensis.errors import UserError

    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    argv: list[str] = []
    for key, value in options.items():
        action = actions.get(str(key).replace("-", "_"))
        if action is None:
            close = difflib.get_close_matches(str(key), list(actions), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(sorted(actions))}"
            raise UserError(f"{where or parser.prog}: unknown option '{key}'{hint}")
        if value is None or value is False:
            continue
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if not isinstance(v, (str, int, float, os.PathLike)):
                hint = (" (an Encoder object: use gensis.knn / gensis.linear, which take objects)"
                        if type(v).__name__ == "Encoder" else "")
                raise UserError(f"{where or parser.prog}: option '{key}' takes text, numbers or paths (as on the "
                                f"command line), got a {type(v).__name__}{hint}")
        flag = list(action.option_strings[:1])
        if action.nargs == 0:  # a flag
            argv += flag
        elif isinstance(value, (list, tuple)):
            several = action.nargs in ("+", "*") or isinstance(action.nargs, int)
            argv += flag + ([os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in value] if several
                            else [",".join(os.fspath(v) if isinstance(v, os.PathLike) else str(v) for v in value)])
        else:
            argv += flag + [os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return argv


def parse_options(name: str, options: Mapping[str, Any], where: str = "") -> argparse.Namespace:
    """``options`` (see ``options_to_argv``) parsed by ``gensis eval NAME``'s own parser: same defaults, types
    and checks as the command line; a wrong option or value is a one-line ``UserError``."""
    parser = option_parser(name, where)
    return parser.parse_args(options_to_argv(parser, options, where))


def run_evaluation(name: str, **options: Any) -> dict[str, Any]:
    """Run ``gensis eval NAME`` from Python: its command-line options as keyword arguments (``--per-class`` →
    ``per_class``), parsed by the same parser (same defaults, types and checks). Returns the JSON-ready result;
    ``json=PATH`` also writes it."""
    from gensis.eval.options import check_cache_option

    args = parse_options(name, options)
    check_result_path(getattr(args, "json", None))
    check_cache_option(args)
    from gensis.progress import bars_off

    with bars_off(bool(getattr(args, "quiet", False))):  # quiet=True: no bars, as `--quiet` on the command line
        res = run_parsed(name, args)
    if getattr(args, "json", None):
        write_result(args.json, res)
    return res


def recorded_options(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every option of ``gensis eval NAME`` as parsed (defaults included), by its keyword name: what result files
    record so that a result can be made again (``gensis.evaluate(NAME, **options)`` takes them back)."""
    out: dict[str, Any] = {}
    for action in option_parser(name)._actions:
        if action.dest != "help":
            value = getattr(args, action.dest, None)
            out[action.dest] = os.fspath(value) if isinstance(value, os.PathLike) else value
    return out


def run_parsed(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation ``name`` on its parsed options; its result with the options recorded (``options``)."""
    res = get_evaluation(name).run(args)
    return {**res, "options": recorded_options(name, args)}


def check_result_path(path: str | os.PathLike[str] | None) -> None:
    """A ``--json`` path that is a folder, or an existing file that is not a result gensis wrote (a run's
    ``manifest.json``, a config, weights, any file of the user's), is refused before an evaluation runs; an
    earlier result (JSON holding ``gensis_version``, as ``write_result`` writes) is replaced."""
    import json

    from gensis.errors import UserError

    if path and os.path.isdir(path):
        raise UserError(f"--json {path} is a folder: name a file (e.g. {os.path.join(path, 'results.json')})")
    if path:
        from gensis.eval.options import check_output_folder

        check_output_folder(os.path.dirname(os.path.abspath(os.path.expanduser(path))), "--json", path)
    if path and os.path.lexists(path):
        try:
            with open(path, encoding="utf-8") as f:
                ours = "gensis_version" in json.load(f)
        except (OSError, ValueError, TypeError):
            ours = False
        if not ours:
            raise UserError(f"--json {path} exists and is not a result file gensis wrote (a run's manifest, a "
                            f"config or a file of yours would be overwritten): name another file, or remove it")


def replaced_note(path: str | os.PathLike[str] | None) -> str:
    """`` (replacing ...)``: what an earlier result at ``path`` was (protocol, encoder, when written), said when a
    new result replaces it, so that a rerun with the same ``--json`` never overwrites one silently; '' when
    there is none."""
    import json
    import time

    if not path or not os.path.isfile(path):
        return ""
    try:
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
    except (OSError, ValueError):
        return ""
    if not isinstance(old, dict) or "gensis_version" not in old:
        return ""
    enc = old.get("encoder")
    enc = enc.get("name") if isinstance(enc, dict) else enc
    what = " ".join(str(x) for x in (old.get("protocol"), f"of {enc}" if enc else None) if x)
    return f" (replacing the earlier result there{': ' + what if what else ''}, written {when})"


def write_result(path: str | os.PathLike[str], res: Mapping[str, Any]) -> None:
    """The result as JSON (atomically), with the gensis version."""
    import gensis
    from gensis.rundir import atomic_write_json

    check_result_path(path)
    atomic_write_json(path, json_ready({**res, "gensis_version": getattr(gensis, "__version__", None)}))


def json_ready(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) as None: JSON has no NaN (Python's json writes a bare
    ``NaN`` that jq, JavaScript and strict parsers reject)."""
    import math

    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj
