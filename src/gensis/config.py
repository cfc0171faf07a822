"""Layered configuration: YAML presets (plain data) + dotted command-line overrides.

As in DINOv2, a preset file holds only plain data; ``base.yaml`` holds every key with its default and each
preset (``smoke``, ``demo``, ``small``, ``paper``) is a delta on top of it. Overrides such as
``optim.epochs=3`` are parsed with YAML scalars, so ``3`` is an int, ``1e-3`` a float, ``[2,4]`` a list.
A key that does not exist is an error naming the closest valid key: a typo never silently does nothing.
A preset's ``per_method`` section holds values for one SSL method only (``load_config``; docs/methods.md).
"""

from __future__ import annotations

import copy
import difflib
import math
import re
from importlib import resources
from pathlib import Path, PurePath
from typing import Any, Iterable

import yaml

from gensis.errors import UserError, reading

PRESETS = ("smoke", "demo", "small", "paper", "gpu")  # the sizes every image family (pretrain, eldm, bank) ships


def preset_names(family: str) -> list[str]:
    """The presets shipped for a config family (its ``configs/<family>/*.yaml``): the sizes of ``PRESETS`` in that
    order, then the others (``histo`` ...), ``base`` (every key's default; mil's paper settings) last."""
    stems = {f.name[:-len(".yaml")] for f in resources.files("gensis.configs").joinpath(family).iterdir()
             if f.name.endswith(".yaml")}
    return sorted(stems, key=lambda s: (s == "base", PRESETS.index(s) if s in PRESETS else len(PRESETS), s))


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as dotted leaf keys: ``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (an empty section
    leaves no key)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def dotted_keys(cfg: dict, prefix: str = "") -> list[str]:
    """Every dotted key of a nested mapping, sections included, in order: ``{"optim": {"lr": 1}}`` ->
    ``["optim", "optim.lr"]``."""
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, dict):
            keys.extend(dotted_keys(v, full + "."))
    return keys


def _unknown_key(key: str, valid: Iterable[str]) -> UserError:
    valid = list(valid)
    close = [k for k in valid if k.lower() == key.lower()]  # keys are lower case: "optim.LR" is optim.lr
    close = close or difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # a typo in the last part only ("optim.epoks")
        tail = key.rsplit(".", 1)[-1]
        close = [k for k in valid if difflib.get_close_matches(tail, [k.rsplit(".", 1)[-1]], cutoff=0.7)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown config key '{key}'{hint}")


def merge(base: dict, delta: dict, where: str = "", _prefix: str = "", _valid: list[str] | None = None) -> dict:
    """Return ``base`` updated by ``delta``; every key of ``delta`` must already exist in ``base``."""
    valid = _valid if _valid is not None else dotted_keys(base)
    out = copy.deepcopy(base)
    for k, v in (delta or {}).items():
        full = f"{_prefix}{k}"
        if k not in out:
            while isinstance(v, dict) and v:  # report the whole dotted key the user typed
                k2, v = next(iter(v.items()))
                full = f"{full}.{k2}"
            raise UserError(f"{_unknown_key(full, valid)}{' (in ' + where + ')' if where else ''}")
        if isinstance(out[k], dict) and isinstance(v, dict):
            out[k] = merge(out[k], v, where, full + ".", valid)
        elif out[k] is not None and isinstance(v, dict) and v:  # optim.lr.x=1: was "optim.lr={'x': 1}: must be ..."
            sub, inner = full, v
            while isinstance(inner, dict) and inner:
                k2, inner = next(iter(inner.items()))
                sub = f"{sub}.{k2}"
            raise UserError(f"unknown config key '{sub}': '{full}' is a value, not a section"
                            f"{' (in ' + where + ')' if where else ''}")
        elif isinstance(out[k], dict) and v is not None:
            raise UserError(f"config key '{full}' is a section, not a value")
        else:
            out[k] = plain(v)
    return out


def plain(value: Any) -> Any:
    """A value given from Python as the plain data a YAML config holds (a copy): numpy and torch scalars as
    ``int`` / ``float`` / ``bool`` / ``str`` (``.item()``), arrays and tuples as lists, mappings as dicts.
    ``np.int64(2)`` (e.g. from a sweep over ``np.arange``) is the integer 2: refused before with the confusing
    ``optim.epochs=2: must be an integer >= 1``, and an ``np.float64`` passed the check, then failed when the
    run's ``config.yaml`` was written."""
    if isinstance(value, (tuple, list)):
        return [plain(x) for x in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy / torch scalars (0-d) and arrays
        return value.tolist()
    return copy.deepcopy(value)


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads exponent floats without a dot (``1e-3``, ``5E-4``) as floats, as YAML 1.2
    and the command line's ``key=value`` do (PyYAML follows YAML 1.1, where ``lr: 1e-3`` is the string '1e-3')."""


_Loader.add_implicit_resolver(  # copies SafeLoader's resolvers first: yaml.safe_load is unchanged
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` of a user's YAML (a preset file): plain data, ``1e-3`` a float."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = load_yaml(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse {where}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of config keys")
    return data


def _preset_text(name: str, family: str) -> str:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        from gensis.inputs import input_file

        path = input_file(path, "config file")
        with reading(f"the config file {name}"):
            return path.read_text()
    try:
        return resources.files("gensis.configs").joinpath(family, f"{name}.yaml").read_text()
    except FileNotFoundError:
        names = preset_names(family)
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid presets: {', '.join(names)}"
        raise UserError(f"unknown preset '{name}'{hint}") from None


# a number in scientific notation without YAML 1.1's dot and exponent sign: 1e-3, 5E4, .5e-3, 2.e3
_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _exponents(value: Any) -> Any:
    """``value`` with YAML 1.1's strings "1e-3" read as numbers, in lists and mappings too (only such numbers:
    "inf", "nan", "1_0" stay strings, e.g. for model.arch)."""
    if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
        return float(value)
    if isinstance(value, list):
        return [_exponents(v) for v in value]
    if isinstance(value, dict):
        return {k: _exponents(v) for k, v in value.items()}
    return value


def parse_overrides(items: Iterable[str]) -> dict:
    """``["optim.epochs=3", "data.image_size=32"]`` -> nested dict."""
    delta: dict = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key=value (e.g. optim.epochs=3)")
        key, raw = item.split("=", 1)
        if not key.strip():
            raise UserError(f"override '{item}' has no key before '=' (e.g. optim.epochs=3)")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        value = _exponents(value)
        node = delta
        parts = key.strip().split(".")
        for i, p in enumerate(parts[:-1]):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):  # `optim=3 optim.epochs=5`: a TypeError traceback before
                raise UserError(f"override '{item}' sets a key inside '{'.'.join(parts[:i + 1])}', which an earlier "
                                f"override set to a value ({node!r}): give one or the other")
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise UserError(f"override '{item}' replaces the keys an earlier override set inside it: give one or "
                            f"the other")
        node[parts[-1]] = value
    return delta


PER_METHOD = "per_method"  # section of a preset (or base.yaml): deltas applied only when `method` matches


def _method_names(family: str) -> list[str] | None:
    from gensis.configs.schema import method_names

    return method_names(family)


def _unknown_method(name: Any, names: list[str], where: str = "") -> UserError:
    close = difflib.get_close_matches(str(name), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown method '{name}'{where} (valid: {', '.join(names)}){hint}")


def _split_per_method(family: str, data: dict, where: str) -> tuple[dict, dict]:
    """``data`` without its ``per_method`` section, and that section (``{method: delta}``), checked.

    Only families whose ``base.yaml`` has a top-level ``method`` key (``pretrain``) accept the section; its keys
    must be registered method names (``gensis.configs.schema.method_names``) and its values mappings of config
    keys that do not choose the method again.
    """
    if PER_METHOD not in data:
        return data, {}
    data = dict(data)
    section = data.pop(PER_METHOD)
    names = _method_names(family)
    if names is None:
        raise UserError(f"'{PER_METHOD}' in {where}: the {family} config has no 'method' to select by")
    if section is None:
        return data, {}
    if not isinstance(section, dict):
        raise UserError(f"'{PER_METHOD}' in {where} must map method names to config deltas")
    for name, delta in section.items():
        if name not in names:
            raise _unknown_method(name, names, f" in {where} {PER_METHOD}")
        if delta is not None and not isinstance(delta, dict):
            raise UserError(f"{PER_METHOD}.{name} in {where} must be a mapping of config keys")
        if delta and ("method" in delta or PER_METHOD in delta):
            raise UserError(f"{PER_METHOD}.{name} in {where} cannot set '{'method' if 'method' in delta else PER_METHOD}'")
        other = next((k for k in (delta or {}) if k in names and k != name), None)
        if other is not None:  # per_method.ibot.dino.*: applied only with ibot, which reads no dino.* key
            raise UserError(f"{PER_METHOD}.{name}.{other} in {where} would change nothing: {name} reads no {other}.* "
                            f"key (set it under {PER_METHOD}.{other})")
    return data, {k: v or {} for k, v in section.items()}


def load_config(family: str, preset: str = "demo", overrides: Iterable[str] | dict = (),
                where: str = "command line") -> dict:
    """Resolve ``configs/<family>/base.yaml`` -> preset -> command-line overrides into one plain dict.

    ``family`` is the stage (``pretrain``, ``eldm``, ``bank`` ...); ``preset`` a name shipped with the
    package (``smoke``, ``demo``, ``small``, ``paper``) or a path to a YAML file of deltas; ``overrides`` dotted
    ``key=value`` strings or an already nested dict of deltas (``where`` names them in errors).

    A preset (and ``base.yaml``) may hold a ``per_method`` section, ``{METHOD: {section: {key: value}}}``: the
    delta of the selected method (``method`` from the overrides, else the preset, else base) is merged right
    after the values of the file that holds it, so the order is base -> base's ``per_method`` -> preset ->
    preset's ``per_method`` -> overrides (the user's overrides always win). The result holds no ``per_method``:
    it is the resolved config runs save and stage keys hash. Every method's delta is checked, not only the
    selected one's.
    """
    if preset is not None and not isinstance(preset, (str, PurePath)):  # preset=3: was pathlib's TypeError
        raise UserError(f"preset must be a preset name ({', '.join(preset_names(family))}) or a YAML file, got "
                        f"{type(preset).__name__}")
    user = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
    base, base_pm = _split_per_method(family, _read_yaml(_preset_text("base", family), f"{family}/base.yaml"),
                                      f"{family}/base.yaml")
    layers = [(base, base_pm, f"{family}/base.yaml")]
    if preset and preset != "base":
        src = f"preset '{preset}'"
        layers.append((*_split_per_method(family, _read_yaml(_preset_text(preset, family), src), src), src))
    method = user.get("method", next((d["method"] for d, _, _ in reversed(layers) if "method" in d), None))
    names = _method_names(family)
    if names is not None and method not in names:
        raise _unknown_method(method, names)
    cfg = base
    for delta, per_method, src in layers:
        if delta is not base:
            cfg = merge(cfg, delta, where=src)
        for name, pm in per_method.items():  # every method's delta is checked, the selected one applied
            at = f"{src} {PER_METHOD}.{name}"
            validate(family, merge(base, pm, where=at), base, where=at)
            if name == method:
                cfg = merge(cfg, pm, where=at)
    cfg = merge(cfg, user, where=where)
    validate(family, cfg, base)
    return cfg


# ---------------------------------------------------------------------------------------------------------
# schema check (rules in gensis.configs.schema)


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, list):
        return "[" + ",".join(_fmt(x) for x in v) + "]"
    if isinstance(v, str):
        try:
            parsed = load_yaml(v)  # as an override is read: "1e-3" from Python is a string too
        except yaml.YAMLError:
            parsed = v
        if not isinstance(parsed, str):  # "2" from Python: shown as 2 it would look valid
            return f"'{v}' (a string)"
    return str(v)


def _num(x: float) -> str:
    return f"{x:g}"


def describe(rule) -> str:
    """'an integer >= 1', 'a number in [0, 1)', 'one of auto, cpu, cuda, cuda:N' ... (+ ' or null')."""
    k = rule.kind
    if k == "any":
        return "any value"
    if rule.choices:
        text = "one of " + ", ".join(rule.choices)
    elif k in ("int", "float"):
        text = "an integer" if k == "int" else "a finite number"
        lo = (f"[{_num(rule.ge)}" if rule.ge is not None else f"({_num(rule.gt)}" if rule.gt is not None else None)
        hi = (f"{_num(rule.le)}]" if rule.le is not None else f"{_num(rule.lt)})" if rule.lt is not None else None)
        if lo and hi:
            text += f" in {lo}, {hi}"
        elif lo:
            text += f" {'>=' if lo[0] == '[' else '>'} {lo[1:]}"
        elif hi:
            text += f" {'<=' if hi[-1] == ']' else '<'} {hi[:-1]}"
    elif k == "bool":
        text = "true or false"
    elif k == "str":
        text = "a string"
    else:  # list
        text = "a non-empty list" if rule.nonempty else "a list"
        if rule.length is not None:
            text += f" of {rule.length}"
        if rule.item is not None and rule.item.kind != "any":
            text += (" " if rule.length is not None else " of ") + describe(rule.item).replace("an integer", "integers").replace(
                "a finite number", "finite numbers").replace("true or false", "booleans").replace("a string", "strings")
        if rule.increasing:
            text += ", non-decreasing"
    return text + (" or null" if rule.nullable else "")


def check_value(value: Any, rule) -> bool:
    """True when ``value`` satisfies ``rule`` (see ``gensis.configs.schema.Rule``)."""
    if value is None:
        return rule.nullable or rule.kind == "any"
    k = rule.kind
    if k == "any":
        return _finite_everywhere(value)
    if k == "bool":
        return isinstance(value, bool)
    if k == "str":
        if isinstance(value, bool) and rule.choices:  # YAML 1.1 reads off/on/no/yes as booleans
            value = {False: "off", True: "on"}[value] if {"off", "on"} & set(rule.choices) else value
        if not isinstance(value, str):
            return False
        if rule.choices:
            import re

            return any(value == c or (c.endswith(":N") and re.fullmatch(re.escape(c[:-1]) + r"\d+", value))
                       for c in rule.choices)
        return True
    if k in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if k == "int" and not isinstance(value, int):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return not ((rule.ge is not None and value < rule.ge) or (rule.gt is not None and value <= rule.gt)
                    or (rule.le is not None and value > rule.le) or (rule.lt is not None and value >= rule.lt))
    if k == "list":
        if not isinstance(value, list):
            return False
        if (rule.length is not None and len(value) != rule.length) or (rule.nonempty and not value):
            return False
        if rule.item is not None and not all(check_value(x, rule.item) for x in value):
            return False
        if rule.increasing and any(b < a for a, b in zip(value, value[1:])):
            return False
        return _finite_everywhere(value)
    raise ValueError(f"unknown rule kind {k}")


def _finite_everywhere(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite_everywhere(x) for x in value)
    if isinstance(value, dict):
        return all(_finite_everywhere(x) for x in value.values())
    return True


def implied_rule(default: Any):
    """The rule of a key without an explicit one: its default's type (null: anything)."""
    from gensis.configs.schema import Bool, Float, Int, List, Rule, Str

    if default is None:
        return Rule("any")
    if isinstance(default, bool):
        return Bool()
    if isinstance(default, int):
        return Int()
    if isinstance(default, float):
        return Float()
    if isinstance(default, str):
        return Str()
    if isinstance(default, list):
        kinds = {implied_rule(x).kind for x in default}
        item = implied_rule(default[0]) if len(kinds) == 1 else None
        if item is not None and item.kind == "int" and any(isinstance(x, float) for x in default):
            item = Float()
        return List(item)
    return Rule("any")


def validate(family: str, cfg: dict, base: dict, where: str = "") -> None:
    """Check every key of ``cfg`` against its rule; the first bad value is one ``UserError`` line."""
    from gensis.configs.schema import rules_for

    rules = rules_for(family, base)

    def walk(node: dict, dflt: dict, prefix: str) -> None:
        for k, v in node.items():
            full = f"{prefix}{k}"
            d = dflt.get(k) if isinstance(dflt, dict) else None
            if isinstance(d, dict) and full not in rules:
                if v is None:
                    continue  # a whole section set to null keeps its defaults' meaning (handled by merge)
                walk(v if isinstance(v, dict) else {}, d, full + ".")
                continue
            rule = rules.get(full) or implied_rule(d)
            if isinstance(d, float) and full not in rules and isinstance(v, int) and not isinstance(v, bool):
                continue  # an int where a float is expected
            if not check_value(v, rule):
                raise UserError(f"{full}={_fmt(v)}: must be {describe(rule)}{' (in ' + where + ')' if where else ''}")

    walk(cfg, base, "")


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
