"""Query objects: a mask transformer's own per-query masks as OOD instances (no prompts, no SAM).

For an ``hf:`` universal model (Mask2Former, MaskFormer, OneFormer; ``output_kind == "mask_scores"``) each query q
has a class distribution p_q = softmax over the K known classes + no-object (last) and a mask m_q = sigmoid of its
mask logits, taken with the RbA padding (:meth:`denseood.models.sources.hf.HFSegmenter.query_logits`) and resized
to the frame's full resolution before the sigmoid (:func:`denseood.models.sources.hf.query_masks`). A query becomes
an OOD instance candidate when

- its class distribution rejects the known classes: ``max_k p_q(k) <= KNOWN_THRESHOLD`` (0.8). This is the
  complement of Mask2Former's own ``panoptic_inference`` keep rule, ``argmax != no-object and max > 0.8``
  (``OBJECT_MASK_THRESHOLD: 0.8`` in RbA's ``ckpts/swin_b_1dl/config.yaml``; NazirNayal8/RbA
  ``mask2former/maskformer_model.py``): the query would not be kept as any known-class segment;
- its mask is confident: ``m_q > MASK_THRESHOLD`` (0.5, as that ``panoptic_inference`` binarises masks at 0.5)
  over at least ``min_area`` pixels.

Confidence (in [0, 1], :func:`query_confidence`) = ``1 - max_k p_q(k) = p_q(no-object) + sum_{k != k*} p_q(k)``:
the query's probability mass off its best known class, i.e. its no-object mass plus its ambiguity among the
known classes (EAM's per-query term, Grcic et al.). It is >= p_q(no-object) and >= 1 - KNOWN_THRESHOLD for every
candidate. Candidates are ordered by it and de-duplicated by greedy mask NMS at IoU ``nms_iou`` (0.7, as the point
route); overlaps go to the more confident object (:func:`denseood.s2m.pipeline.assemble`). quality = the mean of
m_q inside its binary mask (Mask2Former's ``instance_inference`` mask score).

The output is an :class:`~denseood.s2m.pipeline.S2MResult` (masks at full resolution), so ``segment`` writes
objects.json, masks and overlays, and ``eval --s2m`` scores them, as for S2M objects. Its anomaly map (heat map,
refined map) is the ``score`` map of the same model (:meth:`S2M.anomaly_maps`, a second forward pass).
Memory: the candidates' masks only, (N_candidates, H, W) float32. See docs/architecture.md.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ModelOutputError
from ..scores.names import DEFAULT_SCORE
from .pipeline import S2M, S2MResult, _pick_score, assemble, mask_boxes, refine_map, segment_batch
from .prompts import Prompts

__all__ = ["QueryObjects", "build_query_objects", "query_objects", "query_confidence", "rejects_known",
           "MASK_THRESHOLD", "KNOWN_THRESHOLD", "NMS_IOU", "MIN_AREA"]

#: a query's mask is its pixels with m_q > this (Mask2Former's panoptic_inference: ``cur_masks >= 0.5``)
MASK_THRESHOLD = 0.5
#: a query is accepted as a known class when max_k p_q(k) > this (Mask2Former / RbA ``OBJECT_MASK_THRESHOLD``)
KNOWN_THRESHOLD = 0.8
#: mask-NMS IoU (UGainS' ``nms_thresh: 0.7``, the same as the point route's)
NMS_IOU = 0.7
#: fewest mask pixels of a query object (S2M's ``min_area`` default)
MIN_AREA = 16


def rejects_known(class_probs: torch.Tensor, known_threshold: float = KNOWN_THRESHOLD) -> torch.Tensor:
    """(Q,K+1) class distributions (last = no-object) -> (Q,) bool: max_k p_q(k) <= ``known_threshold``."""
    return class_probs[..., :-1].max(-1).values <= known_threshold


def query_confidence(class_probs: torch.Tensor) -> torch.Tensor:
    """(Q,K+1) class distributions -> (Q,) float32 in [0,1]: ``1 - max_k p_q(k)`` (module docstring)."""
    return (1.0 - class_probs[..., :-1].max(-1).values).clamp(0.0, 1.0).float()


def query_objects(class_probs: torch.Tensor, mask_logits: torch.Tensor, size: tuple[int, int], *,
                  mask_threshold: float = MASK_THRESHOLD, known_threshold: float = KNOWN_THRESHOLD,
                  min_area: int = MIN_AREA, nms_iou: float = NMS_IOU) -> dict[str, np.ndarray]:
    """One image's query objects. class_probs (Q,K+1), mask_logits (Q,h,w) (from ``query_logits``), size (H,W).

    Returns {"masks": (N,H,W) bool, "scores": (N,) float32 in [0,1], "quality": (N,) float32, "query_ids": (N,)
    int64, "instances": (H,W) int32 (ids 1..N in descending score)}, after the candidate rule and mask NMS of
    the module docstring."""
    from ..models.sources.hf import query_masks

    h, w = int(size[0]), int(size[1])
    sel = torch.nonzero(rejects_known(class_probs, known_threshold)).flatten()
    if len(sel):
        m = query_masks(mask_logits[sel][None], (h, w))[0]
        binary = m > mask_threshold
        area = binary.flatten(1).sum(1)
        quality = (m * binary).flatten(1).sum(1) / area.clamp(min=1)
        ok = area >= max(int(min_area), 1)
        sel, binary, quality = sel[ok], binary[ok], quality[ok]
    masks = binary.cpu().numpy() if len(sel) else np.zeros((0, h, w), bool)
    scores = query_confidence(class_probs[sel]).cpu().numpy() if len(sel) else np.zeros(0, np.float32)
    quality_np = quality.float().cpu().numpy() if len(sel) else np.zeros(0, np.float32)
    keep, inst = assemble(masks, scores, nms_iou, min_area)
    return {"masks": masks[keep], "scores": scores[keep].astype(np.float32),
            "quality": quality_np[keep].astype(np.float32), "query_ids": sel.cpu().numpy()[keep].astype(np.int64),
            "instances": inst}


class QueryObjects:
    """Query objects of every frame (module docstring); called like :class:`S2M` (``images, names`` -> results,
    and ``segment_from_map(image, anomaly_map)``), so segment and eval --s2m take it in S2M's place.

    model: an ``hf:`` universal model (ConfigError, one line, otherwise). score / device / dtype / input_size /
    batch_size / max_pixels: as in :class:`S2M` (the map, and the size the network sees). min_area, nms_iou,
    mask_threshold, known_threshold: the candidate rule; outside_weight: see :func:`refine_map`.
    """

    def __init__(self, model: Any, *, score: str = DEFAULT_SCORE, device: Any = "auto", dtype: Any = "auto",
                 input_size: Any = "model", batch_size: int = 2, max_pixels: int | float | None = None,
                 min_area: int = MIN_AREA, nms_iou: float = NMS_IOU, mask_threshold: float = MASK_THRESHOLD,
                 known_threshold: float = KNOWN_THRESHOLD, outside_weight: float = 0.5) -> None:
        check_query_model(model)
        if not 0.0 < float(nms_iou) <= 1.0 or not 0.0 < float(mask_threshold) < 1.0 \
                or not 0.0 < float(known_threshold) < 1.0:
            raise ConfigError(f"query objects: nms_iou must be in (0, 1] and the mask/known thresholds in (0, 1), "
                              f"got {nms_iou}, {mask_threshold}, {known_threshold}")
        if int(min_area) < 1:
            raise ConfigError(f"query objects: min_area must be >= 1 pixel, got {min_area}")
        # the anomaly maps: S2M's engine and batching (no prompter, no mask model)
        self.maps = S2M(model, None, None, score=score, device=device, dtype=dtype,  # type: ignore[arg-type]
                        input_size=input_size, batch_size=batch_size, work_size=None, max_pixels=max_pixels,
                        outside_weight=outside_weight)
        self.score = self.maps.score
        self.model = model
        self.rule = {"mask_threshold": float(mask_threshold), "known_threshold": float(known_threshold),
                     "min_area": int(min_area), "nms_iou": float(nms_iou)}
        self.outside_weight = float(outside_weight)

    @torch.no_grad()
    def _query_logits(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(H,W,3) uint8 -> (class probs (Q,K+1), mask logits (Q,h,w)) at the network's input size."""
        eng = self.maps._inference()
        x = self.model.normalize(torch.as_tensor(np.ascontiguousarray(image))[None].to(eng.device))
        x = x.to(eng.device, torch.float32)
        if eng.input_size is not None and tuple(x.shape[-2:]) != tuple(eng.input_size):
            x = F.interpolate(x, size=eng.input_size, mode="bilinear", align_corners=False, antialias=True)
        with torch.autocast(eng.device.type, dtype=eng.dtype, enabled=eng.dtype is not torch.float32):
            cls, masks = self.model.query_logits(x)
        if not (torch.isfinite(cls).all() and torch.isfinite(masks).all()):
            raise ModelOutputError(f"{self.model.describe()} returned NaN/inf query logits")
        return torch.softmax(cls.float(), dim=-1)[0], masks.float()[0]

    def segment_from_map(self, image: np.ndarray, anomaly_map: np.ndarray) -> S2MResult:
        """image (H,W,3) uint8 + its raw anomaly map (H,W) -> :class:`S2MResult` of the query objects."""
        a = np.asarray(anomaly_map, np.float32)
        if a.shape != np.asarray(image).shape[:2]:
            raise ConfigError(f"query objects: anomaly map {a.shape} does not match the image {image.shape[:2]}")
        t0 = time.perf_counter()
        probs, logits = self._query_logits(np.asarray(image))
        t1 = time.perf_counter()
        o = query_objects(probs, logits, a.shape, **self.rule)
        raw = np.array([float(a[m].mean()) for m in o["masks"]], np.float32)
        prompts = Prompts.empty(1)
        prompts.meta = {"objects": "queries", "query_ids": o["query_ids"].tolist()}
        t2 = time.perf_counter()
        return S2MResult(instances=o["instances"], masks=o["masks"], boxes=mask_boxes(o["masks"]), scores=o["scores"],
                         quality=o["quality"], anomaly_map=a, refined_map=refine_map(a, o["instances"], raw,
                                                                                     self.outside_weight),
                         prompts=prompts, raw_scores=raw,
                         timing={"segmenter": 0.0, "prompts": 0.0, "masks": t1 - t0, "post": t2 - t1, "total": t2 - t0})

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray,
                 names: Sequence[str] | None = None) -> list[S2MResult]:
        """uint8 (H,W,3) images (or one, or a (B,H,W,3) array) -> one :class:`S2MResult` each."""
        return segment_batch(images, names, self.maps.anomaly_maps, self.segment_from_map)


def check_query_model(model: Any) -> None:
    """ConfigError (one line) unless ``model`` is a universal hf: model with per-query outputs."""
    if getattr(model, "output_kind", "logits") != "mask_scores" or not hasattr(model, "query_logits"):
        what = model.describe() if hasattr(model, "describe") else type(model).__name__
        raise ConfigError(f"--objects queries needs a mask-transformer model (hf:DIR of a Mask2Former, MaskFormer or "
                          f"OneFormer); {what} gives per-pixel logits: use --objects s2m")


def build_query_objects(model: Any, device: Any = "auto", dtype: Any = "auto",
                        score: str | Sequence[str] = DEFAULT_SCORE, **kw: Any) -> QueryObjects:
    """A :class:`QueryObjects` for ``model`` (a model or a ``load_model`` spec). score: a name, or candidate names
    (``jsd`` when among them, else the first, as :func:`denseood.s2m.pipeline.build_s2m`); kw: QueryObjects'."""
    if isinstance(model, (str,)) or hasattr(model, "__fspath__"):
        from ..models.sources import load_model

        model = load_model(model, map_location="cpu")
    check_query_model(model)
    return QueryObjects(model, score=_pick_score(score, None), device=device, dtype=dtype, **kw)
