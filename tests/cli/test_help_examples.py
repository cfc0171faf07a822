"""Every command's --help shows examples, and every example command line there is one gensis accepts (an option
renamed or dropped would otherwise live on in the help text)."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest

from gensis.cli.main import build_parser


def _commands(parser: argparse.ArgumentParser, name: str = "gensis"):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for sub in subs:
        for n, p in sub.choices.items():
            yield from _commands(p, f"{name} {n}")


def _example_lines(parser: argparse.ArgumentParser) -> list[str]:
    """The `gensis ...` lines of its description and epilog, without a trailing `# note` or `(note)`."""
    lines = []
    for text in (parser.description or "", parser.epilog or ""):
        for line in text.splitlines():
            line = line.strip().removeprefix("example:").strip()
            if not line.startswith("gensis ") or "..." in line:
                continue
            line = re.sub(r"\s+(#.*|\(.*\))$", "", line)
            lines.append(re.sub(r"\s+\[[^]]*\]", "", line))  # [--optional parts] of a synopsis
    return lines


COMMANDS = dict(_commands(build_parser()))


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_s_help_has_examples_gensis_accepts(name):
    lines = _example_lines(COMMANDS[name])
    assert any(line.startswith(name + " ") for line in lines), f"`{name} --help` shows no example"
    for line in lines:
        argv = shlex.split(line)[1:]
        try:
            args, extra = build_parser().parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"the example `{line}` of `{name} --help` is refused")
        if getattr(args, "late_positional", None) and len(extra) == 1:  # `export RUN --to timm OUT`, as main() reads it
            extra = []
        assert all("=" in e and not e.startswith("-") for e in extra), (line, extra)
        assert args.verb == argv[0], line
