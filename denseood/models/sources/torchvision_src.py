"""``torchvision:NAME:STATE_DICT.pth``: a ``torchvision.models.segmentation`` model with a local state dict.

The model is built with ``weights=None, weights_backbone=None`` (nothing downloaded), with as many classes as the
state dict's classifier has (e.g. 19 for Cityscapes) and an auxiliary head when the state dict has one, and the
file (read with ``denseood.io.safe_torch_load``; a bare state dict, or one under ``state_dict``/``model``, with
an optional ``module.`` prefix) is loaded strictly. Output: ``net(x)["out"]``, logits at the input size.
Normalisation is ImageNet's (torchvision's segmentation weights use it). A fine-tuned model is saved as a denseood
checkpoint recording NAME, the number of classes and the auxiliary head (``checkpoint_record``) and rebuilt by
:func:`rebuild_torchvision`.
See docs/architecture.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ...errors import CheckpointError, ConfigError
from ...io import safe_torch_load
from ..base import IMAGENET_MEAN, IMAGENET_STD, SegmenterBase, check_finite, match_classes, state_dict_mismatch
from ..origin import ModelOrigin, Source, origin_of

#: NAME -> state-dict key of the final classifier weight (its first dimension is the number of classes)
MODELS: dict[str, str] = {
    "deeplabv3_resnet50": "classifier.4.weight",
    "deeplabv3_resnet101": "classifier.4.weight",
    "deeplabv3_mobilenet_v3_large": "classifier.4.weight",
    "fcn_resnet50": "classifier.4.weight",
    "fcn_resnet101": "classifier.4.weight",
    "lraspp_mobilenet_v3_large": "classifier.high_classifier.weight",
}


class TorchvisionSegmenter(SegmenterBase):
    """A torchvision segmentation model behind the :class:`SegmenterBase` protocol (logits from ``["out"]``)."""

    def __init__(self, net: nn.Module, *, name: str, class_names: tuple[str, ...], class_set: str | None,
                 source: str) -> None:
        super().__init__()
        self.net = net
        self.name = name
        self._set_meta(class_names=class_names, class_set=class_set, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                       train_size=None, source=source, output_kind="logits")
        self.spec = source  # the original torchvision: spec

    def checkpoint_record(self) -> dict[str, Any]:
        """What rebuilds this model (checkpoint ``meta["external"]``): NAME, classes, auxiliary head, spec."""
        return {"name": self.name, "num_classes": self.num_classes,
                "aux_loss": getattr(self.net, "aux_classifier", None) is not None, "spec": self.spec}

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x: (B,3,H,W) normalised -> logits (B,C,H,W) float (torchvision upsamples to the input size)."""
        if return_features:
            raise self.no_features(f"torchvision {self.name} gives only its 'out' logits")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"{self.describe()} expects (B,3,H,W) normalised images, got {tuple(x.shape)}")
        return self.net(x)["out"]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state-dict file (bare, or under ``state_dict``/``model``; ``module.`` prefixes dropped)."""
    if not path.is_file():
        raise CheckpointError(f"state dict file not found: {path}")
    obj = safe_torch_load(path, path=path, what="state dict", map_location="cpu", kind="a torchvision state dict")
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} is not a state dict (a dict of tensors); save one with "
                              f"torch.save(model.state_dict(), path)")
    return {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}


def build_net(name: str, num_classes: int, aux_loss: bool) -> nn.Module:
    """torchvision ``name`` with ``num_classes`` outputs, random weights (``weights=None, weights_backbone=None``)."""
    import torchvision.models.segmentation as tvs

    if name not in MODELS:
        raise CheckpointError(f"unknown torchvision segmentation model {name!r}; valid: {', '.join(MODELS)}")
    kw = {"aux_loss": True} if aux_loss else {}
    return getattr(tvs, name)(weights=None, weights_backbone=None, num_classes=int(num_classes), **kw)


def rebuild_torchvision(record: dict[str, Any], *, class_names: tuple[str, ...], class_set: str | None,
                        source: str) -> TorchvisionSegmenter:
    """The (random) model of a checkpoint record (see ``checkpoint_record``); the caller loads the weights."""
    name = str(record.get("name"))
    net = build_net(name, int(record.get("num_classes", len(class_names))), bool(record.get("aux_loss")))
    model = TorchvisionSegmenter(net, name=name, class_names=class_names, class_set=class_set, source=source)
    model.spec = str(record.get("spec") or source)
    return model


def load_torchvision(name: str, path: str, *, map_location: Any = "cpu", num_classes: int | None = None,
                     class_set: str | None = None) -> TorchvisionSegmenter:
    """Build torchvision ``name`` without downloads and load the state dict at ``path`` strictly; eval mode."""
    if name not in MODELS:
        raise ConfigError(f"unknown torchvision segmentation model {name!r}; valid: {', '.join(MODELS)}")
    p = Path(path).expanduser()
    sd = read_state_dict(p)
    key = MODELS[name]
    if key not in sd:
        raise CheckpointError(f"{p} has no {key!r}: it is not a {name} state dict (keys: {sorted(sd)[:5]} ...)")
    n = int(sd[key].shape[0])
    names, cset = match_classes(None, n, num_classes=num_classes, class_set=class_set,
                                where=f"torchvision {name} state dict {p}")
    net = build_net(name, n, any(k.startswith("aux_classifier.") for k in sd))
    diff = state_dict_mismatch(net.state_dict(), sd)
    if diff:
        raise CheckpointError(f"{p} does not match torchvision {name} with {n} classes: {diff}; give the state "
                              f"dict of that model")
    check_finite(sd, str(p))
    net.load_state_dict(sd, strict=True)
    return TorchvisionSegmenter(net, name=name, class_names=names, class_set=cset,
                                source=f"torchvision:{name}:{p}").to(map_location).eval()


# ------------------------------------------------------------------------------------------ the registry's row
def _parse(spec: str, rest: str) -> tuple[str, ...]:
    name, sep, path = rest.partition(":")
    if not sep or not name or not path:
        raise ConfigError(f"model spec {spec!r} must be torchvision:NAME:STATE_DICT.pth")
    return name, path


def _load(parts: tuple[str, ...], *, map_location: Any, num_classes: int | None, class_set: str | None,
          **_: Any) -> TorchvisionSegmenter:
    return load_torchvision(*parts, map_location=map_location, num_classes=num_classes, class_set=class_set)


def _rebuild(meta: dict[str, Any], *, class_set: str | None, source: str, **_: Any) -> TorchvisionSegmenter:
    return rebuild_torchvision(meta["external"], class_names=tuple(meta["class_names"]), class_set=class_set,
                               source=source)


def _describe(spec: str, parts: tuple[str, ...], model: TorchvisionSegmenter) -> ModelOrigin:
    return origin_of("torchvision", spec, model, str(Path(parts[1]).expanduser()), name=parts[0])


SOURCE = Source("torchvision", "torchvision:NAME:STATE_DICT.pth (NAME e.g. deeplabv3_resnet50, "
                "lraspp_mobilenet_v3_large)", _parse, _load, _rebuild, _describe)
