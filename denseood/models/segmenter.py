"""Semantic segmenter over segmentation-models-pytorch (smp): the :class:`Segmenter` wrapper and its factory.

``create_segmenter`` builds an smp model from the ``ARCHS`` registry ({name: smp class name}; an unknown name is a
ConfigError listing the valid ones), never downloading anything (encoder weights come from a local file, see
``encoder_weights.py``), wrapped in :class:`Segmenter`, which returns logits at input resolution and, on request,
the decoder features (the input of the segmentation head); with ``head="abet"`` it carries AbeT's learned
temperature (:class:`TemperatureHead`) and returns f / T(x). The checkpoint file format lives in ``checkpoint.py``.
See docs/architecture.md.
"""
from __future__ import annotations

import difflib
import math
import os
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.classes import CLASS_SETS
from ..errors import ConfigError
from .base import IMAGENET_MEAN, IMAGENET_STD, SegmenterBase, plain_types
from .encoder_weights import _weight_file, load_encoder_weights
from .names import HEADS  # re-exported


#: smp class names by lower-case architecture name (all use smp's encoder -> decoder -> segmentation_head path)
ARCHS: dict[str, str] = {
    "fpn": "FPN",
    "deeplabv3plus": "DeepLabV3Plus",
    "unet": "Unet",
    "deeplabv3": "DeepLabV3",
    "pspnet": "PSPNet",
    "linknet": "Linknet",
    "unetplusplus": "UnetPlusPlus",
}

#: keys of ``Segmenter.stats`` understood by the fitted scores
STATS_KEYS = ("sml_mean", "sml_std", "maha_means", "maha_precision", "maha_counts")


class TemperatureHead(nn.Module):
    """AbeT's learned temperature (GODIN's h_T): T(x) = sigmoid(BN(conv1x1(features))) + 1e-12, one channel.

    features (B,F,h,w) -> T (B,1,h,w) float32 (float64 for float64 weights) in (0, 1 + 1e-12]: conv and BN run in
    the weights' dtype outside autocast, the sigmoid and eps in float32 at least (so bf16/fp16 never round T to 0). As the authors' ``LearnedTemperatureSemSegNet.temperature`` (github.com/anonymousoodauthor/
    abet, segmentation/meta-ood-evaluation/src/model/temperature_networks.py: Conv2d(F, 1, 1, bias=False),
    BatchNorm2d(1), Sigmoid, + 1e-12). Their cosine-similarity class head is not used: denseood divides the smp
    segmentation head's logits by T.
    """

    EPS = 1e-12

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(int(in_channels), 1, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(features.device.type, enabled=False):
            z = self.bn(self.conv(features.to(self.conv.weight.dtype)))
            return torch.sigmoid(z if z.dtype == torch.float64 else z.float()) + self.EPS


class Segmenter(SegmenterBase):
    """smp segmentation model + metadata (classes, normalisation) + fitted score statistics.

    Attributes: ``arch``, ``encoder_name``, ``num_classes``, ``class_names`` (tuple), ``class_set`` (name in
    ``CLASS_SETS`` or None), ``mean``/``std`` (3-tuples for 0..1 RGB), ``train_size`` ((H, W) of the training frames or None; the
    default inference size),
    ``feature_channels`` (channels F of the decoder features), ``pad_multiple`` (inputs are zero-padded at the
    bottom/right to a multiple of this, i.e. with the normalised mean colour, and outputs cropped back),
    ``stats`` (dict of fitted score statistics: ``sml_mean`` (C,), ``sml_std`` (C,), ``maha_means`` (C,F),
    ``maha_precision`` (F,F), optionally ``maha_counts`` (C,)), ``head`` (None, or "abet": a
    :class:`TemperatureHead` ``temperature_head`` on the decoder features, and the logits are f / T(x)).
    """

    def __init__(self, net: nn.Module, *, arch: str, encoder_name: str, num_classes: int,
                 class_names: Sequence[str], class_set: str | None, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, train_size: Sequence[int] | None = None,
                 smp_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.net = net
        self.arch = arch
        self.encoder_name = encoder_name
        self._set_meta(class_names=class_names, class_set=class_set, mean=mean, std=std, train_size=train_size,
                       source=None, output_kind="logits")
        self.num_classes = int(num_classes)
        self.smp_kwargs: dict[str, Any] = dict(smp_kwargs or {})
        self.feature_channels = int(net.segmentation_head[0].in_channels)
        self.pad_multiple = _pad_multiple(net.encoder)
        self.head: str | None = None

    def set_head(self, head: str | None) -> None:
        """Attach a new (untrained) training head: ``"abet"`` adds a :class:`TemperatureHead` (``None``: nothing).
        ConfigError for an unknown name or when the model already carries a head."""
        if head is None:
            return
        if head not in HEADS:
            raise ConfigError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
        if self.head is not None:
            raise ConfigError(f"{self.describe()} already carries the {self.head!r} head")
        ref = next(self.net.segmentation_head.parameters())
        self.temperature_head = TemperatureHead(self.feature_channels).to(ref.device)
        self.head = head

    @property
    def encoder(self) -> nn.Module:
        """The smp encoder (``self.net.encoder``)."""
        return self.net.encoder

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x: (B,3,H,W) float, normalised. Returns logits (B,C,H,W) or ``(logits, features)``.

        features: (B,F,h,w) decoder output before the segmentation head, cropped to the part that covers the
        input (h = ceil(H * scale) for the decoder's scale; e.g. H/4 for FPN and DeepLabV3+, H for Unet).
        Any H, W works: the input is zero-padded (bottom/right) to a multiple of ``pad_multiple`` and cropped back.
        """
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"Segmenter.forward expects (B,3,H,W) normalised images, got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.pad_multiple
        ph, pw = (-h) % m, (-w) % m
        xp = F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x
        feats = self.net.encoder(xp)
        dec = self.net.decoder(feats)
        logits = self.net.segmentation_head(dec)
        if logits.shape[-2:] != xp.shape[-2:]:  # heads of some archs stop short of input size
            logits = F.interpolate(logits, size=xp.shape[-2:], mode="bilinear", align_corners=False)
        if self.head == "abet":
            logits = logits / self._temperature(dec, tuple(xp.shape[-2:]))
        logits = logits[..., :h, :w]
        if not return_features:
            return logits
        fh = min(dec.shape[-2], math.ceil(h * dec.shape[-2] / xp.shape[-2]))
        fw = min(dec.shape[-1], math.ceil(w * dec.shape[-1] / xp.shape[-1]))
        return logits, dec[..., :fh, :fw]

    def _temperature(self, dec: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """T(x) (B,1,*size) float32 > 0 from decoder features (B,F,h,w), upsampled bilinearly (a convex combination
        of positive values stays positive)."""
        t = self.temperature_head(dec)
        return t if tuple(t.shape[-2:]) == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    def temperature(self, x: torch.Tensor) -> torch.Tensor:
        """AbeT's learned temperature T(x) (B,1,H,W) float32 > 0 of normalised x (B,3,H,W), at the logits'
        resolution; ConfigError for a model without the head."""
        if self.head != "abet":
            raise ConfigError(f"{self.describe()} has no learned temperature; train one with `denseood train "
                              f"--head abet`")
        h, w = x.shape[-2:]
        m = self.pad_multiple
        xp = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        return self._temperature(self.net.decoder(self.net.encoder(xp)), tuple(xp.shape[-2:]))[..., :h, :w]

    def meta(self) -> dict[str, Any]:
        """Plain-types description used to rebuild the model (checkpoint ``meta``; see ``checkpoint.py``); ``head``
        only when the model carries one (so checkpoints without a head are written as before)."""
        common = {k: v for k, v in super().meta().items() if k not in ("source", "output_kind")}
        head = {"head": self.head} if self.head is not None else {}
        return {"arch": str(self.arch), "encoder": str(self.encoder_name), **common,
                "smp_kwargs": plain_types(self.smp_kwargs, "smp_kwargs"), **head,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def describe(self) -> str:
        """``arch/encoder``."""
        return f"{self.arch}/{self.encoder_name}"

    def extra_repr(self) -> str:
        return (f"arch={self.arch!r}, encoder={self.encoder_name!r}, num_classes={self.num_classes}, "
                f"class_set={self.class_set!r}, feature_channels={self.feature_channels}"
                + (f", head={self.head!r}" if self.head is not None else ""))


def _pad_multiple(encoder: nn.Module) -> int:
    """Multiple the input size must have: 2**depth of the encoder (covers dilated encoders and all decoders)."""
    depth = getattr(encoder, "_depth", None)
    stride = int(getattr(encoder, "output_stride", 32) or 32)
    if isinstance(depth, int) and depth > 0:
        return max(stride, 2 ** depth)
    return max(stride, 32)


def _resolve_classes(num_classes: int, class_names: Sequence[str] | None,
                     class_set: str | None) -> tuple[tuple[str, ...], str | None]:
    """(class names, class-set name or None) from an explicit class_set, explicit names, or the first class set
    with ``num_classes`` classes (else ``class0..``); ConfigError on any inconsistency."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    if class_set is not None:
        if class_set not in CLASS_SETS:
            raise ConfigError(f"unknown class_set {class_set!r}; valid: {sorted(CLASS_SETS)}")
        names = CLASS_SETS[class_set]
        if len(names) != num_classes:
            raise ConfigError(f"class_set {class_set!r} has {len(names)} classes but num_classes={num_classes}; "
                              f"pass num_classes={len(names)}")
        if class_names is not None and tuple(class_names) != tuple(names):
            raise ConfigError(f"class_names {tuple(class_names)} differ from class_set {class_set!r} {names}; "
                              f"pass only one of them")
        return tuple(names), class_set
    if class_names is not None:
        names = tuple(str(c) for c in class_names)
        if len(names) != num_classes:
            raise ConfigError(f"{len(names)} class_names given but num_classes={num_classes}")
        match = next((k for k, v in CLASS_SETS.items() if tuple(v) == names), None)
        return names, match
    for key, names in CLASS_SETS.items():
        if len(names) == num_classes:
            return tuple(names), key
    return tuple(f"class{i}" for i in range(num_classes)), None


def _check_encoder_name(encoder: str) -> None:
    """ConfigError with close matches unless ``encoder`` is an smp encoder name or ``tu-<timm model>``."""
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        import timm

        base = encoder[3:].split(".")[0]
        if not timm.is_model(base):
            close = difflib.get_close_matches(base, timm.list_models(), n=5)
            raise ConfigError(f"unknown timm encoder {encoder!r}; close matches: {['tu-' + c for c in close]}")
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=5)
        raise ConfigError(f"unknown encoder {encoder!r}; close matches: {close}; any smp encoder name or "
                          f"'tu-<timm model>' works (see segmentation_models_pytorch.encoders.get_encoder_names())")


def create_segmenter(arch: str = "fpn", encoder: str = "resnet18", num_classes: int = 19, *,
                     encoder_weights: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                     class_set: str | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                     std: Sequence[float] = IMAGENET_STD, train_size: tuple[int, int] | None = None,
                     head: str | None = None, **smp_kwargs: Any) -> Segmenter:
    """Build a :class:`Segmenter` (randomly initialised, nothing downloaded).

    arch: one of ``ARCHS`` (case-insensitive). encoder: any smp encoder name (``tu-<timm name>`` too).
    encoder_weights: None, or the path of a local weight file for the encoder (smp encoder / torchvision /
    timm style state dict, ``.pth``/``.pt``/``.safetensors``), loaded strictly. Names such as "imagenet" raise
    ConfigError (no downloads here). smp_kwargs go to the smp model class (e.g. ``decoder_channels``,
    ``encoder_depth``, ``encoder_output_stride``). head: None, or a name in ``HEADS`` (``"abet"``: :meth:`Segmenter.set_head`).
    """
    import segmentation_models_pytorch as smp

    key = str(arch).lower().replace("_", "").replace("-", "")
    if key not in ARCHS:
        raise ConfigError(f"unknown arch {arch!r}; valid: {sorted(ARCHS)}")
    if head is not None and head not in HEADS:
        raise ConfigError(f"unknown head {head!r}; valid: {', '.join(HEADS)}")
    names, cset = _resolve_classes(num_classes, class_names, class_set)
    _check_encoder_name(encoder)
    weight_file = _weight_file(encoder_weights)
    for bad in ("encoder_weights", "classes", "in_channels"):
        if bad in smp_kwargs:
            raise ConfigError(f"{bad!r} is set by create_segmenter itself; do not pass it in smp_kwargs")
    if smp_kwargs.get("aux_params") is not None:
        raise ConfigError("aux_params (smp classification head) is not supported by Segmenter")
    if smp_kwargs.get("activation") is not None:
        raise ConfigError("activation must be None: Segmenter returns logits (scores need raw logits)")
    smp_kwargs = {k: v for k, v in smp_kwargs.items() if k not in ("aux_params", "activation")}
    cls = getattr(smp, ARCHS[key])
    try:
        net = cls(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=num_classes, **smp_kwargs)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"cannot build {ARCHS[key]} with encoder {encoder!r} and {smp_kwargs}: {e}") from e
    if weight_file is not None:
        load_encoder_weights(net.encoder, weight_file)
    model = Segmenter(net, arch=key, encoder_name=encoder, num_classes=num_classes, class_names=names,
                      class_set=cset, mean=mean, std=std, train_size=train_size, smp_kwargs=smp_kwargs)
    model.set_head(head)
    return model

