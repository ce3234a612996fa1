"""eval.semantic.SemanticMetrics against a NumPy reference: ignore pixels, absent classes, accumulation, no DDP."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from denseood.errors import ConfigError
from denseood.eval.semantic import SemanticMetrics


def reference(preds, targets, c, ignore=255):
    cm = np.zeros((c, c), np.int64)
    for p, t in zip(preds, targets):
        for tv, pv in zip(t.ravel(), p.ravel()):
            if tv != ignore:
                cm[tv, pv] += 1
    iou = [cm[k, k] / (cm[k].sum() + cm[:, k].sum() - cm[k, k]) if cm[k].sum() else np.nan for k in range(c)]
    present = cm.sum(1) > 0
    return float(np.nanmean(np.array(iou)[present])), iou, np.trace(cm) / cm.sum(), cm.sum()


def test_matches_numpy_reference_with_ignore_pixels(rng):
    c = 5
    preds = [rng.integers(0, c, (7, 9)) for _ in range(3)]
    targets = [rng.integers(0, c - 1, (7, 9)) for _ in range(3)]   # class 4 never in the targets
    for t in targets:
        t[rng.random(t.shape) < 0.3] = 255
    m = SemanticMetrics(c)
    m.update(torch.from_numpy(preds[0]), torch.from_numpy(targets[0]))   # tensors and arrays alike
    m.update(np.stack(preds[1:]), np.stack(targets[1:]))                 # a (B, H, W) batch
    r = m.compute()
    miou, iou, acc, pixels = reference(preds, targets, c)
    assert r["miou"] == pytest.approx(miou) and r["acc"] == pytest.approx(acc) and r["pixels"] == pixels
    assert r["iou"][:4] == pytest.approx(iou[:4]) and np.isnan(r["iou"][4])   # absent class: NaN, not in miou
    again = m.compute()                                                       # compute leaves the state alone
    assert again["pixels"] == r["pixels"] and again["miou"] == r["miou"]


def test_ignored_pixels_do_not_count_whatever_is_predicted():
    m = SemanticMetrics(3, ignore_index=7)
    m.update(np.array([[0, 1, 2]]), np.array([[0, 7, 7]]))
    r = m.compute()
    assert r["pixels"] == 1 and r["miou"] == 1.0 and r["acc"] == 1.0 and r["iou"][0] == 1.0
    m.reset()
    r = m.compute()
    assert r["pixels"] == 0 and np.isnan(r["miou"]) and np.isnan(r["acc"])


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="num_classes"):
        SemanticMetrics(0)
    m = SemanticMetrics(3)
    with pytest.raises(ConfigError, match="shape"):
        m.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ConfigError, match="target holds class ids outside 0..2"):
        m.update(np.zeros((1, 2), int), np.array([[0, 3]]))
