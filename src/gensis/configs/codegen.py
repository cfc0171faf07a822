"""Generate ``gensis/configs/typed.py`` (typed config dataclasses) from ``base.yaml`` + ``schema.py``.

    python -m gensis.configs.codegen          # rewrite typed.py
    python -m gensis.configs.codegen --check  # exit 1 when typed.py is out of date (a test runs this)

Every family folder under ``gensis/configs`` with a ``base.yaml`` gets a config class (``PretrainConfig``,
``ELDMConfig``, ``BankConfig``, ``MILConfig``) and one dataclass per section. Each key's field type comes from
its schema rule (``rules_for``), or, for a key without one, from its default (``implied_rule``): the same
rules ``validate`` applies, so the types and the check cannot disagree. Defaults are the ``base.yaml`` values
and the comments next to keys become the fields' comments. Run it after adding or removing a config key.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any

PREFIX = {"pretrain": "Pretrain", "eldm": "ELDM", "bank": "Bank", "mil": "MIL"}
TARGET = Path(__file__).with_name("typed.py")


def families() -> list[str]:
    """Config families: folders of ``gensis/configs`` holding a ``base.yaml`` (sorted, pretrain first)."""
    root = resources.files("gensis.configs")
    found = [p.name for p in root.iterdir() if p.is_dir() and p.joinpath("base.yaml").is_file()]
    order = list(PREFIX)
    return sorted(found, key=lambda f: (order.index(f) if f in order else len(order), f))


def yaml_comments(text: str) -> dict[str, str]:
    """dotted key → the comment on its line of a YAML file of nested mappings (continuation lines joined)."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last: str | None = None
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):(.*)$", line)
        if not m:
            c = re.match(r"^\s+#\s?(.*)$", line)
            if c and last is not None and last in out:  # a comment-only line continuing the previous key's
                out[last] += " " + c.group(1).strip()
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        full = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        comment = _comment(rest)
        last = full
        if comment:
            out[full] = comment
    return out


def _comment(rest: str) -> str:
    """The ``# comment`` of a YAML value text (a '#' inside quotes is not one)."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1].isspace()):
            return rest[i + 1:].strip()
    return ""


def camel(name: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in name.split("_") if p)


def annotation(rule: Any) -> str:
    """Python type of a schema rule."""
    kind = rule.kind
    if kind == "any":
        return "Any"
    if kind == "list":
        text = f"list[{annotation(rule.item) if rule.item is not None else 'Any'}]"
    elif kind == "str" and rule.choices and not any(c.endswith(":N") for c in rule.choices):
        text = "Literal[" + ", ".join(json.dumps(c) for c in rule.choices) + "]"
    else:
        text = {"int": "int", "float": "float", "bool": "bool", "str": "str"}[kind]
    return f"{text} | None" if rule.nullable else text


def literal(value: Any) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, (bool, int, float)) or value is None:
        return repr(value)
    raise TypeError(f"cannot write a default of type {type(value).__name__}")


def _classes(family: str, base: dict[str, Any], rules: dict[str, Any], comments: dict[str, str]) -> list[str]:
    """Source of the section classes of ``family`` (innermost first) and its config class (last)."""
    from gensis.config import implied_rule

    prefix = PREFIX.get(family, camel(family))
    blocks: list[str] = []

    def section(node: dict[str, Any], path: list[str]) -> str:
        name = prefix + "".join(camel(p) for p in path) if path else f"{prefix}Config"
        dotted = ".".join(path)
        lines: list[str] = []
        for key, default in node.items():
            full = ".".join(path + [key])
            if not key.isidentifier():
                raise ValueError(f"config key '{full}' is not a Python identifier")
            comment = comments.get(full)
            if comment:
                lines.append(f"    #: {comment}")
            if isinstance(default, dict) and full not in rules:
                sub = section(default, path + [key])
                lines.append(f"    {key}: {sub} = field(default_factory={sub})")
                continue
            rule = rules.get(full) or implied_rule(default)
            typ = annotation(rule)
            if isinstance(default, list):
                value = f"field(default_factory=lambda: {literal(default)})"
            else:
                value = literal(default)
            lines.append(f"    {key}: {typ} = {value}")
        if path:
            doc = f'    """``{dotted}`` of the {family} config."""'
            head = f"@dataclass(kw_only=True)\nclass {name}(ConfigSection):"
        else:
            doc = (f'    """The whole ``{family}`` config (``configs/{family}/base.yaml``), validated on construction '
                   f'like the command line."""\n\n    family: ClassVar[str] = "{family}"')
            head = f"@dataclass(kw_only=True)\nclass {name}(StageConfig):"
        body = "\n".join(lines) if lines else "    pass"
        blocks.append(f"{head}\n{doc}\n\n{body}\n")
        return name

    section(base, [])
    return blocks


def render() -> str:
    """The text of ``typed.py``."""
    from gensis.configs.schema import rules_for
    from gensis.configs.typed_base import base_config

    fams = families()
    parts = [
        '"""Typed configs: one dataclass per config section of every stage. GENERATED by\n'
        "``python -m gensis.configs.codegen`` from ``configs/<family>/base.yaml`` (keys, defaults, comments) and\n"
        "``configs/schema.py`` (types): do not edit; rerun it after changing a config key. Behaviour (``from_preset``,\n"
        '``from_dict``, ``to_dict``, ``with_overrides``, validation): ``gensis.configs.typed_base``."""',
        "",
        "# ruff: noqa: E501",
        "from __future__ import annotations",
        "",
        "from dataclasses import dataclass, field",
        "from typing import Any, ClassVar, Literal",
        "",
        "from gensis.configs.typed_base import ConfigSection, StageConfig",
        "",
        '__all__ = ["CONFIGS", ' + ", ".join(json.dumps(PREFIX.get(f, camel(f)) + "Config") for f in fams) + "]",
        "",
    ]
    for fam in fams:
        base = base_config(fam)
        text = resources.files("gensis.configs").joinpath(fam, "base.yaml").read_text()
        blocks = _classes(fam, base, rules_for(fam, base), yaml_comments(text))
        parts.append(f"\n# {'-' * 100}\n# {fam}\n")
        parts.extend("\n\n" + b for b in blocks)
    parts.append("\n\n# stage (family) -> its config class")
    parts.append("CONFIGS: dict[str, type[StageConfig]] = {"
                 + ", ".join(f'"{f}": {PREFIX.get(f, camel(f))}Config' for f in fams) + "}")
    return "\n".join(parts).replace("\n\n\n\n", "\n\n\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date: run `python -m gensis.configs.codegen`", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
