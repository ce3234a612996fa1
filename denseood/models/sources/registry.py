"""The model sources, one row each, and the one entry point: ``load_model(spec)``.

``SOURCES`` maps each kind to its :class:`~denseood.models.origin.Source` row (parse, load, rebuild, describe):
``PATH`` (a denseood checkpoint, no prefix), ``hf:DIR`` (transformers, offline), ``torchvision:NAME:FILE``,
``python:MODULE:FACTORY``. ``load_model`` parses the spec once, loads with the row it names and sets
``model.origin``; ``load_checkpoint`` rebuilds a checkpoint's model with the row its ``model_source`` names.
Every source returns a :class:`~denseood.models.base.SegmenterBase` in eval mode. To add a source: a module here
with its ``SOURCE`` row, and one entry in ``SOURCES`` (docs/architecture.md).
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ...errors import CheckpointError, ConfigError
from ..base import IMAGENET_MEAN, IMAGENET_STD
from ..checkpoint import check_classes, check_match, load_weights, model_desc, read_with_hash
from ..origin import ModelOrigin, Source, origin_of
from ..segmenter import Segmenter, create_segmenter
from . import hf, python_src, torchvision_src


# ------------------------------------------------------------------------------- the checkpoint source (no prefix)
def _parse_path(spec: str, rest: str) -> tuple[str, ...]:
    return (spec,)


def _load_path(parts: tuple[str, ...], *, map_location: Any, num_classes: int | None, class_set: str | None,
               trust_code: bool = False, **_: Any) -> nn.Module:
    model = load_checkpoint(parts[0], map_location=map_location, num_classes=num_classes, class_set=class_set,
                            trust_code=trust_code)
    model.source = str(parts[0])
    return model


def _rebuild_smp(meta: dict[str, Any], *, class_set: str | None, **_: Any) -> Segmenter:
    """The untrained smp Segmenter of a checkpoint meta without ``model_source`` (the checkpoint's own kind)."""
    return create_segmenter(meta["arch"], meta["encoder"], int(meta["num_classes"]), class_names=meta["class_names"],
                            class_set=class_set, mean=tuple(meta.get("mean", IMAGENET_MEAN)),
                            std=tuple(meta.get("std", IMAGENET_STD)), train_size=meta.get("train_size"),
                            head=meta.get("head"), **dict(meta.get("smp_kwargs") or {}))


def _describe_path(spec: str, parts: tuple[str, ...], model: nn.Module) -> ModelOrigin:
    return origin_of("checkpoint", spec, model, parts[0])


CHECKPOINT = Source("checkpoint", "PATH.pt (a denseood checkpoint)", _parse_path, _load_path, _rebuild_smp,
                    _describe_path)

#: every model source by kind; a spec ``KIND:REST`` names a row, a spec without a known prefix the checkpoint row
SOURCES: dict[str, Source] = {s.kind: s for s in (CHECKPOINT, hf.SOURCE, torchvision_src.SOURCE, python_src.SOURCE)}
#: the spec forms, for messages and docs
SPEC_FORMS = tuple(s.form for s in SOURCES.values())
PREFIXES = tuple(k for k in SOURCES if k != CHECKPOINT.kind)
#: checkpoint ``meta["model_source"]`` (absent = "smp", the checkpoint source's own networks) -> the row rebuilding it
_BY_MODEL_SOURCE = {("smp" if s is CHECKPOINT else k): s for k, s in SOURCES.items()}
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):")


def parse_spec(spec: str | Path) -> tuple[str, tuple[str, ...]]:
    """spec -> (kind, parts): ("checkpoint", (path,)), ("hf", (dir,)), ("torchvision", (name, path)),
    ("python", (module, factory)). An unknown prefix (not an existing file) raises ConfigError listing the forms."""
    s = str(spec)
    m = _PREFIX.match(s)
    if m is None or Path(s).exists():
        return CHECKPOINT.kind, CHECKPOINT.parse(s, s)
    kind = m.group(1).lower()
    if kind not in PREFIXES:
        raise ConfigError(f"unknown model spec prefix {m.group(1)!r} in {s!r}; valid forms: {'; '.join(SPEC_FORMS)}")
    return kind, SOURCES[kind].parse(s, s[m.end():])


def load_model(spec: str | Path, *, map_location: Any = "cpu", num_classes: int | None = None,
               class_set: str | None = None, weights: str | Path | None = None, trust_code: bool = False) -> nn.Module:
    """The model named by ``spec`` (see ``SPEC_FORMS``), in eval mode on ``map_location``, with ``model.origin``.

    num_classes / class_set: what the caller's dataset expects; a model with other classes raises
    CheckpointError. The result follows the ``SegmenterBase`` protocol: ``model(normalize(uint8 images))`` ->
    (B,C,H,W) class scores at the input size, ``output_kind`` "logits" | "mask_scores".

    Code runs only where the caller names it: ``python:MODULE:FACTORY`` imports MODULE, and ``weights`` (a
    denseood checkpoint of that model, or a bare state dict) is loaded over it strictly. A checkpoint file never
    imports anything: one saved from a ``python:`` model is refused unless ``trust_code`` is True, which imports
    the module the file records (printing it first). See docs/own_models.md.
    """
    kind, parts = parse_spec(spec)
    source = SOURCES[kind]
    if weights is not None and not source.takes_weights:
        takers = " or ".join(s.form.split(" ")[0] for s in SOURCES.values() if s.takes_weights)
        raise ConfigError(f"--weights {weights} applies to a {takers} model only, not to {str(spec)!r} "
                          f"(a .pt checkpoint holds its own weights; torchvision: and hf: name their files)")
    model = source.load(parts, map_location=map_location, num_classes=num_classes, class_set=class_set,
                        weights=weights, trust_code=trust_code)
    model.origin = source.describe(str(spec), parts, model)
    return model


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    num_classes: int | None = None, class_set: str | None = None,
                    trust_code: bool = False) -> nn.Module:
    """Rebuild the model of a checkpoint file (a Segmenter, or the hf/torchvision/python model it records, by the
    row of ``SOURCES`` its ``model_source`` names), load weights strictly and stats; returns it in eval mode.

    num_classes / class_set: what the caller's dataset expects; a different checkpoint raises CheckpointError.
    trust_code: a checkpoint of a ``python:`` model names a module to import; without ``trust_code`` (the
    user's ``--trust-code``) it is refused, and nothing is imported. Sets ``model.checkpoint_meta`` (meta +
    ``metrics`` + ``config`` + ``extra`` without the training state), ``model.checkpoint_path``,
    ``model.checkpoint_sha256`` (16 hex) and ``model.origin``. The file format: ``models/checkpoint.py``.
    """
    path = Path(path)
    ckpt, sha = read_with_hash(path, "cpu")
    meta = ckpt["meta"]
    name = meta.get("model_source", "smp")
    source = _BY_MODEL_SOURCE.get(name) if isinstance(name, str) else None
    if source is None:
        raise CheckpointError(f"{path}: unknown model_source {name!r} (valid: {', '.join(_BY_MODEL_SOURCE)}); "
                              f"upgrade denseood")
    c_n, c_set = int(meta["num_classes"]), meta.get("class_set")
    check_classes(path, c_n, c_set, meta, num_classes, class_set)
    if not source.runs_code:   # (a python: model's code is not run twice)
        with torch.device("meta"):   # sizes first: a stored config far larger than its weights allocates nothing
            probe = _rebuild(source, meta, c_set, path)
        check_match(probe.state_dict(), ckpt["state_dict"], path, model_desc(meta))
    model = _rebuild(source, meta, c_set, path, trust_code=trust_code)
    load_weights(model, ckpt, path, model_desc(meta))
    model.checkpoint_sha256 = sha
    model.origin = CHECKPOINT.describe(str(path), (str(path),), model)
    return model.to(map_location).eval()


def _rebuild(source: Source, meta: dict, class_set: str | None, path: Path, trust_code: bool = False) -> nn.Module:
    """The untrained model described by a checkpoint's ``meta``, by ``source``'s rebuild (CheckpointError naming
    ``path``); a source that runs code is refused unless ``trust_code``."""
    try:
        if source is CHECKPOINT:
            return source.rebuild(meta, class_set=class_set, source=str(path), trust_code=trust_code)
        if not isinstance(meta.get("external"), dict):
            raise CheckpointError(f"checkpoint {path}: meta['external'] must be a dict (corrupt checkpoint)")
        model = source.rebuild(meta, class_set=class_set, source=str(path), trust_code=trust_code)
        mean, std = tuple(meta.get("mean", IMAGENET_MEAN)), tuple(meta.get("std", IMAGENET_STD))
        model._set_meta(class_names=meta["class_names"], class_set=class_set, mean=mean, std=std,
                        train_size=meta.get("train_size"), source=str(path),
                        output_kind=meta.get("output_kind", model.output_kind))
        return model
    except CheckpointError:
        raise
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError, RuntimeError) as e:   # fields of odd types
        raise CheckpointError(f"cannot rebuild the model of checkpoint {path}: {e}") from e
