"""Prompter training helpers: storing a prompter in a checkpoint, confidence-cut calibration, the flow source."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from denseood.errors import CheckpointError
from denseood.s2m.boxes import box_iou_np
from denseood.s2m.learned import LearnedPrompter
from denseood.train.prompter import calibrate_score_thresh, load_flow, store_prompter_in_checkpoint

from tests.s2m.s2m_helpers import tiny_checkpoint  # noqa: E402


def test_learned_prompter_state_roundtrip_through_checkpoint(tmp_path, rng):
    from denseood.models.checkpoint import read_checkpoint

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


def test_calibrate_score_thresh_brute_force(rng):
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


def test_load_flow_restores_the_checkpoint_flow_in_the_configured_shape(capsys):
    from denseood.models.flow import flow_from_config

    cfg = {"flow_levels": 2, "flow_steps": 1, "flow_hidden": 8}
    torch.manual_seed(0)
    trained = flow_from_config(cfg)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.01)
    raw = {"config": cfg, "extra": {"train_state": {"flow": trained.state_dict()}}}
    got = load_flow(raw)
    assert "trained flow" in capsys.readouterr().out
    assert got.levels == 2
    for k, v in trained.state_dict().items():
        assert torch.equal(v, got.state_dict()[k]), k
    # no stored flow: an untrained flow of the configured shape; a flow of another shape: noted, untrained
    fresh = load_flow({"config": cfg})
    assert fresh.levels == 2 and set(fresh.state_dict()) == set(trained.state_dict())
    other = load_flow({"config": {**cfg, "flow_hidden": 16}, "extra": {"train_state": {"flow": trained.state_dict()}}})
    assert "could not be restored" in capsys.readouterr().out and other.levels == 2


def test_heldout_f1_and_the_floor_note():
    from denseood.train.prompter import MIN_HELDOUT_F1, fallback_prompter_path, heldout_f1, weak_prompter_note

    class P:
        train_info: dict = {}

    p = P()
    for cal, f1 in [({}, None), ({"n_gt": 0, "images": 3, "kept": True}, None), ({"n_gt": 4, "kept": True}, 0.0),
                    ({"f1": 0.25, "n_gt": 4}, 0.25)]:
        p.train_info = {"steps": 7, "calibration": cal}
        assert heldout_f1(p) == f1
        note = weak_prompter_note(p)
        assert (note is not None) == (f1 is not None and f1 < MIN_HELDOUT_F1)
    p.train_info = {"steps": 7, "calibration": {"f1": 0.0999, "n_gt": 4}}
    assert "0.100" in weak_prompter_note(p) and "\n" not in weak_prompter_note(p)
    assert fallback_prompter_path("runs/x/model.pt") == Path("runs/x/model.prompter.pt")
