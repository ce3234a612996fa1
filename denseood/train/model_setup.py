"""The trained model: built from the config (a new smp segmenter, or any ``load_model`` spec with ``--init``),
what the losses see as its logits, frozen BatchNorm, gradient averaging for the non-DDP flow.

See docs/architecture.md.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .. import dist
from ..errors import ConfigError
from .config import TrainConfig


def build_model(cfg: TrainConfig, num_classes: int, class_names, class_set: str | None,
                frame_size: tuple[int, int], device: torch.device, distributed: bool,
                trust_code: bool = False) -> nn.Module:
    """The segmenter to train, on ``device``: ``cfg.init`` loaded through ``load_model`` (a denseood checkpoint,
    hf:DIR, torchvision:NAME:FILE, python:MODULE:FACTORY; every later step sees only the SegmenterBase protocol),
    else a new ``create_segmenter(cfg.arch, cfg.encoder, ...)``; SyncBatchNorm with ``cfg.sync_bn`` (CUDA DDP only).
    ``train_size`` is set to ``frame_size``, the frame size the crops were cut from (at scale 1): inference resizes
    to it by default; the square crop is no inference size. ``cfg.init_weights`` / ``trust_code``: as
    ``load_model``'s ``weights`` / ``trust_code`` (a checkpoint never imports code without ``trust_code``).
    ``cfg.head`` adds that training head (:func:`add_head`)."""
    from ..models.segmenter import create_segmenter
    from ..models.sources import load_model

    if cfg.init:
        model = load_model(cfg.init, map_location="cpu", num_classes=num_classes, class_set=class_set,
                           weights=cfg.init_weights, trust_code=trust_code)
    elif cfg.init_weights:
        raise ConfigError(f"init_weights {cfg.init_weights} needs init python:MODULE:FACTORY (--init)")
    else:
        model = create_segmenter(cfg.arch, cfg.encoder, num_classes, encoder_weights=cfg.encoder_weights,
                                 class_names=class_names, class_set=class_set, train_size=frame_size)
    if cfg.head is not None:
        add_head(model, cfg.head)
    model.train_size = frame_size
    model.to(device)
    if cfg.sync_bn:
        if not distributed:
            raise ConfigError("--sync-bn needs a DDP run (torchrun --nproc_per_node N)")
        if device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA devices (SyncBatchNorm does not run on CPU); use --set freeze_bn=true on CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def add_head(model: nn.Module, head: str) -> None:
    """Give the smp segmenter ``model`` the training head ``head`` ("abet": AbeT's learned temperature) unless it
    carries it already (fine-tuning a ``--head abet`` checkpoint); ConfigError for other models or another head."""
    from ..models.segmenter import Segmenter

    if not isinstance(model, Segmenter):
        what = getattr(model, "describe", lambda: type(model).__name__)()
        raise ConfigError(f"--head {head} needs an smp segmenter (--arch/--encoder, or --init of a denseood smp "
                          f"checkpoint), not {what}")
    if model.head != head:
        model.set_head(head)


def freeze_bn(model: nn.Module) -> None:
    """Put every BatchNorm layer of ``model`` in eval mode (running statistics frozen)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def class_logits(scores: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """What the CE and JS losses see as logits (they apply softmax over the class dimension).

    Semantic models (``output_kind == "logits"``): their logits, unchanged. Mask transformers (``"mask_scores"``,
    Mask2Former/MaskFormer/OneFormer through ``hf:``): their per-pixel class scores s_k in [0, Q] are passed as
    ``log(max(s_k, 1e-6))``, so the losses' softmax equals the normalised scores ``s_k / sum_j s_j``: CE is the
    negative log of the labelled class's share and JS compares that distribution with the uniform one. (Treating
    s_k itself as logits would make softmax nearly uniform whatever the masks: every logit in [0, 1] bounds the
    class-probability ratio by e, so CE could never become small and JS would be ~0 before any training.)
    scores: (B,C,H,W) float -> (B,C,H,W) float32.
    """
    if getattr(model, "output_kind", "logits") == "mask_scores":
        return scores.float().clamp_min(1e-6).log()
    return scores


def allreduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks (the flow is sampled, not called through forward(), so it is not DDP-wrapped)."""
    if not dist.is_dist():
        return
    w = dist.world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce_sum(p.grad)
            p.grad.div_(w)
