"""Validation during training: inlier mIoU and jsd pixel AP / FPR95 / AUROC on the validation frames.

See docs/architecture.md.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.data import Dataset, Subset

from .. import dist
from ..scores.names import DEFAULT_SCORE
from .config import IGNORE


def validate_segmenter(model: nn.Module, val_set: Dataset, num_classes: int, device: torch.device,
                       val_limit: int | None, rank: int = 0, world: int = 1) -> dict[str, float]:
    """mIoU on inlier pixels (frames with ``semantic``) and exact pixel AP / FPR95 / AUROC of the ``jsd`` score
    (frames with ``ood_mask`` holding anomalies) on the first ``val_limit`` frames of ``val_set``.

    Collective under DDP: every rank evaluates its shard of the frames and the confusion matrix and the
    pixel-metric state are reduced, so all ranks return the single-process numbers. Leaves ``model`` in eval
    mode. Returns {"val_images", "miou"?, "ap"?, "fpr95"?, "auroc"?}.
    """
    from ..eval import PixelMetrics
    from ..eval.semantic import SemanticMetrics
    from ..infer import Inference, ShardSampler

    model.eval()
    inf = Inference(model, scores=(DEFAULT_SCORE,), device=str(device), dtype="fp32", input_size=None, channels_last=False)
    sem = SemanticMetrics(num_classes, ignore_index=IGNORE)
    pix = PixelMetrics(mode="exact")
    n_anom = torch.zeros(2, dtype=torch.float64)  # frames seen, anomaly pixels seen
    limit = min(val_limit or len(val_set), len(val_set))
    subset = Subset(val_set, range(limit))
    sampler = ShardSampler(limit, rank, world)
    for samples, maps in inf.run(subset, batch_size=2, workers=0, sampler=sampler, progress=False, return_logits=True):
        pred = maps["logits"].argmax(1).cpu().numpy()
        for i, s in enumerate(samples):
            if s.semantic is not None:
                sem.update(pred[i], s.semantic)
            if s.ood_mask is not None:
                n_anom[1] += float((s.ood_mask == 1).sum())
                pix.update(maps[DEFAULT_SCORE][i].cpu(), s.ood_mask)
            n_anom[0] += 1
    semantic = sem.compute()
    dist.all_reduce_sum(n_anom)
    out: dict[str, float] = {"val_images": float(n_anom[0])}
    if semantic["pixels"]:
        out["miou"] = semantic["miou"]
    if n_anom[1] > 0:
        r = pix.compute()
        out.update(ap=r["ap"], fpr95=r["fpr95"], auroc=r["auroc"])
    return out
