"""``hf:DIR``: a transformers segmentation model from a local folder, loaded strictly offline.

DIR is a folder written by ``save_pretrained`` (``config.json`` + weights), a hub snapshot folder, or a hub cache
folder ``models--ORG--NAME`` (its ``refs/main`` snapshot). ``local_files_only=True`` always: no network call.
Semantic models (``AutoModelForSemanticSegmentation``: SegFormer, UperNet, DPT, BEiT, ...) give logits, upsampled
(bilinear) to the input size. Universal models (``AutoModelForUniversalSegmentation``: Mask2Former, MaskFormer,
OneFormer) give per-query class logits (B,Q,C+1) and mask logits (B,Q,h,w); the per-pixel class scores are
``einsum("bqc,bqhw->bchw", softmax(class logits)[..., :-1], sigmoid(upsampled mask logits))`` in [0, 1]
(``output_kind = "mask_scores"``), the masks upsampled to the input size before the sigmoid. Class names come from
``config.id2label``; mean/std from ``preprocessor_config.json`` (``image_mean``/``image_std`` on images rescaled by
``rescale_factor``, converted to denseood's 0..1 convention; default ImageNet). denseood picks the input size
itself (``train_size`` None = the image size; HF processors would resize, e.g. Mask2Former to 384x384).

A fine-tuned model is saved as a denseood checkpoint (``HFSegmenter.checkpoint_record``: model type, universal
flag, ``config.to_dict()``, OneFormer task tokens, the original spec) and rebuilt by :func:`rebuild_hf` with
``AutoModelFor...Segmentation.from_config`` (no folder, no network), then the state dict is loaded strictly.
See docs/architecture.md.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import CheckpointError, ConfigError
from ..base import IMAGENET_MEAN, IMAGENET_STD, SegmenterBase, match_classes

#: model types whose outputs are per-query masks (AutoModelForUniversalSegmentation)
UNIVERSAL_TYPES = ("mask2former", "maskformer", "oneformer")


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(f"an hf: model needs the transformers package ({e}); install it with "
                          f"`pip install denseood[hf]`") from e
    return transformers


def resolve_dir(path: str | Path) -> Path:
    """The folder holding ``config.json``: DIR itself, or the ``refs/main`` (or only) snapshot of a hub cache folder."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise CheckpointError(f"hf: model folder not found: {d}; give a folder written by save_pretrained")
    if (d / "config.json").is_file():
        return d
    snaps = d / "snapshots"
    if snaps.is_dir():
        ref = d / "refs" / "main"
        if ref.is_file() and (snaps / ref.read_text().strip() / "config.json").is_file():
            return snaps / ref.read_text().strip()
        found = sorted(p for p in snaps.iterdir() if (p / "config.json").is_file())
        if len(found) == 1:
            return found[0]
    raise CheckpointError(f"{d} has no config.json; give a folder written by save_pretrained or a hub snapshot")


def processor_mean_std(d: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std for denseood's ``(uint8/255 - mean) / std`` from ``preprocessor_config.json`` (ImageNet if absent).

    HF computes ``(x * rescale_factor - image_mean) / image_std`` on 0..255 x (without rescaling when
    ``do_rescale`` is false, identity when ``do_normalize`` is false); that equals denseood's formula with
    mean = image_mean / (255 rescale_factor) and std = image_std / (255 rescale_factor).
    """
    f = d / "preprocessor_config.json"
    if not f.is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {f}: {e}; fix or delete the file") from e
    rf = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    if cfg.get("do_normalize", True):
        mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)]
    std = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)]
    if len(mean) != 3 or len(std) != 3 or rf <= 0:
        raise CheckpointError(f"{f}: image_mean/image_std must have 3 values and rescale_factor be > 0")
    s = 255.0 * rf
    return tuple(m / s for m in mean), tuple(v / s for v in std)


class HFSegmenter(SegmenterBase):
    """A transformers semantic or universal segmentation model behind the :class:`SegmenterBase` protocol."""

    def __init__(self, net: nn.Module, *, universal: bool, class_names: tuple[str, ...], class_set: str | None,
                 mean: tuple[float, ...], std: tuple[float, ...], source: str,
                 task_inputs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.universal = bool(universal)
        self._set_meta(class_names=class_names, class_set=class_set, mean=mean, std=std, train_size=None,
                       source=source, output_kind="mask_scores" if universal else "logits")
        self.register_buffer("task_inputs", task_inputs, persistent=False)
        self.spec = source  # the original hf: spec (``source`` becomes the .pt path once saved and reloaded)

    def checkpoint_record(self) -> dict[str, Any]:
        """What rebuilds this model without its folder (checkpoint ``meta["external"]``; plain types)."""
        cfg = self.net.config
        return {"model_type": str(getattr(cfg, "model_type", "")), "universal": self.universal,
                "config": cfg.to_dict(), "spec": self.spec,
                "task_inputs": None if self.task_inputs is None else [int(v) for v in self.task_inputs[0].tolist()]}

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x: (B,3,H,W) normalised -> class scores (B,C,H,W) float32 (logits, or s_k in [0,1] for universal
        models), or ``(scores, features (B,F,h,w))`` (the pixel decoder's last hidden state; universal only)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"{self.describe()} expects (B,3,H,W) normalised images, got {tuple(x.shape)}")
        if return_features and not self.universal:
            raise self.no_features("transformers semantic models do not return their decode head's features")
        hw = tuple(x.shape[-2:])
        if not self.universal:
            logits = self.net(pixel_values=x).logits.float()
            return F.interpolate(logits, size=hw, mode="bilinear", align_corners=False)
        kw: dict[str, Any] = {}
        if self.task_inputs is not None:
            kw["task_inputs"] = self.task_inputs.expand(x.shape[0], -1)
        out = self.net(pixel_values=x, **kw)
        cls = torch.softmax(out.class_queries_logits.float(), dim=-1)[..., :-1]
        masks = F.interpolate(out.masks_queries_logits.float(), size=hw, mode="bilinear", align_corners=False)
        scores = torch.einsum("bqc,bqhw->bchw", cls, masks.sigmoid())
        if not return_features:
            return scores
        feats = getattr(out, "pixel_decoder_last_hidden_state", None)
        if feats is None:
            raise self.no_features("this universal model returns no pixel_decoder_last_hidden_state")
        return scores, feats.float()


def _oneformer_task_inputs(tf: Any, d: Path, config: Any) -> torch.Tensor:
    """Token ids of "the task is semantic" (OneFormer's task input) from the folder's tokenizer."""
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d}: OneFormer needs its tokenizer files in the folder (save the processor with "
                              f"save_pretrained too): {e}") from e
    n = int(getattr(config, "task_seq_len", 77))
    ids = tok("the task is semantic", padding="max_length", max_length=n, truncation=True)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)


def load_hf(path: str, *, map_location: Any = "cpu", num_classes: int | None = None,
            class_set: str | None = None) -> HFSegmenter:
    """Load ``hf:DIR`` (see the module docstring) in eval mode on ``map_location``."""
    tf = _transformers()
    d = resolve_dir(path)
    try:
        config = tf.AutoConfig.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the transformers config in {d}: {e}") from e
    mtype = str(getattr(config, "model_type", ""))
    universal = mtype in UNIVERSAL_TYPES
    auto = tf.AutoModelForUniversalSegmentation if universal else tf.AutoModelForSemanticSegmentation
    try:
        net = auto.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot load {d} as a transformers {'universal' if universal else 'semantic'} "
                              f"segmentation model (model_type {mtype!r}): {e}; semantic types are SegFormer, "
                              f"UperNet, DPT, BEiT, ...; universal: {', '.join(UNIVERSAL_TYPES)}") from e
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = len(id2label) or int(getattr(config, "num_labels", 0))
    names = [id2label.get(i, f"class{i}") for i in range(n)] if id2label else None
    names, cset = match_classes(names, n, num_classes=num_classes, class_set=class_set, where=f"hf model {d}")
    mean, std = processor_mean_std(d)
    task = _oneformer_task_inputs(tf, d, config) if mtype == "oneformer" else None
    model = HFSegmenter(net, universal=universal, class_names=names, class_set=cset, mean=mean, std=std,
                        source=f"hf:{d}", task_inputs=task)
    return model.to(map_location).eval()


def rebuild_hf(record: dict[str, Any], *, class_names: tuple[str, ...], class_set: str | None,
               mean: tuple[float, ...], std: tuple[float, ...], source: str) -> HFSegmenter:
    """The (randomly initialised) model of a checkpoint record (see :meth:`HFSegmenter.checkpoint_record`), built
    from its config alone (``AutoModelFor...Segmentation.from_config``); the caller loads the weights strictly."""
    tf = _transformers()
    mtype = str(record.get("model_type", ""))
    if mtype not in tf.CONFIG_MAPPING:
        raise CheckpointError(f"model type {mtype!r} is unknown to transformers {tf.__version__}; upgrade "
                              f"transformers (`pip install -U denseood[hf]`)")
    config = tf.CONFIG_MAPPING[mtype].from_dict(dict(record.get("config") or {}))
    universal = bool(record.get("universal", mtype in UNIVERSAL_TYPES))
    auto = tf.AutoModelForUniversalSegmentation if universal else tf.AutoModelForSemanticSegmentation
    try:
        net = auto.from_config(config)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot build a transformers {mtype!r} model from the stored config: {e}") from e
    ti = record.get("task_inputs")
    task = torch.tensor([list(ti)], dtype=torch.long) if ti is not None else None
    model = HFSegmenter(net, universal=universal, class_names=class_names, class_set=class_set, mean=mean, std=std,
                        source=source, task_inputs=task)
    model.spec = str(record.get("spec") or source)
    return model
