"""S2M pipeline: image -> segmenter -> anomaly map -> prompts -> promptable mask model -> whole OOD objects.

Per image the output (:class:`S2MResult`) holds the instance map, the object masks, boxes and scores and an
"object-refined" anomaly map that pixel metrics can score.

Two scores per object: ``scores`` = the prompter's confidence in [0,1] (the learned detector's probability,
or the peak prompter's normalised peak value), the score the object protocols (S2M paper curve, instance
AP) rank by; ``raw_scores`` = mean RAW anomaly score (the segmenter's score, e.g. JSD in nats, any sign)
inside the object's mask, comparable across images. Object order, mask NMS, overlap resolution and the
refined map use ``raw_scores``.

Refined map rule: pixels of object k take object k's score; every other pixel keeps its anomaly score
down-weighted by ``f(a) = a - (1 - outside_weight) * |a|`` (= ``outside_weight * a`` for non-negative
scores). f is continuous and strictly increasing, so outside the objects the ranking of pixels is that of the
anomaly map, while pixels no object claims are pushed below comparable pixels inside objects.

Working size: prompts, masks and object scores are computed on the image and map downscaled (INTER_AREA) so
that the longest side is at most ``work_size`` (default 2048); boxes are scaled back to image pixels and the
instance map is upsampled (nearest) to the image size. Images within the bound take the full-resolution path
unchanged. See docs/architecture.md.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..dist import resolve_device
from ..errors import ConfigError
from ..scores.names import DEFAULT_SCORE
from .learned import LearnedPrompter
from .names import WORK_SIZE
from .promptable import PromptableSegmenter, build_prompt_model, resolve_dtype
from .points import PointPrompter
from .prompts import PeakPrompter, Prompts


@dataclass
class S2MResult:
    """S2M output of one image.

    instances: (H,W) int32 (uint16 when the image was over the working size), 0 = background, ids 1..N in
        descending ``raw_scores`` order (``scores`` order for a prompter with ``mask_confidence``, e.g. the
        point prompter); where masks overlap the object earlier in that order wins.
        masks: (N,h,w) bool full masks (before overlap resolution), row i = id i+1, at the working size (h,w)
        = (H,W) unless the image was larger than ``work_size``; :meth:`full_masks` gives them at (H,W).
    boxes: (N,4) float32 xyxy tight boxes of the masks (x1, y1 exclusive). scores: (N,) float32 object
        confidences in [0,1]: the confidence of the prompt the mask came from (``Prompts.confidence``; the
        object protocols' score), or the prompter's ``mask_confidence(map, masks)`` when it has one (the point
        prompter: the mean normalised score inside the mask). raw_scores: (N,) float32 mean raw anomaly inside
        the full mask (any sign, e.g. negative for jsd); objects are ordered and NMS-ed by raw_scores (by scores
        for a prompter with ``mask_confidence``) and painted into ``refined_map`` with their raw_scores.
        quality: (N,) mask-model quality. anomaly_map: (H,W) float32 raw.
    refined_map: (H,W) float32 (see the module docstring). prompts: the prompts given to the mask model.
    timing: seconds per stage ("segmenter" (amortised over the batch), "prompts", "masks", "post", "total").
    """

    instances: np.ndarray
    masks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    quality: np.ndarray
    anomaly_map: np.ndarray
    refined_map: np.ndarray
    prompts: Prompts
    timing: dict = field(default_factory=dict)
    raw_scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def __len__(self) -> int:
        return len(self.scores)

    def full_masks(self) -> np.ndarray:
        """(N,H,W) bool masks at the image size (``masks`` upsampled nearest when they are at a working size)."""
        return np.stack([resize_nearest(m, self.instances.shape) for m in self.masks]) if len(self.masks) else \
            np.zeros((0,) + self.instances.shape, bool)

    @property
    def areas(self) -> np.ndarray:
        """(N,) int64 visible pixels of each object in ``instances``."""
        return np.bincount(self.instances.ravel(), minlength=len(self) + 1)[1:].astype(np.int64)




def work_shape(h: int, w: int, work_size: int | None) -> tuple[int, int]:
    """(h', w') with the longest side at most ``work_size`` (aspect kept, each side >= 1); (h, w) when it fits
    or ``work_size`` is None/0."""
    if not work_size or max(h, w) <= work_size:
        return int(h), int(w)
    f = work_size / max(h, w)
    return max(1, int(round(h * f))), max(1, int(round(w * f)))


def resize_nearest(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(h,w) bool/uint8/uint16/int32 array -> (H,W) of the same dtype by nearest-neighbour resizing."""
    if tuple(a.shape) == tuple(hw):
        return a
    src = a.view(np.uint8) if a.dtype == bool else (a.astype(np.uint16) if a.dtype == np.int32 else a)
    out = cv2.resize(np.ascontiguousarray(src), (int(hw[1]), int(hw[0])), interpolation=cv2.INTER_NEAREST)
    return out.view(bool) if a.dtype == bool else out


def mask_iou_matrix(masks: np.ndarray) -> np.ndarray:
    """(N,H,W) bool -> (N,N) float64 mask IoU (counted in float32 as before, exact below 2**24 pixels)."""
    n = len(masks)
    if n == 0:
        return np.zeros((0, 0))
    flat = masks.reshape(n, -1)
    inter = np.array([[np.count_nonzero(flat[i] & flat[j]) if j >= i else 0 for j in range(n)] for i in range(n)],
                     np.float32)  # pairwise counts: no (N,H*W) float copy
    inter = np.triu(inter) + np.triu(inter, 1).T
    area = np.diag(inter)
    union = area[:, None] + area[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float64)


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(N,H,W) bool -> (N,4) float32 tight xyxy boxes (exclusive ends); zeros for empty masks."""
    out = np.zeros((len(masks), 4), np.float32)
    for i, m in enumerate(masks):
        ys = np.flatnonzero(m.any(1))
        xs = np.flatnonzero(m.any(0))
        if len(ys):
            out[i] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
    return out


def refine_map(anomaly_map: np.ndarray, instances: np.ndarray, scores: np.ndarray, outside_weight: float = 0.5) -> np.ndarray:
    """Object-refined map: instance i's pixels -> scores[i-1]; others f(a) = a - (1 - w) |a| (module docstring)."""
    a = np.asarray(anomaly_map, np.float32)
    out = np.abs(a)  # in place from here: one (H,W) float32 temporary at most
    out *= -(1.0 - outside_weight)
    out += a
    if len(scores):
        lut = np.concatenate([[0.0], np.asarray(scores, np.float32)]).astype(np.float32)
        inside = instances > 0
        out[inside] = lut[instances[inside]]
    return out


def assemble(masks: np.ndarray, obj_scores: np.ndarray, nms_iou: float, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Order by score, mask-IoU NMS, paint the instance map (higher score wins overlaps), drop objects left
    with fewer than ``min_area`` visible pixels. Returns (kept indices in id order, instances (H,W) int32)."""
    h, w = masks.shape[1:] if masks.ndim == 3 else (0, 0)
    inst = np.zeros((h, w), np.int32)
    if len(masks) == 0:
        return np.zeros(0, np.int64), inst
    order = np.argsort(-obj_scores, kind="stable")
    ious = mask_iou_matrix(masks)
    kept: list[int] = []
    for i in order:
        if masks[i].sum() < max(min_area, 1):
            continue
        if any(ious[i, j] > nms_iou for j in kept):
            continue
        kept.append(int(i))
    final: list[int] = []
    for i in kept:
        vis = masks[i] & (inst == 0)
        if vis.sum() < max(min_area, 1):
            continue
        final.append(i)
        inst[vis] = len(final)
    return np.asarray(final, np.int64), inst


def segment_batch(images: Sequence[np.ndarray] | np.ndarray, names: Sequence[str] | None, anomaly_maps: Any,
                  segment_from_map: Any) -> list[S2MResult]:
    """The batch call of :class:`S2M` and the query-object route: images (list of uint8 (H,W,3) RGB, one image or a
    (B,H,W,3) array; ConfigError naming the bad one) -> ``anomaly_maps(images, names)`` -> one
    ``segment_from_map(image, map)`` result each, with the segmenter's seconds added to its timing."""
    if isinstance(images, np.ndarray):
        images = [images] if images.ndim == 3 else list(images)
    for k, im in enumerate(images):
        if not (isinstance(im, np.ndarray) and im.ndim == 3 and im.shape[2] == 3 and im.dtype == np.uint8):
            raise ConfigError(f"S2M: image {k} must be a (H,W,3) uint8 RGB array, got "
                              f"{getattr(im, 'shape', None)} {getattr(im, 'dtype', type(im).__name__)}")
    maps, secs = anomaly_maps(list(images), names)
    out = []
    for im, m, s in zip(images, maps, secs):
        r = segment_from_map(im, m)
        r.timing["segmenter"] = s
        r.timing["total"] += s
        out.append(r)
    return out


class S2M:
    """Segment every OOD object.

    segmenter: a denseood Segmenter (None: only :meth:`segment_from_map` can be used). prompter: a
    :class:`PeakPrompter` / :class:`LearnedPrompter` (any callable map, image -> Prompts). mask_model: a
    PromptableSegmenter (SamBackend / GrabCutBackend). score: anomaly score name. device/dtype: shared by the
    segmenter (via denseood.infer.Inference) and the mask model's setting. nms_iou: mask-IoU above which the
    lower-scoring of two masks is dropped. min_area: objects with fewer pixels are dropped. input_size: as in
    Inference ("model" = the checkpoint's training size). outside_weight: see :func:`refine_map`.
    work_size: longest side at which prompts and masks are computed (module docstring); None or 0 = always
    at full resolution. max_pixels: larger images raise ConfigError before the segmenter runs (None: no limit).
    """

    def __init__(self, segmenter: Any, prompter: Any, mask_model: PromptableSegmenter, *, score: str = DEFAULT_SCORE,
                 device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", nms_iou: float = 0.5,
                 min_area: int = 16, input_size: Any = "model", outside_weight: float = 0.5, batch_size: int = 2,
                 work_size: int | None = WORK_SIZE, max_pixels: int | float | None = None) -> None:
        if not 0.0 < outside_weight <= 1.0:
            raise ConfigError(f"outside_weight must be in (0, 1], got {outside_weight}")
        self.segmenter = segmenter
        self.prompter = prompter
        self.mask_model = mask_model
        self.score = score
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.nms_iou = float(nms_iou)
        self.min_area = int(min_area)
        self.input_size = input_size
        self.outside_weight = float(outside_weight)
        self.batch_size = max(1, int(batch_size))
        if work_size is not None and int(work_size) < 0:
            raise ConfigError(f"work_size must be >= 0 (0 = full resolution), got {work_size}")
        self.work_size = int(work_size) if work_size else None
        self.max_pixels = max_pixels
        self._engine = None

    # -- anomaly maps
    def _inference(self):
        if self._engine is None:
            if self.segmenter is None:
                raise ConfigError("this S2M has no segmenter; use segment_from_map(image, anomaly_map)")
            from ..infer import Inference, dtype_name

            self._engine = Inference(self.segmenter, scores=(self.score,), device=str(self.device),
                                     dtype=dtype_name(self.dtype), input_size=self.input_size,
                                     max_pixels=self.max_pixels)
        return self._engine

    def anomaly_maps(self, images: Sequence[np.ndarray],
                     names: Sequence[str] | None = None) -> tuple[list[np.ndarray], list[float]]:
        """Raw maps (H,W) float32 for uint8 (H,W,3) images (same-size runs batched) and seconds per image;
        ``names`` (one per image, e.g. the files) only name frames in errors."""
        eng = self._inference()
        maps: list[np.ndarray | None] = [None] * len(images)
        secs = [0.0] * len(images)
        i = 0
        while i < len(images):
            j = i + 1
            while j < len(images) and j - i < self.batch_size and images[j].shape == images[i].shape:
                j += 1
            t0 = time.perf_counter()
            batch = np.asarray(images[i])[None] if j == i + 1 else np.stack([np.asarray(im) for im in images[i:j]])
            out = eng.predict(batch, names=None if names is None else names[i:j])[self.score].float().cpu().numpy()
            del batch
            dt = (time.perf_counter() - t0) / (j - i)
            for k in range(i, j):
                maps[k] = np.ascontiguousarray(out[k - i], np.float32)
                secs[k] = dt
            i = j
        return maps, secs  # type: ignore[return-value]

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray,
                 names: Sequence[str] | None = None) -> list[S2MResult]:
        """images: list of uint8 (H,W,3) RGB (any sizes) or one such image / a (B,H,W,3) array. One result each.
        names: one per image (e.g. the files), used only in errors."""
        return segment_batch(images, names, self.anomaly_maps, self.segment_from_map)

    def segment_from_map(self, image: np.ndarray, anomaly_map: np.ndarray) -> S2MResult:
        """image (H,W,3) uint8 + precomputed raw anomaly map (H,W) float -> :class:`S2MResult`.

        Over ``work_size`` the prompts, masks and object scores come from the downscaled image and map."""
        image = np.asarray(image)
        a = np.asarray(anomaly_map, np.float32)
        if a.shape != image.shape[:2]:
            raise ConfigError(f"S2M: anomaly map {a.shape} does not match the image {image.shape[:2]}")
        t0 = time.perf_counter()
        h, w = work_shape(*a.shape, self.work_size)
        scaled = (h, w) != a.shape
        a_w = cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA) if scaled else a
        im_w = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA) if scaled else image
        prompts = self.prompter(a_w, im_w)
        t1 = time.perf_counter()
        if len(prompts):
            kw = {"point_only": True} if prompts.meta.get("point_only") else {}
            masks, quality = self.mask_model.predict(im_w, prompts.boxes, (prompts.points, prompts.point_labels), **kw)
            masks = np.asarray(masks, bool)
        else:
            masks, quality = np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        del im_w
        t2 = time.perf_counter()
        obj = np.array([float(a_w[m].mean()) if m.any() else -np.inf for m in masks], np.float32)
        conf = np.clip(np.asarray(prompts.confidence, np.float32).reshape(-1), 0.0, 1.0)
        if len(conf) != len(masks):
            raise ConfigError(f"S2M: the mask model returned {len(masks)} masks for {len(conf)} prompts")
        rescore = getattr(self.prompter, "mask_confidence", None)   # point prompters: confidence from the mask
        if rescore is not None:
            conf = np.clip(np.asarray(rescore(a_w, masks), np.float32).reshape(-1), 0.0, 1.0)
        keep, inst = assemble(masks, conf if rescore is not None else obj, self.nms_iou, self.min_area)
        masks, obj, conf = masks[keep], obj[keep], conf[keep]
        quality = np.asarray(quality, np.float32)[keep]
        boxes = mask_boxes(masks)
        if scaled:
            sx, sy = a.shape[1] / w, a.shape[0] / h
            boxes = (boxes * np.array([sx, sy, sx, sy], np.float32)).astype(np.float32)
            inst = resize_nearest(inst.astype(np.uint16), a.shape)
            prompts = _scale_prompts(prompts, sx, sy)
        result = S2MResult(instances=inst, masks=masks, boxes=boxes, scores=conf, quality=quality,
                           anomaly_map=a, refined_map=refine_map(a, inst, obj, self.outside_weight),
                           prompts=prompts, timing={}, raw_scores=obj)
        t3 = time.perf_counter()
        result.timing = {"segmenter": 0.0, "prompts": t1 - t0, "masks": t2 - t1, "post": t3 - t2, "total": t3 - t0}
        return result


def _scale_prompts(p: Prompts, sx: float, sy: float) -> Prompts:
    """Prompts at a working size -> image pixels (boxes and point coordinates times (sx, sy))."""
    f = np.array([sx, sy], np.float32)
    return Prompts(p.boxes * np.tile(f, 2), p.confidence, p.points * f, p.point_labels,
                   dict(p.meta, work_scale=(float(sy), float(sx))))


# ----------------------------------------------------------------------------------------------------------


def _checkpoint_extra(model: Any, checkpoint: str | Path | None) -> dict:
    """``extra`` of the checkpoint: kept on the model by ``load_checkpoint`` (no second read of the file) unless
    ``checkpoint`` names another file than the one the model was loaded from; ``{}`` for a model from another
    source (``model.origin``: ``hf:``, ``torchvision:``, ``python:``: such models hold no prompter, use
    ``--prompter FILE``)."""
    origin = getattr(model, "origin", None)
    if origin is not None and origin.kind != "checkpoint" and (checkpoint is None or str(checkpoint) == origin.spec):
        return {}
    meta = getattr(model, "checkpoint_meta", None) or {}
    loaded_from = getattr(model, "checkpoint_path", None)
    same = checkpoint is None or (loaded_from is not None and Path(loaded_from).resolve() == Path(checkpoint).resolve())
    if same and isinstance(meta.get("extra"), dict):
        return dict(meta["extra"])
    path = checkpoint if checkpoint is not None else loaded_from
    if path is not None and Path(path).is_file():
        from ..models.checkpoint import read_checkpoint

        return dict(read_checkpoint(path).get("extra") or {})
    return {}


def _pick_score(score: str | Sequence[str], prompter: Any) -> str:
    """The score S2M runs on: ``score`` itself, or from candidates the learned prompter's own score when it is
    among them, else ``jsd`` when present, else the first candidate."""
    if isinstance(score, str):
        return score
    cands = list(score)
    if not cands:
        raise ConfigError("S2M needs at least one score name")
    own = getattr(prompter, "score_name", None)
    if own in cands:
        return own
    return DEFAULT_SCORE if DEFAULT_SCORE in cands else cands[0]


def build_prompter(spec: str, extra: dict, score: str | Sequence[str], device: torch.device,
                   where: str = "the checkpoint") -> Any:
    """"peak" | "learned" | "auto" | "points[:N[:Q]]" (:class:`~denseood.s2m.points.PointPrompter`) | PATH of a
    prompter file -> a prompter (see :func:`build_s2m`).

    score: the score name, or candidate names (the learned prompter's own score is chosen when among them)."""
    spec = str(spec)
    if spec == "peak":
        return PeakPrompter()
    if spec == "points" or spec.startswith("points:"):
        return PointPrompter.from_spec(spec)
    if spec in ("learned", "auto"):
        st = extra.get("prompter")
        if st is None:
            if spec == "learned":
                raise ConfigError(f"--prompter learned: {where} holds no learned prompter; train one with "
                                  f"`denseood train-prompter --checkpoint CKPT --root DATA` or use --prompter peak")
            print("note: the checkpoint has no learned prompter (train one with `denseood train-prompter`); "
                  "using the training-free peak prompter", file=sys.stderr)
            return PeakPrompter()
        prompter = LearnedPrompter.from_state(st, device=device, source=f"{where} extra['prompter']")
    elif spec.endswith((".pt", ".pth")) or Path(spec).is_file():
        prompter = LearnedPrompter.load(spec, device=device)
    else:
        raise ConfigError(f"unknown --prompter {spec!r}; use learned, peak, auto, points[:N[:Q]] or the path of a "
                          f"prompter file")
    score = _pick_score(score, prompter)
    if prompter.score_name != score:
        raise ConfigError(f"the learned prompter was trained on '{prompter.score_name}' maps but the score is "
                          f"'{score}'; use --score {prompter.score_name}, retrain it with --score {score}, or "
                          f"use --prompter peak")
    return prompter


def build_s2m(model: Any, prompter: str = "auto", prompt_model: str = "grabcut", device: Any = "auto",
              dtype: Any = "auto", score: str | Sequence[str] = DEFAULT_SCORE, *, checkpoint: str | Path | None = None,
              input_size: Any = "model", **kw: Any) -> S2M:
    """Assemble an :class:`S2M` from a checkpoint.

    model: a model (``SegmenterBase``) or a ``load_model`` spec (checkpoint .pt | hf:DIR | torchvision:NAME:FILE |
    python:MODULE:FACTORY). prompter: "learned" (the checkpoint's ``extra["prompter"]``,
    ConfigError when missing), "peak", "auto" (learned when present, else peak with a printed note) or the
    path of a prompter file written by ``denseood train-prompter --out``, or "points[:N[:Q]]" (UGainS-style point
    prompts, :mod:`denseood.s2m.points`; S2M's ``nms_iou`` then defaults to 0.7). prompt_model: "grabcut" |
    "sam:TYPE:PATH". score: the anomaly score S2M runs on, or candidate names (e.g. the scores an evaluation
    computes): then the learned prompter's own score when it is among them, else ``jsd`` when present, else the
    first. checkpoint: where to read ``extra`` when ``model`` is a Segmenter object.
    """
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if isinstance(model, (str, Path)):
        from ..models.sources import load_model

        checkpoint = model
        model = load_model(checkpoint, map_location="cpu")
    extra = _checkpoint_extra(model, checkpoint)
    where = f"checkpoint {checkpoint}" if checkpoint is not None else "the checkpoint"
    p = build_prompter(prompter, extra, score, dev, where)
    if hasattr(p, "mask_nms_iou"):   # the point prompter's own mask-NMS IoU (0.7, UGainS) unless given
        kw.setdefault("nms_iou", p.mask_nms_iou)
    score = _pick_score(score, p)
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    mm = build_prompt_model(prompt_model, device=str(dev), dtype=names[dt])
    return S2M(model, p, mm, score=score, device=dev, dtype=dt, input_size=input_size, **kw)
