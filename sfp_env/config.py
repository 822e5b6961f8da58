"""Dataclass configuration: load from YAML/dicts with unknown keys rejected, apply overrides.

Every configurable part of sfp (world model, training runs, planners, tasks) is a dataclass. This
module turns nested mappings (from YAML) into those dataclasses, strictly:

- an unknown key raises :class:`ConfigError` naming the dotted path and the closest valid field;
- values are checked against the field's annotation (int, float, bool, str, tuples/lists,
  ``Optional``, nested dataclasses, ``Literal``);
- ``key=value`` overrides (dotted paths, YAML-parsed values) are applied before validation.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sfp_env.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "from_dict",
    "to_dict",
    "load_yaml",
    "apply_overrides",
    "parse_overrides",
    "config_diff",
]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert ``value`` to annotation ``tp``; raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                errors.append(e.problem)
        raise ConfigError(
            f"config field {path!r}: {value!r} does not match {_type_name(tp)}",
            fix="; ".join(errors) or None,
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"config field {path!r}: {value!r} is not one of {list(args)}",
                fix=f"set {path} to one of {list(args)}",
            )
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"config field {path!r}: expected a mapping for {tp.__name__}, got {value!r}",
                fix=f"write {path} as a YAML mapping of {tp.__name__}'s fields",
            )
        return from_dict(tp, value, _path=path)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(
                f"config field {path!r}: expected a list, got {value!r}",
                fix=f"write {path} as a YAML list, e.g. [1, 2]",
            )
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(
                    f"config field {path!r}: expected {len(args)} items, got {len(value)}",
                    fix=f"give {path} exactly {len(args)} values",
                )
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"config field {path!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(
            f"config field {path!r}: expected true/false, got {value!r}",
            fix=f"set {path}=true or {path}=false",
        )
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(
                f"config field {path!r}: expected an integer, got {value!r}",
                fix=f"set {path} to a whole number",
            )
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(
                f"config field {path!r}: expected a number, got {value!r}",
                fix=f"set {path} to a number such as 1e-3",
            )
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config field {path!r}: expected a string, got {value!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, Path):
        return Path(value)
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, _path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ConfigError."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = unknown[0]
        where = f"{_path}.{key}" if _path else key
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown config key {where!r} for {cls.__name__}",
            fix=f"{hint}valid keys here: {', '.join(sorted(fields))}",
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{_path}.{name}" if _path else name
        kwargs[name] = _coerce(value, hints[name], where)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field without default is missing
        raise ConfigError(
            f"{cls.__name__} at {_path or '<root>'!r}: {e}",
            fix="add the missing key to the config",
        ) from e


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict/list of YAML-safe values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping document raises ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {str(path)!r} does not exist",
            fix="pass the path of a YAML file, or the name of a shipped config",
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping at the top level")
    return dict(data)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "model.dims=[8,16]"]`` -> {"train.lr": 0.001, "model.dims": [8, 16]}."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(
                f"override {item!r} is not of the form key=value",
                fix="write overrides as dotted.key=value, e.g. train.epochs=3",
            )
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key] = raw
    return out


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``data`` with dotted-path ``overrides`` set (unknown keys are kept
    and rejected later by :func:`from_dict`, which names them)."""

    def copy(d: Any) -> Any:
        if isinstance(d, Mapping):
            return {k: copy(v) for k, v in d.items()}
        if isinstance(d, list):
            return [copy(v) for v in d]
        return d

    out = copy(data)
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {}
                node[p] = nxt
            node = nxt
        node[parts[-1]] = value
    return out


def config_diff(expected: Any, received: Any, _path: str = "") -> list[str]:
    """Dotted paths where two (nested) config dicts/dataclasses differ, with both values."""
    a, b = to_dict(expected), to_dict(received)
    if isinstance(a, dict) and isinstance(b, dict):
        diffs: list[str] = []
        for key in sorted(set(a) | set(b)):
            where = f"{_path}.{key}" if _path else key
            if key not in a:
                diffs.append(f"{where}: unexpected (received {b[key]!r})")
            elif key not in b:
                diffs.append(f"{where}: missing (expected {a[key]!r})")
            else:
                diffs.extend(config_diff(a[key], b[key], where))
        return diffs
    return [] if a == b else [f"{_path or '<root>'}: expected {a!r}, received {b!r}"]
