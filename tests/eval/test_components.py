"""ComponentMetrics against a naive per-component re-implementation of the SMIYC segment evaluator."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from scipy.ndimage import label as nd_label

from denseood.errors import ConfigError, DenseOODError
from denseood.eval import SIOU_THRESHOLDS, ComponentMetrics, instances_to_labels

STRUCT = np.ones((3, 3), dtype=np.uint8)


# --------------------------------------------------------------------------------------------------
# naive reference: loops over components, full-image passes, scipy labelling
# --------------------------------------------------------------------------------------------------
def ref_frame(gt, min_inst, pred=None, min_seg=0, labels=None):
    if labels is None:
        pred_bin = pred & (gt != 255)
        pred_lab, n_p = nd_label(pred_bin, STRUCT)
        for c in range(n_p + 1):
            if np.sum(pred_lab == c) < min_seg:
                pred_lab[pred_lab == c] = 0
    else:
        pred_lab = labels.copy()
        pred_lab[gt == 255] = 0
    gt_lab, n_g = nd_label(gt == 1, STRUCT)
    gt2 = gt.copy()
    for c in range(n_g + 1):  # includes the background "component" 0, like the official loop
        if np.sum(gt_lab == c) < min_inst:
            gt2[gt_lab == c] = 255
    roi = gt2 != 255
    A, P = gt_lab[roi], pred_lab[roi]
    siou_gt, siou_pred, prec = [], [], []
    for i in np.unique(A[A > 0]):
        loc = P[A == i]
        seg = np.unique(loc[loc != 0])
        inter = np.sum(np.isin(loc, seg))
        adj = np.sum(~np.isin(A, [0, i]) & np.isin(P, seg))
        union = np.sum(np.isin(P, seg)) + np.sum(A == i) - inter - adj
        siou_gt.append(inter / union)
    for j in np.unique(P[P > 0]):
        loc = A[P == j]
        seg = np.unique(loc[loc != 0])
        inter = np.sum(np.isin(loc, seg))
        adj = np.sum(~np.isin(P, [0, j]) & np.isin(A, seg))
        union = np.sum(np.isin(A, seg)) + np.sum(P == j) - inter - adj
        siou_pred.append(inter / union)
        prec.append(inter / np.sum(P == j))
    return siou_gt, siou_pred, prec


def ref_aggregate(frames):
    sg = [v for f in frames for v in f[0]]
    sp = [v for f in frames for v in f[1]]
    pp = [v for f in frames for v in f[2]]
    f1 = []
    tps, fns, fps = [], [], []
    for t in SIOU_THRESHOLDS:
        tp = sum(v >= t for v in sg)
        fn = sum(v < t for v in sg)
        fp = sum(v < t for v in pp)
        tps.append(tp), fns.append(fn), fps.append(fp)
        f1.append(2 * tp / (2 * tp + fn + fp) if 2 * tp + fn + fp else float("nan"))
    mean = lambda a: sum(a) / len(a) if a else float("nan")  # noqa: E731
    return dict(sIoU=mean(sg), PPV=mean(pp), sIoU_pred=mean(sp), F1_per_threshold=f1, mean_F1=float(np.mean(f1)),
                tp=tps, fn=fns, fp=fps, n_gt=len(sg), n_pred=len(pp))


def assert_same(res, ref):
    for k, v in ref.items():
        if isinstance(v, list):
            assert len(res[k]) == len(v)
            for a, b in zip(res[k], v):
                assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-12), k
        elif isinstance(v, float) and math.isnan(v):
            assert math.isnan(res[k]), k
        else:
            assert res[k] == pytest.approx(v, abs=1e-12), k


# --------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------
def scene(rng, h=64, w=96, n_blobs=5, salt=0.0):
    yy, xx = np.mgrid[0:h, 0:w]
    gt = np.zeros((h, w), np.uint8)
    score = 0.2 + 0.1 * rng.normal(size=(h, w))
    for _ in range(n_blobs):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(1, 9)
        blob = (yy - cy) ** 2 / r ** 2 + (xx - cx) ** 2 / (r + 2) ** 2 < 1
        gt[blob] = 1
        shift = rng.integers(-3, 4, size=2)
        score[np.roll(blob, tuple(shift), axis=(0, 1))] += rng.uniform(0.2, 0.6)
    for _ in range(2):  # false positives
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        score[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(2, 6) ** 2] += 0.5
    gt[: h // 6] = 255
    gt[rng.random((h, w)) < 0.01] = 255
    if salt:
        score[rng.random((h, w)) < salt] = 2.0
    return score.astype(np.float32), gt


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_threshold_path_matches_naive_reference(seed):
    rng = np.random.default_rng(seed)
    frames = [scene(rng, salt=0.02 if seed == 3 else 0.0) for _ in range(3)]
    cm = ComponentMetrics(threshold=0.5, min_segment_size=15, min_instance_size=10)
    cm.update(np.stack([f[0] for f in frames[:2]]), np.stack([f[1] for f in frames[:2]]))
    cm.update(torch.from_numpy(frames[2][0]), torch.from_numpy(frames[2][1]))
    res = cm.compute()
    ref = ref_aggregate([ref_frame(g, 10, pred=s > 0.5, min_seg=15) for s, g in frames])
    assert res["n_gt"] > 3 and res["n_pred"] > 3
    assert_same(res, ref)
    assert res["n_frames"] == 3 and len(res["F1_per_threshold"]) == 11


def test_adversarial_frames():
    rng = np.random.default_rng(5)
    h, w = 40, 60
    frames = []
    # a prediction bridging two GT components, a GT blob touching void, a prediction on a voided small GT
    gt = np.zeros((h, w), np.uint8)
    gt[10:20, 5:15] = 1
    gt[10:20, 18:28] = 1
    gt[30:33, 40:42] = 1  # small -> void
    gt[0:5, :] = 255
    gt[5:8, 30:40] = 1  # touches void
    s = np.zeros((h, w), np.float32)
    s[12:18, 3:30] = 1
    s[29:34, 39:43] = 1
    s[3:7, 28:42] = 1
    frames.append((s, gt))
    frames.append((np.zeros((h, w), np.float32), gt))  # empty prediction
    g2 = np.zeros((h, w), np.uint8)
    frames.append((s, g2))  # no GT, predictions only
    frames.append((s, np.full((h, w), 255, np.uint8)))  # all void
    cm = ComponentMetrics(threshold=0.5, min_segment_size=4, min_instance_size=8)
    for s_, g_ in frames:
        cm.update(s_, g_)
    res = cm.compute()
    assert_same(res, ref_aggregate([ref_frame(g_, 8, pred=s_ > 0.5, min_seg=4) for s_, g_ in frames]))


def test_empty_cases_give_nan_not_crash():
    h, w = 16, 16
    gt = np.zeros((h, w), np.uint8)
    gt[4:10, 4:10] = 1
    cm = ComponentMetrics(threshold=0.5, min_segment_size=0, min_instance_size=0)
    cm.update(np.zeros((h, w), np.float32), gt)
    r = cm.compute()
    assert r["n_pred"] == 0 and math.isnan(r["PPV"]) and r["sIoU"] == 0.0 and r["mean_F1"] == 0.0
    cm = ComponentMetrics(threshold=0.5, min_segment_size=0, min_instance_size=0)
    cm.update(np.zeros((h, w), np.float32), np.full((h, w), 255, np.uint8))
    r = cm.compute()
    assert r["n_gt"] == 0 and r["n_pred"] == 0 and math.isnan(r["sIoU"]) and math.isnan(r["mean_F1"])


def test_background_smaller_than_min_instance_size_is_voided_like_official():
    gt = np.ones((8, 8), np.uint8)
    gt[0, 0] = 0  # background of 1 pixel < min_instance_size
    s = np.zeros((8, 8), np.float32)
    s[0, :3] = 1
    s[4:, 4:] = 1
    cm = ComponentMetrics(threshold=0.5, min_segment_size=0, min_instance_size=5)
    cm.update(s, gt)
    assert_same(cm.compute(), ref_aggregate([ref_frame(gt, 5, pred=s > 0.5)]))


def test_strictly_greater_than_threshold():
    gt = np.zeros((10, 10), np.uint8)
    gt[2:6, 2:6] = 1
    s = np.zeros((10, 10), np.float32)
    s[2:6, 2:6] = 0.5
    cm = ComponentMetrics(threshold=0.5, min_segment_size=0, min_instance_size=0)
    cm.update(s, gt)
    assert cm.compute()["n_pred"] == 0


def test_given_instances_are_not_merged_and_match_reference():
    rng = np.random.default_rng(7)
    h, w = 30, 40
    gt = np.zeros((h, w), np.uint8)
    gt[5:15, 5:25] = 1
    gt[20:28, 30:38] = 1
    gt[0:2] = 255
    lab = np.zeros((h, w), np.int64)
    lab[4:16, 5:15] = 1  # touching instances 1 and 2
    lab[4:16, 15:24] = 2
    lab[0:3, 0:3] = 7  # partly on void
    lab[21:27, 31:33] = 3
    lab[21:27, 35:37] = 3  # disconnected mask: still one instance
    cm = ComponentMetrics(min_instance_size=5)
    cm.update_instances(lab, gt)
    res = cm.compute()
    assert res["n_pred"] == 4
    assert_same(res, ref_aggregate([ref_frame(gt, 5, labels=lab)]))
    # same instances as (N,H,W) bool masks
    masks = np.stack([lab == k for k in (1, 2, 7, 3)])
    cm2 = ComponentMetrics(min_instance_size=5)
    cm2.update_instances(torch.from_numpy(masks), torch.from_numpy(gt))
    assert_same(cm2.compute(), ref_aggregate([ref_frame(gt, 5, labels=lab)]))
    # random label maps
    for seed in range(3):
        r = np.random.default_rng(seed)
        lab = np.zeros((h, w), np.int64)
        for k in range(1, 6):
            y, x = r.integers(0, h - 6), r.integers(0, w - 6)
            lab[y:y + r.integers(2, 8), x:x + r.integers(2, 8)] = k * 3
        cm3 = ComponentMetrics(min_instance_size=5)
        cm3.update_instances(lab, gt)
        assert_same(cm3.compute(), ref_aggregate([ref_frame(gt, 5, labels=lab)]))
    del rng


def test_instances_to_labels_overlap_rule_and_errors():
    masks = np.zeros((3, 6, 6), bool)
    masks[0, 0:3, 0:3] = True
    masks[1, 1:5, 1:5] = True
    masks[2, 4:6, 4:6] = True
    lab = instances_to_labels(masks)
    assert lab[1, 1] == 1 and lab[3, 3] == 2 and lab[4, 4] == 2 and lab[5, 5] == 3 and lab[0, 5] == 0
    assert instances_to_labels(np.zeros((0, 6, 6), bool)).sum() == 0
    with pytest.raises(DenseOODError, match="negative"):
        instances_to_labels(-np.ones((4, 4), np.int32))
    with pytest.raises(DenseOODError, match="size"):
        ComponentMetrics().update_instances(np.zeros((4, 4), np.int32), np.zeros((4, 5), np.uint8))


def test_errors():
    s, gt = scene(np.random.default_rng(0))
    with pytest.raises(DenseOODError, match="threshold"):
        ComponentMetrics().update(s, gt)
    s[30, 30] = np.nan
    gt[30, 30] = 0
    with pytest.raises(DenseOODError, match="NaN"):
        ComponentMetrics(0.5).update(s, gt)
    with pytest.raises(DenseOODError, match="no frames"):
        ComponentMetrics(0.5).compute()
    with pytest.raises(ConfigError):
        ComponentMetrics(0.5, min_segment_size=-1)


def test_noisy_full_hd_frame_is_fast():
    """2 % salt noise on a 1024x2048 frame: tens of thousands of components, still a fraction of a second."""
    rng = np.random.default_rng(1)
    s = rng.random((1024, 2048), dtype=np.float32) * 0.5
    s[rng.random(s.shape) < 0.02] = 1.0
    gt = np.zeros(s.shape, np.uint8)
    gt[500:600, 800:1000] = 1
    s[500:600, 800:1000] = 0.9
    cm = ComponentMetrics(0.6, min_segment_size=0, min_instance_size=100)  # keep every speck as a prediction
    t0 = time.perf_counter()
    cm.update(s, gt)
    res = cm.compute()
    assert time.perf_counter() - t0 < 3.0
    assert res["n_pred"] > 20_000 and res["n_gt"] == 1
    lab, _ = nd_label(s > 0.6, STRUCT)  # salt specks touching the block join its component
    block = np.sum(lab == lab[550, 900])
    assert res["sIoU"] == pytest.approx(20_000 / block, abs=1e-12) and block > 20_000
