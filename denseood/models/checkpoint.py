"""Checkpoint files of a denseood model (a :class:`~denseood.models.segmenter.Segmenter`, or a fine-tuned external
model from ``hf:``/``torchvision:``/``python:``): the format, writing and reading.

One checkpoint is one file written atomically by ``save_checkpoint`` with ``torch.save``. It holds only plain
types (dict, list, str, int, float, bool, None) and CPU tensors, so ``torch.load(path, weights_only=True)`` reads
it without unpickling arbitrary objects; ``read_checkpoint`` and ``load_checkpoint`` always load it that way
(a file holding pickled objects is refused with a CheckpointError). Top-level keys:

- ``format``: the string ``"denseood-segmenter"`` (``CHECKPOINT_FORMAT``); any other value is "not a denseood
  checkpoint".
- ``format_version``: int, at most 2 (``CHECKPOINT_FORMAT_VERSION``); a newer version than this denseood reads
  is refused ("upgrade denseood"). Segmenters (smp) are still written as version 1, unchanged (older denseood
  releases read them); external models are written as version 2 (they need ``model_source``/``external``).
- ``meta``: what rebuilds the model. Always ``num_classes``, ``class_names`` (list), ``class_set`` (name in
  ``CLASS_SETS`` or None), ``mean``/``std`` (3 floats for 0..1 RGB; for ``hf`` the image processor's, converted),
  ``train_size`` ([H, W] or None), provenance ``denseood_version``, ``torch_version``, ``created`` (UTC ISO
  time), and (version 2) ``model_source``: ``"hf"`` | ``"torchvision"`` | ``"python"`` (absent = ``"smp"``). For ``smp`` (``Segmenter.meta()``): ``arch``, ``encoder`` (required), ``smp_kwargs`` (extra smp
  constructor arguments) and, only for a model trained with ``denseood train --head abet``, ``head`` ("abet": the
  state dict then also holds ``temperature_head.*``, AbeT's learned temperature; a file without the key has no
  head, as every earlier checkpoint). For the others (version 2, the wrapper's ``SegmenterBase.meta()`` plus): ``source``
  (the spec the model was loaded from), ``output_kind`` (``"logits"`` | ``"mask_scores"``) and ``external``, the
  model's ``checkpoint_record()``, plain types:

  - ``hf``: ``model_type``, ``universal`` (bool), ``config`` (``config.to_dict()``), ``task_inputs`` (OneFormer's
    task token ids or None), ``spec``; rebuilt with ``AutoModelFor{Semantic,Universal}Segmentation.from_config``
    (no model folder, no network);
  - ``torchvision``: ``name`` (NAME), ``num_classes``, ``aux_loss`` (bool), ``spec``; rebuilt with
    ``weights=None, weights_backbone=None``;
  - ``python``: ``module`` (dotted name, or the absolute path of the ``.py`` file), ``factory``, ``meta``
    (``class_names``, ``mean``, ``std``, ``train_size``, ``output_kind``), ``spec``; rebuilt by importing the
    module and calling the factory again (``num_classes``/``class_set`` passed when declared).
- ``state_dict``: the model's ``state_dict()`` (keys ``net.*``), CPU tensors; loaded strictly over the rebuilt
  model.
- ``stats``: fitted score statistics (``Segmenter.stats``: ``sml_mean`` (C,), ``sml_std`` (C,), ``maha_means``
  (C, F), ``maha_precision`` (F, F), ``maha_counts`` (C,)), a dict of tensors, possibly empty.
- ``config``: the training configuration (plain types), ``metrics``: evaluation/training metrics (plain types),
  ``extra``: anything else callers store, e.g. ``extra["prompter"]`` (a learned S2M prompter) or
  ``extra["train_state"]`` (step, optimizer, best, history, and the NFlowJS flow and its optimizer, for
  resuming training; left out of ``model.checkpoint_meta``).
  The three default to ``{}`` when absent.

``sources/registry.py: load_checkpoint`` reads the file here (``read_with_hash``), checks the caller's expected
classes (``check_classes``), rebuilds the model with the source its ``model_source`` names and loads weights and
stats here (``load_weights``, which sets ``checkpoint_meta``/``checkpoint_path``; ``checkpoint_sha256`` is the
first 16 hex digits of the file's SHA-256). Every failure is a CheckpointError naming the file.
See docs/architecture.md.
"""
from __future__ import annotations

import hashlib
import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from .._version import __version__
from ..data.classes import CLASS_SETS
from ..errors import CheckpointError, ConfigError
from ..io import atomic_torch_save, safe_torch_load
from .base import check_finite, plain_types, state_dict_mismatch
from .segmenter import HEADS, Segmenter

CHECKPOINT_FORMAT = "denseood-segmenter"
CHECKPOINT_FORMAT_VERSION = 2


def model_meta(model: Any) -> dict:
    """The checkpoint ``meta`` of ``model`` (see the module docstring); ConfigError for a model that cannot be
    rebuilt from a checkpoint (not a Segmenter and without ``checkpoint_record``)."""
    if isinstance(model, Segmenter):
        return model.meta()  # version 1 layout: no model_source
    record = getattr(model, "checkpoint_record", None)
    if not callable(record) or not callable(getattr(model, "meta", None)):
        raise ConfigError(f"save_checkpoint expects a denseood model (a Segmenter or a model loaded by "
                          f"denseood.load_model), got {type(model).__name__}")
    origin = getattr(model, "origin", None)
    if origin is None or origin.model_source in (None, "smp"):
        raise ConfigError(f"save_checkpoint: cannot tell the source of {type(model).__name__} (model.origin is "
                          f"{origin!r}); load it with denseood.load_model")
    return {**model.meta(), "model_source": origin.model_source, "external": plain_types(record(), "meta.external"),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def save_checkpoint(model: nn.Module, path: str | os.PathLike, *, config: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write one self-describing checkpoint file atomically; returns its path.

    model: a Segmenter, or an ``hf:``/``torchvision:``/``python:`` model from ``load_model`` (e.g. fine-tuned by
    ``denseood train --init SPEC``). Layout: ``{"format", "format_version", "meta", "state_dict", "stats",
    "config", "metrics", "extra"}``; everything plain types + CPU tensors (``torch.load(path, weights_only=True)``
    works).
    """
    meta = model_meta(model)
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": 1 if "model_source" not in meta else CHECKPOINT_FORMAT_VERSION,
        "meta": meta,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "stats": {k: v.detach().cpu() for k, v in model.stats.items()},
        "config": plain_types(config or {}, "config"),
        "metrics": plain_types(metrics or {}, "metrics"),
        "extra": plain_types(extra or {}, "extra"),
    }
    return atomic_torch_save(ckpt, path)


def _load_bytes(data: bytes, path: Path, map_location: Any = "cpu") -> dict:
    """Checkpoint dict from the file's bytes (weights_only), validated against the format above; CheckpointError
    naming ``path`` otherwise. Absent ``stats``/``config``/``metrics``/``extra`` become ``{}``."""
    obj = safe_torch_load(io.BytesIO(data), path=path, what="checkpoint", map_location=map_location,
                          kind="a denseood checkpoint")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} is not a denseood checkpoint (it holds a {type(obj).__name__}, not a dict)")
    if obj.get("format") != CHECKPOINT_FORMAT:
        keys = sorted(str(k) for k in obj)[:12]
        raise CheckpointError(f"{path} is not a denseood checkpoint (keys: {keys}); expected format "
                              f"{CHECKPOINT_FORMAT!r} written by denseood.save_checkpoint")
    ver = obj.get("format_version")
    if not isinstance(ver, int) or ver < 1:
        raise CheckpointError(f"{path}: invalid format_version {ver!r}")
    if ver > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {ver}, newer than this denseood {__version__} reads "
                              f"({CHECKPOINT_FORMAT_VERSION}); upgrade denseood")
    for k, typ in (("meta", dict), ("state_dict", dict)):
        if not isinstance(obj.get(k), typ):
            raise CheckpointError(f"{path}: checkpoint field {k!r} is missing or not a dict (corrupt checkpoint)")
    for k in ("stats", "config", "metrics", "extra"):
        obj.setdefault(k, {})
    kind = obj["meta"].get("model_source", "smp")   # a known one: checked where the model is rebuilt
    need = ("arch", "encoder") if kind == "smp" else ("external",)
    missing = [k for k in (*need, "num_classes", "class_names") if k not in obj["meta"]]
    if missing:
        raise CheckpointError(f"{path}: checkpoint meta lacks {missing} (corrupt checkpoint)")
    head = obj["meta"].get("head")
    if head is not None and (kind != "smp" or head not in HEADS):
        raise CheckpointError(f"{path}: checkpoint meta head {head!r} is unknown to denseood {__version__} (heads of "
                              f"smp segmenters: {', '.join(HEADS)}); upgrade denseood")
    return obj


def read_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Raw validated checkpoint dict (see ``save_checkpoint``). Raises CheckpointError naming ``path``."""
    return read_with_hash(path, map_location)[0]


def read_with_hash(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict, str]:
    """(validated checkpoint dict, first 16 hex digits of the file's SHA-256), reading the file once."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    data = path.read_bytes()
    return _load_bytes(data, path, map_location), hashlib.sha256(data).hexdigest()[:16]


def _class_desc(n: int, cset: str | None) -> str:
    return f"{n} classes ({cset})" if cset else f"{n} classes"


def model_desc(meta: dict) -> str:
    """``arch/encoder`` or ``hf:...`` etc. of a checkpoint's meta (for messages)."""
    kind = meta.get("model_source", "smp")
    if kind == "smp":
        return f"{meta['arch']}/{meta['encoder']}"
    return str((meta.get("external") or {}).get("spec") or kind)


def check_classes(path: Path, c_n: int, c_set: str | None, meta: dict, num_classes: int | None,
                   class_set: str | None) -> None:
    """CheckpointError unless the checkpoint's classes are the ones the caller's dataset expects."""
    if class_set is not None and class_set not in CLASS_SETS:
        raise ConfigError(f"unknown class_set {class_set!r}; valid: {sorted(CLASS_SETS)}")
    want_n = num_classes if num_classes is not None else (len(CLASS_SETS[class_set]) if class_set else None)
    mismatch = (want_n is not None and want_n != c_n) or (
        class_set is not None and (c_set != class_set if c_set is not None
                                   else tuple(meta["class_names"]) != tuple(CLASS_SETS[class_set])))
    if mismatch:
        raise CheckpointError(
            f"checkpoint {path} has {_class_desc(c_n, c_set)} but the dataset expects "
            f"{_class_desc(want_n if want_n is not None else c_n, class_set)}; use a checkpoint trained on that "
            f"class set (or a dataset with the checkpoint's classes)")


def check_match(target: Mapping[str, torch.Tensor], sd: Mapping[str, Any], path: Path, desc: str) -> None:
    """CheckpointError naming the missing, unexpected, mis-shaped and non-tensor entries of state dict ``sd``
    against the model's ``target`` (which may live on the meta device)."""
    diff = state_dict_mismatch(target, sd, "checkpoint")
    if diff:
        raise CheckpointError(f"checkpoint {path} weights do not match its {desc} model: {diff}; the file is "
                              f"corrupt or was edited")


def load_weights(model: nn.Module, ckpt: dict, path: Path, desc: str) -> None:
    """Load a validated checkpoint's state dict strictly and its stats into ``model``; set ``checkpoint_meta`` and
    ``checkpoint_path``. CheckpointError naming ``path`` and the mismatched keys."""
    sd = ckpt["state_dict"]
    check_match(model.state_dict(), sd, path, desc)
    check_finite(sd, f"checkpoint {path}")
    stats = ckpt.get("stats") or {}
    if not isinstance(stats, dict) or not all(isinstance(v, torch.Tensor) for v in stats.values()):
        raise CheckpointError(f"checkpoint {path}: 'stats' must be a dict of tensors")
    check_finite(stats, f"checkpoint {path} (fitted score statistics 'stats')")
    model.load_state_dict(sd, strict=True)
    model.stats = dict(stats)
    extra = ckpt.get("extra") if isinstance(ckpt.get("extra"), dict) else {}
    model.checkpoint_meta = {**ckpt["meta"], "metrics": ckpt.get("metrics", {}), "config": ckpt.get("config", {}),
                             "extra": {k: v for k, v in extra.items() if k != "train_state"}}
    model.checkpoint_path = str(path)


def load_weights_file(model: nn.Module, path: str | os.PathLike, *, map_location: Any = "cpu") -> nn.Module:
    """Load ``path`` strictly over a ``python:MODULE:FACTORY`` model the user named (``--weights``): a denseood
    checkpoint of a python: model (its record is ignored: the code is the one named), or a bare state dict of the
    factory's module. CheckpointError naming the file otherwise; returns the model in eval mode."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"--weights file not found: {path}")
    data = path.read_bytes()
    obj = safe_torch_load(io.BytesIO(data), path=path, what="weight file", map_location="cpu",
                          kind="a denseood checkpoint or a state dict")
    desc = getattr(model, "spec", None) or type(model).__name__
    if isinstance(obj, dict) and "format" in obj:
        ckpt = _load_bytes(data, path)
        kind = ckpt["meta"].get("model_source", "smp")
        if kind != "python":
            raise CheckpointError(f"--weights {path} is a checkpoint of a {kind} model, not of {desc}; pass it "
                                  f"as --checkpoint {path} instead")
        check_classes(path, int(ckpt["meta"]["num_classes"]), ckpt["meta"].get("class_set"), ckpt["meta"],
                       model.num_classes, None)
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = {k if str(k).startswith("net.") else f"net.{k}": v for k, v in obj.items()}
        ckpt = {"meta": dict(model.meta()), "state_dict": sd}
    else:
        raise CheckpointError(f"--weights {path} is neither a denseood checkpoint nor a state dict (a dict of "
                              f"tensors); save one with denseood.save_checkpoint or torch.save(net.state_dict())")
    # provenance is the code the user named, never the record the file claims
    ckpt["meta"] = {**ckpt["meta"], "model_source": "python", "external": plain_types(model.checkpoint_record(), "external")}
    load_weights(model, ckpt, path, str(desc))
    model.checkpoint_sha256 = hashlib.sha256(data).hexdigest()[:16]
    return model.to(map_location).eval()
