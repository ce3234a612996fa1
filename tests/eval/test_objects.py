"""ObjectMetrics: dataset-level IoU by brute force, component part equal to ComponentMetrics on the masks."""
from __future__ import annotations

import math

import cv2
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
    a, b = ObjectMetrics(min_instance_size=5), ObjectMetrics(min_instance_size=5)
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


def _scored_cases(rng):
    """Random frames with scores, plus an empty image, an all-void image and an image without anomalies."""
    cases = []
    for _ in range(6):
        masks, gt = make_image(rng)
        cases.append((masks, gt, rng.random(len(masks))))
    h, w = 32, 48
    cases.append((np.zeros((0, h, w), bool), np.zeros((h, w), np.uint8), np.zeros(0)))  # empty, no anomaly
    m = np.zeros((1, h, w), bool)
    m[3:9, 4:12] = True
    cases.append((m, np.full((h, w), 255, np.uint8), np.array([0.7])))  # all void
    cases.append((m, np.zeros((h, w), np.uint8), np.array([0.4])))  # prediction, no anomaly
    return cases


def _near_hits(rng, n=4):
    """Frames whose predictions are the ground-truth objects shifted by 0-2 pixels, plus a false positive: the
    instance AP is far from 0 and its IoU thresholds matter."""
    cases = []
    for _ in range(n):
        _, gt = make_image(rng)
        ids = cv2.connectedComponents((gt == 1).astype(np.uint8), connectivity=8)[1]
        masks = [np.roll(ids == k, tuple(rng.integers(0, 3, 2)), axis=(0, 1)) for k in range(1, ids.max() + 1)]
        fp = np.zeros(gt.shape, bool)
        fp[:6, -6:] = True
        masks = np.array(masks + [fp], bool)
        cases.append((masks, gt, rng.random(len(masks))))
    return cases


def _painted(masks, sc, shape):
    """Reference painting: each pixel takes the highest score of the masks covering it (0 where none)."""
    out = np.zeros(shape, np.float64)
    for m, v in zip(masks, sc):
        out[m] = np.maximum(out[m], v)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_s2m_protocol_against_independent_references(seed, capsys):
    """ObjectMetrics(protocol="s2m") against code that shares none of its classes: the S2M curve against the
    reference of tests/eval/test_object_curve.py on maps painted here, COCO AP against pycocotools with ground-truth
    objects from scipy's 8-connected labelling, IoU / union terms against numpy counts. OoDIS AP is the
    InstanceAP(protocol="oodis") value; that class is checked against the official OoDIS scorer in
    tests/eval/test_instance_ap_oodis.py."""
    from scipy import ndimage
    from tests.eval.test_instance_ap import coco_reference
    from tests.eval.test_object_curve import reference

    from denseood.eval.instance_ap import InstanceAP

    rng = np.random.default_rng(seed)
    cases = _scored_cases(rng) + _near_hits(rng)
    om = ObjectMetrics(protocol="s2m", step=0.05, min_instance_size=5, ap_min_size=4)
    maps, labels, coco_images, oodis = [], [], [], InstanceAP(protocol="oodis", min_size=4)
    inter = union = 0
    for i, (masks, gt, sc) in enumerate(cases):
        if i % 2 and len(masks):  # label map form: earlier masks win overlaps, id k+1 has sc[k]
            pred = np.zeros(gt.shape, np.int32)
            for k in range(len(masks) - 1, -1, -1):
                pred[masks[k]] = k + 1
            ref_masks = pred[None] == np.arange(1, len(masks) + 1)[:, None, None]
        else:
            pred, ref_masks = masks, masks
        om.update(pred, gt, scores=torch.from_numpy(sc) if i % 3 == 0 else sc)
        maps.append(_painted(ref_masks, sc, gt.shape))
        labels.append(gt)
        gt_ids = ndimage.label(gt == 1, structure=np.ones((3, 3), int))[0]
        coco_images.append((ref_masks, sc, gt_ids, gt == 255))
        oodis.update(ref_masks, sc, gt_ids, gt == 255)
        any_pred = ref_masks.any(0) & (gt != 255)
        inter += int((any_pred & (gt == 1)).sum())
        union += int((any_pred | (gt == 1)).sum())
    res = om.compute()
    best, best_t, area, f1 = reference(maps, labels, 0.05)
    assert res["best_iou"] == pytest.approx(best, abs=1e-12) and res["best_threshold"] == pytest.approx(best_t, abs=1e-9)
    assert res["au_iou"] == pytest.approx(area, abs=1e-9) and res["mean_f1"] == pytest.approx(f1, abs=1e-12)
    coco = coco_reference(coco_images, 4)
    capsys.readouterr()  # pycocotools prints progress
    assert res["instance_ap"]["coco"]["ap"] == pytest.approx(float(coco.mean()), abs=1e-6)
    assert res["instance_ap"]["coco"]["ap50"] == pytest.approx(float(coco[0]), abs=1e-6)
    assert res["instance_ap"]["oodis"]["ap"] == oodis.compute()["ap"]
    assert [v["protocol"] for v in res["instance_ap"].values()] == ["oodis", "coco"]
    assert (res["intersection"], res["union"]) == (inter, union) and res["iou"] == pytest.approx(inter / union)
    assert res["n_images"] == len(cases)


def test_given_instances_change_ap():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:10, 2:10] = 1
    inst = np.zeros((20, 20), np.int32)
    inst[2:10, 2:6], inst[2:10, 6:10] = 1, 2  # one blob split in two ground-truth instances
    masks = (gt == 1)[None]
    a, b = ObjectMetrics(min_instance_size=0, ap_min_size=0), ObjectMetrics(min_instance_size=0, ap_min_size=0)
    a.update(masks, gt, scores=[0.9])
    b.update(masks, gt, scores=[0.9], instances=inst)
    for proto in ("oodis", "coco"):  # split in two, the full-blob mask has IoU 0.5 with each half: no match
        assert a.compute()["instance_ap"][proto]["ap"] == pytest.approx(1.0)
        assert b.compute()["instance_ap"][proto]["ap"] < 0.9


def test_scores_optional_for_smiyc_required_for_s2m():
    gt = np.zeros((8, 8), np.uint8)
    gt[2:5, 2:5] = 1
    om = ObjectMetrics()
    om.update(gt.astype(np.int32), gt)
    r = om.compute()
    assert "instance_ap" not in r and "ap" not in r and "best_iou" not in r  # absent, never null
    with pytest.raises(DenseOODError, match="needs scores"):
        ObjectMetrics(protocol="s2m").update(gt.astype(np.int32), gt)
    with pytest.raises(DenseOODError, match="protocol"):
        ObjectMetrics(protocol="coco")
    mixed = ObjectMetrics()
    mixed.update(gt.astype(np.int32), gt, scores=[0.5])
    mixed.update(gt.astype(np.int32), gt)
    with pytest.raises(DenseOODError, match="every image"):
        mixed.compute()


def test_full_masks_and_instances_restricted_to_the_anomaly_mask():
    gt = np.zeros((20, 20), np.uint8)
    gt[2:10, 2:10] = 1
    big = (gt == 1)
    small = np.zeros_like(big)
    small[2:10, 2:6] = True  # inside the big mask: the label map gives the overlap to the first mask
    lab = np.zeros((20, 20), np.int32)
    lab[big], lab[small] = 1, 2  # id 2 wins the overlap; id 1 keeps only the right half
    inst = np.where(gt == 1, 7, 3)  # id 3 covers the background: not an object
    ref = {}
    for name, kw in (("label map", {}), ("full masks", {"full_masks": np.stack([big, small])})):
        om = ObjectMetrics(protocol="s2m", min_instance_size=0, ap_min_size=0)
        om.update(lab, gt, scores=[0.9, 0.5], instances=inst, **kw)
        ref[name] = om.compute()["instance_ap"]["oodis"]
    assert ref["label map"]["n_gt"] == ref["full masks"]["n_gt"] == 1  # id 3 outside the anomaly is dropped
    assert ref["full masks"]["ap"] == pytest.approx(1.0)  # the full big mask matches at IoU 1
    assert ref["label map"]["ap"] < 0.5  # its label-map half has IoU 0.5: no match at any threshold
