"""Instance sets for the OoDIS instance-AP tests, shared with tools/oodis_reference.py (which scores them with
the official OoDIS scorer run offline; tests/eval/test_instance_ap_oodis.py quotes its output).

An image is ``(pred_masks (N,H,W) bool, scores (N,) float, gt_instances (H,W) int (0 = none), void (H,W) bool)``,
the arguments of ``InstanceAP.update``; a case is a list of images. Every case is deterministic.
"""
from __future__ import annotations

import numpy as np

Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
H, W = 32, 40


def _box(y0: int, y1: int, x0: int, x1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def _image(preds: list[np.ndarray], scores: list[float], gt: np.ndarray, void: np.ndarray | None = None) -> Image:
    p = np.array(preds, bool).reshape(-1, *gt.shape)
    return p, np.asarray(scores, np.float64), gt.astype(np.int32), (np.zeros(gt.shape, bool) if void is None
                                                                     else void)


def _gt(*boxes: np.ndarray) -> np.ndarray:
    g = np.zeros((H, W), np.int32)
    for k, b in enumerate(boxes):
        g[b] = 5 + 2 * k  # sparse ids: the metric must not rely on 1..K
    return g


def designed_cases() -> dict[str, list[Image]]:
    """Cases at the rule boundaries of the OoDIS scorer (see docs/metrics.md)."""
    a, b = _box(2, 6, 2, 12), _box(10, 18, 20, 28)  # 40 px, 64 px
    c: dict[str, list[Image]] = {}
    # IoU exactly 0.5 (20 of 40 px): not a match at 0.5 (strictly greater); B is a perfect match
    c["iou_exactly_050"] = [_image([_box(2, 6, 2, 7), b], [0.9, 0.8], _gt(a, b))]
    # IoU exactly 0.75 (30 of 40 px): a match at 0.50..0.70, not at 0.75 and above
    c["iou_exactly_075"] = [_image([_box(2, 5, 2, 12), b], [0.7, 0.6], _gt(a, b))]
    # three predictions on one object: the highest-scoring is the match, the two others false positives
    c["duplicates"] = [_image([a, _box(2, 6, 2, 11), _box(2, 6, 3, 12), b], [0.5, 0.9, 0.5, 0.7], _gt(a, b))]
    # a prediction 70 % on void, 30 % on background: ignored where 0.7 > t, a false positive from t = 0.70 on
    void = _box(20, 30, 0, 7)
    c["prediction_mostly_void"] = [_image([_box(20, 30, 0, 10), a], [0.95, 0.4], _gt(a, b), void)]
    # an 8x8 object with a quarter (2 of 8 columns) under void; the full-box prediction has IoU 48/64 = 0.75
    void = _box(10, 18, 26, 28)
    c["object_quarter_void"] = [_image([b, a], [0.8, 0.3], _gt(a, b), void)]
    # a 6 px prediction on background ranked first: a false positive here (COCO ignores it)
    c["prediction_below_10px"] = [_image([_box(28, 30, 30, 33), a, b], [0.99, 0.5, 0.4], _gt(a, b))]
    # ground truth under 10 px (3x3) hit by a prediction: neither true nor false positive
    tiny = _box(25, 28, 30, 33)
    c["gt_below_10px"] = [_image([tiny, _box(24, 28, 30, 33), a], [0.9, 0.85, 0.3], _gt(a, tiny))]
    # 150 predictions: 145 single pixels with high scores, then the 5 true objects; COCO keeps only 100
    objs = [_box(1 + 6 * k, 5 + 6 * k, 1, 9) for k in range(5)]
    dots = [_box(y, y + 1, x, x + 1) for y in range(0, H, 2) for x in range(12, W, 2)][:145]
    c["more_than_100_predictions"] = [_image(dots + objs, list(np.linspace(0.99, 0.5, 145)) +
                                             [0.45, 0.44, 0.43, 0.42, 0.41], _gt(*objs))]
    # an image without ground truth but with predictions (false positives), beside one with an object
    c["image_without_gt"] = [_image([a], [0.6], _gt(a)), _image([b, _box(0, 3, 0, 3)], [0.7, 0.2], _gt())]
    # equal scores in two images: a true and a false positive share the threshold 0.5
    c["ties_across_images"] = [_image([a, _box(20, 24, 0, 5)], [0.5, 0.3], _gt(a, b)),
                               _image([_box(20, 24, 0, 5), b], [0.5, 0.5], _gt(b))]
    # no prediction at all (every image): AP 0
    c["no_predictions"] = [_image([], [], _gt(a, b)), _image([], [], _gt(b))]
    # no ground truth anywhere: AP undefined (NaN)
    c["no_gt_anywhere"] = [_image([a], [0.5], _gt())]
    return c


def crash_cases() -> dict[str, list[Image]]:
    """Cases on which the official scorer raises (documented in docs/metrics.md): no prediction is ever a
    match and every prediction is ignored at some threshold, so that threshold has no detection at all."""
    a = _box(2, 6, 2, 12)
    void = _box(20, 30, 0, 10)
    tiny = _box(25, 28, 30, 33)
    g = _gt(a, tiny)
    return {"all_ignored_on_void": [_image([_box(20, 30, 0, 10)], [0.9], _gt(a), void)],
            "all_ignored_on_small_gt": [_image([tiny], [0.8], g)]}


def _blob(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    ry, rx = rng.integers(1, h // 3 + 2), rng.integers(1, w // 3 + 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_image(rng: np.random.Generator, h: int = 36, w: int = 48) -> Image:
    """Random blobs as ground truth (some under 10 px), a random void band, predictions that are perturbed
    copies of objects, blobs or void-heavy masks; scores rounded to 0.1 so that ties happen."""
    gt = np.zeros((h, w), np.int32)
    for k in range(rng.integers(0, 5)):
        gt[_blob(h, w, rng)] = 3 + 4 * k
    void = np.zeros((h, w), bool)
    if rng.random() < 0.6:
        void[rng.integers(0, h - 4):, : rng.integers(4, w)] = True
    preds = []
    ids = np.unique(gt[(gt > 0) & ~void])
    for _ in range(rng.integers(0, 8)):
        u = rng.random()
        if len(ids) and u < 0.55:
            m = (gt == rng.choice(ids)) ^ ((rng.random((h, w)) < 0.3) & _blob(h, w, rng))
        elif u < 0.75:
            m = void & _blob(h, w, rng) | (_blob(h, w, rng) & (rng.random((h, w)) < 0.2))
        else:
            m = _blob(h, w, rng)
        preds.append(m)
    p = np.array(preds, bool).reshape(-1, h, w)
    return p, np.round(rng.random(len(p)), 1), gt, void


def random_case(seed: int, n_images: int = 6) -> list[Image]:
    """``n_images`` random images from ``numpy.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return [random_image(rng) for _ in range(n_images)]


RANDOM_SEEDS = tuple(range(10))


def all_cases() -> dict[str, list[Image]]:
    """Every case the reference tool scores: designed, crash and random (``random_<seed>``)."""
    out = dict(designed_cases())
    out.update(crash_cases())
    out.update({f"random_{s}": random_case(s) for s in RANDOM_SEEDS})
    return out
