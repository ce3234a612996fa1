"""Dataclass configs: YAML load/dump with validation that names the bad key and the valid ones."""
from __future__ import annotations

import dataclasses
import numbers
import os
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError
from .io import atomic_write_text

T = TypeVar("T")


def to_dict(cfg: Any) -> dict:
    """Plain-types dict of a dataclass config (tuples -> lists, Paths -> str)."""
    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    return conv(cfg)


def from_dict(cls: type[T], data: dict, source: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys raise ConfigError listing the valid keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping for {cls.__name__}, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown} for {cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints.get(k), f"{source}: {k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from e
    return obj


def _coerce(v: Any, hint: Any, where: str) -> Any:
    """Check ``v`` against the field type ``hint`` and convert what YAML leaves ambiguous.

    YAML 1.1 reads ``1e-3`` as a string and ``[0.5, 1.5]`` as a list: numeric strings become floats for float
    fields, lists become tuples for tuple fields. Anything that does not fit raises ConfigError naming the key.
    """
    if hint is None or hint is Any:
        return v
    if dataclasses.is_dataclass(hint):
        return _coerce_dataclass(v, hint, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(v, hint, args, where)
    if origin is tuple:
        return _coerce_tuple(v, args, where)
    if origin in (list, dict):
        return v
    for scalar, convert in _SCALARS:
        if hint is scalar:
            return convert(v, where)
    return v


def _coerce_dataclass(v: Any, hint: type, where: str) -> Any:
    """A nested dataclass field: a mapping is built with :func:`from_dict`, an instance passes."""
    if isinstance(v, dict):
        return from_dict(hint, v, where)
    if isinstance(v, hint):
        return v
    raise ConfigError(f"{where}: expected a mapping for {hint.__name__}, got {v!r}")


def _coerce_union(v: Any, hint: Any, args: tuple, where: str) -> Any:
    """``X | Y | None``: None where allowed, else the first member type that takes ``v``."""
    if v is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _coerce(v, a, where)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {v!r} fits none of {hint}")


def _coerce_tuple(v: Any, args: tuple, where: str) -> tuple:
    """``tuple[A, B]`` (exactly that many values) or ``tuple[A, ...]``: a list or tuple, each item coerced."""
    if not isinstance(v, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of {len(args)} values, got {v!r}")
    if args and args[-1] is not Ellipsis:
        if len(v) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(v)} ({v!r})")
        return tuple(_coerce(x, a, where) for x, a in zip(v, args))
    return tuple(_coerce(x, args[0], where) for x in v) if args else tuple(v)


def _to_bool(v: Any, where: str) -> bool:
    if isinstance(v, bool):
        return v
    raise ConfigError(f"{where}: expected true/false, got {v!r}")


def _to_int(v: Any, where: str) -> int:
    """An int, or a float with an integer value (YAML ``1e3``); never a bool."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    raise ConfigError(f"{where}: expected an integer, got {v!r}")


def _to_float(v: Any, where: str) -> float:
    """A number or a numeric string (YAML 1.1 reads ``1e-3`` as a string); never a bool."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise ConfigError(f"{where}: expected a number, got {v!r}")


def _to_str(v: Any, where: str) -> str:
    """A string, or a number written as one; never a bool."""
    if isinstance(v, str):
        return v
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return str(v)
    raise ConfigError(f"{where}: expected a string, got {v!r}")


#: the scalar field types and their checks (matched by identity, as ``hint is bool`` ...)
_SCALARS: tuple[tuple[type, Callable[[Any, str], Any]], ...] = (
    (bool, _to_bool), (int, _to_int), (float, _to_float), (str, _to_str))


def load_yaml(cls: type[T], path: str | os.PathLike) -> T:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    return from_dict(cls, data, str(path))


def dump_yaml(cfg: Any, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def parse_hw(text: str | Sequence[int] | int | None, what: str = "size") -> tuple[int, int] | None:
    """A height x width from a user value.

    text: ``"512x1024"`` (also ``"512*1024"``), ``(512, 1024)``, a single int ``n`` -> ``(n, n)``; None -> None.
    what: the option's name, used in the error. Raises ConfigError on anything else or a non-positive side.
    """
    if text is None:
        return None
    if isinstance(text, bool):
        raise ConfigError(f"invalid {what} {text!r}; expected HxW, e.g. 512x1024")
    if isinstance(text, numbers.Integral):
        parts: list = [int(text), int(text)]
    elif isinstance(text, str):
        parts = text.lower().replace("*", "x").split("x")
    else:
        parts = list(text)
    try:
        h, w = (int(p) for p in parts)
    except (ValueError, TypeError):
        raise ConfigError(f"invalid {what} {text!r}; expected HxW, e.g. 512x1024") from None
    if h <= 0 or w <= 0:
        raise ConfigError(f"invalid {what} {text!r}; height and width must be positive")
    return h, w
