"""The learned S2M prompter: a small torchvision FCOS detector on the calibrated anomaly map.

:class:`LearnedPrompter` reads the score map (H,W) mapped through stored quantiles to [0,1] (optionally with
the RGB image) and outputs boxes with confidences; boxes are kept by the detector's own NMS and its confidence
cut ``score_thresh``. That cut is a property of the trained prompter, stored with it (set at training time to
the detector score that maximises box F1 on held-out pasted images); it is not an anomaly threshold chosen by
the user. The detector starts from random init (nothing is downloaded); it is trained by
``denseood.train.prompter.train_prompter`` and stored in a checkpoint's ``extra["prompter"]`` or in a file
of its own. This module holds the inference side only: building, calibration, detection and persistence.
See docs/architecture.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..scores.names import DEFAULT_SCORE
from .boxes import check_map, points_for_box
from .names import PROMPTER_BACKBONES, PROMPTER_INPUTS
from .prompts import Prompts

__all__ = ["BACKBONES", "INPUTS", "build_detector", "quantile_levels", "LearnedPrompter"]


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


BACKBONES = PROMPTER_BACKBONES
INPUTS = PROMPTER_INPUTS


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
                 score_thresh: float = 0.3, input: str = "score", score_name: str = DEFAULT_SCORE, n_neg: int = 1,
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
        a = np.asarray(anomaly_map, np.float32) if calibrated else self.calibrate(check_map(anomaly_map))
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
        """anomaly_map: (H,W) float raw scores (the score the prompter was trained on). Returns :class:`Prompts`
        with confidence = the detector score sqrt(sigmoid(cls) * sigmoid(centerness)) in [0,1]:
        one positive point at the argmax of the map inside each box, ``n_neg`` negative points at low-score
        pixels inside the box."""
        a = check_map(anomaly_map)
        boxes, scores = self.detect(a, image)
        k = 1 + self.n_neg
        if len(boxes) == 0:
            return Prompts.empty(k)
        n = self.calibrate(a)
        pts = np.zeros((len(boxes), k, 2), np.float32)
        pl = np.full((len(boxes), k), -1, np.int64)
        for i, b in enumerate(boxes):
            pts[i], pl[i] = points_for_box(n, b, None, 1, self.n_neg)
        conf = np.clip(scores, 0.0, 1.0)  # already a probability; the clip only guards rounding
        return Prompts(boxes, conf, pts, pl, {"prompter": "learned"})

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
                   input=m["input"], score_name=m.get("score", DEFAULT_SCORE), n_neg=int(m.get("n_neg", 1)), arch=arch,
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
        from ..io import safe_torch_load

        d = safe_torch_load(path, path=path, what="prompter file")
        if isinstance(d, dict) and "extra" in d and isinstance(d.get("extra"), dict) and "prompter" in d["extra"]:
            d = d["extra"]["prompter"]  # a segmenter checkpoint holding a prompter
        return cls.from_state(d, device=device, source=str(path))
