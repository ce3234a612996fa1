"""Dataclass configs: YAML load/dump with validation that names the bad key and the valid ones."""
from __future__ import annotations

import dataclasses
import os
import typing
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
    kwargs = {}
    for k, v in data.items():
        h = hints.get(k)
        if dataclasses.is_dataclass(h) and isinstance(v, dict):
            v = from_dict(h, v, f"{source}.{k}")
        elif typing.get_origin(h) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{source}: {e}") from e
    return obj


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
