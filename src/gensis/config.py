"""Layered configuration: YAML presets (plain data) + dotted command-line overrides.

As in DINOv2, a preset file holds only plain data; ``base.yaml`` holds every key with its default and each
preset (``smoke``, ``demo``, ``small``, ``paper``) is a delta on top of it. Overrides such as
``optim.epochs=3`` are parsed with YAML scalars, so ``3`` is an int, ``1e-3`` a float, ``[2,4]`` a list.
A key that does not exist is an error naming the closest valid key: a typo never silently does nothing.
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import yaml

from gensis.errors import UserError

PRESETS = ("smoke", "demo", "small", "paper")


def _flat_keys(cfg: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, dict):
            keys.extend(_flat_keys(v, full + "."))
    return keys


def _unknown_key(key: str, valid: Iterable[str]) -> UserError:
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    if not close:  # a typo in the last part only ("optim.epoks")
        tail = key.rsplit(".", 1)[-1]
        close = [k for k in valid if difflib.get_close_matches(tail, [k.rsplit(".", 1)[-1]], cutoff=0.7)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return UserError(f"unknown config key '{key}'{hint}")


def merge(base: dict, delta: dict, where: str = "", _prefix: str = "", _valid: list[str] | None = None) -> dict:
    """Return ``base`` updated by ``delta``; every key of ``delta`` must already exist in ``base``."""
    valid = _valid if _valid is not None else _flat_keys(base)
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
        elif isinstance(out[k], dict) and v is not None:
            raise UserError(f"config key '{full}' is a section, not a value")
        else:
            out[k] = copy.deepcopy(v)
    return out


def _read_yaml(text: str, where: str) -> dict:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise UserError(f"cannot parse {where}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of config keys")
    return data


def _preset_text(name: str, family: str) -> str:
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file not found: {name}")
        return path.read_text()
    try:
        return resources.files("gensis.configs").joinpath(family, f"{name}.yaml").read_text()
    except FileNotFoundError:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; valid presets: {', '.join(PRESETS)}"
        raise UserError(f"unknown preset '{name}'{hint}") from None


def parse_overrides(items: Iterable[str]) -> dict:
    """``["optim.epochs=3", "data.image_size=32"]`` -> nested dict."""
    delta: dict = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"override '{item}' must look like key=value (e.g. optim.epochs=3)")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        node = delta
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return delta


def load_config(family: str, preset: str = "demo", overrides: Iterable[str] = ()) -> dict:
    """Resolve ``configs/<family>/base.yaml`` -> preset -> command-line overrides into one plain dict.

    ``family`` is the stage (``pretrain``, ``eldm``, ``bank`` ...); ``preset`` a name shipped with the
    package (``smoke``, ``demo``, ``small``, ``paper``) or a path to a YAML file of deltas.
    """
    cfg = _read_yaml(_preset_text("base", family), f"{family}/base.yaml")
    if preset and preset != "base":
        cfg = merge(cfg, _read_yaml(_preset_text(preset, family), f"preset '{preset}'"), where=f"preset '{preset}'")
    cfg = merge(cfg, parse_overrides(overrides), where="command line")
    return cfg


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
