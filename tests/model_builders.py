"""Tiny random external models for tests (transformers SegFormer / Mask2Former folders, a torchvision state dict,
a python: factory file), shared by tests/models/test_sources.py and tests/commands/test_own_models.py."""
from __future__ import annotations

import json
from pathlib import Path

import torch

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def write_processor(d: Path, mean=MEAN, std=STD) -> None:
    """A preprocessor_config.json with ``mean``/``std`` on the 0..1 scale (rescale_factor 1/255)."""
    (d / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": list(mean), "image_std": list(std), "rescale_factor": 1 / 255, "do_rescale": True,
         "do_normalize": True}))


def _scale(*layers, by: float) -> None:
    """Multiply the weights and biases of ``layers`` by ``by`` (spreads a random head's outputs: well separated
    scores, so AP is not decided by float32 ties)."""
    with torch.no_grad():
        for layer in layers:
            for p in layer.parameters():
                p.mul_(by)


def tiny_segformer(d: Path, num_labels: int = 5, labels: dict | None = None, seed: int = 0, logit_scale: float = 1.0):
    """A random 2-block SegFormer saved into ``d`` (with a processor config), its classifier's weights times
    ``logit_scale``; returns the net in eval mode."""
    import transformers

    torch.manual_seed(seed)
    kw = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}} if labels else {}
    cfg = transformers.SegformerConfig(
        num_channels=3, num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
        num_attention_heads=[1, 1], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2], decoder_hidden_size=16,
        num_labels=num_labels, **kw)
    net = transformers.SegformerForSemanticSegmentation(cfg).eval()
    _scale(net.decode_head.classifier, by=logit_scale)
    net.save_pretrained(d)
    write_processor(d)
    return net


def tiny_mask2former(d: Path, num_labels: int = 4, seed: int = 1, logit_scale: float = 1.0):
    """A random Mask2Former with a 4-stage Swin of width 16 and 6 queries saved into ``d``, its class predictor's
    weights times ``logit_scale``; the net in eval mode."""
    import transformers

    torch.manual_seed(seed)
    bb = transformers.SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1],
                                 num_heads=[1, 1, 1, 1], window_size=4,
                                 out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.Mask2FormerConfig(
        backbone_config=bb, use_pretrained_backbone=False, feature_size=32, mask_feature_size=32, hidden_dim=32,
        encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=1, decoder_layers=2, num_attention_heads=2,
        num_queries=6, num_labels=num_labels, common_stride=4)
    net = transformers.Mask2FormerForUniversalSegmentation(cfg).eval()
    _scale(net.class_predictor, by=logit_scale)
    net.save_pretrained(d)
    write_processor(d)
    return net


def tiny_lraspp(path: Path, num_classes: int = 19, seed: int = 2, logit_scale: float = 1.0):
    """A random torchvision lraspp_mobilenet_v3_large (classifier weights times ``logit_scale``) whose state dict is
    saved at ``path``; the net, eval mode."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(seed)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    _scale(net.classifier, by=logit_scale)
    torch.save(net.state_dict(), path)
    return net


FACTORY = '''import torch
import torch.nn as nn


def make(num_classes=19):
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, num_classes, 3, stride=2, padding=1))
'''


def write_factory(path: Path) -> Path:
    """A python: factory module (``make(num_classes=19)``: a seeded two-layer conv net at stride 2) at ``path``."""
    path.write_text(FACTORY)
    return path


def rba_pipeline_masks(net, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The RbA / Mask2Former (detectron2) inference path for normalised x (B,3,H,W): zero-pad bottom/right to a
    multiple of 32 (``ImageList.from_tensors(size_divisibility=32)``, pad value 0 after normalisation), run the
    net, upsample the mask logits bilinearly to the *padded* size and crop to (H, W) (``sem_seg_postprocess``).
    Returns (class logits (B,Q,C+1), mask logits (B,Q,H,W))."""
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    xp = F.pad(x, (0, -w % 32, 0, -h % 32))
    out = net(pixel_values=xp)
    up = F.interpolate(out.masks_queries_logits, size=tuple(xp.shape[-2:]), mode="bilinear", align_corners=False)
    return out.class_queries_logits, up[..., :h, :w]
