"""Reading configs: coercion of values to the schema's field types, nested dicts and ``key=value``
overrides applied to a config, YAML files with ``base:`` chains (``yaml.safe_load`` only), saving."""

from __future__ import annotations

import os
import types
import typing
from typing import Any

import yaml

from .checks import validate
from .schema import SECTIONS, Config, _hints, _section_cls, _split_key, _suggest

# ---------------------------------------------------------------------------------------------
# type coercion


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _is_optional(tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:  # X | None
            return True, args[0]
    return False, tp


def coerce(key: str, value: Any, tp, from_string: bool = False) -> Any:
    """Coerce ``value`` to the annotated type ``tp`` of config key ``key``.

    Accepts int for float, integral floats for int (``1e5``), and, when ``from_string`` (values
    from ``--set``), strings such as ``"1e-3"``, ``"true"``, ``"none"``, ``"[1,2,2]"``/``"1,2,2"``.
    Raises ``TypeError`` naming the key otherwise.
    """
    optional, inner = _is_optional(tp)
    if from_string and isinstance(value, str) and value.strip().lower() in ("none", "null", "~", ""):
        if optional:
            return None
    if value is None:
        if optional:
            return None
        raise TypeError(f"config key {key!r} must be {_type_name(inner)}, not None")
    tp = inner
    origin = typing.get_origin(tp)
    bad = TypeError(f"config key {key!r} must be {_type_name(tp)}; got {value!r} ({type(value).__name__})")
    if origin is list:
        (item,) = typing.get_args(tp)
        if from_string and isinstance(value, str):
            s = value.strip()
            parsed = yaml.safe_load(s) if s.startswith("[") else [v for v in s.split(",") if v.strip()]
            value = parsed if isinstance(parsed, list) else [parsed]
            return [coerce(f"{key}[{i}]", v, item, from_string=True) for i, v in enumerate(value)]
        if isinstance(value, int | float | str) and not isinstance(value, bool):
            value = [value]  # a single resolution, e.g. attn_resolutions: 16
        if not isinstance(value, list | tuple):
            raise bad
        return [coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_string and isinstance(value, str):
            low = value.strip().lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):  # "2e3": YAML 1.1 reads exponents without a dot as strings
            try:
                f = float(value)
            except ValueError:
                raise bad from None
            if f.is_integer():
                return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    raise TypeError(f"config key {key!r} has an unsupported type {tp}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# building configs


def default_config() -> Config:
    """The defaults of every section (the official CIFAR-10 defaults for the optimiser)."""
    return Config()


def config_from_dict(d: dict | None, base: Config | None = None) -> Config:
    """Apply a nested dict ``{section: {key: value}}`` to ``base`` (default: :func:`default_config`).

    Unknown sections/keys raise ``ValueError`` and wrong types ``TypeError``, naming the dotted key.
    """
    cfg = config_from_plain((base if base is not None else default_config()).to_dict())  # a deep copy
    if d is None:
        return cfg
    if not isinstance(d, dict):
        raise TypeError(f"a config must be a mapping of sections; got {type(d).__name__}")
    for section, values in d.items():
        if section not in SECTIONS:
            raise ValueError(f"unknown config key {section!r}{_suggest(str(section), SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise TypeError(f"config section {section!r} must be a mapping; got {values!r}")
        for name, value in values.items():
            key = f"{section}.{name}"
            _split_key(key)
            hints = _hints(_section_cls(section))
            setattr(getattr(cfg, section), name, coerce(key, value, hints[name]))
    return cfg


def config_from_plain(d: dict) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (as stored in checkpoints)."""
    cfg = Config()
    for section in SECTIONS:
        cls = _section_cls(section)
        hints = _hints(cls)
        vals = d.get(section, {})
        for name in vals:
            _split_key(f"{section}.{name}")
        setattr(cfg, section, cls(**{k: coerce(f"{section}.{k}", v, hints[k]) for k, v in vals.items()}))
    return cfg


def apply_overrides(cfg: Config, overrides: list[str] | tuple[str, ...] | None) -> Config:
    """Apply ``key=value`` strings (``training.lr=1e-3``, ``model.ch_mult=1,2,2``) to a copy of ``cfg``."""
    cfg = config_from_plain(cfg.to_dict())
    for item in overrides or ():
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"an override must look like section.key=value; got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        section, name = _split_key(key)
        tp = _hints(_section_cls(section))[name]
        value = raw if _is_optional(tp)[1] is str else _parse_scalar(raw)
        setattr(getattr(cfg, section), name, coerce(key, value, tp, from_string=True))
    return cfg


def _parse_scalar(raw: str):
    try:
        v = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return v if isinstance(v, int | float | bool | list) and v is not None else raw


class ConfigYAMLError(ValueError, yaml.YAMLError):
    """A config file that ``yaml.safe_load`` refuses (bad syntax, or a tag that would build a Python object)."""


def load_yaml(path: str | os.PathLike, _chain: tuple[str, ...] = ()) -> dict:
    """Read a YAML config file with ``yaml.safe_load`` and resolve its ``base:`` chain into one dict.

    A ``base:`` chain that comes back to a file already in it raises ``ValueError`` listing the chain."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    real = os.path.realpath(path)
    if real in _chain:
        raise ValueError(f"config key 'base' makes a cycle: {' -> '.join([*_chain, real])}")
    try:
        with open(path) as f:
            d = yaml.safe_load(f) or {}
    except yaml.YAMLError as e:
        raise ConfigYAMLError(f"config file {path!r} is not valid (safe) YAML: {e}") from None
    if not isinstance(d, dict):
        raise TypeError(f"config file {path!r} must hold a mapping of sections; got {type(d).__name__}")
    base = d.pop("base", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise TypeError(f"config key 'base' in {path!r} must be a file name; got {base!r}")
    parent = load_yaml(os.path.join(os.path.dirname(path), base), (*_chain, real))
    for section, values in d.items():
        if isinstance(values, dict) and isinstance(parent.get(section), dict):
            parent[section] = {**parent[section], **values}
        else:
            parent[section] = values
    return parent


def load_config(path: str | os.PathLike | None = None, overrides=None, validate_files: bool = False) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides; validated."""
    cfg = config_from_dict(load_yaml(path) if path is not None else None)
    cfg = apply_overrides(cfg, overrides)
    validate(cfg, check_files=validate_files)
    return cfg


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (``yaml.safe_dump``), atomically (temp file + rename)."""
    from ..workdir import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def missing_keys(d: dict) -> list[str]:
    """The dotted keys of a full config that the nested dict ``d`` lacks (a resolved ``config.yaml``
    written by :func:`save_config` holds every key; an empty or cut-off file does not)."""
    full = default_config().to_dict()
    if not isinstance(d, dict):
        return [f"{s}.{k}" for s, v in full.items() for k in v]
    out = []
    for section, values in full.items():
        have = d.get(section)
        out += [f"{section}.{k}" for k in values if not isinstance(have, dict) or k not in have]
    return out


