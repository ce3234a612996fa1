"""The objects a submission reports for each frame: S2M objects, query objects or thresholded connected components.

Both producers take a list of uint8 (H,W,3) images and return, per image, ``(masks (N,H,W) bool, confidences (N,)
float)`` at the image's full resolution, ordered by decreasing confidence, no empty mask. See docs/metrics.md
(OoDIS submission).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

Objects = tuple[np.ndarray, np.ndarray]


def _sorted(masks: np.ndarray, conf: np.ndarray) -> Objects:
    keep = masks.reshape(len(masks), -1).any(1) if len(masks) else np.zeros(0, bool)
    masks, conf = masks[keep], np.asarray(conf, np.float64)[keep]
    order = np.argsort(-conf, kind="stable")
    return masks[order], conf[order]


class S2MObjects:
    """S2M objects: full masks (before overlap resolution) with their prompt confidences in [0, 1]."""

    lowest_confidence = 0.0

    def __init__(self, model: Any, *, spec: Any, score: str, prompter: str, prompt_model: str, device: str,
                 dtype: str, input_size: Any, batch_size: int, max_pixels: float, work_size: int) -> None:
        from denseood.s2m.pipeline import build_s2m

        self.s2m = build_s2m(model, prompter, prompt_model, device, dtype, score, checkpoint=spec,
                             input_size=input_size, batch_size=batch_size, max_pixels=max_pixels,
                             work_size=work_size or None)

    def __call__(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[Objects]:
        out = []
        # full_masks() gives the masks at the image size even when S2M worked at a smaller --work-size
        return [_sorted(r.full_masks(), r.scores) for r in self.s2m(list(images), names=list(names))]


class QueryObjectsSource:
    """Query objects (:mod:`denseood.s2m.queries`): a mask transformer's own query masks at full resolution with
    their confidences 1 - max_k p_q(k) in [0, 1]; ConfigError (one line) for a logit model."""

    lowest_confidence = 0.0

    def __init__(self, model: Any, *, score: str, device: str, dtype: str, input_size: Any, batch_size: int,
                 max_pixels: float) -> None:
        from denseood.s2m.queries import build_query_objects

        self.objects = build_query_objects(model, device, dtype, score, input_size=input_size,
                                           batch_size=batch_size, max_pixels=max_pixels)

    def __call__(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[Objects]:
        return [_sorted(r.masks, r.scores) for r in self.objects(list(images), names=list(names))]


class ComponentObjects:
    """Connected components of the anomaly map above ``threshold`` (8-connected, at least ``min_size`` pixels),
    each scored by its mean anomaly score (every pixel is above the threshold, so the mean is too)."""

    def __init__(self, model: Any, *, score: str, threshold: float, min_size: int, device: str, dtype: str,
                 input_size: Any, batch_size: int, max_pixels: float) -> None:
        from denseood.infer import Inference

        self.score, self.threshold, self.min_size = score, float(threshold), int(min_size)
        self.lowest_confidence = self.threshold
        self.engine = Inference(model, scores=(score,), device=device, dtype=dtype, input_size=input_size,
                                max_pixels=max_pixels)

    def __call__(self, images: Sequence[np.ndarray], names: Sequence[str]) -> list[Objects]:
        from denseood.eval.components import threshold_components

        out = []
        for im, name in zip(images, names):
            # Inference.predict gives the map at the image size, whatever size the network ran at
            a = self.engine.predict(im, names=[name])[self.score][0].float().cpu().numpy()
            lab = threshold_components(a, np.zeros(a.shape, np.uint8), self.threshold, self.min_size)
            n = int(lab.max())
            masks = lab[None] == np.arange(1, n + 1)[:, None, None] if n else np.zeros((0,) + a.shape, bool)
            conf = np.array([float(a[m].mean()) for m in masks])
            out.append(_sorted(masks, conf))
        return out
