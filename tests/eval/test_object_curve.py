"""The S2M object protocol against a reference written from the S2M code's description (torch, float32)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from denseood.errors import ConfigError
from denseood.eval.object_curve import ObjectScoreCurve, paint_objects


def reference(maps, labels, step):
    """Per threshold in np.arange(0, 1+step, step): map > t (float32 tensors), IoU / Dice per image with empty
    unions scoring 0, averaged over images; best = first strict maximum starting from 0."""
    ious, f1s, ts = [], [], []
    best, best_t = 0.0, 0.0
    a = torch.from_numpy(np.stack(maps)).float()
    y = torch.from_numpy(np.stack(labels))
    for t in np.arange(0, 1 + step, step):
        ts.append(t)
        pred = a > t
        per_iou, per_f1 = [], []
        for i in range(len(a)):
            inter = torch.logical_and(y[i] == 1, pred[i]).sum().item()
            union = torch.logical_or(y[i] == 1, pred[i]).sum().item()
            per_iou.append(0 if union == 0 else inter / union)
            per_f1.append(0 if union == 0 else 2 * inter / (inter + union))
        iou = float(np.mean(per_iou))
        if iou > best:
            best, best_t = iou, t
        ious.append(iou)
        f1s.append(float(np.mean(per_f1)))
    area = float(sum((ious[k] + ious[k + 1]) / 2 * (ts[k + 1] - ts[k]) for k in range(len(ts) - 1)))
    return best, best_t, area, float(np.mean(f1s))


def random_case(rng, n=7, h=24, w=32):
    maps, labels = [], []
    for i in range(n):
        lab = np.zeros((h, w), np.uint8)
        if i % 3 != 1:  # every third image has no anomaly
            lab[rng.integers(0, h // 2):rng.integers(h // 2, h), rng.integers(0, w // 2):rng.integers(w // 2, w)] = 1
        if i == 4:
            lab[:] = 255  # all void
        else:
            lab[:2] = 255
        masks = rng.random((rng.integers(0, 4), h, w)) < 0.3  # i == 0 may have no object at all
        if i == 2:
            masks = np.zeros((0, h, w), bool)  # an empty prediction
        scores = np.round(rng.random(len(masks)), 2)  # grid values: ties with thresholds happen
        maps.append(paint_objects(masks, scores, (h, w)))
        labels.append(lab)
    return maps, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("step", [0.01, 0.05])
def test_object_curve_equals_reference(seed, step):
    maps, labels = random_case(np.random.default_rng(seed))
    m = ObjectScoreCurve(step=step)
    for s, lab in zip(maps, labels):
        m.update(s, lab)
    r = m.compute()
    best, best_t, area, f1 = reference(maps, labels, step)
    assert r["best_iou"] == pytest.approx(best, abs=1e-12)
    assert r["best_threshold"] == pytest.approx(best_t, abs=1e-6)
    assert r["au_iou"] == pytest.approx(area, abs=1e-9)
    assert r["mean_f1"] == pytest.approx(f1, abs=1e-12)
    assert r["n_images"] == len(maps) and len(r["iou_curve"]) == len(np.arange(0, 1 + step, step))


def test_paint_objects_takes_the_highest_score_on_overlap_and_label_maps():
    masks = np.zeros((2, 3, 3), bool)
    masks[0, :2, :2] = masks[1, 1:, 1:] = True
    m = paint_objects(masks, [0.9, 0.4])
    assert m[1, 1] == np.float32(0.9) and m[2, 2] == np.float32(0.4) and m[0, 2] == 0
    m2 = paint_objects(masks[::-1], [0.4, 0.9])  # order does not matter
    assert (m == m2).all()
    lab = np.array([[0, 1], [2, 2]])
    assert paint_objects(lab, [0.5, 0.25]).tolist() == [[0.0, 0.5], [0.25, 0.25]]
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        paint_objects(lab, [-0.3, 0.2])  # raw (negative) anomaly scores are refused
    with pytest.raises(ConfigError, match="ids up to 2 but 1 scores"):
        paint_objects(lab, [0.5])


def test_all_zero_maps_report_zero_at_threshold_zero():
    m = ObjectScoreCurve()
    lab = np.zeros((4, 4), np.uint8)
    lab[1, 1] = 1
    m.update(np.zeros((4, 4)), lab)
    r = m.compute()
    assert r["best_iou"] == 0 and r["best_threshold"] == 0 and r["au_iou"] == 0 and r["mean_f1"] == 0
