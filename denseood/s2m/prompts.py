"""S2M prompt generators: anomaly score map (H,W) -> box prompts + point prompts + a confidence per box.

Two generators share one output type, :class:`Prompts`:

- :class:`PeakPrompter` (training-free): the map is normalised per image, connected components are found at
  several levels of the normalised map, nested components are merged across levels, and every kept component
  gives one box, positive points at its score maxima and negative points at low-score pixels inside its box.
- :class:`LearnedPrompter` (the S2M score-to-prompt module): a small torchvision FCOS detector (random init,
  nothing downloaded) that reads the calibrated score map (optionally with the image) and outputs boxes with
  confidences; boxes are kept by the detector's own NMS and its confidence cut ``score_thresh``. That cut is a
  property of the trained prompter, stored with it: by default it is set at training time to the detector
  score that maximises box F1 on held-out pasted images; it is not an anomaly threshold chosen by the user.
  It is trained by :func:`train_prompter` on inlier
  training images with pasted negatives: the connected components of the pasted mask are exact boxes and the
  segmenter's own score maps of those images are the detector input, so no OOD data set is needed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, DenseOODError

# ----------------------------------------------------------------------------------------------------------
# the prompt container


@dataclass
class Prompts:
    """Prompts of one image.

    boxes: (N,4) float32 xyxy in image pixels (x1, y1 exclusive edges).
    confidence: (N,) float32, higher = more confident (PeakPrompter: mean normalised score in [0,1];
        LearnedPrompter: detector score in [0,1]).
    points: (N,K,2) float32 xy pixel coordinates.
    point_labels: (N,K) int64, 1 = positive (object), 0 = negative (background), -1 = padding (ignore).
    """

    boxes: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    point_labels: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        n = len(self.boxes)
        self.confidence = np.asarray(self.confidence, np.float32).reshape(n)
        pts = np.asarray(self.points, np.float32)
        pl = np.asarray(self.point_labels, np.int64)
        k = pts.shape[1] if pts.ndim == 3 else (pts.size // max(2 * n, 1))
        self.points = pts.reshape(n, k, 2)
        self.point_labels = pl.reshape(n, pl.shape[1] if pl.ndim == 2 else k)
        if self.points.shape[1] != self.point_labels.shape[1]:
            raise ConfigError(f"Prompts: points {self.points.shape} and point_labels {self.point_labels.shape} disagree in K")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, k: int = 2) -> "Prompts":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, k, 2), np.float32),
                   np.zeros((0, k), np.int64))

    def select(self, idx: Sequence[int] | np.ndarray) -> "Prompts":
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        return Prompts(self.boxes[idx], self.confidence[idx], self.points[idx], self.point_labels[idx], dict(self.meta))

    def to_json(self) -> dict:
        return {"boxes": self.boxes.round(2).tolist(), "confidence": self.confidence.round(4).tolist(),
                "points": self.points.round(1).tolist(), "point_labels": self.point_labels.tolist()}


# ----------------------------------------------------------------------------------------------------------
# shared helpers


def _check_map(anomaly_map: Any) -> np.ndarray:
    a = np.asarray(anomaly_map, dtype=np.float32)
    if a.ndim != 2:
        raise ConfigError(f"anomaly map must be (H,W), got shape {a.shape}")
    if not np.isfinite(a).all():
        finite = a[np.isfinite(a)]
        fill = float(finite.min()) if finite.size else 0.0
        a = np.where(np.isfinite(a), a, fill).astype(np.float32)
    return a


def normalize_map(anomaly_map: np.ndarray, lo: float | None = None, hi: float | None = None, smooth: float = 0.0,
                  clip: tuple[float, float] | None = (0.0, 1.0)) -> tuple[np.ndarray, float, float]:
    """Map raw scores to ``(a - lo) / (hi - lo)``.

    anomaly_map: (H,W) float (higher = more anomalous). lo/hi default to robust per-image values: lo = the
    median (most pixels are inliers), hi = the maximum of the map after Gaussian smoothing with ``smooth``
    pixels sigma (so a single hot pixel does not set the scale). Returns (normalised (H,W) float32, lo, hi);
    values are clipped to ``clip`` when given. A flat map (hi <= lo) gives zeros.
    """
    a = _check_map(anomaly_map)
    s = cv2.GaussianBlur(a, (0, 0), smooth) if smooth > 0 else a
    lo = float(np.median(s)) if lo is None else float(lo)
    hi = float(s.max()) if hi is None else float(hi)
    if not hi > lo + 1e-8 * max(1.0, abs(hi)):
        return np.zeros_like(s), lo, hi
    n = (s - lo) / (hi - lo)
    if clip is not None:
        n = np.clip(n, clip[0], clip[1])
    return n.astype(np.float32), lo, hi


def box_iou_np(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes a (N,4) and b (M,4) -> (N,M) float64."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms_np(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy NMS; returns kept indices sorted by descending score."""
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep: list[int] = []
    ious = box_iou_np(boxes, boxes)
    for i in order:
        if all(ious[i, j] <= iou for j in keep):
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


def points_for_box(norm_map: np.ndarray, box: np.ndarray, region: np.ndarray | None = None, n_pos: int = 1,
                   n_neg: int = 1, neg_level: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Point prompts for one box.

    norm_map: (H,W) float32 normalised scores in [0,1]. box: (4,) xyxy. region: optional (H,W) bool object
    pixels (positives are taken inside it, negatives outside it). Positives: successive maxima of the map
    inside the box/region, each suppressing a disc of radius max(2, 0.15 * short box side). Negatives: the
    lowest-score pixel (below ``neg_level``) of each box quadrant, lowest first. Missing points are padding.
    Returns coords (n_pos+n_neg, 2) float32 xy and labels (n_pos+n_neg,) int64.
    """
    h, w = norm_map.shape
    x0 = int(np.clip(math.floor(box[0]), 0, w - 1))
    y0 = int(np.clip(math.floor(box[1]), 0, h - 1))
    x1 = int(np.clip(math.ceil(box[2]), x0 + 1, w))
    y1 = int(np.clip(math.ceil(box[3]), y0 + 1, h))
    sub = norm_map[y0:y1, x0:x1]
    reg = region[y0:y1, x0:x1] if region is not None else np.ones_like(sub, dtype=bool)
    coords = np.zeros((n_pos + n_neg, 2), np.float32)
    labels = np.full(n_pos + n_neg, -1, np.int64)
    bh, bw = sub.shape
    yy, xx = np.mgrid[0:bh, 0:bw]
    cand = np.where(reg, sub, -np.inf)
    if not np.isfinite(cand).any():
        cand = sub.astype(np.float64).copy()
    cand = cand.astype(np.float64)
    radius = max(2.0, 0.15 * min(bh, bw))
    for k in range(n_pos):
        if not np.isfinite(cand).any():
            break
        iy, ix = np.unravel_index(int(np.argmax(cand)), cand.shape)
        coords[k] = (x0 + ix, y0 + iy)
        labels[k] = 1
        cand[(yy - iy) ** 2 + (xx - ix) ** 2 <= radius ** 2] = -np.inf
    if n_neg > 0:
        outside = ~reg if region is not None else np.ones_like(reg)
        low = np.where(outside & (sub < neg_level), sub, np.inf)
        picks = []
        my, mx = bh // 2, bw // 2
        for qy, qx in ((slice(0, max(my, 1)), slice(0, max(mx, 1))), (slice(0, max(my, 1)), slice(mx, bw)),
                       (slice(my, bh), slice(0, max(mx, 1))), (slice(my, bh), slice(mx, bw))):
            q = low[qy, qx]
            if q.size and np.isfinite(q).any():
                iy, ix = np.unravel_index(int(np.argmin(q)), q.shape)
                picks.append((float(q[iy, ix]), x0 + qx.start + ix, y0 + qy.start + iy))
        picks.sort()
        seen = set()
        k = n_pos
        for _, px, py in picks:
            if k >= n_pos + n_neg:
                break
            if (px, py) in seen:
                continue
            seen.add((px, py))
            coords[k] = (px, py)
            labels[k] = 0
            k += 1
    return coords, labels


# ----------------------------------------------------------------------------------------------------------
# training-free prompter


class PeakPrompter:
    """Training-free prompts from a multi-level component tree of the normalised anomaly map.

    levels: increasing levels of the normalised map (see :func:`normalize_map`; per image lo = median,
        hi = smoothed maximum unless ``lo``/``hi`` are fixed) at which connected components are taken.
    Merge rule across levels: components are nested (a component at a higher level lies inside exactly one at
    the level below). Starting from the lowest level, a component is kept whole (the outermost, most complete
    extent of the object) unless it splits into two or more components of at least ``min_area`` pixels at the
    next level, in which case it covers several objects and its children are examined instead. Boxes of the
    kept components are de-duplicated by box-IoU NMS (``nms_iou``) and capped at ``max_boxes``.
    Per-object extent: a weak object (peak well below the map's maximum) is cut by the global levels inside
    its own flanks, so each kept component is then grown to ``rel_level`` of its own peak (half maximum by
    default, never below ``floor``) unless that would swallow another kept component's peak or grow it more
    than ``max_grow`` times (``rel_level=None`` disables this).
    confidence = mean normalised score inside the (grown) component (in [0,1]).
    min_peak: optional floor on the raw smoothed maximum of a map below which no prompts are produced (for
        maps known to be calibrated, e.g. JSD in nats); None disables it.
    """

    def __init__(self, levels: Sequence[float] = (0.5, 0.6, 0.7, 0.8, 0.9), min_area: int = 32, max_boxes: int = 20,
                 n_pos: int = 1, n_neg: int = 1, nms_iou: float = 0.7, smooth: float = 1.0,
                 lo: float | None = None, hi: float | None = None, min_peak: float | None = None,
                 rel_level: float | None = 0.5, floor: float = 0.2, max_grow: float = 4.0) -> None:
        levels = sorted(float(v) for v in levels)
        if not levels or levels[0] <= 0 or levels[-1] >= 1:
            raise ConfigError(f"PeakPrompter levels must lie in (0,1), got {levels}")
        self.levels = levels
        self.min_area = int(min_area)
        self.max_boxes = int(max_boxes)
        self.n_pos, self.n_neg = int(n_pos), int(n_neg)
        self.nms_iou = float(nms_iou)
        self.smooth = float(smooth)
        self.lo, self.hi = lo, hi
        self.min_peak = min_peak
        self.rel_level, self.floor, self.max_grow = rel_level, float(floor), float(max_grow)

    def _grow(self, n: np.ndarray, regions: list[np.ndarray]) -> list[np.ndarray]:
        """Extend each kept component to ``rel_level`` of its own peak (not below ``floor``) when that is lower
        than the level it was found at, unless the grown region swallows another kept component's peak or
        grows beyond ``max_grow`` times its area (then the component stays as found)."""
        peaks = [np.unravel_index(int(np.argmax(np.where(r, n, -1.0))), n.shape) for r in regions]
        cache: dict[float, np.ndarray] = {}
        out = []
        for i, (r, (py, px)) in enumerate(zip(regions, peaks)):
            t = round(max(self.rel_level * float(n[py, px]), self.floor), 3)
            if t >= float(n[r].min()):
                out.append(r)
                continue
            if t not in cache:
                cache[t] = cv2.connectedComponents((n >= t).astype(np.uint8), connectivity=8)[1]
            lab = cache[t]
            g = lab == lab[py, px]
            others = any(g[qy, qx] for j, (qy, qx) in enumerate(peaks) if j != i)
            out.append(r if others or g.sum() > self.max_grow * r.sum() else g)
        return out

    def __call__(self, anomaly_map: np.ndarray, image: np.ndarray | None = None) -> Prompts:
        """anomaly_map: (H,W) float raw scores; image unused. Returns :class:`Prompts`."""
        a = _check_map(anomaly_map)
        k = self.n_pos + self.n_neg
        n, lo, hi = normalize_map(a, self.lo, self.hi, smooth=self.smooth)
        if self.min_peak is not None and hi < self.min_peak:
            return Prompts.empty(k)
        if not n.any():
            return Prompts.empty(k)
        labs, stats = [], []
        for t in self.levels:
            _, lab, st, _ = cv2.connectedComponentsWithStats((n >= t).astype(np.uint8), connectivity=8)
            labs.append(lab)
            stats.append(st)
        # children[i][c] = components at level i+1 inside component c of level i (area >= min_area)
        children: list[dict[int, list[int]]] = []
        for i in range(len(self.levels) - 1):
            up, cur = labs[i + 1], labs[i]
            m = up > 0
            pairs = np.unique(up[m].astype(np.int64) * (cur.max() + 1) + cur[m])
            d: dict[int, list[int]] = {}
            for p in pairs:
                child, parent = divmod(int(p), int(cur.max()) + 1)
                if stats[i + 1][child, cv2.CC_STAT_AREA] >= self.min_area:
                    d.setdefault(parent, []).append(child)
            children.append(d)

        def select(level: int, c: int) -> list[tuple[int, int]]:
            kids = children[level].get(c, []) if level < len(children) else []
            if len(kids) >= 2:
                out: list[tuple[int, int]] = []
                for kc in kids:
                    out += select(level + 1, kc)
                return out
            return [(level, c)]

        chosen: list[tuple[int, int]] = []
        for c in range(1, len(stats[0])):
            if stats[0][c, cv2.CC_STAT_AREA] >= self.min_area:
                chosen += select(0, c)
        if not chosen:
            return Prompts.empty(k)
        regions = [labs[level] == c for level, c in chosen]
        if self.rel_level:
            regions = self._grow(n, regions)
        boxes, conf = [], []
        for reg in regions:
            ys, xs = np.nonzero(reg.any(1))[0], np.nonzero(reg.any(0))[0]
            boxes.append((xs[0], ys[0], xs[-1] + 1, ys[-1] + 1))
            conf.append(float(n[reg].mean()))
        boxes_a = np.asarray(boxes, np.float32)
        conf_a = np.asarray(conf, np.float32)
        keep = nms_np(boxes_a, conf_a, self.nms_iou)[: self.max_boxes]
        pts = np.zeros((len(keep), k, 2), np.float32)
        pl = np.full((len(keep), k), -1, np.int64)
        for j, i in enumerate(keep):
            pts[j], pl[j] = points_for_box(n, boxes_a[i], regions[i], self.n_pos, self.n_neg)
        return Prompts(boxes_a[keep], conf_a[keep], pts, pl, {"prompter": "peak", "lo": lo, "hi": hi})


# ----------------------------------------------------------------------------------------------------------
# learned prompter (FCOS on the score map)


class _NoResizeTransform(nn.Module):
    """Stand-in for GeneralizedRCNNTransform that normalises and pads but never resizes (the prompter rescales
    maps itself to the scale it was trained at, so object sizes match)."""

    def __init__(self, mean: list[float], std: list[float], size_divisible: int = 32) -> None:
        super().__init__()
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        self.inner = GeneralizedRCNNTransform(32, 100000, mean, std, size_divisible=size_divisible)
        self.inner.resize = lambda image, target=None: (image, target)  # type: ignore[method-assign]

    def forward(self, images, targets=None):
        return self.inner(images, targets)

    def postprocess(self, result, image_shapes, original_image_sizes):
        return self.inner.postprocess(result, image_shapes, original_image_sizes)


class _TinyBackbone(nn.Module):
    """Small conv backbone with ResNet-like stage names (strides 8/16/32 at layer2/3/4)."""

    def __init__(self, in_channels: int, width: int = 16) -> None:
        super().__init__()

        def block(ci: int, co: int, stride: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True),
                                 nn.Conv2d(co, co, 3, 1, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))

        self.stem = block(in_channels, width, 2)
        self.layer1 = block(width, width, 2)
        self.layer2 = block(width, 2 * width, 2)
        self.layer3 = block(2 * width, 4 * width, 2)
        self.layer4 = block(4 * width, 4 * width, 2)
        self.stage_channels = [2 * width, 4 * width, 4 * width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - IntermediateLayerGetter walks children
        return self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))


BACKBONES = ("tiny", "resnet18")
INPUTS = {"score": 1, "score+image": 4}


def build_detector(backbone: str = "tiny", in_channels: int = 1, fpn_channels: int | None = None,
                   head_convs: int | None = None, max_boxes: int = 20, nms_thresh: float = 0.5) -> nn.Module:
    """A torchvision FCOS (one class, 5 FPN levels at strides 8..128) on ``in_channels`` input, random init.

    backbone: "tiny" (default; a 5-stage conv net, FPN 64, 2 head convs: fast on CPU, and it trains from
    scratch in a few hundred steps on score maps) or "resnet18" (torchvision resnet18 with its first conv
    adapted to ``in_channels``, FPN 128, 4 head convs; needs many more steps from random init). Nothing is
    downloaded.
    """
    from torchvision.models import resnet18
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    if backbone == "tiny":
        body: nn.Module = _TinyBackbone(in_channels)
        chans = body.stage_channels
        fpn = fpn_channels or 64
        convs = head_convs or 2
    elif backbone == "resnet18":
        body = resnet18(weights=None)
        if in_channels != 3:
            body.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        chans = [128, 256, 512]
        fpn = fpn_channels or 128
        convs = head_convs or 4
    else:
        raise ConfigError(f"unknown prompter backbone {backbone!r}; choose one of {list(BACKBONES)}")
    feat = BackboneWithFPN(body, {"layer2": "0", "layer3": "1", "layer4": "2"}, chans, fpn,
                           extra_blocks=LastLevelP6P7(fpn, fpn))
    head = FCOSHead(fpn, 1, 1, num_convs=convs)
    det = FCOS(feat, num_classes=1, head=head, image_mean=[0.0] * in_channels, image_std=[1.0] * in_channels,
               score_thresh=0.05, nms_thresh=nms_thresh, detections_per_img=max_boxes, topk_candidates=1000)
    det.transform = _NoResizeTransform([0.0] * in_channels, [1.0] * in_channels)
    return det


def quantile_levels(k: int = 101) -> np.ndarray:
    """(k,) increasing levels in [0,1], denser towards 1 (1 - (1 - t)^2 for t uniform): the learned prompter maps
    the score at level ``levels[i]`` to i/(k-1), so the upper tail (where anomalies live) keeps its contrast."""
    t = np.linspace(0.0, 1.0, k)
    return 1.0 - (1.0 - t) ** 2


def _arch_of(model: nn.Module) -> dict:
    """{"backbone", "in_channels", "max_boxes"} of a detector from :func:`build_detector`."""
    body = model.backbone.body
    first = body.stem[0] if hasattr(body, "stem") else body.conv1
    return {"backbone": "tiny" if hasattr(body, "stem") else "resnet18", "in_channels": int(first.in_channels),
            "max_boxes": int(getattr(model, "detections_per_img", 20))}


class LearnedPrompter:
    """S2M score-to-prompt detector (FCOS) on the calibrated anomaly map.

    model: detector from :func:`build_detector`. quantiles: (K,) increasing raw scores at the levels
    :func:`quantile_levels` (K) of the training pool's pixel scores; the detector reads the score map mapped
    piecewise-linearly through them to [0,1] (:meth:`calibrate`), which works for any score's scale and for weak
    and strong segmenters alike.
    ref_height: image height at which the prompter was trained; maps of other heights are rescaled to it so
    objects appear at the trained scale (None: no rescale). score_thresh: the prompter's confidence cut on
    detector scores (sqrt(sigmoid(cls) * sigmoid(centerness)) in [0,1]), fixed at training time (calibrated
    for box F1 on held-out pasted images by default), not a user anomaly threshold. input: "score" (1 channel)
    or "score+image" (score + RGB, 4 channels).
    score_name: the anomaly score the prompter was trained on (e.g. "jsd").
    """

    def __init__(self, model: nn.Module, *, quantiles: Sequence[float] = (0.0, 1.0), ref_height: int | None = None,
                 score_thresh: float = 0.3, input: str = "score", score_name: str = "jsd", n_neg: int = 1,
                 arch: dict | None = None, train_info: dict | None = None, device: str | torch.device = "cpu") -> None:
        if input not in INPUTS:
            raise ConfigError(f"unknown prompter input {input!r}; choose one of {list(INPUTS)}")
        self.model = model
        q = np.asarray(quantiles, np.float64).reshape(-1)
        if q.size < 2 or not np.all(np.isfinite(q)) or np.any(np.diff(q) < 0):
            raise ConfigError(f"LearnedPrompter quantiles must be >= 2 finite non-decreasing values, got {q[:8]}")
        self.quantiles = q
        self.ref_height = int(ref_height) if ref_height else None
        self.score_thresh = float(score_thresh)
        self.input = input
        self.score_name = score_name
        self.n_neg = int(n_neg)
        self.arch = dict(arch or _arch_of(model))
        self.train_info = dict(train_info or {})
        self.device = torch.device(device)
        self.model.to(self.device).eval()

    @classmethod
    def build(cls, backbone: str = "tiny", input: str = "score", max_boxes: int = 20, **kw: Any) -> "LearnedPrompter":
        """Fresh (untrained) prompter with a new detector."""
        if input not in INPUTS:
            raise ConfigError(f"unknown prompter input {input!r}; choose one of {list(INPUTS)}")
        arch = {"backbone": backbone, "in_channels": INPUTS[input], "max_boxes": int(max_boxes)}
        return cls(build_detector(backbone, INPUTS[input], max_boxes=max_boxes), input=input, arch=arch, **kw)

    def to(self, device: str | torch.device) -> "LearnedPrompter":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # -- input construction
    def scale_for(self, height: int) -> float:
        return 1.0 if not self.ref_height else self.ref_height / float(height)

    def calibrate(self, anomaly_map: np.ndarray) -> np.ndarray:
        """(H,W) raw -> (H,W) float32 in [0,1]: piecewise-linear through (quantiles[i], i/(K-1))."""
        q = self.quantiles
        q = q + np.arange(q.size) * 1e-9 * max(1.0, float(np.abs(q).max()))  # strictly increasing for np.interp
        a = np.asarray(anomaly_map, np.float64)
        return np.interp(a, q, np.linspace(0.0, 1.0, q.size)).astype(np.float32)

    def make_input(self, anomaly_map: np.ndarray, image: np.ndarray | None = None, scale: float | None = None,
                   calibrated: bool = False) -> torch.Tensor:
        """Detector input (C,h,w) float32 at the prompter's scale from a raw map (H,W) (+ image (H,W,3) uint8).

        scale: resize factor (default ``scale_for(H)``; crops of a larger image pass the full image's factor).
        calibrated: the map is already :meth:`calibrate`-d (training augments it in that space).
        """
        a = np.asarray(anomaly_map, np.float32) if calibrated else self.calibrate(_check_map(anomaly_map))
        s = self.scale_for(a.shape[0]) if scale is None else float(scale)
        if abs(s - 1.0) > 1e-3:
            size = (max(1, round(a.shape[1] * s)), max(1, round(a.shape[0] * s)))
            a = cv2.resize(a, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        chans = [a]
        if self.input == "score+image":
            if image is None:
                raise ConfigError("this prompter was trained with input 'score+image' and needs the image")
            im = np.asarray(image)
            if im.shape[:2] != np.asarray(anomaly_map).shape:
                raise ConfigError(f"image {im.shape[:2]} and anomaly map {np.asarray(anomaly_map).shape} differ in size")
            if abs(s - 1.0) > 1e-3:
                im = cv2.resize(im, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
            chans += list(((im.astype(np.float32) / 255.0 - 0.5) / 0.25).transpose(2, 0, 1))
        return torch.from_numpy(np.stack(chans, 0).astype(np.float32))

    @torch.no_grad()
    def detect(self, anomaly_map: np.ndarray, image: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (N,4) float32 xyxy in map pixels and scores (N,) with score >= score_thresh, NMS applied."""
        h, w = np.asarray(anomaly_map).shape[:2]
        x = self.make_input(anomaly_map, image).to(self.device)
        self.model.eval()
        out = self.model([x])[0]
        boxes = out["boxes"].float().cpu().numpy().reshape(-1, 4)
        scores = out["scores"].float().cpu().numpy().reshape(-1)
        keep = scores >= self.score_thresh
        boxes, scores = boxes[keep] / self.scale_for(h), scores[keep]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
        ok = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        order = np.argsort(-scores[ok], kind="stable")
        return boxes[ok][order].astype(np.float32), scores[ok][order].astype(np.float32)

    def __call__(self, anomaly_map: np.ndarray, image: np.ndarray | None = None) -> Prompts:
        """anomaly_map: (H,W) float raw scores (the score the prompter was trained on). Returns :class:`Prompts`:
        one positive point at the argmax of the map inside each box, ``n_neg`` negative points at low-score
        pixels inside the box."""
        a = _check_map(anomaly_map)
        boxes, scores = self.detect(a, image)
        k = 1 + self.n_neg
        if len(boxes) == 0:
            return Prompts.empty(k)
        n = self.calibrate(a)
        pts = np.zeros((len(boxes), k, 2), np.float32)
        pl = np.full((len(boxes), k), -1, np.int64)
        for i, b in enumerate(boxes):
            pts[i], pl[i] = points_for_box(n, b, None, 1, self.n_neg)
        return Prompts(boxes, scores, pts, pl, {"prompter": "learned"})

    # -- persistence
    def state(self) -> dict:
        """{"meta": plain python values, "state_dict": CPU tensors}; inverse of :meth:`from_state`."""
        meta = {"kind": "denseood.s2m.LearnedPrompter", "version": 1, "detector": "fcos", "arch": dict(self.arch),
                "input": self.input, "quantiles": [float(v) for v in self.quantiles], "ref_height": self.ref_height,
                "score_thresh": self.score_thresh, "score": self.score_name, "n_neg": self.n_neg,
                "train": dict(self.train_info)}
        return {"meta": meta, "state_dict": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}

    @classmethod
    def from_state(cls, d: Any, device: str | torch.device = "cpu", source: str = "prompter state") -> "LearnedPrompter":
        """Rebuild from :meth:`state`'s dict. Raises CheckpointError naming ``source`` when it is not one."""
        if not isinstance(d, dict) or "meta" not in d or "state_dict" not in d or not isinstance(d["meta"], dict) \
                or d["meta"].get("kind") != "denseood.s2m.LearnedPrompter":
            raise CheckpointError(f"{source} is not a denseood learned prompter (expected keys 'meta' and 'state_dict' "
                                  f"written by `denseood train-prompter`)")
        m = d["meta"]
        arch = m["arch"]
        det = build_detector(arch.get("backbone", "tiny"), int(arch.get("in_channels", INPUTS[m["input"]])),
                             max_boxes=int(arch.get("max_boxes", 20)))
        try:
            det.load_state_dict(d["state_dict"])
        except RuntimeError as e:
            raise CheckpointError(f"{source}: detector weights do not match its recorded architecture {arch}: {e}") from e
        return cls(det, quantiles=m["quantiles"], ref_height=m.get("ref_height"), score_thresh=m["score_thresh"],
                   input=m["input"], score_name=m.get("score", "jsd"), n_neg=int(m.get("n_neg", 1)), arch=arch,
                   train_info=m.get("train", {}), device=device)

    def save(self, path: str | Path) -> Path:
        """Write :meth:`state` to ``path`` atomically (a prompter file beside the checkpoint)."""
        from ..io import atomic_torch_save

        return atomic_torch_save(self.state(), path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "LearnedPrompter":
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"prompter file not found: {path}; train one with `denseood train-prompter --out {path}`")
        try:
            d = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
            raise CheckpointError(f"cannot read prompter file {path} ({e}); re-run `denseood train-prompter`") from e
        if isinstance(d, dict) and "extra" in d and isinstance(d.get("extra"), dict) and "prompter" in d["extra"]:
            d = d["extra"]["prompter"]  # a segmenter checkpoint holding a prompter
        return cls.from_state(d, device=device, source=str(path))


# ----------------------------------------------------------------------------------------------------------
# training


def boxes_from_mask(mask: np.ndarray, min_area: int = 16) -> np.ndarray:
    """Exact xyxy boxes (N,4) float32 of the 8-connected components of a (H,W) bool mask with >= min_area px."""
    n, _, st, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    out = [(x, y, x + w, y + h) for x, y, w, h, a in st[1:] if a >= min_area]
    return np.asarray(out, np.float32).reshape(-1, 4)


def _load_flow(raw: dict) -> Any:
    """PatchFlow of a checkpoint (``extra["train_state"]["flow"]`` of a resumable NFlowJS checkpoint, built with
    the config's flow_levels/steps/hidden), else an untrained PatchFlow (noise-like samples, as NFlowJS starts)."""
    from ..models.flow import PatchFlow

    cfg = raw.get("config") or {}
    kw = {k: int(cfg[f"flow_{k}"]) for k in ("levels", "steps", "hidden") if isinstance(cfg.get(f"flow_{k}"), int)}
    st = ((raw.get("extra") or {}).get("train_state") or {}).get("flow")
    if isinstance(st, dict):
        try:
            flow = PatchFlow(**kw)
            flow.load_state_dict(st)
            print("note: using the checkpoint's trained flow for negatives")
            return flow
        except Exception as e:  # noqa: BLE001
            print(f"note: the checkpoint's flow could not be restored ({e}); using an untrained flow")
    return PatchFlow(**kw)


def train_prompter(model_ckpt: str | Path | nn.Module, dataset_root: str | Path, *, dataset: str = "synthetic",
                   negatives: str = "flow", score: str = "jsd", steps: int = 300, batch_size: int = 4, crop: int = 256,
                   lr: float = 1e-3, device: str = "auto", seed: int = 0, backbone: str = "tiny",
                   input: str = "score", pool_size: int = 128, score_thresh: float | str = "auto", min_box_area: int = 16,
                   progress: bool = True) -> LearnedPrompter:
    """Train a :class:`LearnedPrompter` for a segmenter.

    Data: ``pool_size`` inlier training images of ``dataset`` at ``dataset_root`` get negatives pasted by the
    negative source ``negatives`` ("flow": samples of the checkpoint's flow, or an untrained flow when the
    checkpoint has none; "paste:DIR": objects cut from images in DIR), 1 to 3 per image with sides in the
    checkpoint config's ``neg_size`` (default 16..128 px); the segmenter scores each full image
    exactly as at test time (Inference). Targets are the exact boxes of the 8-connected components of the
    pasted mask (>= ``min_box_area`` px). Each step takes ``batch_size`` random ``crop`` x ``crop`` crops
    (70 % centred on a pasted object) with random horizontal flips and, half of the time, the contrast of the
    pasted objects against the background shrunk by a random factor in [0.3, 1] (real anomalies excite the
    segmenter less than its own training negatives). Calibration: the quantiles of the pool's pixel scores
    (:func:`quantile_levels`). score_thresh "auto": a fifth of the pool (when it has >= 5
    images) is held out of training and the confidence cut is set to the detector score that maximises box F1
    at IoU 0.5 on it (:func:`calibrate_score_thresh`); a number fixes the cut. Returns the trained prompter
    (on CPU, eval mode).
    """
    from tqdm import tqdm

    from ..models.segmenter import load_checkpoint, read_checkpoint
    from ..train.negatives import build_negatives

    if steps < 1 or batch_size < 1 or crop < 32:
        raise ConfigError(f"train-prompter: need steps >= 1, batch_size >= 1, crop >= 32 (got {steps}, {batch_size}, {crop})")
    from ..infer import Inference
    from .promptable import resolve_device

    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    raw: dict = {}
    if isinstance(model_ckpt, nn.Module):
        segmenter = model_ckpt
    else:
        segmenter = load_checkpoint(model_ckpt, map_location="cpu")
        raw = read_checkpoint(model_ckpt)
    segmenter.eval()
    engine = Inference(segmenter, scores=(score,), device=str(dev), dtype="fp32")

    neg_spec = str(negatives)
    size = (raw.get("config") or {}).get("neg_size") or (16, 128)
    opts = {"per_image": (1, 3), "size_range": (int(size[0]), int(size[1]))}
    if neg_spec == "flow":
        source = build_negatives("flow", flow=_load_flow(raw), **opts)
    elif neg_spec.startswith("paste:"):
        source = build_negatives(neg_spec, **opts)
    else:
        raise ConfigError(f"train-prompter --negatives must be 'flow' or 'paste:DIR', got {negatives!r}")

    from ..data import open_dataset

    ds = open_dataset(dataset, dataset_root, "train")
    if len(ds) == 0:
        raise ConfigError(f"dataset {dataset!r} at {dataset_root} has no training images")

    # 1) pool of (score map, pasted mask[, image]) at native resolution
    n_pool = min(pool_size, max(len(ds), 1) * 4, steps * batch_size)
    perm = rng.permutation(len(ds))
    order = perm[:n_pool] if len(ds) >= n_pool else np.resize(perm, n_pool)
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    imgs: list[np.ndarray] = []
    it = tqdm(order, desc="scoring pasted images", disable=not progress, leave=False)
    for idx in it:
        s = ds[int(idx)]
        img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1)[None].float() / 255.0
        lab = s.semantic if getattr(s, "semantic", None) is not None else np.zeros(s.image.shape[:2], np.uint8)
        lab_t = torch.from_numpy(np.asarray(lab, np.int64))[None]
        with torch.no_grad():
            pasted, _, neg = source.paste(img, lab_t, gen)
        u8 = (pasted[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
        amap = engine.predict(u8[None].numpy())[score][0].float().cpu().numpy()
        maps.append(amap.astype(np.float16))
        masks.append(neg[0].cpu().numpy().astype(bool))
        if input == "score+image":
            imgs.append(u8.numpy())
    ref_height = int(np.median([m.shape[0] for m in maps]))

    n_px = sum(m.size for m in maps)
    sel = rng.random(n_px) < min(1.0, 4e6 / max(1, n_px))
    allv = np.concatenate([m.reshape(-1).astype(np.float32) for m in maps])[sel]
    quantiles = np.quantile(allv.astype(np.float64), quantile_levels())

    if score_thresh != "auto" and not (isinstance(score_thresh, (int, float)) and 0 <= score_thresh <= 1):
        raise ConfigError(f"train-prompter --score-thresh must be 'auto' or a number in [0,1], got {score_thresh!r}")
    prompter = LearnedPrompter.build(backbone, input=input, quantiles=quantiles, ref_height=ref_height,
                                     score_thresh=0.3 if score_thresh == "auto" else float(score_thresh),
                                     score_name=score, device=dev)
    det = prompter.model
    det.train()
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))

    def sample_crop(j: int) -> tuple[torch.Tensor, dict]:
        amap, m = maps[j].astype(np.float32), masks[j]
        h, w = amap.shape
        ch, cw = min(crop, h), min(crop, w)
        ys, xs = np.nonzero(m)
        if len(ys) and rng.random() < 0.7:
            k = rng.integers(len(ys))
            y0 = int(np.clip(ys[k] - ch // 2 + rng.integers(-ch // 4, ch // 4 + 1), 0, h - ch))
            x0 = int(np.clip(xs[k] - cw // 2 + rng.integers(-cw // 4, cw // 4 + 1), 0, w - cw))
        else:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        a = amap[y0:y0 + ch, x0:x0 + cw]
        mm = m[y0:y0 + ch, x0:x0 + cw]
        im = imgs[j][y0:y0 + ch, x0:x0 + cw] if imgs else None
        if rng.random() < 0.5:
            a, mm = a[:, ::-1], mm[:, ::-1]
            im = im[:, ::-1] if im is not None else None
        n = prompter.calibrate(a)
        if mm.any() and rng.random() < 0.5:
            # weaker responses than the segmenter gives its own training negatives: shrink the contrast of the
            # pasted objects against the crop's background level by a random factor
            bg = float(np.median(n[~mm])) if (~mm).any() else 0.0
            f = float(rng.uniform(0.3, 1.0))
            n = np.where(mm & (n > bg), bg + (n - bg) * f, n).astype(np.float32)
        # the pool is stored at native scale: the prompter's rescale to ref_height is applied by make_input
        s = prompter.scale_for(h)
        x = prompter.make_input(np.ascontiguousarray(n), None if im is None else np.ascontiguousarray(im), scale=s,
                                calibrated=True)
        sh, sw = x.shape[-2:]
        b = boxes_from_mask(np.ascontiguousarray(mm), min_box_area) * s
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, sw)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, sh)
        b = b[(b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)]
        return x, {"boxes": torch.from_numpy(b), "labels": torch.zeros(len(b), dtype=torch.int64)}

    # hold out a part of the pool to calibrate the confidence cut (score_thresh="auto")
    n_cal = len(maps) // 5 if (score_thresh == "auto" and len(maps) >= 5) else 0
    n_train = len(maps) - n_cal
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="train prompter", disable=not progress)
    for step in bar:
        batch = [sample_crop(int(rng.integers(n_train))) for _ in range(batch_size)]
        xs_ = [b[0].to(dev) for b in batch]
        tg = [{k: v.to(dev) for k, v in b[1].items()} for b in batch]
        loss_d = det(xs_, tg)
        loss = sum(loss_d.values())
        if not torch.isfinite(loss):
            raise DenseOODError(f"prompter training diverged at step {step} (loss {float(loss)}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(det.parameters(), 10.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    det.eval()
    cal: dict = {}
    if score_thresh == "auto":
        idx = range(n_train, len(maps)) if n_cal else range(len(maps))
        prompter.score_thresh, cal = calibrate_score_thresh(
            prompter, [maps[j].astype(np.float32) for j in idx], [boxes_from_mask(masks[j], min_box_area) for j in idx],
            [imgs[j] for j in idx] if imgs else None)
    prompter.train_info = {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed,
                           "negatives": neg_spec, "dataset": dataset, "pool": len(maps), "calibration": cal,
                           "final_loss": float(np.mean(losses[-20:])), "seconds": round(time.time() - t0, 1)}
    return prompter.to("cpu")


def calibrate_score_thresh(prompter: LearnedPrompter, maps: list[np.ndarray], gt_boxes: list[np.ndarray],
                           images: list[np.ndarray] | None = None, iou: float = 0.5) -> tuple[float, dict]:
    """The confidence cut that maximises box F1 (a detection is a true positive when it matches a still
    unmatched ground-truth box with IoU >= ``iou``, greedily by score) on held-out pasted images.

    Returns (threshold, {"f1", "precision", "recall", "n_gt", "images"}). With no ground-truth boxes or no
    detections the prompter's current cut is kept.
    """
    keep_thr = prompter.score_thresh
    prompter.score_thresh = 0.0
    try:
        dets = [prompter.detect(m, None if images is None else images[i]) for i, m in enumerate(maps)]
    finally:
        prompter.score_thresh = keep_thr
    n_gt = int(sum(len(g) for g in gt_boxes))
    scores, tp = [], []
    for (b, sc), g in zip(dets, gt_boxes):
        ious = box_iou_np(b, g) if len(g) else np.zeros((len(b), 0))
        used = np.zeros(len(g), bool)
        for i in np.argsort(-sc, kind="stable"):
            j = int(np.argmax(np.where(used, -1.0, ious[i]))) if len(g) else -1
            hit = j >= 0 and not used[j] and ious[i, j] >= iou
            if hit:
                used[j] = True
            scores.append(float(sc[i]))
            tp.append(hit)
    if n_gt == 0 or not scores:
        return keep_thr, {"n_gt": n_gt, "images": len(maps), "kept": True}
    order = np.argsort(-np.asarray(scores), kind="stable")
    s_sorted = np.asarray(scores)[order]
    ctp = np.cumsum(np.asarray(tp)[order])
    k = np.arange(1, len(order) + 1)
    f1 = 2 * ctp / (k + n_gt)
    # only cut between distinct scores; the threshold is the score of the last kept detection
    last = np.r_[s_sorted[1:] < s_sorted[:-1], True]
    best = int(np.argmax(np.where(last, f1, -1.0)))
    thr = float(s_sorted[best])
    return thr, {"f1": float(f1[best]), "precision": float(ctp[best] / (best + 1)), "recall": float(ctp[best] / n_gt),
                 "n_gt": n_gt, "images": len(maps)}


def store_prompter_in_checkpoint(prompter: LearnedPrompter, checkpoint: str | Path) -> Path:
    """Rewrite the segmenter checkpoint atomically with ``extra["prompter"] = prompter.state()`` (other extra
    entries, config and metrics kept)."""
    from ..models.segmenter import load_checkpoint, read_checkpoint, save_checkpoint

    raw = read_checkpoint(checkpoint)
    extra = dict(raw.get("extra") or {})
    extra["prompter"] = prompter.state()
    model = load_checkpoint(checkpoint, map_location="cpu")
    save_checkpoint(model, checkpoint, config=raw.get("config"), metrics=raw.get("metrics"), extra=extra)
    return Path(checkpoint)


def _thresh_arg(v: Any) -> float | str:
    if v in (None, "auto"):
        return "auto"
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"--score-thresh must be 'auto' or a number in [0,1], got {v!r}") from None


def train_prompter_main(args: Any) -> int:
    """`denseood train-prompter`: train and store the learned prompter (inside --checkpoint or at --out)."""
    prompter = train_prompter(args.checkpoint, args.root, dataset=args.dataset, negatives=args.negatives, score=args.score,
                              steps=args.steps, batch_size=args.batch_size, crop=args.crop, lr=args.lr, device=args.device,
                              seed=args.seed, backbone=getattr(args, "backbone", "tiny"),
                              input=getattr(args, "input", "score"), pool_size=getattr(args, "pool_size", 128),
                              score_thresh=_thresh_arg(getattr(args, "score_thresh", "auto")))
    if args.out:
        path = prompter.save(args.out)
        print(f"prompter written to {path} (use it with --prompter {path})")
    else:
        path = store_prompter_in_checkpoint(prompter, args.checkpoint)
        print(f"prompter stored in {path} under extra['prompter'] (used by --prompter learned|auto)")
    cal = prompter.train_info.get("calibration") or {}
    extra = (f"; confidence cut {prompter.score_thresh:.3f} (held-out box F1 {cal['f1']:.3f})" if "f1" in cal
             else f"; confidence cut {prompter.score_thresh:.3f}")
    print(f"final loss {prompter.train_info['final_loss']:.4f} after {prompter.train_info['steps']} steps{extra}")
    return 0
