"""Anomaly scores of mask transformers (Mask2Former, MaskFormer, OneFormer) from their per-pixel class scores.

Input ``s``: (B,K,H,W) float, s_k = sum_q softmax(class logits_q)[k] * sigmoid(mask logits_q) in [0, 1] (what an
``hf:`` universal model returns, ``output_kind == "mask_scores"``). Each score -> (B,H,W) float32, higher = more
anomalous, computed in float32.

- ``rba``: Rejected by All, -sum_k tanh(s_k) (Nayal et al., ICCV 2023; official ``get_RbA``:
  ``-sem_seg.tanh().sum(0)``). Range [-K tanh(1), 0].
- ``mask_msp``: 1 - max_k s_k. Range [0, 1].
- ``mask_maxlogit``: -max_k s_k. Range [-1, 0].
See docs/architecture.md.
"""
from __future__ import annotations

import torch

from .logit_scores import check_logits


def rba(logits: torch.Tensor) -> torch.Tensor:
    """-sum_k tanh(s_k) of per-pixel class scores s (B,K,H,W) in [0,1]. Range [-K tanh(1), 0]."""
    s = check_logits(logits, "rba")
    return -torch.tanh(s).sum(dim=1)


def mask_msp(logits: torch.Tensor) -> torch.Tensor:
    """1 - max_k s_k of per-pixel class scores s (B,K,H,W) in [0,1]. Range [0, 1]."""
    s = check_logits(logits, "mask_msp")
    return 1.0 - s.amax(dim=1)


def mask_maxlogit(logits: torch.Tensor) -> torch.Tensor:
    """-max_k s_k of per-pixel class scores s (B,K,H,W) in [0,1]. Range [-1, 0]."""
    s = check_logits(logits, "mask_maxlogit")
    return -s.amax(dim=1)
