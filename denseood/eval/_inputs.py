"""Input checks shared by every metric: arrays/tensors -> batched (B,H,W) scores and uint8 0/1/255 masks.

Label convention (DESIGN.md): ``ood_mask`` uint8 with 0 = inlier, 1 = anomaly, 255 = void (excluded).
Scores: higher = more anomalous; any float dtype (float16/bfloat16 are widened to float32, exactly).
See docs/architecture.md.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import DenseOODError


def to_tensor(x: Any, what: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, np.ndarray):
        if not x.flags.c_contiguous or x.strides and min(x.strides) < 0:
            x = np.ascontiguousarray(x)
        return torch.from_numpy(x)
    raise DenseOODError(f"{what} must be a numpy array or torch tensor, got {type(x).__name__}")


def prepare_inputs(scores: Any, ood_mask: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate and batch inputs.

    scores: (H,W) or (B,H,W), any float dtype (numpy or torch); ood_mask: same shape, integer or bool
    with values in {0, 1, 255}. Returns ``(scores (B,H,W) float32|float64, mask (B,H,W) uint8)`` on the
    scores' device. float16/bfloat16 are widened to float32 (exact); integer scores become float64.
    """
    s = to_tensor(scores, "scores")
    m = to_tensor(ood_mask, "ood_mask")
    if s.ndim == 2:
        s = s.unsqueeze(0)
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if s.ndim != 3:
        raise DenseOODError(f"scores must have shape (H,W) or (B,H,W), got {tuple(s.shape)}")
    if tuple(s.shape) != tuple(m.shape):
        raise DenseOODError(
            f"scores shape {tuple(s.shape)} and ood_mask shape {tuple(m.shape)} differ; resize the score map "
            "to the label resolution before evaluating")
    if s.dtype == torch.bool or s.is_complex():
        raise DenseOODError(f"scores must be real numbers (float), got dtype {s.dtype}")
    if s.dtype in (torch.float16, torch.bfloat16):
        s = s.float()
    elif not s.is_floating_point():
        s = s.double()
    if m.dtype == torch.bool:
        m = m.to(torch.uint8)
    elif m.is_floating_point() or m.is_complex():
        raise DenseOODError(f"ood_mask must be an integer array (uint8 0/1/255), got dtype {m.dtype}")
    if m.device != s.device:
        m = m.to(s.device)
    if m.numel():
        bad = (m != 0) & (m != 1) & (m != 255) if m.dtype != torch.uint8 else (m - 2) < 253  # 2..254 -> 0..252
        if bool(bad.any()):
            vals = torch.unique(m[bad])[:8].tolist()
            raise DenseOODError(
                f"ood_mask contains values {vals} outside {{0 inlier, 1 anomaly, 255 void}}; map the dataset's "
                "labels to this convention first (see denseood/data readers)")
    if m.dtype != torch.uint8:
        m = m.to(torch.uint8)
    return s.contiguous(), m.contiguous()


def raise_non_finite(s: torch.Tensor, valid: torch.Tensor) -> None:
    """Raise a DenseOODError describing the NaN/inf scores at valid pixels (call when they exist)."""
    bad = valid & ~torch.isfinite(s)
    n_nan = int((valid & torch.isnan(s)).sum())
    n_inf = int(bad.sum()) - n_nan
    frames = torch.nonzero(bad.flatten(1).any(1)).flatten()[:5].tolist() if s.ndim == 3 else []
    raise DenseOODError(
        f"anomaly scores contain {n_nan} NaN and {n_inf} inf values at non-void pixels (frames {frames} of this "
        "batch); scores must be finite: check the score function (e.g. log of 0, division by 0) or mark "
        "those pixels void (255)")


def check_finite(s: torch.Tensor, m: torch.Tensor) -> None:
    """Raise if any non-void pixel has a NaN/inf score. s: (B,H,W) float, m: (B,H,W) uint8."""
    valid = m != 255
    if not bool(torch.isfinite(torch.where(valid, s, torch.zeros((), dtype=s.dtype, device=s.device))).all()):
        raise_non_finite(s, valid)

