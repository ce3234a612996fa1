"""Per-frame records of ``denseood eval`` for the HTML report (``denseood report``, :mod:`denseood.commands.report`).

Pass 1 hands every labelled frame to :meth:`FrameRecords.update`, which writes ``frames/<key>.npz`` under the
staging folder and keeps one small dict per frame; :meth:`FrameRecords.write` (collective under torchrun) gathers
the dicts and rank 0 writes ``frames/frames.json``. Each ``.npz`` holds

- thumbnails at most ``width`` px wide: ``image`` (h,w,3) uint8, ``mask`` (h,w) uint8 0/1/255, ``map_<score>``
  (h,w) float16 (area-averaged), ``objects`` (h,w) uint16 S2M object ids (0 = none; only with --s2m);
- per score a sparse histogram of the full-resolution map: ``hv_<score>`` uint16 (the float16 bit pattern of a
  value), ``hg_<score>`` uint16 (the pixel's group: 0 inlier, k >= 1 ground-truth instance k, 65535 anomaly pixel
  outside every instance; void is left out), ``hc_<score>`` uint32 (pixel count).

The histograms let the report count false-positive and missed pixels at any threshold known only after pass 1
(the 95 %-TPR threshold, a deployment threshold) and each instance's pixel recall, exactly on the float16-rounded
map (the precision of the pass-2 map cache); memory stays one frame. See docs/architecture.md.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from denseood import dist
from denseood.io import atomic_write_json

from ..report.layout import FRAMES_DIR, FRAMES_JSON, NO_INSTANCE
from .passes import to_f16


def ground_truth_instances(mask: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
    """(H,W) uint16 instance index map: 1..n for the ground-truth instances inside ``mask == 1`` (the dataset's
    instance ids where given, else 8-connected components), NO_INSTANCE for other anomaly pixels, 0 elsewhere."""
    from scipy import ndimage

    anomaly = mask == 1
    if instances is None:
        lab, _ = ndimage.label(anomaly, structure=np.ones((3, 3), bool))
    else:
        ids = np.where(anomaly, np.asarray(instances), 0)
        _, lab = np.unique(ids, return_inverse=True)
        lab = lab.reshape(ids.shape)  # 0 stays 0: it is the smallest id
        if not (ids == 0).any():
            lab = lab + 1
    out = lab.astype(np.uint16)
    out[anomaly & (lab == 0)] = NO_INSTANCE
    return out


def best_iou(gt: np.ndarray, objects: np.ndarray, n_gt: int) -> np.ndarray:
    """(n_gt,) float: each ground-truth instance's (1..n_gt in ``gt``) best IoU with an object id > 0 of
    ``objects`` (same (H,W))."""
    g = gt.astype(np.int64).ravel()
    g[g == NO_INSTANCE] = 0
    o = objects.astype(np.int64).ravel()
    n_obj = int(o.max()) if o.size else 0
    if n_gt == 0 or n_obj == 0:
        return np.zeros(n_gt)
    inter = np.bincount(g * (n_obj + 1) + o, minlength=(n_gt + 1) * (n_obj + 1)).reshape(n_gt + 1, n_obj + 1)
    area_g, area_o = inter.sum(1), inter.sum(0)
    union = area_g[:, None] + area_o[None, :] - inter
    iou = inter[1:, 1:] / np.maximum(union[1:, 1:], 1)
    return iou.max(1)


def sparse_histogram(bits: np.ndarray, group: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts per (float16 bit pattern, group) pair that occurs: (bits uint16, groups uint16, counts uint32).
    ``bits`` (N,) uint16, ``group`` (N,) ints (0 inlier, else an instance or NO_INSTANCE). The inliers (most
    pixels) are counted by one dense bincount, the few anomaly pixels by a sort."""
    inlier = group == 0
    dense = np.bincount(bits[inlier], minlength=1 << 16)
    neg = np.flatnonzero(dense)
    key, n = np.unique((bits[~inlier].astype(np.uint32) << 16) | group[~inlier], return_counts=True)
    return (np.r_[neg, key >> 16].astype(np.uint16), np.r_[np.zeros(neg.size), key & 0xFFFF].astype(np.uint16),
            np.r_[dense[neg], n].astype(np.uint32))


def thumbnail_size(h: int, w: int, width: int) -> tuple[int, int]:
    """(h, w) of a thumbnail at most ``width`` px wide (never enlarged)."""
    if w <= width:
        return h, w
    return max(1, round(h * width / w)), width


class FrameRecords:
    """This rank's per-frame records. stage: the eval staging folder; scores: score names; width: thumbnail width
    in px; enabled: False records nothing (splits without labels)."""

    def __init__(self, stage: Path, scores: Sequence[str], width: int = 320, enabled: bool = True) -> None:
        self.dir = Path(stage) / FRAMES_DIR
        self.scores = list(scores)
        self.width = int(width)
        self.enabled = bool(enabled)
        self.records: list[dict[str, Any]] = []

    def update(self, sample: Any, maps: dict[str, np.ndarray], objects: Any = None) -> None:
        """One frame: ``sample`` (image (H,W,3) uint8, ood_mask (H,W) uint8 0/1/255, instances, name), ``maps``
        {score: (H,W) float}, ``objects``: the frame's S2MResult (``.instances`` (H,W) ids) or None."""
        if not self.enabled:
            return
        mask = np.asarray(sample.ood_mask, np.uint8)
        gt = ground_truth_instances(mask, getattr(sample, "instances", None))
        n_gt = int(gt[gt != NO_INSTANCE].max()) if gt.size else 0
        h, w = thumbnail_size(*mask.shape, self.width)
        arrays: dict[str, np.ndarray] = {
            "image": cv2.resize(np.asarray(sample.image, np.uint8), (w, h), interpolation=cv2.INTER_AREA),
            "mask": cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)}
        valid = mask != 255
        group = np.where(mask == 1, gt, 0).astype(np.uint32)[valid]
        for s in self.scores:
            m = np.asarray(maps[s], np.float32)
            arrays[f"map_{s}"] = to_f16(cv2.resize(np.nan_to_num(m), (w, h), interpolation=cv2.INTER_AREA))
            bits, groups, counts = sparse_histogram(to_f16(m).view(np.uint16)[valid], group)
            arrays.update({f"hv_{s}": bits, f"hg_{s}": groups, f"hc_{s}": counts})
        areas = np.bincount(gt[gt != NO_INSTANCE].ravel(), minlength=n_gt + 1)[1:]
        ious = None
        if objects is not None:
            inst = np.asarray(objects.instances)
            arrays["objects"] = cv2.resize(inst.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)
            ious = best_iou(gt, inst, n_gt)
        key = hashlib.sha1(str(sample.name).encode()).hexdigest()[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / f"{key}.npz", "wb") as f:
            np.savez_compressed(f, **arrays)
        self.records.append({
            "name": str(sample.name), "file": f"{key}.npz", "height": int(mask.shape[0]), "width": int(mask.shape[1]),
            "n_anomaly": int((mask == 1).sum()), "n_inlier": int((mask == 0).sum()),
            "n_objects": None if objects is None else int(len(objects)),
            "instances": [{"area": int(a), "s2m_iou": None if ious is None else float(ious[k])}
                          for k, a in enumerate(areas)]})

    def write(self) -> None:
        """Collective: gather every rank's records; rank 0 writes ``frames/frames.json`` ({"scores", "thumb_width",
        "frames": [records sorted by name]})."""
        parts = dist.gather(self.records if self.enabled else [])
        if dist.rank() != 0 or not self.enabled:
            return
        frames = sorted((r for p in parts for r in p), key=lambda r: r["name"])
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.dir / FRAMES_JSON, {"scores": self.scores, "thumb_width": self.width,
                                                     "frames": frames})
