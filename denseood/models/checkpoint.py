"""Checkpoint files of a :class:`~denseood.models.segmenter.Segmenter`: the format, writing and reading.

One checkpoint is one file written atomically by ``save_checkpoint`` with ``torch.save``. It holds only plain
types (dict, list, str, int, float, bool, None) and CPU tensors, so ``torch.load(path, weights_only=True)`` reads
it without unpickling arbitrary objects; ``read_checkpoint`` and ``load_checkpoint`` always load it that way
(a file holding pickled objects is refused with a CheckpointError). Top-level keys:

- ``format``: the string ``"denseood-segmenter"`` (``CHECKPOINT_FORMAT``); any other value is "not a denseood
  checkpoint".
- ``format_version``: int, currently 1 (``CHECKPOINT_FORMAT_VERSION``); a newer version than this denseood reads
  is refused ("upgrade denseood").
- ``meta``: what rebuilds the model (``Segmenter.meta()``): ``arch``, ``encoder``, ``num_classes``,
  ``class_names`` (list), ``class_set`` (name in ``CLASS_SETS`` or None), ``mean``/``std`` (3 floats for 0..1
  RGB), ``train_size`` ([H, W] or None), ``smp_kwargs`` (extra smp constructor arguments), plus provenance
  ``denseood_version``, ``torch_version``, ``created`` (UTC ISO time). ``arch``, ``encoder``, ``num_classes`` and
  ``class_names`` are required.
- ``state_dict``: the Segmenter's ``state_dict()`` (keys ``net.*``), CPU tensors; loaded strictly.
- ``stats``: fitted score statistics (``Segmenter.stats``: ``sml_mean`` (C,), ``sml_std`` (C,), ``maha_means``
  (C, F), ``maha_precision`` (F, F), ``maha_counts`` (C,)), a dict of tensors, possibly empty.
- ``config``: the training configuration (plain types), ``metrics``: evaluation/training metrics (plain types),
  ``extra``: anything else callers store, e.g. ``extra["prompter"]`` (a learned S2M prompter) or
  ``extra["train_state"]`` (step, optimizer, best, history, and the NFlowJS flow and its optimizer, for
  resuming training; left out of ``model.checkpoint_meta``).
  The three default to ``{}`` when absent.

``load_checkpoint`` rebuilds the model with ``create_segmenter`` from ``meta``, checks the caller's expected
classes, loads weights and stats and sets ``checkpoint_meta``/``checkpoint_path``/``checkpoint_sha256`` (the first
16 hex digits of the file's SHA-256). Every failure is a CheckpointError naming the file.
See docs/architecture.md.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from .._version import __version__
from ..data.classes import CLASS_SETS
from ..errors import CheckpointError, ConfigError
from ..io import atomic_torch_save, safe_torch_load
from .segmenter import IMAGENET_MEAN, IMAGENET_STD, Segmenter, create_segmenter

CHECKPOINT_FORMAT = "denseood-segmenter"
CHECKPOINT_FORMAT_VERSION = 1


def _plain(obj: Any, where: str) -> Any:
    """Convert to plain types + tensors (tuples -> lists, numpy -> python/tensor, Path -> str) or raise."""
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, np.generic):
        return obj.item()
    for typ in (bool, int, float, str):  # subclasses (np.float64, enums, TorchVersion) -> the plain type
        if isinstance(obj, typ):
            return typ(obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ConfigError(f"checkpoint field {where} has a key of type {type(k).__name__}; use str keys")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise ConfigError(f"checkpoint field {where} holds a {type(obj).__name__}; only plain types (dict, list, str, "
                      f"int, float, bool, None) and tensors can be stored (weights_only loading)")


def save_checkpoint(model: Segmenter, path: str | os.PathLike, *, config: dict | None = None,
                    metrics: dict | None = None, extra: dict | None = None) -> Path:
    """Write one self-describing checkpoint file atomically; returns its path.

    Layout: ``{"format", "format_version", "meta", "state_dict", "stats", "config", "metrics", "extra"}``;
    everything plain types + CPU tensors (``torch.load(path, weights_only=True)`` works).
    """
    if not isinstance(model, Segmenter):
        raise ConfigError(f"save_checkpoint expects a Segmenter, got {type(model).__name__}")
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "meta": model.meta(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "stats": {k: v.detach().cpu() for k, v in model.stats.items()},
        "config": _plain(config or {}, "config"),
        "metrics": _plain(metrics or {}, "metrics"),
        "extra": _plain(extra or {}, "extra"),
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
    missing = [k for k in ("arch", "encoder", "num_classes", "class_names") if k not in obj["meta"]]
    if missing:
        raise CheckpointError(f"{path}: checkpoint meta lacks {missing} (corrupt checkpoint)")
    return obj


def read_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict:
    """Raw validated checkpoint dict (see ``save_checkpoint``). Raises CheckpointError naming ``path``."""
    return _read_with_hash(path, map_location)[0]


def _read_with_hash(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[dict, str]:
    """(validated checkpoint dict, first 16 hex digits of the file's SHA-256), reading the file once."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    data = path.read_bytes()
    return _load_bytes(data, path, map_location), hashlib.sha256(data).hexdigest()[:16]


def _class_desc(n: int, cset: str | None) -> str:
    return f"{n} classes ({cset})" if cset else f"{n} classes"


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu",
                    num_classes: int | None = None, class_set: str | None = None) -> Segmenter:
    """Rebuild the Segmenter of a checkpoint file, load weights strictly and stats; returns it in eval mode.

    num_classes / class_set: what the caller's dataset expects; a different checkpoint raises CheckpointError.
    Sets ``model.checkpoint_meta`` (meta + ``metrics`` + ``config`` + ``extra`` without the training state),
    ``model.checkpoint_path`` and ``model.checkpoint_sha256`` (16 hex).
    """
    path = Path(path)
    ckpt, sha = _read_with_hash(path, "cpu")
    meta = ckpt["meta"]
    c_n, c_set = int(meta["num_classes"]), meta.get("class_set")
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
    try:
        model = create_segmenter(meta["arch"], meta["encoder"], c_n, class_names=meta["class_names"],
                                 class_set=c_set, mean=meta.get("mean", IMAGENET_MEAN),
                                 std=meta.get("std", IMAGENET_STD), train_size=meta.get("train_size"),
                                 **dict(meta.get("smp_kwargs") or {}))
    except ConfigError as e:
        raise CheckpointError(f"cannot rebuild the model of checkpoint {path}: {e}") from e
    sd = ckpt["state_dict"]
    target = model.state_dict()
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
              for k in target if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"checkpoint {path} weights do not match its {meta['arch']}/{meta['encoder']} model: "
            f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}; the file is corrupt or was edited")
    model.load_state_dict(sd, strict=True)
    stats = ckpt.get("stats") or {}
    if not isinstance(stats, dict) or not all(isinstance(v, torch.Tensor) for v in stats.values()):
        raise CheckpointError(f"checkpoint {path}: 'stats' must be a dict of tensors")
    model.stats = dict(stats)
    extra = ckpt.get("extra") if isinstance(ckpt.get("extra"), dict) else {}
    model.checkpoint_meta = {**meta, "metrics": ckpt.get("metrics", {}), "config": ckpt.get("config", {}),
                             "extra": {k: v for k, v in extra.items() if k != "train_state"}}
    model.checkpoint_path = str(path)
    model.checkpoint_sha256 = sha
    return model.to(map_location).eval()
