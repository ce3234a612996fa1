"""Semantic-segmentation metrics over a dataset: a class confusion matrix -> mIoU, per-class IoU, pixel accuracy.

``SemanticMetrics.update`` accumulates on the CPU in float64 (exact counts up to 2**53 pixels); ``compute`` is
collective under torch.distributed (every rank must call it; the matrices are summed over ranks). Imports only
the core modules. See docs/architecture.md.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import dist
from ..errors import ConfigError


class SemanticMetrics:
    """Confusion matrix of ``num_classes`` classes; pixels whose target is ``ignore_index`` are skipped.

    ``compute()`` -> ``{"miou", "iou", "acc", "pixels"}``: ``iou`` is a list of ``num_classes`` floats in [0, 1]
    (NaN for a class with no target pixel), ``miou`` the mean over the classes that have target pixels,
    ``acc`` the fraction of counted pixels predicted right, ``pixels`` the number of counted pixels
    (``miou`` and ``acc`` are NaN when it is 0).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255):
        if int(num_classes) <= 0:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        self.num_classes, self.ignore_index = int(num_classes), int(ignore_index)
        self.confusion = torch.zeros(self.num_classes ** 2, dtype=torch.float64)  # row: target, column: prediction

    def update(self, pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> None:
        """Add one frame or batch. pred: (..., H, W) int class ids in [0, num_classes); target: same shape,
        ids in [0, num_classes) or ``ignore_index``. Raises ConfigError on a shape mismatch or an id out of range."""
        p = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        t = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        if p.shape != t.shape:
            raise ConfigError(f"prediction shape {p.shape} does not match target shape {t.shape}")
        valid = t != self.ignore_index
        tv, pv = t[valid].astype(np.int64), p[valid].astype(np.int64)
        c = self.num_classes
        for name, v in (("target", tv), ("prediction", pv)):
            if v.size and (v.min() < 0 or v.max() >= c):
                raise ConfigError(f"{name} holds class ids outside 0..{c - 1} (ignore = {self.ignore_index})")
        self.confusion += torch.from_numpy(np.bincount(tv * c + pv, minlength=c * c).astype(np.float64))

    def compute(self) -> dict[str, float | list[float]]:
        """The metrics of every pixel seen on every rank (collective under DDP; the state is left unchanged)."""
        c = self.num_classes
        cm = dist.all_reduce(self.confusion, "sum").view(c, c).numpy()
        total = float(cm.sum())
        inter = np.diag(cm)
        union = cm.sum(0) + cm.sum(1) - inter
        present = cm.sum(1) > 0
        iou = np.full(c, np.nan)
        iou[present] = inter[present] / np.maximum(union[present], 1)
        miou = float(np.mean(iou[present])) if present.any() else float("nan")
        acc = float(inter.sum() / total) if total else float("nan")
        return {"miou": miou, "iou": iou.tolist(), "acc": acc, "pixels": total}

    def reset(self) -> None:
        """Forget every pixel seen."""
        self.confusion.zero_()
