"""Prompts container and the training-free PeakPrompter: geometry, points, flat maps."""
from __future__ import annotations

import numpy as np
import pytest

from denseood.errors import ConfigError
from denseood.s2m.boxes import normalize_map
from denseood.s2m.prompts import PeakPrompter, Prompts

from tests.s2m.s2m_helpers import box_of, iou_box, map_from_instances


def _blob_instances(h: int, w: int) -> np.ndarray:
    import cv2

    inst = np.zeros((h, w), np.int32)
    cv2.ellipse(inst, (30, 25), (14, 9), 0, 0, 360, 1, -1)
    cv2.circle(inst, (100, 60), 15, 2, -1)
    cv2.rectangle(inst, (60, 10), (75, 30), 3, -1)
    return inst


def test_peak_prompter_one_box_per_blob(rng):
    inst = _blob_instances(96, 160)
    amap = map_from_instances(inst, rng, peak=0.5, noise=0.02, blur=1.0)
    amap[inst == 2] += 0.3  # blobs of different strength
    pr = PeakPrompter()(amap)
    assert len(pr) == 3
    true = [box_of(inst == k) for k in (1, 2, 3)]
    for t in true:
        best = max(iou_box(b, t) for b in pr.boxes)
        assert best > 0.8
    # each true blob matched by exactly one box
    match = [int(np.argmax([iou_box(b, t) for t in true])) for b in pr.boxes]
    assert sorted(match) == [0, 1, 2]
    # positive points lie inside their blob at (near) the maximum; labels 1
    for b, pts, lab in zip(pr.boxes, pr.points, pr.point_labels):
        k = int(np.argmax([iou_box(b, t) for t in true])) + 1
        pos = pts[lab == 1]
        assert len(pos) >= 1
        for x, y in pos.astype(int):
            assert inst[y, x] == k
    # confidence = normalised map value at the component's peak, in [0,1]; blob 2 is strongest
    assert np.all((pr.confidence >= 0) & (pr.confidence <= 1))
    strongest = int(np.argmax([iou_box(pr.boxes[int(np.argmax(pr.confidence))], t) for t in true])) + 1
    assert strongest == 2


def test_peak_prompter_splits_touching_blobs_at_higher_levels(rng):
    # two peaks joined by a low bridge: the 0.5-level component covers both, higher levels split them
    h, w = 64, 128
    amap = np.zeros((h, w), np.float32)
    amap[20:44, 20:50] = 1.0
    amap[20:44, 78:108] = 1.0
    amap[28:36, 50:78] = 0.55  # bridge above level 0.5 only
    amap += rng.normal(0, 0.01, amap.shape).astype(np.float32)
    pr = PeakPrompter(smooth=0)(amap)
    assert len(pr) == 2
    for t in (np.array([20, 20, 50, 44.0]), np.array([78, 20, 108, 44.0])):
        assert max(iou_box(b, t) for b in pr.boxes) > 0.8


def test_peak_prompter_negative_points_low_scores(rng):
    # an L-shaped object: its box contains low-score background where negatives must go
    h, w = 80, 80
    inst = np.zeros((h, w), np.int32)
    inst[10:70, 10:25] = 1
    inst[55:70, 10:70] = 1
    amap = map_from_instances(inst, rng, peak=1.0, noise=0.01, blur=0)
    pr = PeakPrompter(n_neg=2, smooth=0)(amap)
    assert len(pr) == 1
    n, _, _ = normalize_map(amap, smooth=0)
    neg = pr.points[0][pr.point_labels[0] == 0]
    assert len(neg) == 2
    b = pr.boxes[0]
    for x, y in neg.astype(int):
        assert b[0] <= x < b[2] and b[1] <= y < b[3]
        assert inst[y, x] == 0
        assert n[y, x] < 0.25


def test_peak_prompter_flat_and_bad_maps():
    assert len(PeakPrompter()(np.zeros((32, 32), np.float32))) == 0
    with pytest.raises(ConfigError):
        PeakPrompter()(np.zeros((2, 32, 32)))
    with pytest.raises(ConfigError):
        PeakPrompter(levels=(0.5, 1.5))
    # min_peak on raw scores suppresses weak maps
    m = np.zeros((32, 32), np.float32)
    m[10:20, 10:20] = 0.05
    assert len(PeakPrompter(min_area=4)(m)) == 1
    assert len(PeakPrompter(min_area=4, min_peak=0.1)(m)) == 0


def test_prompts_container():
    p = Prompts.empty(3)
    assert len(p) == 0 and p.points.shape == (0, 3, 2)
    q = Prompts(np.ones((2, 4)), [0.5, 0.7], np.zeros((2, 2, 2)), np.array([[1, 0], [1, -1]]))
    s = q.select([1])
    assert len(s) == 1 and s.confidence[0] == pytest.approx(0.7)
    assert q.to_json()["point_labels"] == [[1, 0], [1, -1]]
