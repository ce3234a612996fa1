"""The metric objects of the metric contract suite (tests/eval/test_metric_contract.py): one :class:`MetricCase`
per metric object of ``denseood.eval`` (and per mode / protocol), with its frames, an independent reference and
the value ``compute()`` documents for no input. A new metric gets the whole suite by adding one entry to
``CASES``. The references are the ones the metric's own tests use (sklearn, pycocotools, the official OoDIS
scorer's printed values, naive loops), imported from those test modules; the SemanticMetrics one is here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from scipy.ndimage import label as nd_label
from sklearn.metrics import average_precision_score, roc_auc_score

from denseood.errors import ConfigError, DenseOODError
from denseood.eval import (ComponentMetrics, InstanceAP, InstanceAPReport, ObjectMetrics, ObjectScoreCurve,
                           PixelMetrics, SemanticMetrics)
from tests.eval.oodis_cases import random_case as oodis_case
from tests.eval.test_components import ref_aggregate, ref_frame, scene
from tests.eval.test_instance_ap import coco_reference
from tests.eval.test_instance_ap_oodis import REFERENCE as OODIS_REFERENCE
from tests.eval.test_object_curve import random_case as curve_case
from tests.eval.test_object_curve import reference as curve_reference
from tests.eval.test_pixel import pooled, ref_best_f1, ref_caos, ref_fpr95, ref_smiyc

Frame = tuple  # the positional arguments of one update call for one image


@dataclass(frozen=True)
class MetricCase:
    """One metric object. ``make()`` builds it; ``frames()`` gives the update arguments of each image;
    ``reference(frames)`` the expected values of (some of) ``compute()``'s keys, nested dicts allowed;
    ``empty``: what ``compute()`` gives with no input, a dict of values or ``(error type, message regex)``;
    ``update``: the method fed; ``batch``: it also takes the frames' arrays stacked on a new first axis;
    ``tol``: absolute tolerance of every float; ``varies``: keys documented to depend on the order of the
    input or its split over ranks (the auto-calibrated streaming grid's width)."""

    name: str
    make: Callable[[], Any]
    frames: Callable[[], list[Frame]]
    reference: Callable[[list[Frame]], dict]
    empty: dict | tuple[type, str]
    update: str = "update"
    batch: bool = False
    tol: float = 1e-12
    varies: tuple[str, ...] = ()


# ----------------------------------------------------------------------------------------------------------------
# pixel metrics: dyadic scores (exact in float16/32, many ties), void, a frame without anomaly, an all-void frame
# ----------------------------------------------------------------------------------------------------------------
def pixel_frames(n: int = 6, h: int = 24, w: int = 40, seed: int = 0) -> list[Frame]:
    """Scores are multiples of 1/1024 in [0, 2.8]: the fixed grid (0, 4) with 4096 bins gives each its own bin."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        m = (rng.random((h, w)) < 0.15).astype(np.uint8)
        m[rng.random((h, w)) < 0.1] = 255
        s = np.clip(rng.normal(0.4, 0.2, (h, w)) + 0.35 * (m == 1), 0, 1.4)
        s = np.round(s * 512) / 512 * (1 + 0.5 * (i % 3))   # the range changes from frame to frame
        if i == 2:
            m[m == 1] = 0   # no anomaly: caos skips it
        if i == 4:
            m[:] = 255   # all void: smiyc skips it
        frames.append((s.astype(np.float32), m))
    return frames


def ref_pooled(frames: list[Frame]) -> dict:
    """sklearn's AP/AUROC and brute-force FPR95 / best F1 over all valid pixels pooled."""
    y, x = pooled(np.stack([f[0] for f in frames]), np.stack([f[1] for f in frames]))
    fpr, thr = ref_fpr95(y, x)
    f1, t1 = ref_best_f1(y, x)
    return dict(ap=average_precision_score(y, x), auroc=roc_auc_score(y, x), fpr95=fpr, threshold_at_tpr95=thr,
                best_f1=f1, best_f1_threshold=t1, n_pixels=y.size, n_anomaly=int(y.sum()))


def ref_caos_pooled(frames: list[Frame]) -> dict:
    """caos: per-image means, plus the pooled threshold keys of its (here exact, fixed-grid) histogram."""
    pooled_ref = ref_pooled(frames)
    keys = ("threshold_at_tpr95", "best_f1", "best_f1_threshold", "n_pixels", "n_anomaly")
    return {**ref_caos(frames), **{k: pooled_ref[k] for k in keys}}


NO_PIXELS = (DenseOODError, "no valid \\(non-void\\) pixels were seen")

PIXEL_CASES = [
    MetricCase("pixel-exact", lambda: PixelMetrics("exact"), pixel_frames, ref_pooled, NO_PIXELS, batch=True),
    MetricCase("pixel-streaming-range", lambda: PixelMetrics("streaming", bins=4096, score_range=(0.0, 4.0)),
               pixel_frames, ref_pooled, NO_PIXELS, batch=True),
    MetricCase("pixel-streaming-auto", lambda: PixelMetrics("streaming", bins=20_000), pixel_frames, ref_pooled,
               NO_PIXELS, batch=True, varies=("bin_width",)),   # the grid depends on the first batch
    MetricCase("pixel-smiyc", lambda: PixelMetrics("smiyc"), pixel_frames, ref_smiyc, NO_PIXELS, batch=True),
    MetricCase("pixel-caos", lambda: PixelMetrics("caos", bins=4096, score_range=(0.0, 4.0)), pixel_frames,
               ref_caos_pooled, (DenseOODError, "all 0 images were skipped"), batch=True),
]


# ----------------------------------------------------------------------------------------------------------------
# component and object metrics: blob scenes
# ----------------------------------------------------------------------------------------------------------------
THRESHOLD, MIN_SIZE = 0.45, 5


def component_frames(n: int = 4, seed: int = 1) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [scene(rng, h=40, w=56, n_blobs=4) for _ in range(n)]


def ref_components(frames: list[Frame]) -> dict:
    return ref_aggregate([ref_frame(m, MIN_SIZE, pred=s > THRESHOLD, min_seg=MIN_SIZE) for s, m in frames])


def instance_frames() -> list[Frame]:
    """(label map of the thresholded scores' 4-connected components, ood mask): touching ids stay apart."""
    return [(nd_label(s > THRESHOLD)[0], m) for s, m in component_frames()]


def ref_instances(frames: list[Frame]) -> dict:
    return ref_aggregate([ref_frame(m, MIN_SIZE, labels=lab) for lab, m in frames])


def object_frames(scored: bool, seed: int = 2) -> list[Frame]:
    """(pred masks (N,H,W), ood mask, object scores, gt instance ids) per image from the OoDIS test cases, with
    distinct scores: COCO AP (like pycocotools) orders tied detections by image, so ties would make it depend
    on the order of the images."""
    images = oodis_case(seed)
    n = sum(len(p) for p, *_ in images)
    levels = iter(np.random.default_rng(seed).permutation(n) / max(n, 1))
    frames = []
    for preds, _, gt, void in images:
        mask = np.where(void, 255, gt > 0).astype(np.uint8)
        scores = np.array([next(levels) for _ in preds])
        frames.append((preds, mask, scores, gt) if scored else (preds, mask))
    return frames


def _first_mask_labels(preds: np.ndarray) -> np.ndarray:
    """Label map of overlapping masks, a pixel to the earliest mask (the documented overlap rule)."""
    lab = np.zeros(preds.shape[1:], np.int64)
    for k in range(len(preds) - 1, -1, -1):
        lab[preds[k]] = k + 1
    return lab


def ref_objects(frames: list[Frame]) -> dict:
    inter = union = 0
    per_image, comps = [], []
    for preds, mask, *_ in frames:
        pred, anom = preds.any(0) & (mask != 255), mask == 1
        i, u = int((pred & anom).sum()), int((pred | anom).sum())
        inter, union = inter + i, union + u
        per_image += [i / u] if u else []
        comps.append(ref_frame(mask, 100, labels=_first_mask_labels(preds)))
    c = ref_aggregate(comps)
    out = dict(iou=inter / union, iou_per_image_mean=float(np.mean(per_image)), intersection=inter, union=union,
               n_images=len(frames), **{k: c[k] for k in ("sIoU", "PPV", "mean_F1", "F1_per_threshold", "n_gt")})
    if len(frames[0]) == 2:
        return out
    maps = [np.max(np.where(p, s[:, None, None], 0.0), axis=0, initial=0.0) for p, _, s, _ in frames]
    best, best_t, area, mean_f1 = curve_reference(maps, [f[1] for f in frames], 0.01)
    coco = coco_reference([(p, s, np.where(m == 255, 0, g), m == 255) for p, m, s, g in frames], 10)
    return {**out, "best_iou": best, "best_threshold": best_t, "au_iou": area, "mean_f1": mean_f1,
            "instance_ap": {"coco": {"ap_per_iou": list(coco), "ap": float(coco.mean())}}}


# ----------------------------------------------------------------------------------------------------------------
# instance AP, the object-score curve, semantic metrics
# ----------------------------------------------------------------------------------------------------------------
OODIS_SEED = 3


def ref_oodis(frames: list[Frame]) -> dict:
    """The official OoDIS scorer's output on ``oodis_case(OODIS_SEED)`` (tests/eval/test_instance_ap_oodis.py)."""
    ap, ap50, per_iou = OODIS_REFERENCE[f"random_{OODIS_SEED}"]
    return dict(ap=ap, ap50=ap50, ap_per_iou=per_iou)


def instance_frames_coco() -> list[Frame]:
    return [(p, s, np.where(m == 255, 0, g), m == 255) for p, m, s, g in object_frames(True)]


def ref_coco(frames: list[Frame]) -> dict:
    ap = coco_reference(frames, 10)
    return dict(ap=float(ap.mean()), ap50=float(ap[0]), ap_per_iou=list(ap))


def curve_frames() -> list[Frame]:
    maps, labels = curve_case(np.random.default_rng(4))
    return list(zip(maps, labels))


def ref_curve(frames: list[Frame]) -> dict:
    best, best_t, area, mean_f1 = curve_reference([f[0] for f in frames], [f[1] for f in frames], 0.01)
    return dict(best_iou=best, best_threshold=best_t, au_iou=area, mean_f1=mean_f1, n_images=len(frames))


N_CLASSES = 5


def semantic_frames(n: int = 5, seed: int = 5) -> list[Frame]:
    """(prediction, target) class ids; class 4 never in the target, void (255) in every target."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        t = rng.integers(0, N_CLASSES - 1, (12, 16))
        p = np.where(rng.random(t.shape) < 0.7, t, rng.integers(0, N_CLASSES, t.shape))
        t[rng.random(t.shape) < 0.1] = 255
        frames.append((p, t))
    return frames


def ref_semantic(frames: list[Frame]) -> dict:
    """Per class c: IoU = |pred c & target c| / |pred c | target c| over non-void pixels, by counting."""
    p = np.concatenate([f[0].ravel() for f in frames])
    t = np.concatenate([f[1].ravel() for f in frames])
    p, t = p[t != 255], t[t != 255]
    iou = [float(np.sum((p == c) & (t == c)) / np.sum((p == c) | (t == c))) if np.any(t == c) else float("nan")
           for c in range(N_CLASSES)]
    return dict(iou=iou, miou=float(np.nanmean(iou)), acc=float(np.mean(p == t)), pixels=float(t.size))


def _empty_ap(protocol: str) -> dict:
    nan = float("nan")
    return dict(protocol=protocol, ap=nan, ap50=nan, ap75=nan, ap_per_iou=[nan] * 10, n_gt=0, n_pred=0)


CASES: list[MetricCase] = [
    *PIXEL_CASES,
    MetricCase("components-threshold", lambda: ComponentMetrics(THRESHOLD, MIN_SIZE, MIN_SIZE), component_frames,
               ref_components, (DenseOODError, "no frames were added"), batch=True),
    MetricCase("components-instances", lambda: ComponentMetrics(None, MIN_SIZE, MIN_SIZE), instance_frames,
               ref_instances, (DenseOODError, "no frames were added"), update="update_instances"),
    MetricCase("objects-smiyc", lambda: ObjectMetrics("smiyc"), lambda: object_frames(False), ref_objects,
               (DenseOODError, "no images were added")),
    MetricCase("objects-s2m", lambda: ObjectMetrics("s2m"), lambda: object_frames(True), ref_objects,
               (DenseOODError, "no images were added"), tol=1e-6),
    MetricCase("instance-ap-oodis", lambda: InstanceAP("oodis"), lambda: oodis_case(OODIS_SEED), ref_oodis,
               _empty_ap("oodis"), tol=1e-9),
    MetricCase("instance-ap-coco", lambda: InstanceAP("coco"), instance_frames_coco, ref_coco, _empty_ap("coco"),
               tol=1e-6),
    MetricCase("instance-ap-report", InstanceAPReport, instance_frames_coco, lambda f: {"coco": ref_coco(f)},
               {"oodis": _empty_ap("oodis"), "coco": _empty_ap("coco")}, tol=1e-6),
    MetricCase("object-curve", ObjectScoreCurve, curve_frames, ref_curve, (ConfigError, "no images were added"),
               tol=1e-6),   # the threshold grid is float32 (documented), the reference's float64
    MetricCase("semantic", lambda: SemanticMetrics(N_CLASSES), semantic_frames, ref_semantic,
               dict(miou=float("nan"), acc=float("nan"), pixels=0.0, iou=[float("nan")] * N_CLASSES), batch=True),
]
