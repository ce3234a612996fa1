"""ObjectMetrics: dataset-level IoU by brute force, component part equal to ComponentMetrics on the masks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from denseood.errors import DenseOODError
from denseood.eval import ComponentMetrics, ObjectMetrics


def make_image(rng, h=32, w=48):
    gt = np.zeros((h, w), np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        gt[y:y + rng.integers(3, 8), x:x + rng.integers(3, 8)] = 1
    gt[: h // 8] = 255
    masks = []
    for _ in range(rng.integers(0, 4)):
        mk = np.zeros((h, w), bool)
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        mk[y:y + rng.integers(2, 9), x:x + rng.integers(2, 9)] = True
        masks.append(mk)
    masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return masks, gt


def test_iou_and_components_against_references():
    rng = np.random.default_rng(0)
    images = [make_image(rng) for _ in range(6)]
    om = ObjectMetrics(min_instance_size=5)
    cm = ComponentMetrics(min_instance_size=5)
    inter = union = 0
    per_image = []
    for i, (masks, gt) in enumerate(images):
        om.update(torch.from_numpy(masks) if i % 2 else masks, gt)
        cm.update_instances(masks, gt)
        pred = masks.any(0) if len(masks) else np.zeros(gt.shape, bool)
        valid = gt != 255
        a = np.sum(pred & (gt == 1) & valid)
        u = np.sum((pred | (gt == 1)) & valid)
        inter, union = inter + a, union + u
        if u:
            per_image.append(a / u)
    res = om.compute()
    assert res["iou"] == pytest.approx(inter / union, abs=1e-12)
    assert res["iou_per_image_mean"] == pytest.approx(np.mean(per_image), abs=1e-12)
    comp = cm.compute()
    for k in ("sIoU", "PPV", "mean_F1", "n_gt", "n_pred"):
        assert (math.isnan(res[k]) and math.isnan(comp[k])) or res[k] == comp[k], k
    assert res["F1_per_threshold"] == comp["F1_per_threshold"]
    assert res["n_images"] == 6


def test_label_map_equals_bool_masks():
    rng = np.random.default_rng(1)
    masks, gt = make_image(rng)
    while len(masks) < 2:
        masks, gt = make_image(rng)
    lab = np.zeros(gt.shape, np.int32)
    for k in range(len(masks) - 1, -1, -1):  # earlier masks win overlaps
        lab[masks[k]] = k + 1
    a, b = ObjectMetrics(5), ObjectMetrics(5)
    a.update(masks, gt)
    b.update(lab, gt)
    ra, rb = a.compute(), b.compute()
    for k in ra:
        assert (isinstance(ra[k], float) and math.isnan(ra[k]) and math.isnan(rb[k])) or ra[k] == rb[k], k


def test_void_pixels_do_not_count():
    gt = np.full((10, 10), 255, np.uint8)
    gt[5:, :] = 0
    gt[6:8, 2:4] = 1
    pred = np.zeros((10, 10), np.int32)
    pred[0:5, :] = 1  # entirely on void
    pred[6:8, 2:4] = 2
    om = ObjectMetrics(min_instance_size=0)
    om.update(pred, gt)
    r = om.compute()
    assert r["iou"] == 1.0 and r["n_pred"] == 1 and r["PPV"] == 1.0


def test_errors():
    with pytest.raises(DenseOODError, match="no images"):
        ObjectMetrics().compute()
    with pytest.raises(DenseOODError, match="one image"):
        ObjectMetrics().update(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DenseOODError, match="size"):
        ObjectMetrics().update(np.zeros((1, 4, 5), bool), np.zeros((4, 4), np.uint8))
