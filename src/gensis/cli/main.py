"""``gensis`` command line: one module per verb (``gensis.cli.<verb>``), each with ``add_parser``/``run``.

User errors (``UserError``: bad path, corrupt data, unknown config key ...) become one line on stderr and
exit status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import threading

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from a hub
# OpenMP threads that spin while waiting make a shared 2-core machine crawl (a DINO step measured 11.0 s
# spinning vs 1.31 s passive with other processes running); must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# a rank other than 0 that stops on an error rank 0 prints (``UserError.all_ranks``) waits this long before it
# exits: torchrun ends every other process as soon as one exits, and rank 0, a little slower, was ended before it
# had printed the line (a bad config value or a command torchrun does not split: no line at all)
QUIET_RANK_GRACE_S = 5.0

# verb -> module; the order is the order of `gensis --help`
VERBS = {
    "pretrain": "gensis.cli.pretrain",
    "eval": "gensis.cli.eval",
    "eldm": "gensis.cli.eldm",
    "bank": "gensis.cli.bank",
    "wsi": "gensis.cli.wsi",
    "mil": "gensis.cli.mil",
    "demo": "gensis.cli.demo",
    "report": "gensis.cli.report",
    "export": "gensis.cli.export",
}


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default, except empty ones (None, False) and those the help text already
    explains ("default: ..."), and an ``examples`` epilog line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(EXAMPLES):  # command lines: never re-wrapped into one paragraph
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or "default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


EXAMPLES = "examples:"


def examples(*lines: str) -> str:
    """A parser's ``epilog`` of example command lines (each ``gensis ...``, parsed by tests/cli/test_help_examples.py;
    a ``  # note`` after one is shown, not parsed), shown line by line by ``DefaultsHelp``."""
    return "\n".join([EXAMPLES, *(f"  {line}" for line in lines)])


class RawDefaultsHelp(DefaultsHelp, argparse.RawDescriptionHelpFormatter):
    """``DefaultsHelp`` keeping the description's own line breaks."""


class CommaList(argparse.Action):
    """A comma-separated list option that may also be repeated: ``--ood a,b --ood c`` is ``a,b,c`` (argparse's
    plain store keeps only the last occurrence, silently dropping the others). A default is replaced, not
    extended. For options taking several values (``--k 10 20``) use ``action="extend"`` with ``default=None``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        seen = namespace.__dict__.setdefault("_given_lists", set())
        prev = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, f"{prev},{values}" if self.dest in seen and prev else values)
        seen.add(self.dest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gensis",
        description="Gen-SIS: generative self-augmentation for self-supervised learning. "
                    "Pipeline: pretrain (DINO, iBOT, DINOv2, SimCLR) -> eldm train -> bank generate -> "
                    "pretrain --bank (Gen-DINO ...) -> eval.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, mod in VERBS.items():
        try:
            module = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue  # verb not available in this build
            raise
        module.add_parser(sub)
    return parser


def as_written(argv: list[str]) -> list[str]:
    """``argv`` (a command the demo runs for a stage, or prints to run by hand) such that gensis reads each option's
    value as written: a value starting with ``-`` (``--data -t.npz``, a ``--out`` under ``-dd/``) is joined to its
    option (``--data=-t.npz``); argparse took it for an option ('--data: expected one argument'). A positional
    starting with ``-`` (a slide ``-scan.svs``: gensis's positionals are paths or key=value) becomes ``./-scan.svs``."""
    takes_value, options = set(), set()
    stack = [build_parser()]
    while stack:
        p = stack.pop()
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                stack.extend(a.choices.values())
            else:
                options.update(a.option_strings)
                if a.option_strings and a.nargs != 0:
                    takes_value.update(a.option_strings)
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        elif argv[i].startswith("-") and argv[i].split("=", 1)[0] not in options and argv[i] != "--":
            out.append(f"./{argv[i]}")
            i += 1
        else:
            out.append(argv[i])
            i += 1
    return out


def _command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub-)command ``args`` were parsed for (``gensis eval knn``'s, not ``gensis``'s)."""
    p = parser
    while True:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None or name not in subs[0].choices:
            return p
        p = subs[0].choices[name]


def _did_you_mean(parser: argparse.ArgumentParser, extra: list[str]) -> str:
    """`` (did you mean --k?)`` for the first unknown option close to one of ``parser``'s; '' otherwise."""
    import difflib

    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    for e in extra:
        if e.split("=", 1)[0] in ("--config", "--config-file", "--cfg") and "--preset" in known:  # was: --print-config?
            return " (a YAML config file is given as --preset FILE.yaml: its keys override base.yaml's)"
        if e.startswith("--"):
            close = difflib.get_close_matches(e.split("=", 1)[0], known, n=1)
            if close:
                return f" (did you mean {close[0]}?)"
    return ""


def entry() -> None:
    """The ``gensis`` command (its console script, ``python -m gensis``): ``main``, then Python's exit, made quick."""
    status = 130
    try:
        status = main()
        quick_exit(status)
    except KeyboardInterrupt:  # in the instant between main's return and quick_exit's handlers: the command is done
        pass
    sys.exit(status)


def quick_exit(status: int) -> None:
    """Prepare this process's exit, once the command is done and everything it writes is written (atomically and
    durably, before ``main`` returned). What is left is Python's own teardown (atexit hooks, threads, freeing the
    modules), and its last garbage collections walk every object torch, timm, diffusers and scikit-learn made at
    import: 1.5-3 s after the last line on a 2-core machine (measured: `benchmarks/exit_time.py`). ``gc.freeze()``
    leaves those objects out of the collections (atexit hooks, thread joins and the modules' teardown still run;
    only cycles among those objects stay uncollected, as the process ends). A Ctrl-C or
    SIGTERM in that time ended with status -2 and no line, or with a traceback from a library's atexit hook: now it
    ends the process at once with the command's own status. Only for the command's own process (``entry``), never
    for a program calling ``main``."""
    import gc
    import signal

    gc.freeze()

    def now(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, now)
        signal.signal(signal.SIGTERM, now)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # a Ctrl-C before the command started (the verbs' imports, parsing): nothing written
        print("gensis: interrupted", file=sys.stderr)
        return 130


def _paths_printable() -> None:
    """A path that is not UTF-8 (Latin-1 ``café/``, held as a str with surrogate escapes) is printed as its own
    bytes, as ``ls`` prints it: under a UTF-8 locale Python's stdout is strict and a result line naming such a run
    or image folder raised UnicodeEncodeError after the work was done (stderr already escapes it)."""
    if getattr(sys.stdout, "errors", None) == "strict":
        try:
            sys.stdout.reconfigure(errors="surrogateescape")  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            pass


def _main(argv: list[str] | None) -> int:
    from gensis.errors import UserError, on_main_rank

    _paths_printable()

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # argparse cannot take positionals after options once it has filled a nargs="*" list, so
        # `gensis pretrain a=1 --out R b=2` would reject b=2; dotted overrides may go anywhere
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        elif (late := getattr(args, "late_positional", None)) and len(extra) == 1 and not extra[0].startswith("-") \
                and getattr(args, late) is None:  # `export RUN --to timm OUT`: an optional positional after options
            setattr(args, late, extra[0])
        else:  # said by the command's own parser: its usage, and the option meant when one is close
            _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}"
                                                f"{_did_you_mean(_command_parser(parser, args), extra)}")
    if args.verb is None:
        parser.print_help()
        return 2
    for name, value in vars(args).items():  # `--json=~/r.json`: the shell leaves ~ after '=' as it is
        if isinstance(value, str) and value.startswith("~"):
            setattr(args, name, os.path.expanduser(value))  # (was a folder named '~' in the working folder)
    from gensis.progress import bars_off
    from gensis.rundir import releasing_locks

    from gensis.signals import stop_on_sigterm

    stop_on_sigterm()  # SIGTERM stops it as a Ctrl-C does, exit 143
    import warnings

    # PIL's DecompressionBombWarning for a large photo or scan (two lines naming PIL's source file): said in one
    # gensis line instead (gensis.data.sources._note_large); a filter on this process, which the CLI owns
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit of \d+ pixels")
    try:
        try:
            # folders this command locked are free again (the demo runs stages in this process); --quiet: every
            # bar of the command (a stage's feature or latent pass too), not its own only
            with releasing_locks(), bars_off(getattr(args, "quiet", False)):
                _check_processes(args)
                if getattr(args, "print_config", False) and not on_main_rank():
                    return 0  # under torchrun: the config once, from rank 0
                result = args.func(args)
        except BaseException as e:
            # under torchrun: tell the other ranks (they stop at their next wait with one line) and leave the
            # process group without waiting for them. Only a command that loaded gensis.distributed can have a
            # process group: importing it here would import torch, which a Ctrl-C in the middle of torch's own
            # import leaves half-registered (a second import raised a RuntimeError traceback over the Ctrl-C)
            dist = sys.modules.get("gensis.distributed")
            if dist is not None:
                peer = dist.as_peer_failure(e)  # before report_failure, which would leave this rank's own message
                dist.report_failure(e)
                dist.abort()
                if peer is not None:
                    raise peer from None
            raise
        sys.stdout.flush()  # here, not at exit: a reader that went away is then caught below
        return int(result or 0)
    except UserError as e:
        if debug:
            raise
        from gensis.errors import prints_error

        if prints_error(e):  # a verdict all ranks of a torchrun job share is printed once, by rank 0
            print(f"gensis: error: {_error_line(e)}", file=sys.stderr)
        else:  # rank 0 prints it; torchrun ends this process once rank 0 has exited
            import time

            time.sleep(QUIET_RANK_GRACE_S)
        return 2
    except KeyboardInterrupt as e:
        from gensis.errors import INTERRUPTED, Terminated

        if isinstance(e, Terminated):
            print(f"{INTERRUPTED} (SIGTERM){_continue_hint(args)}", file=sys.stderr)
            return 143  # 128 + SIGTERM, as a shell reports a process the signal ended
        print(f"{INTERRUPTED}{_continue_hint(args)}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `gensis eval knn ... | head`: the reader left; stop quietly, as other tools do
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        except (OSError, ValueError):
            pass
        return 141  # 128 + SIGPIPE, the status a shell reports for a killed writer
    except (NotADirectoryError, FileExistsError) as e:  # a file where a folder goes: e.g. --out FILE
        if debug:
            raise
        why = "a file of that name is in the way" if e.errno == errno.EEXIST else "part of that path is a file"
        print(f"gensis: error: cannot make the folder {e.filename}: {why} (give a folder, or a path where one "
              f"can be made)", file=sys.stderr)
        return 2
    except OSError as e:  # the environment, not the input: full disk, read-only folder, missing permission
        from gensis.errors import environment_error

        # inputs' reads became a UserError where they happen (gensis.errors.reading); what is left is a write
        # when tagged so (or by its errno), else unknown: "access", not a guess
        line = environment_error(e)
        if debug or line is None:
            raise
        print(f"gensis: error: {line} (files already written are intact; fix the cause and {_run_again(args)})",
              file=sys.stderr)
        return 1


# How a command that stopped goes on, for those that continue where they stopped (files already written are kept):
# (verb, sub-command) -> the hint. The others (eval, eldm sample/eval, export, report ...) redo their work when run
# again. A demo, typed or one of its stages run as a command (``IN_DEMO`` set), continues when run again.
_RESUME = "run the same command with --resume to continue from its last epoch checkpoint"
_CONTINUES = {
    ("pretrain", None): _RESUME,
    ("eldm", "train"): _RESUME,
    ("eldm", "train-ae"): _RESUME,
    ("bank", "generate"): "run the same command again to continue (finished shards are kept)",
    ("wsi", "tile"): "run the same command again to continue (finished slides are kept)",
    ("wsi", "embed"): "run the same command again to continue (finished slides are kept)",
    ("wsi", "export"): "run the same command again to continue (tiles already written are kept)",
    ("wsi", "demo"): "run the same command again with the same --out: it continues",
    ("mil", "train"): "run the same command again to continue (finished folds and seeds are kept)",
}
_DEMO = "run the demo again with the same --out: it continues"


def _how_to_continue(args: argparse.Namespace) -> str | None:
    """The hint of ``_CONTINUES`` for the command ``args`` ran (a demo's when it is one), None for a command that
    redoes its work when run again."""
    from gensis.train.next_step import IN_DEMO

    if args.verb == "demo" or os.environ.get(IN_DEMO):
        return _DEMO
    return _CONTINUES.get((args.verb, getattr(args, f"{args.verb}_cmd", None)))


def _check_processes(args: argparse.Namespace) -> None:
    """torchrun splits the work of the commands that say so (``set_defaults(several_processes=True)``: the
    trainers and ``bank generate``). Any other command would run whole in every process, each printing its
    results and writing the same files: under torchrun it is refused before any work, in one line (rank 0's)."""
    from gensis.errors import UserError, same_on_every_rank

    world = os.environ.get("WORLD_SIZE", "1")
    if getattr(args, "several_processes", False) or world in ("", "0", "1"):
        return
    sub = getattr(args, f"{args.verb}_cmd", None) or getattr(args, "evaluation", None)
    name = " ".join(w for w in ("gensis", args.verb, sub) if w)
    with same_on_every_rank():
        raise UserError(f"{name} runs as one process, and torchrun started {world}: run it without torchrun "
                        f"(torchrun splits the work of pretrain, eldm train-ae, eldm train and bank generate)")


def _run_again(args: argparse.Namespace) -> str:
    """How to go on after the environment stopped a command: its ``_how_to_continue``, else run it again."""
    return _how_to_continue(args) or "run the command again"


def _continue_hint(args: argparse.Namespace) -> str:
    """After a Ctrl-C, for the commands that continue where they stopped: how (files already written are intact)."""
    hint = _how_to_continue(args)
    return f"; {hint}" if hint else ""


def _error_line(e: Exception) -> str:
    """The line of a ``UserError``; a stopped training run run by a demo (its side lane: ``IN_DEMO`` set) says
    what to do next in the demo's terms (``gensis.train.next_step``)."""
    from gensis.train.next_step import IN_DEMO, error_line

    line = error_line(e, demo=True) if os.environ.get(IN_DEMO) else None
    return line or _one_line(e)


def _one_line(e: Exception) -> str:
    """A UserError's message. gensis's own loaders hand a worker's error back unchanged
    (``gensis.data.workers.WorkerLoader``); one from a plain torch DataLoader arrives wrapped in the worker's
    traceback ("Caught UserError in DataLoader worker process 0. Original Traceback ..."): keep its own line."""
    msg = str(e)
    if "Original Traceback" in msg or "\n" in msg:
        last = [l for l in msg.strip().splitlines() if l.strip()][-1]
        msg = last.split("Error: ", 1)[1] if last.startswith("gensis.") and "Error: " in last else last
    return msg


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by every verb."""
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")


def print_config(stage: str, cfg) -> int:
    """``--print-config``: the resolved config as YAML (exit 0), once it passes the checks the run makes before
    reading data (``gensis.configs.whole``: the rules that combine keys); a config that breaks one is the run's
    one-line error."""
    from gensis.configs.whole import check_whole

    check_whole(stage, cfg.to_dict())
    print(cfg.to_yaml(), end="")
    return 0


if __name__ == "__main__":
    entry()
