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
See docs/architecture.md.
"""
from __future__ import annotations

import torch

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
