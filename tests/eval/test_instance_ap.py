"""InstanceAP equals pycocotools' COCOeval (segm, one category, area range [min_size, inf)) on random cases."""
from __future__ import annotations

import numpy as np
import pycocotools.mask as coco_mask  # the reference (installed by the dev extra)
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from denseood.errors import ConfigError
from denseood.eval.instance_ap import InstanceAP


def _blob(h, w, rng):
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = rng.integers(0, h), rng.integers(0, w)
    ry, rx = rng.integers(1, h // 3 + 2), rng.integers(1, w // 3 + 2)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_image(rng, h=40, w=56):
    gt = np.zeros((h, w), np.int32)
    for k in range(rng.integers(0, 5)):
        gt[_blob(h, w, rng)] = 7 + 3 * k  # sparse, non-consecutive ids; later blobs overwrite earlier ones
    void = np.zeros((h, w), bool)
    if rng.random() < 0.5:
        void[: rng.integers(1, h // 2)] = True
    if rng.random() < 0.1:
        void[:] = True  # an all-void image
    preds = []
    for _ in range(rng.integers(0, 7)):
        if gt.any() and rng.random() < 0.6:  # a perturbed copy of a ground-truth instance
            ids = np.unique(gt[gt > 0])
            m = (gt == rng.choice(ids)) ^ (rng.random((h, w)) < 0.05) & _blob(h, w, rng)
        else:
            m = _blob(h, w, rng)
        preds.append(m)
    preds = np.array(preds, bool).reshape(-1, h, w)
    scores = np.round(rng.random(len(preds)), 2)  # rounded: ties in score happen
    return preds, scores, gt, void


def coco_reference(images, min_size):
    gts, dts, imgs = [], [], []
    for i, (preds, scores, gt, void) in enumerate(images):
        h, w = gt.shape
        imgs.append({"id": i + 1, "height": h, "width": w})
        g = np.where(void, 0, gt)
        for gid in np.unique(g[g > 0]):
            m = np.asfortranarray((g == gid).astype(np.uint8))
            rle = coco_mask.encode(m)
            gts.append({"id": len(gts) + 1, "image_id": i + 1, "category_id": 1, "segmentation": rle,
                        "area": float(m.sum()), "iscrowd": 0, "bbox": list(coco_mask.toBbox(rle))})
        for m, s in zip(preds, scores):
            rle = coco_mask.encode(np.asfortranarray((m & ~void).astype(np.uint8)))
            dts.append({"image_id": i + 1, "category_id": 1, "segmentation": rle, "score": float(s)})
    gt_api = COCO()
    gt_api.dataset = {"images": imgs, "annotations": gts, "categories": [{"id": 1, "name": "anomaly"}]}
    gt_api.createIndex()
    dt_api = gt_api.loadRes(dts) if dts else COCO()
    ev = COCOeval(gt_api, dt_api, "segm")
    ev.params.areaRng, ev.params.areaRngLbl = [[min_size, 1e10]], ["all"]
    ev.params.maxDets = [100]
    ev.evaluate()
    ev.accumulate()
    prec = ev.eval["precision"][:, :, 0, 0, 0]  # (T, R)
    return prec.mean(axis=1)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("min_size", [0, 10])
def test_instance_ap_equals_pycocotools(seed, min_size, capsys):
    rng = np.random.default_rng(seed)
    images = [random_image(rng) for _ in range(8)]
    if not any(np.where(v, 0, g).any() for _, _, g, v in images):
        pytest.skip("no ground truth drawn")  # pragma: no cover - seeds chosen to have some
    ref = coco_reference(images, min_size)
    capsys.readouterr()  # pycocotools prints progress
    m = InstanceAP(protocol="coco", min_size=min_size)
    for preds, scores, gt, void in images:
        m.update(preds, scores, gt, void)
    out = m.compute()
    assert np.allclose(out["ap_per_iou"], ref, atol=1e-6, rtol=0), (out["ap_per_iou"], ref)
    assert out["ap"] == pytest.approx(float(ref.mean()), abs=1e-6)
    assert out["ap50"] == pytest.approx(float(ref[0]), abs=1e-6)


def test_perfect_and_empty_predictions():
    gt = np.zeros((20, 20), np.int32)
    gt[2:8, 2:8], gt[10:18, 10:18] = 1, 2
    void = np.zeros_like(gt, bool)
    perfect = InstanceAP(protocol="coco")
    perfect.update(np.stack([gt == 1, gt == 2]), np.array([0.9, 0.8]), gt, void)
    assert perfect.compute()["ap"] == pytest.approx(1.0)
    none = InstanceAP(protocol="coco")
    none.update(np.zeros((0, 20, 20), bool), np.zeros(0), gt, void)
    r = none.compute()
    assert r["ap"] == 0.0 and r["n_gt"] == 2 and r["n_pred"] == 0
    nothing = InstanceAP(protocol="coco")
    nothing.update(np.zeros((1, 20, 20), bool), np.ones(1), np.zeros_like(gt), void)
    assert np.isnan(nothing.compute()["ap"])  # no ground truth anywhere: undefined, not 0 or 1


def test_bad_inputs_are_named():
    m = InstanceAP()
    with pytest.raises(ConfigError, match="2 masks but 1 scores"):
        m.update(np.zeros((2, 4, 4), bool), np.ones(1), np.zeros((4, 4), np.int32), np.zeros((4, 4), bool))
    with pytest.raises(ConfigError, match="finite"):
        m.update(np.zeros((1, 4, 4), bool), np.array([np.nan]), np.zeros((4, 4), np.int32), np.zeros((4, 4), bool))
    with pytest.raises(ConfigError, match="non-negative integer map"):
        m.update(np.zeros((1, 4, 4), bool), np.ones(1), np.zeros((4, 4), np.float32), np.zeros((4, 4), bool))
