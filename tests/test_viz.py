"""viz: heat map range and colours, blending, palette, object drawings (labels stay inside the image), curves."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from denseood import viz


def test_heatmap_uses_the_given_range_and_handles_nan():
    s = np.array([[0.0, 0.5], [1.0, np.nan]], np.float32)
    h = viz.heatmap(s, vmin=0.0, vmax=1.0)
    assert h.shape == (2, 2, 3) and h.dtype == np.uint8
    lo = viz.heatmap(np.zeros((1, 1)), vmin=0.0, vmax=1.0)[0, 0]
    hi = viz.heatmap(np.ones((1, 1)), vmin=0.0, vmax=1.0)[0, 0]
    assert (h[0, 0] == lo).all() and (h[1, 0] == hi).all() and (h[1, 1] == lo).all()  # NaN drawn as vmin
    assert not (lo == hi).all()
    flat = viz.heatmap(np.full((3, 3), 2.0))  # constant map: no division by zero
    assert (flat == flat[0, 0]).all()


def test_blend_only_inside_the_mask():
    img = np.zeros((2, 2, 3), np.uint8)
    ov = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[1, 0], [0, 0]], bool)
    out = viz.blend(img, ov, alpha=0.5, mask=mask)
    assert out[0, 0].tolist() == [100, 100, 100] and out[1, 1].tolist() == [0, 0, 0]
    assert (viz.blend(img, ov, alpha=1.0) == 200).all()


def test_palette_is_deterministic_and_distinct():
    p = viz.palette(6)
    assert p.shape == (6, 3) and (p == viz.palette(6)).all()
    assert len({tuple(c) for c in p}) == 6 and viz.palette(0).shape == (0, 3)


def test_draw_objects_colours_instances_and_boxes():
    img = np.zeros((40, 60, 3), np.uint8)
    inst = np.zeros((40, 60), np.int32)
    inst[10:20, 10:30] = 1
    out = viz.draw_objects(img, inst, boxes=np.array([[5, 5, 50, 35]]), scores=np.array([0.9]))
    assert out[15, 20].any() and not out[38, 58].any()
    assert (out[20, 5] == [0, 255, 0]).all()  # box edge


@pytest.mark.parametrize("corner", [(0, 0), (55, 2), (630, 0), (-20, 470), (300, 479)])
def test_score_labels_stay_inside_the_image(corner):
    hw = (480, 640)
    text = "0.87"
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    x, y = viz.label_origin(text, corner, hw)
    assert 0 <= x and x + tw < hw[1], (x, tw)
    assert y - th >= 0 and y + base < hw[0], (y, th, base)
    # the drawn label is whole: the text pixels of a box in the top-right corner all fall inside the image
    img = np.zeros((*hw, 3), np.uint8)
    out = viz.draw_objects(img, np.zeros(hw, np.int32), boxes=np.array([[*corner, *corner]]), scores=np.array([0.87]))
    assert out.any()


def test_label_origin_keeps_room_above_when_there_is_some():
    x, y = viz.label_origin("0.5", (100, 200), (480, 640))
    assert (x, y) == (100, 196)


def test_plot_curves_writes_png(tmp_path):
    curves = {"a": {"recall": np.linspace(0, 1, 5), "precision": np.linspace(1, 0.5, 5)}}
    p = viz.plot_curves(curves, tmp_path / "pr.png", kind="pr")
    img = cv2.imread(str(p))
    assert img is not None and img.shape[0] > 100
    r = viz.plot_curves({"a": {"fpr": np.linspace(0, 1, 5), "tpr": np.linspace(0, 1, 5)}}, tmp_path / "roc.png", kind="roc")
    assert r.stat().st_size > 0
