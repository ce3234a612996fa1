"""Object confidences in [0, 1] for both prompters (incl. negative-valued jsd-like maps), the peak prompter's
monotone peak -> confidence map, and S2MResult.scores (confidence) vs raw_scores (mean anomaly in the mask)."""
from __future__ import annotations

import numpy as np
import pytest

from denseood.s2m.boxes import normalize_map
from denseood.s2m.learned import LearnedPrompter
from denseood.s2m.pipeline import S2M
from denseood.s2m.promptable import GrabCutBackend
from denseood.s2m.prompts import PeakPrompter, peak_confidence

from tests.s2m.s2m_helpers import disc_scene, map_from_instances


def _random_map(rng, h=64, w=96, negative=False):
    import cv2

    a = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 3)
    a = (a - a.min()) / (a.max() - a.min())
    return (a - 1.2).astype(np.float32) if negative else (3.0 * a).astype(np.float32)  # jsd-like: all <= -0.2


@pytest.mark.parametrize("negative", [False, True])
def test_peak_prompter_confidence_in_unit_interval(rng, negative):
    seen = 0
    for _ in range(5):
        pr = PeakPrompter(min_area=8)(_random_map(rng, negative=negative))
        assert pr.confidence.dtype == np.float32
        assert np.all((pr.confidence >= 0) & (pr.confidence <= 1))
        seen += len(pr)
    assert seen > 0


@pytest.mark.parametrize("negative", [False, True])
def test_learned_prompter_confidence_in_unit_interval(rng, negative):
    lp = LearnedPrompter.build("tiny", quantiles=[-1.2, -0.2] if negative else [0.0, 3.0], score_thresh=0.0)
    lp.model.score_thresh = 0.0  # let the untrained detector return all its candidates
    import torch

    with torch.no_grad():  # untrained: make its boxes a few pixels wide and its class scores span (0, 1)
        lp.model.head.regression_head.bbox_reg.bias.fill_(1.0)
        lp.model.head.classification_head.cls_logits.bias.fill_(3.0)
    pr = lp(_random_map(rng, negative=negative))
    assert len(pr) > 0
    assert np.all((pr.confidence >= 0) & (pr.confidence <= 1))


def test_peak_confidence_is_monotone_in_the_peak(rng):
    # two blobs; raising one blob's amplitude never lowers its confidence and keeps the order of peaks
    inst = np.zeros((64, 128), np.int32)
    inst[16:48, 10:40] = 1
    inst[16:48, 80:110] = 2
    base = map_from_instances(inst, rng, peak=1.0, noise=0.0, blur=0) - 1.5  # negative-valued
    lo, hi = float(np.median(base)), float(base.max()) + 1.0  # fixed lo/hi: confidences comparable across maps
    prev = -1.0
    for gain in (0.2, 0.4, 0.6, 0.8, 1.0):
        a = base.copy()
        a[inst == 2] = lo + gain * (a[inst == 2] - lo)
        pr = PeakPrompter(min_area=8, lo=lo, hi=hi, smooth=0, levels=(0.05,), rel_level=None)(a)
        n, _, _ = normalize_map(a, lo, hi)
        conf2 = [c for b, c in zip(pr.boxes, pr.confidence) if b[0] >= 64]
        assert len(conf2) == 1
        assert conf2[0] == pytest.approx(peak_confidence(n, inst == 2), abs=1e-6)
        assert conf2[0] == pytest.approx(np.clip((a[inst == 2].max() - lo) / (hi - lo), 0, 1), abs=1e-5)
        assert conf2[0] >= prev
        prev = conf2[0]
    # the map itself: peak_confidence is a non-decreasing function of the region's peak value
    n = np.linspace(0, 1, 50, dtype=np.float32)[None].repeat(3, 0)
    vals = [peak_confidence(n, np.pad(np.ones((3, k), bool), ((0, 0), (0, 50 - k)))) for k in range(1, 51)]
    assert np.all(np.diff(vals) >= 0) and vals[-1] == 1.0 and peak_confidence(n, np.zeros_like(n, bool)) == 0.0


def test_s2m_result_scores_and_raw_scores(rng):
    img, inst = disc_scene(80, 160, [(40, 40, 16), (120, 40, 14)], rng)
    amap = map_from_instances(inst, rng, peak=0.5, noise=0.02, blur=2.0) - 0.6  # jsd-like: negative everywhere
    assert amap.max() < 0
    r = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32").segment_from_map(img, amap)
    assert len(r) == 2 and r.scores.shape == r.raw_scores.shape == (2,)
    assert np.all((r.scores >= 0) & (r.scores <= 1))
    for i in range(len(r)):
        assert r.raw_scores[i] == pytest.approx(float(amap[r.masks[i]].mean()), rel=1e-5)
        assert r.raw_scores[i] < 0
    assert np.all(np.diff(r.raw_scores) <= 0)  # ids ordered by raw score
