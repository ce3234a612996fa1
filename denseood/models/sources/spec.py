"""``load_model(spec)``: one entry point for every model source, and the spec parser.

Specs: ``PATH`` (a denseood checkpoint, ``models.checkpoint.load_checkpoint``), ``hf:DIR`` (transformers,
offline), ``torchvision:NAME:STATE_DICT.pth``, ``python:MODULE:FACTORY``. Every source returns a
:class:`~denseood.models.base.SegmenterBase` in eval mode. See docs/architecture.md.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch.nn as nn

from ...errors import CheckpointError, ConfigError

#: the spec forms, for messages and docs
SPEC_FORMS = (
    "PATH.pt (a denseood checkpoint)",
    "hf:DIR (a transformers model folder written by save_pretrained, loaded offline)",
    "torchvision:NAME:STATE_DICT.pth (NAME e.g. deeplabv3_resnet50, lraspp_mobilenet_v3_large)",
    "python:MODULE:FACTORY (MODULE a dotted name or a .py file; FACTORY() returns an nn.Module)",
)
PREFIXES = ("hf", "torchvision", "python")
_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9_+.-]+):")


def parse_spec(spec: str) -> tuple[str, tuple[str, ...]]:
    """spec -> (kind, parts): ("checkpoint", (path,)), ("hf", (dir,)), ("torchvision", (name, path)),
    ("python", (module, factory)). An unknown prefix (not an existing file) raises ConfigError listing the forms."""
    s = str(spec)
    m = _PREFIX.match(s)
    if m is None or Path(s).exists():
        return "checkpoint", (s,)
    kind, rest = m.group(1).lower(), s[m.end():]
    forms = "; ".join(SPEC_FORMS)
    if kind not in PREFIXES:
        raise ConfigError(f"unknown model spec prefix {m.group(1)!r} in {s!r}; valid forms: {forms}")
    if kind == "hf":
        if not rest:
            raise ConfigError(f"model spec {s!r} lacks the folder: use hf:DIR")
        return kind, (rest,)
    if kind == "torchvision":
        name, sep, path = rest.partition(":")
        if not sep or not name or not path:
            raise ConfigError(f"model spec {s!r} must be torchvision:NAME:STATE_DICT.pth")
        return kind, (name, path)
    module, sep, factory = rest.rpartition(":")
    if not sep or not module or not factory or not factory.isidentifier():
        raise ConfigError(f"model spec {s!r} must be python:MODULE:FACTORY (FACTORY a function name)")
    return kind, (module, factory)


def load_model(spec: str | Path, *, map_location: Any = "cpu", num_classes: int | None = None,
               class_set: str | None = None, weights: str | Path | None = None, trust_code: bool = False) -> nn.Module:
    """The model named by ``spec`` (see ``SPEC_FORMS``), in eval mode on ``map_location``.

    num_classes / class_set: what the caller's dataset expects; a model with other classes raises
    CheckpointError. The result follows the ``SegmenterBase`` protocol: ``model(normalize(uint8 images))`` ->
    (B,C,H,W) class scores at the input size, ``output_kind`` "logits" | "mask_scores".

    Code runs only where the caller names it: ``python:MODULE:FACTORY`` imports MODULE, and ``weights`` (a
    denseood checkpoint of that model, or a bare state dict) is loaded over it strictly. A checkpoint file never
    imports anything: one saved from a ``python:`` model is refused unless ``trust_code`` is True, which imports
    the module the file records (printing it first). See docs/own_models.md.
    """
    kind, parts = parse_spec(str(spec))
    if weights is not None and kind != "python":
        raise ConfigError(f"--weights {weights} applies to a python:MODULE:FACTORY model only, not to {spec!r} "
                          f"(a .pt checkpoint holds its own weights; torchvision: and hf: name their files)")
    kw = {"map_location": map_location, "num_classes": num_classes, "class_set": class_set}
    if kind == "hf":
        from .hf import load_hf

        return load_hf(parts[0], **kw)
    if kind == "torchvision":
        from .torchvision_src import load_torchvision

        return load_torchvision(*parts, **kw)
    if kind == "python":
        from .python_src import load_python

        model = load_python(*parts, **kw)
        if weights is None:
            return model
        from ..checkpoint import load_weights_file

        return load_weights_file(model, weights, map_location=map_location)
    from ..checkpoint import load_checkpoint

    model = load_checkpoint(parts[0], trust_code=trust_code, **kw)
    model.source = str(parts[0])
    return model


def rebuild_from_record(kind: str, record: dict[str, Any], *, class_names: tuple[str, ...], class_set: str | None,
                        mean: tuple[float, ...], std: tuple[float, ...], source: str,
                        trust_code: bool = False) -> nn.Module:
    """The untrained model of a denseood checkpoint of an external model (``meta["model_source"]`` = ``kind``,
    ``meta["external"]`` = ``record``, see ``models/checkpoint.py``); ``load_checkpoint`` loads its weights.

    Only data rebuilds a model: hf configs (no remote code), torchvision names. A ``python`` record names code;
    it is imported only with ``trust_code`` (the caller's explicit ``--trust-code``), else CheckpointError."""
    if kind == "hf":
        from .hf import rebuild_hf

        return rebuild_hf(record, class_names=class_names, class_set=class_set, mean=mean, std=std, source=source)
    if kind == "torchvision":
        from .torchvision_src import rebuild_torchvision

        return rebuild_torchvision(record, class_names=class_names, class_set=class_set, source=source)
    if kind == "python":
        from .python_src import rebuild_python

        if not trust_code:
            raise untrusted_code_error(record, source)
        return rebuild_python(record, class_names=class_names, class_set=class_set, source=source)
    raise ConfigError(f"unknown model_source {kind!r}; valid: smp, {', '.join(PREFIXES)}")


def _shown(value: Any) -> str:
    """A value read from a file, quoted on one line for a message (at most 120 characters)."""
    text = repr(str(value))
    return text if len(text) <= 120 else text[:117] + "..."


def untrusted_code_error(record: dict[str, Any], source: str) -> CheckpointError:
    """The refusal of a checkpoint that records a ``python:`` model (its code is never run on the file's word)."""
    return CheckpointError(
        f"{source} was saved from a python: model and names code to import (module {_shown(record.get('module'))}, "
        f"factory {_shown(record.get('factory'))}); denseood never runs code named by a file. If you trust that "
        f"code, name it yourself: --checkpoint python:MODULE:FACTORY --weights {source} (or add --trust-code)")


def spec_kind(spec: str | Path | None) -> str | None:
    """"checkpoint" | "hf" | "torchvision" | "python" for a spec (None for None); ConfigError as parse_spec."""
    return None if spec is None else parse_spec(str(spec))[0]
