"""Prompt generators: PeakPrompter geometry, point placement, LearnedPrompter training and persistence."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from denseood.errors import CheckpointError, ConfigError
from denseood.s2m.prompts import LearnedPrompter, PeakPrompter, Prompts, boxes_from_mask, normalize_map, points_for_box

from s2m_helpers import box_of, iou_box, map_from_instances, tiny_checkpoint, write_synthetic_train


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
    # confidence = mean normalised score inside the component, in [0,1]; blob 2 is strongest
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


def test_prompts_container():
    p = Prompts.empty(3)
    assert len(p) == 0 and p.points.shape == (0, 3, 2)
    q = Prompts(np.ones((2, 4)), [0.5, 0.7], np.zeros((2, 2, 2)), np.array([[1, 0], [1, -1]]))
    s = q.select([1])
    assert len(s) == 1 and s.confidence[0] == pytest.approx(0.7)
    assert q.to_json()["point_labels"] == [[1, 0], [1, -1]]


def test_learned_prompter_state_roundtrip_through_checkpoint(tmp_path, rng):
    from denseood.models.segmenter import read_checkpoint
    from denseood.s2m.prompts import store_prompter_in_checkpoint

    torch.manual_seed(0)
    q = np.linspace(0.01, 0.4, 11)
    lp = LearnedPrompter.build("tiny", quantiles=q, ref_height=64, score_thresh=0.0)
    with torch.no_grad():  # make detections appear from an untrained head: class prior up, boxes of anchor size
        lp.model.head.classification_head.cls_logits.bias.fill_(2.0)
        lp.model.head.regression_head.bbox_reg.bias.fill_(1.0)
    ck = tiny_checkpoint(tmp_path / "m.pt", extra={"other": {"a": 1}})
    store_prompter_in_checkpoint(lp, ck)
    raw = read_checkpoint(ck)
    assert raw["extra"]["other"] == {"a": 1}  # other extras kept
    assert raw["config"] == {"note": "test"} and raw["metrics"] == {"x": 1.0}
    lp2 = LearnedPrompter.from_state(raw["extra"]["prompter"])
    np.testing.assert_allclose(lp2.quantiles, q)
    assert lp2.ref_height == 64 and lp2.score_thresh == 0.0
    amap = rng.random((64, 128)).astype(np.float32)
    b1, s1 = lp.detect(amap)
    b2, s2 = lp2.detect(amap)
    assert len(b1) > 0
    np.testing.assert_allclose(b1, b2, atol=1e-4)
    np.testing.assert_allclose(s1, s2, atol=1e-5)
    # beside the checkpoint, as a file
    f = lp.save(tmp_path / "p.pt")
    lp3 = LearnedPrompter.load(f)
    np.testing.assert_allclose(lp3.detect(amap)[0], b1, atol=1e-4)
    with pytest.raises(CheckpointError):
        LearnedPrompter.from_state({"meta": {}, "state_dict": {}})
    with pytest.raises(CheckpointError, match="not found"):
        LearnedPrompter.load(tmp_path / "missing.pt")


def test_learned_prompter_calibration_is_piecewise_linear(rng):
    from denseood.s2m.prompts import quantile_levels

    lv = quantile_levels(5)
    assert lv[0] == 0 and lv[-1] == 1 and np.all(np.diff(lv) > 0) and np.all(np.diff(lv, 2) < 0)  # denser near 1
    lp = LearnedPrompter.build("tiny", quantiles=[0.0, 1.0, 3.0])
    a = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 9.0]], np.float32)
    np.testing.assert_allclose(lp.calibrate(a), [[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]], atol=1e-6)
    with pytest.raises(ConfigError):
        LearnedPrompter.build("tiny", quantiles=[1.0, 0.0])


def test_learned_prompter_rescales_to_training_height(rng):
    lp = LearnedPrompter.build("tiny", ref_height=32)
    x = lp.make_input(rng.random((64, 128)).astype(np.float32))
    assert tuple(x.shape) == (1, 32, 64)
    lp4 = LearnedPrompter.build("tiny", input="score+image")
    x = lp4.make_input(rng.random((20, 30)).astype(np.float32), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    assert tuple(x.shape) == (4, 20, 30)
    with pytest.raises(ConfigError):
        lp4.make_input(np.zeros((20, 30), np.float32))


@pytest.mark.slow
def test_train_prompter_few_steps(tmp_path, ckpt):
    from denseood.cli import main
    from denseood.models.segmenter import read_checkpoint

    ck = ckpt
    root = write_synthetic_train(tmp_path / "syn", n=2)
    rc = main(["train-prompter", "--checkpoint", str(ck), "--root", str(root), "--steps", "2", "--batch-size", "2",
               "--crop", "64", "--device", "cpu", "--pool-size", "2"])
    assert rc == 0
    st = read_checkpoint(ck)["extra"]["prompter"]
    lp = LearnedPrompter.from_state(st)
    assert lp.train_info["steps"] == 2 and lp.train_info["pool"] == 2 and np.isfinite(lp.train_info["final_loss"])
    assert lp.ref_height == 64 and lp.score_name == "jsd" and lp.arch["backbone"] == "tiny"
    assert "calibration" in lp.train_info and 0.0 <= lp.score_thresh <= 1.0
    # calibration table = quantiles of the pool's pixel scores: increasing, within the range of the jsd score
    assert lp.quantiles.size == 101 and np.all(np.diff(lp.quantiles) >= 0)
    assert -np.log(2) - 1e-6 <= lp.quantiles[0] and lp.quantiles[-1] <= 1e-6
    # the stored prompter is usable: every returned box passes its confidence cut
    b, s = lp.detect(np.zeros((64, 128), np.float32))
    assert b.shape[1] == 4 and np.all(s >= lp.score_thresh)


def test_calibrate_score_thresh_brute_force(rng):
    from denseood.s2m.prompts import box_iou_np, calibrate_score_thresh

    class Stub:
        score_thresh = 0.42

        def __init__(self, dets):
            self.dets = dets
            self.i = 0

        def detect(self, m, image=None):
            out = self.dets[self.i]
            self.i += 1
            keep = out[1] >= self.score_thresh
            return out[0][keep], out[1][keep]

    gts, dets = [], []
    for _ in range(4):
        g = rng.uniform(0, 60, (3, 2))
        g = np.concatenate([g, g + rng.uniform(10, 30, (3, 2))], 1).astype(np.float32)
        jitter = g + rng.normal(0, 3, g.shape).astype(np.float32)
        junk = rng.uniform(0, 60, (2, 2))
        junk = np.concatenate([junk, junk + 8], 1).astype(np.float32)
        b = np.concatenate([jitter, junk])
        sc = rng.random(len(b)).astype(np.float32)
        gts.append(g)
        dets.append((b, sc))
    thr, info = calibrate_score_thresh(Stub(dets), [np.zeros((4, 4))] * 4, gts)

    def f1_at(t):  # brute force: greedy matching of the detections >= t, by score
        tp = n = 0
        for (b, sc), g in zip(dets, gts):
            keep = np.flatnonzero(sc >= t)
            keep = keep[np.argsort(-sc[keep], kind="stable")]
            used = set()
            for i in keep:
                n += 1
                ious = box_iou_np(b[i:i + 1], g)[0]
                for j in np.argsort(-ious):  # the best still unmatched ground-truth box
                    if j in used:
                        continue
                    if ious[j] >= 0.5:
                        used.add(j)
                        tp += 1
                    break
        return 2 * tp / (n + 12)

    cands = sorted({float(s) for _, sc in dets for s in sc})
    best = max(f1_at(t) for t in cands)
    assert info["f1"] == pytest.approx(best)
    assert f1_at(thr) == pytest.approx(best)


@pytest.mark.parametrize("backbone,input", [("tiny", "score"), ("resnet18", "score+image")])
def test_arch_recorded_from_model(backbone, input):
    from denseood.s2m.prompts import INPUTS, build_detector

    lp = LearnedPrompter(build_detector(backbone, INPUTS[input], max_boxes=7), input=input)
    st = lp.state()
    assert st["meta"]["arch"] == {"backbone": backbone, "in_channels": INPUTS[input], "max_boxes": 7}
    lp2 = LearnedPrompter.from_state(st)
    for k, v in lp.model.state_dict().items():
        assert torch.equal(v, lp2.model.state_dict()[k])
