"""Behaviour of the typed configs (``gensis.configs.typed``): one dataclass per config section.

The classes themselves are generated (``python -m gensis.configs.codegen``) from each family's ``base.yaml``
(keys and defaults) and ``gensis.configs.schema`` (rules → field types), so the YAML files and the schema
stay the one source of truth: values are checked by the same ``gensis.config.validate`` as the command
line, with the same one-line ``UserError`` (``optim.epochs=0: must be an integer >= 1``).

    cfg = PretrainConfig.from_preset("demo", {"optim.epochs": 2})   # base.yaml → preset → overrides
    cfg.optim.epochs                                                 # 2 (attribute access, nested)
    cfg.to_dict()                                                    # the plain dict the stages read
    cfg.with_overrides(["optim.lr=1e-3"])                            # a new, validated config
    PretrainConfig(optim=PretrainOptim(epochs=0))                    # UserError, as on the command line

Fields may be assigned after construction (``cfg.optim.epochs = 3``); ``validate()`` checks them again, and
every stage validates the config it is given before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from gensis.errors import UserError

Overrides = Mapping[str, Any] | Sequence[str]
S = TypeVar("S", bound="ConfigSection")
C = TypeVar("C", bound="StageConfig")


@functools.lru_cache(maxsize=None)
def _base_cached(family: str) -> dict[str, Any]:
    from gensis.config import load_config

    return load_config(family, "base")


def base_config(family: str) -> dict[str, Any]:
    """``configs/<family>/base.yaml``: every key with its default (a fresh copy)."""
    return copy.deepcopy(_base_cached(family))


def nest_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"optim.epochs": 2, "data": {"limit": 64}}`` → nested dict (values kept as given, not parsed)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        node = out
        parts = str(key).split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(nest_overrides(value))
        else:
            node[parts[-1]] = nest_overrides(value) if isinstance(value, Mapping) else value
    return out


def overrides_delta(overrides: Overrides | None) -> dict[str, Any]:
    """Overrides as a nested delta: a mapping (dotted or nested keys, values as given) or ``key=value``
    strings (values parsed as on the command line)."""
    if not overrides:
        return {}
    if isinstance(overrides, Mapping):
        return nest_overrides(overrides)
    from gensis.config import parse_overrides

    return parse_overrides(_override_list(overrides))


def _override_list(overrides: Any) -> list[Any]:
    """``key=value`` overrides as a list; a string or a non-sequence (``overrides=5``: was a TypeError) is a
    UserError."""
    if isinstance(overrides, str):
        raise UserError(f"overrides must be a mapping or a list of key=value strings, got the string '{overrides}'")
    if not isinstance(overrides, Iterable):
        raise UserError(f"overrides must be a mapping or a list of key=value strings, got {type(overrides).__name__}")
    return list(overrides)


def resolve(family: str, preset: str = "demo", overrides: Overrides | None = None) -> dict[str, Any]:
    """The validated plain dict of ``base.yaml`` → ``preset`` → ``overrides`` (the command line's path: a
    ``method`` in the overrides selects the presets' ``per_method`` values)."""
    from gensis.config import load_config

    if overrides is None or isinstance(overrides, Mapping):
        return load_config(family, preset, nest_overrides(overrides or {}), where="overrides")
    return load_config(family, preset, _override_list(overrides))


def complete(family: str, given: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """``given`` (full or partial nested dict) on top of ``base.yaml``, validated: unknown keys and bad values
    are one-line ``UserError``s."""
    from gensis.config import merge, validate

    full = merge(base_config(family), dict(given), where=where)
    validate(family, full, _base_cached(family))
    return full


class ConfigSection:
    """A section of a config: a dataclass whose fields are values or sections (generated subclasses)."""

    def __setattr__(self, name: str, value: Any) -> None:
        """Only the section's keys can be set: a typo (``cfg.optim.epoks = 3``) is a ``UserError`` naming the
        closest key, not a new attribute the stages would never read."""
        names = [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]
        if name not in names and not name.startswith("_"):
            import difflib

            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f" (its keys: {', '.join(names)})"
            raise UserError(f"unknown config key '{name}' in {type(self).__name__}{hint}")
        field = next((f for f in dataclasses.fields(self) if f.name == name), None)  # type: ignore[arg-type]
        sub = _section_type(field) if field is not None else None
        if sub is not None and isinstance(value, Mapping):  # cfg.optim = {"epochs": 3}: a section again, made
            from gensis.config import merge  # of its defaults + the mapping (as the constructor does)

            value = sub._build(merge(sub().to_dict(), nest_overrides(value), where=f"section '{name}'"), f"{name}.")
        elif sub is None and not name.startswith("_"):
            from gensis.config import plain

            value = plain(value)  # np.int64(2) as 2, a tuple as a list: what config.yaml can hold
        object.__setattr__(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The section as a plain nested dict (copies: editing it leaves the object alone)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, ConfigSection) else copy.deepcopy(value)
        return out

    @classmethod
    def _build(cls: type[S], data: Mapping[str, Any], prefix: str = "") -> S:
        """An instance from a complete, already merged dict (sections built recursively)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        stale = [k for k in data if k not in names]
        if stale:  # base.yaml has a key the generated classes lack: never drop it silently
            raise RuntimeError(f"gensis.configs.typed has no key '{prefix}{stale[0]}' of base.yaml: regenerate it "
                               f"with `python -m gensis.configs.codegen`")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            value = data.get(f.name, dataclasses.MISSING)
            sub = _section_type(f)
            if sub is not None:
                if value is dataclasses.MISSING or value is None:  # null section: its defaults' meaning
                    kwargs[f.name] = sub()
                elif isinstance(value, ConfigSection):
                    kwargs[f.name] = value
                elif isinstance(value, Mapping):
                    kwargs[f.name] = sub._build(value, f"{prefix}{f.name}.")
                else:
                    raise UserError(f"config key '{prefix}{f.name}' is a section, not a value")
            elif value is not dataclasses.MISSING:
                kwargs[f.name] = copy.deepcopy(value)
        return cls(**kwargs)

    def _coerce_sections(self, prefix: str = "") -> None:
        """Sections given as mappings (``PretrainConfig(optim={"epochs": 3})``) become their dataclass."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            sub = _section_type(f)
            if sub is None:
                continue
            value = getattr(self, f.name)
            if value is None:
                object.__setattr__(self, f.name, sub())
            elif isinstance(value, Mapping):
                from gensis.config import merge

                merged = merge(sub().to_dict(), nest_overrides(value), where=f"section '{prefix}{f.name}'")
                object.__setattr__(self, f.name, sub._build(merged, f"{prefix}{f.name}."))
            elif isinstance(value, sub):
                value._coerce_sections(f"{prefix}{f.name}.")
            else:
                raise UserError(f"config key '{prefix}{f.name}' must be a {sub.__name__} (or a mapping), "
                                f"got {type(value).__name__}")


def _section_type(f: dataclasses.Field[Any]) -> type[ConfigSection] | None:
    factory = f.default_factory
    if isinstance(factory, type) and issubclass(factory, ConfigSection):
        return factory
    return None


class StageConfig(ConfigSection):
    """The whole config of one stage (``family``: pretrain, eldm, bank, mil), validated on construction."""

    family: ClassVar[str]

    def __post_init__(self) -> None:
        self._coerce_sections()
        self.validate()

    def validate(self) -> None:
        """Check every value against the schema (the command line's check); a bad one is a ``UserError``."""
        from gensis.config import validate

        validate(self.family, self.to_dict(), _base_cached(self.family))

    @classmethod
    def from_preset(cls: type[C], preset: str = "demo", overrides: Overrides | None = None) -> C:
        """``base.yaml`` → ``preset`` (``smoke``, ``demo``, ``small``, ``paper``, ``gpu``, ... or a YAML file of
        deltas) → ``overrides`` (``{"optim.epochs": 2}`` or ``["optim.epochs=2"]``), as the command line."""
        return cls._build(resolve(cls.family, preset, overrides))

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any], where: str = "config") -> C:
        """A config from a full or partial nested dict (e.g. a run's ``config.yaml``): missing keys take
        their ``base.yaml`` defaults; unknown keys and bad values are ``UserError``s (``where`` names the
        source in the message)."""
        if isinstance(data, StageConfig):
            data = data.to_dict()
        if not isinstance(data, Mapping):  # a list or None: was a TypeError from dict()
            raise UserError(f"{cls.__name__}.from_dict takes a mapping of config keys (e.g. a run's config.yaml as a "
                            f"dict), got {type(data).__name__}")
        return cls._build(complete(cls.family, data, where))

    def with_overrides(self: C, overrides: Overrides) -> C:
        """A new, validated config: this one with ``overrides`` applied (this one is left unchanged).

        The config is already resolved: setting ``method`` here does not bring in a preset's ``per_method``
        values; for those, name the method when resolving (``from_preset(preset, {"method": "ibot"})``)."""
        from gensis.config import merge

        delta = overrides_delta(overrides)
        return type(self)._build(complete(self.family, merge(self.to_dict(), delta, where="overrides")))

    def to_yaml(self) -> str:
        """The config as YAML text (what ``--print-config`` prints; a valid preset file)."""
        from gensis.config import dump

        return dump(self.to_dict())
