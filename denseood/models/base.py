"""The one model protocol every segmenter follows: :class:`SegmenterBase`.

Whatever the source (a denseood checkpoint, a transformers folder, a torchvision state dict, a user's factory),
the rest of denseood (``infer.py``, ``scores/``, ``s2m/``, ``commands/``, ``train/``) sees one interface:

- ``model(x)``: x (B,3,H,W) float32 normalised by ``model.normalize`` -> (B,C,H,W) float per-pixel class scores at
  the input size; ``model(x, return_features=True)`` -> ``(scores, features (B,F,h,w))`` or a ConfigError when
  the model exposes no features.
- ``output_kind``: ``"logits"`` (a semantic segmenter's logits) or ``"mask_scores"`` (a mask transformer's per-pixel
  class scores s_k in [0, Q] (Q queries); the mask scores ``rba``/``mask_msp``/``mask_maxlogit`` apply only to these).
- ``normalize(uint8 images)``, ``class_names``, ``class_set``, ``num_classes``, ``mean``/``std`` (for 0..1 RGB),
  ``train_size`` ((H, W) default inference size or None = image size), ``stats`` (fitted score statistics),
  ``stats_on(device)``, ``meta()`` (plain types), ``describe()`` (a short name), ``checkpoint_meta`` /
  ``checkpoint_path`` / ``checkpoint_sha256`` (set only for denseood checkpoints), ``source`` (the load spec),
  ``origin`` (a :class:`~denseood.models.origin.ModelOrigin`: where ``load_model`` found it; None for a model
  built in code).
See docs/architecture.md.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from .._version import __version__
from ..data.classes import CLASS_SETS
from ..errors import CheckpointError, ConfigError
from .origin import ModelOrigin

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: values of ``SegmenterBase.output_kind``
OUTPUT_KINDS = ("logits", "mask_scores")


class SegmenterBase(nn.Module):
    """Common metadata, normalisation and statistics of every denseood segmenter (see the module docstring).

    Subclasses call ``_set_meta`` in ``__init__`` (after ``nn.Module.__init__``) and implement ``forward``.
    """

    output_kind: str = "logits"

    def _set_meta(self, *, class_names: Sequence[str], class_set: str | None,
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  train_size: Sequence[int] | None = None, source: str | None = None,
                  output_kind: str = "logits") -> None:
        """Set the shared attributes, validated (ConfigError on a bad mean/std/train_size/output_kind)."""
        self.class_names: tuple[str, ...] = tuple(str(c) for c in class_names)
        self.num_classes = len(self.class_names)
        self.class_set = class_set
        self.mean: tuple[float, float, float] = _triple(mean, "mean")
        self.std: tuple[float, float, float] = _triple(std, "std")
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")
        self.train_size: tuple[int, int] | None = None if train_size is None else _pair(train_size)
        if output_kind not in OUTPUT_KINDS:
            raise ConfigError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}")
        self.output_kind = output_kind
        self.source = source
        self.stats: dict[str, torch.Tensor] = {}
        self.checkpoint_meta: dict[str, Any] | None = None
        self.checkpoint_path: str | None = None
        self.checkpoint_sha256: str | None = None
        self.origin: ModelOrigin | None = None

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (CPU for a parameter-free model)."""
        p = next(self.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def normalize(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """images: uint8 (B,H,W,3) or (H,W,3) RGB (numpy/torch), or (B,3,H,W) uint8/float in 0..255.

        Returns (B,3,H,W) float32 ``(images/255 - mean) / std`` on the model's device.
        """
        t = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"normalize expects a numpy array or torch tensor, got {type(images).__name__}")
        if t.ndim == 3 and t.shape[-1] == 3:
            t = t.unsqueeze(0)
        if t.ndim != 4:
            raise ConfigError(f"normalize expects (B,H,W,3) or (B,3,H,W) images, got shape {tuple(t.shape)}")
        if t.dtype == torch.uint8 and t.shape[-1] == 3:
            t = t.permute(0, 3, 1, 2)
        elif t.shape[1] != 3:
            raise ConfigError(f"normalize expects (B,H,W,3) uint8 or (B,3,H,W) images, got shape {tuple(t.shape)} "
                              f"dtype {t.dtype}")
        if t.dtype == torch.bool or not (t.dtype == torch.uint8 or t.is_floating_point()):
            raise ConfigError(f"normalize expects uint8 or float images in 0..255, got dtype {t.dtype}")
        dev = self.device
        was_float = t.is_floating_point()
        t = t.to(dev, non_blocking=True).float()
        if was_float and t.numel() and 0 < float(t.detach().max()) <= 1.0:
            warnings.warn("normalize got float images with max <= 1; it expects values in 0..255 "
                          "(multiply 0..1 images by 255)", stacklevel=2)
        mean = torch.tensor(self.mean, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=dev, dtype=torch.float32).view(1, 3, 1, 1)
        return ((t / 255.0 - mean) / std).contiguous()

    def stats_on(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """``self.stats`` with every tensor moved to ``device`` (default: the model's device), float32."""
        dev = self.device if device is None else torch.device(device)
        return {k: v.to(dev, torch.float32) if v.is_floating_point() else v.to(dev) for k, v in self.stats.items()}

    def meta(self) -> dict[str, Any]:
        """Plain-types description: source, output_kind, classes, mean/std, train_size, versions."""
        return {
            "source": self.source,
            "output_kind": self.output_kind,
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "class_set": self.class_set,
            "mean": list(self.mean),
            "std": list(self.std),
            "train_size": None if self.train_size is None else list(self.train_size),
            "denseood_version": str(__version__),
            "torch_version": str(torch.__version__),
        }

    def describe(self) -> str:
        """Short human-readable name of the model (for tables and logs)."""
        return str(self.source or type(self).__name__)

    def no_features(self, hint: str) -> ConfigError:
        """The error for ``return_features=True`` on a model that exposes no features (raise it)."""
        return ConfigError(f"{self.describe()} exposes no decoder features, and 'mahalanobis' needs features "
                           f"(model(x, return_features=True)); {hint}. Features come from denseood checkpoints, "
                           f"hf: mask transformers (Mask2Former/MaskFormer/OneFormer pixel decoder) and python: "
                           f"factories whose forward takes return_features; use another score (e.g. msp, jsd)")


def plain_types(obj: Any, where: str) -> Any:
    """``obj`` in plain types + CPU tensors (tuples -> lists, numpy -> python/tensor, Path -> str), as a checkpoint
    stores it (``models/checkpoint.py``); ConfigError naming the field ``where`` for anything else."""
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
        return [plain_types(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ConfigError(f"checkpoint field {where} has a key of type {type(k).__name__}; use str keys")
            out[k] = plain_types(v, f"{where}.{k}")
        return out
    raise ConfigError(f"checkpoint field {where} holds a {type(obj).__name__}; only plain types (dict, list, str, "
                      f"int, float, bool, None) and tensors can be stored (weights_only loading)")


def _triple(v: Sequence[float], name: str) -> tuple[float, float, float]:
    vals = tuple(float(x) for x in v)
    if len(vals) != 3:
        raise ConfigError(f"{name} must have 3 values (RGB, for 0..1 images), got {v!r}")
    return vals  # type: ignore[return-value]


def _pair(v: Sequence[int]) -> tuple[int, int]:
    vals = tuple(int(x) for x in v)
    if len(vals) != 2 or min(vals) <= 0:
        raise ConfigError(f"train_size must be (H, W) with positive ints, got {v!r}")
    return vals  # type: ignore[return-value]


def _norm_name(s: str) -> str:
    return "".join(ch for ch in str(s).lower() if ch.isalnum())


def match_classes(names: Sequence[str] | None, n: int, *, num_classes: int | None, class_set: str | None,
                  where: str) -> tuple[tuple[str, ...], str | None]:
    """Class names and class-set name of an external model with ``n`` classes and (maybe generic) ``names``.

    num_classes / class_set: what the caller expects; a different count, or real names that differ from the
    class set (compared ignoring case, spaces and punctuation), raise CheckpointError naming ``where``. Generic
    or missing names (``LABEL_0``, ``class0``) take the class set's names (given, or the first with ``n`` classes).
    """
    if class_set is not None and class_set not in CLASS_SETS:
        raise ConfigError(f"unknown class_set {class_set!r}; valid: {sorted(CLASS_SETS)}")
    want = num_classes if num_classes is not None else (len(CLASS_SETS[class_set]) if class_set else None)
    if want is not None and want != n:
        raise CheckpointError(f"{where} has {n} classes but the dataset expects {want}"
                              f"{f' ({class_set})' if class_set else ''}; use a model trained on that class set")
    generic = names is None or all(_norm_name(c) in (f"label{i}", f"class{i}", str(i)) for i, c in enumerate(names))
    if generic:
        cset = class_set or next((k for k, v in CLASS_SETS.items() if len(v) == n), None)
        return (tuple(CLASS_SETS[cset]) if cset else tuple(f"class{i}" for i in range(n))), cset
    names = tuple(str(c) for c in names)
    match = next((k for k, v in CLASS_SETS.items() if [_norm_name(c) for c in v] == [_norm_name(c) for c in names]),
                 None)
    if class_set is not None and match != class_set:
        diff = [f"{i}: {a!r} vs {b!r}" for i, (a, b) in enumerate(zip(names, CLASS_SETS[class_set]))
                if _norm_name(a) != _norm_name(b)]
        raise CheckpointError(f"{where} classes differ from the {class_set} class set ({'; '.join(diff[:4])}); "
                              f"use a model trained on {class_set}")
    return names, match


def state_dict_mismatch(target: Mapping[str, torch.Tensor], sd: Mapping[str, Any], file: str = "file") -> str:
    """"" when state dict ``sd`` fits the model's ``target`` (which may live on the meta device), else a
    description of its missing, unexpected, mis-shaped (``file`` names the stored side) and non-tensor entries."""
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    shapes = [f"{k}: {file} {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
              for k in target if k in sd and isinstance(sd[k], torch.Tensor)
              and tuple(sd[k].shape) != tuple(target[k].shape)]
    bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if not (missing or unexpected or shapes or bad):
        return ""
    return (f"{len(missing)} missing {missing[:5]}, {len(unexpected)} unexpected {unexpected[:5]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}{f', non-tensors {bad[:5]}' if bad else ''}")


def check_finite(tensors: Any, where: str) -> None:
    """CheckpointError naming ``where`` (the file) and the tensors of ``tensors`` (a name -> tensor mapping) that
    hold NaN or inf: a model with such weights gives NaN scores for every frame."""
    bad = []
    for k, v in tensors.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.device.type != "meta":
            if not bool(torch.isfinite(v).all()):
                bad.append(f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()} values)")
    if bad:
        raise CheckpointError(f"{where} holds non-finite weights (NaN or inf) in {len(bad)} tensor(s): "
                              f"{', '.join(bad[:5])}; the file is corrupt or the training diverged: use an "
                              f"earlier checkpoint")
