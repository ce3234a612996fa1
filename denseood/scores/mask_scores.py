"""Anomaly scores of mask transformers (Mask2Former, MaskFormer, OneFormer) from their per-pixel class scores.

Input ``s``: (B,K,H,W) float, s_k = sum_q softmax(class logits_q)[k] * sigmoid(mask logits_q) >= 0 (what an
``hf:`` universal model returns, ``output_kind == "mask_scores"``). s_k is not bounded by 1: it sums over the Q
queries, so s_k <= sum_q sigmoid(mask_q) <= Q (several queries voting for one class at a pixel give s_k > 1;
3.1 was measured on a trained model). The ranges below hold for any Q. Each score -> (B,H,W) float32, higher = more
anomalous, computed in float32.

- ``rba``: Rejected by All, -sum_k tanh(s_k) (Nayal et al., ICCV 2023; official ``get_RbA``:
  ``-sem_seg.tanh().sum(0)``). Range [-K tanh(Q), 0], i.e. within (-K, 0].
- ``mask_msp``: 1 - max_k s_k. Range [1 - Q, 1] (negative where some s_k > 1).
- ``mask_maxlogit``: -max_k s_k. Range [-Q, 0].
- ``eam``: 1 - sum_q m_q(x) max_{k<=K} p_q(k) from the per-query outputs (not from s), with p_q the softmax over
  the K+1 class outputs of query q (the last is no-object) and m_q the sigmoid of its mask logits. Range [1 - Q, 1].
See docs/architecture.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .logit_scores import check_logits


def rba(logits: torch.Tensor) -> torch.Tensor:
    """-sum_k tanh(s_k) of per-pixel class scores s (B,K,H,W) in [0, Q]. Range [-K tanh(Q), 0] (within (-K, 0])."""
    s = check_logits(logits, "rba")
    return -torch.tanh(s).sum(dim=1)


def mask_msp(logits: torch.Tensor) -> torch.Tensor:
    """1 - max_k s_k of per-pixel class scores s (B,K,H,W) in [0, Q]. Range [1 - Q, 1]."""
    s = check_logits(logits, "mask_msp")
    return 1.0 - s.amax(dim=1)


def mask_maxlogit(logits: torch.Tensor) -> torch.Tensor:
    """-max_k s_k of per-pixel class scores s (B,K,H,W) in [0, Q]. Range [-Q, 0]."""
    s = check_logits(logits, "mask_maxlogit")
    return -s.amax(dim=1)


def eam(logits: torch.Tensor, queries: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """EAM: 1 - sum_q sigmoid(mask_q(x)) * max_{k<=K} softmax(class_q)[k]. Range [1 - Q, 1]; (B,H,W) float32.

    logits: (B,K,H,W) class scores (only their size is used). queries: ``(class_logits (B,Q,K+1), mask_logits
    (B,Q,h,w))`` from ``model(x, return_queries=True)``; the last class output is no-object and is left out of the
    max; mask logits of another size are upsampled (bilinear) to (H,W) before the sigmoid. Higher = more anomalous.
    Checked against the authors' ``DenseOODDetectionEvaluator.process`` (github.com/matejgrcic/Open-set-M2F,
    mask2former/evaluation/ood_detection_evaluation.py): ``1 - (mask_pred.sigmoid() * softmax(mask_cls)[..., :-1]
    .max(1)[0].view(-1, 1, 1)).sum(0)``, which is already oriented higher = more OOD.
    """
    s = check_logits(logits, "eam")
    if queries is None:
        raise ConfigError("score 'eam' needs a mask transformer's query outputs: call the model with "
                          "return_queries=True and pass queries=(class_logits, mask_logits)")
    cls, masks = queries
    b, k, h, w = s.shape
    if cls.ndim != 3 or masks.ndim != 4 or cls.shape[:2] != masks.shape[:2] or cls.shape[0] != b \
            or cls.shape[2] != k + 1:
        raise ConfigError(f"score 'eam' expects class logits (B,Q,K+1) and mask logits (B,Q,h,w) with B={b}, K={k}; "
                          f"got {tuple(cls.shape)} and {tuple(masks.shape)}")
    best = torch.softmax(cls.float(), dim=-1)[..., :-1].amax(dim=-1)             # (B,Q)
    m = masks.float()
    if tuple(m.shape[-2:]) != (h, w):
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
    return 1.0 - torch.einsum("bq,bqhw->bhw", best, m.sigmoid())
