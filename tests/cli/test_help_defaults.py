"""Every option of every verb whose default is a value says it in --help (a new user reads --help for them)."""

import argparse

from gensis.cli.main import build_parser


def _actions(parser: argparse.ArgumentParser, name: str):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub, p in a.choices.items():
                yield from _actions(p, f"{name} {sub}")
        else:
            yield name, parser, a


def test_every_option_with_a_default_shows_it():
    missing = []
    for name, parser, a in _actions(build_parser(), "gensis"):
        if not a.option_strings or a.default is None or a.default is False or a.default is argparse.SUPPRESS:
            continue
        if a.help in (None, argparse.SUPPRESS):
            continue
        shown = "default" in a.help.lower() or issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
        if not shown:
            missing.append(f"{name} {a.option_strings[-1]} (default {a.default!r})")
    assert not missing, missing
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    wsi = next(a for a in sub.choices["wsi"]._actions if isinstance(a, argparse._SubParsersAction))
    assert "(default: 256)" in " ".join(wsi.choices["tile"].format_help().split())


def test_eval_help_names_only_its_own_options(monkeypatch):
    """An option an evaluation's --help mentions is one it has (`eval all --help` said '--random-like ... without
    --train', an option `eval all` lacks: its data is a config section's); knn/linear may name robustness' --ood."""
    import re

    monkeypatch.setenv("COLUMNS", "1000")  # no line breaks inside option names
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    evals = next(a for a in sub.choices["eval"]._actions if isinstance(a, argparse._SubParsersAction))
    foreign = []
    for name, p in evals.choices.items():
        own = {o for a in p._actions for o in a.option_strings}
        text = p.format_help().replace("robustness' --ood", "")
        foreign += [f"eval {name}: {o}" for o in set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - own]
    assert not foreign, foreign


def test_every_slide_and_mil_option_says_what_it_does():
    """`wsi embed --batch-size` (default 256) and `wsi demo --seed` had no help text, so their defaults were not
    shown either (the test above skips options without help); `--quiet` of embed, export, demo and mil train
    said nothing; `mil predict --quiet` said 'was refused' (a change note, not what it does)."""
    bare = [f"{name} {a.option_strings[-1]}" for name, _, a in _actions(build_parser(), "gensis")
            if name.split()[1:2] in (["wsi"], ["mil"]) and a.option_strings and a.help is None]
    assert not bare, bare
    text = " ".join(a.help or "" for name, _, a in _actions(build_parser(), "gensis") if name.startswith("gensis mil"))
    assert "was refused" not in text


def test_readme_wsi_tile_usage_alternatives_are_exclusive(capsys):
    """README's `gensis wsi tile` usage wrote `[--slide-mpp MPP | --mpp-csv FILE]`, as if one excluded the other;
    both are taken together (the CSV per slide, --slide-mpp for the slides it lacks). Every `[A | B]` there is a
    pair the parser refuses together."""
    import re
    from pathlib import Path

    import pytest

    text = (Path(__file__).parents[2] / "README.md").read_text()
    usage = text[text.index("gensis wsi tile SLIDES..."):].split("\ngensis pretrain")[0]
    pairs = re.findall(r"\[(--[\w-]+) ([^\]|]*?)\s*\|\s*(--[\w-]+) ([^\]]*?)\]", usage)
    assert pairs
    def value(v: str) -> str:
        return "0.5" if v.strip().isupper() else v.strip()  # a placeholder (MPP): a valid number

    for a, va, b, vb in pairs:
        capsys.readouterr()
        with pytest.raises(SystemExit):
            build_parser().parse_args(["wsi", "tile", "s.svs", "--out", "T", a, value(va), b, value(vb)])
        assert "not allowed with" in capsys.readouterr().err, (a, b)
