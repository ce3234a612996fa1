"""Box and map math of denseood.s2m.boxes: point placement and exact component boxes."""
from __future__ import annotations

import numpy as np

from denseood.s2m.boxes import boxes_from_mask, points_for_box


def test_points_for_box_brute_force(rng):
    n = rng.random((30, 40)).astype(np.float32)
    box = np.array([5, 4, 25, 20], np.float32)
    c, l = points_for_box(n, box, None, n_pos=1, n_neg=1, neg_level=0.3)
    sub = n[4:20, 5:25]
    iy, ix = np.unravel_index(np.argmax(sub), sub.shape)
    assert tuple(c[0]) == (5 + ix, 4 + iy) and l[0] == 1
    assert l[1] == 0 and n[int(c[1][1]), int(c[1][0])] == sub.min()


def test_boxes_from_mask_exact():
    m = np.zeros((20, 30), bool)
    m[2:5, 3:9] = True
    m[10:18, 20:21] = True
    m[0, 29] = True  # too small
    b = boxes_from_mask(m, min_area=2)
    assert sorted(map(tuple, b.tolist())) == [(3.0, 2.0, 9.0, 5.0), (20.0, 10.0, 21.0, 18.0)]
