"""S2M pipeline: instance assembly (ordering, overlaps, NMS), refined map, end to end, build_s2m."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from denseood.errors import ConfigError
from denseood.s2m.pipeline import S2M, assemble, build_s2m, mask_boxes, mask_iou_matrix, refine_map
from denseood.s2m.promptable import GrabCutBackend
from denseood.s2m.learned import LearnedPrompter
from denseood.s2m.prompts import PeakPrompter

from tests.s2m.s2m_helpers import disc_scene, iou_mask, map_from_instances


def test_mask_iou_and_boxes_brute_force(rng):
    masks = rng.random((4, 12, 15)) > 0.6
    got = mask_iou_matrix(masks)
    for i in range(4):
        for j in range(4):
            assert got[i, j] == pytest.approx((masks[i] & masks[j]).sum() / (masks[i] | masks[j]).sum())
    b = mask_boxes(masks)
    for i in range(4):
        ys, xs = np.nonzero(masks[i])
        assert b[i].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_assemble_order_overlap_nms():
    h, w = 20, 30
    m = np.zeros((4, h, w), bool)
    m[0, 2:10, 2:10] = True       # score 0.2
    m[1, 5:15, 5:15] = True       # score 0.9, overlaps 0
    m[2, 5:15, 5:14] = True       # near duplicate of 1 (IoU 0.9), score 0.5 -> removed by NMS
    m[3, 16:19, 20:29] = True     # score 0.7
    scores = np.array([0.2, 0.9, 0.5, 0.7], np.float32)
    keep, inst = assemble(m, scores, nms_iou=0.5, min_area=4)
    assert keep.tolist() == [1, 3, 0]  # descending score, duplicate gone
    assert inst.dtype == np.int32
    assert np.array_equal(inst == 1, m[1])            # highest score fully visible
    assert np.array_equal(inst == 2, m[3])
    assert np.array_equal(inst == 3, m[0] & ~m[1])    # overlap went to the higher score
    # an object fully hidden by a higher one disappears, ids stay contiguous
    m2 = np.zeros((2, h, w), bool)
    m2[0, 0:10, 0:10] = True
    m2[1, 2:5, 2:5] = True
    keep, inst = assemble(m2, np.array([0.9, 0.5]), nms_iou=0.5, min_area=1)
    assert keep.tolist() == [0] and set(np.unique(inst)) == {0, 1}


def test_refine_map_rule(rng):
    a = rng.normal(0, 1, (10, 12)).astype(np.float32)
    inst = np.zeros((10, 12), np.int32)
    inst[1:4, 1:4] = 1
    inst[6:9, 6:10] = 2
    r = refine_map(a, inst, np.array([5.0, 3.0]), outside_weight=0.25)
    assert np.all(r[inst == 1] == 5.0) and np.all(r[inst == 2] == 3.0)
    out = inst == 0
    exp = np.where(a[out] >= 0, 0.25 * a[out], 1.75 * a[out])
    np.testing.assert_allclose(r[out], exp, rtol=1e-6)
    # monotone outside: the order of outside pixels is unchanged
    assert np.array_equal(np.argsort(a[out], kind="stable"), np.argsort(r[out], kind="stable"))


def test_segment_from_map_grabcut_whole_objects(rng):
    img, inst = disc_scene(96, 192, [(50, 48, 22), (140, 40, 18)], rng)
    # an uneven anomaly map: parts of each object light up weakly, the second object weaker overall
    import cv2

    field = cv2.GaussianBlur(rng.random((96, 192)).astype(np.float32), (0, 0), 4)
    field = 0.35 + 0.65 * (field - field.min()) / (field.max() - field.min())
    amap = map_from_instances(inst, rng, peak=0.5, noise=0.02, blur=2.0) * field
    amap[inst == 2] *= 0.7
    thr_frag = [cv2.connectedComponents(((amap > 0.3) & (inst == k)).astype(np.uint8))[0] - 1 for k in (1, 2)]
    assert max(thr_frag) > 1  # the scenario: a fixed threshold breaks an object into pieces
    s2m = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32")
    r = s2m.segment_from_map(img, amap)
    assert r.instances.shape == (96, 192) and r.instances.dtype == np.int32
    assert len(r) == 2 and r.masks.shape == (2, 96, 192)
    assert np.all(np.diff(r.raw_scores) <= 0)  # ids in descending raw-score order
    assert np.all((r.scores >= 0) & (r.scores <= 1))  # confidences in [0, 1]
    for k in (1, 2):
        best = max(iou_mask(r.instances == i, inst == k) for i in (1, 2))
        assert best > 0.8
    # raw object score = mean raw anomaly inside the full mask
    for i in range(2):
        assert r.raw_scores[i] == pytest.approx(float(amap[r.masks[i]].mean()), rel=1e-5)
    assert set(r.timing) >= {"prompts", "masks", "post", "total"}
    assert np.array_equal(r.areas, [np.count_nonzero(r.instances == i) for i in (1, 2)])


def test_segment_from_map_no_prompts_and_size_check(rng):
    s2m = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32")
    img = rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)
    r = s2m.segment_from_map(img, np.zeros((32, 48), np.float32))
    assert len(r) == 0 and not r.instances.any() and r.masks.shape == (0, 32, 48)
    with pytest.raises(ConfigError):
        s2m.segment_from_map(img, np.zeros((30, 48), np.float32))
    with pytest.raises(ConfigError):
        s2m([img])  # no segmenter


def test_s2m_end_to_end_tiny_segmenter_batched(tmp_path, rng, ckpt):
    from denseood.infer import Inference
    from denseood.models.sources.registry import load_checkpoint

    ck = ckpt
    model = load_checkpoint(ck)
    s2m = build_s2m(ck, "peak", "grabcut", "cpu", "fp32", "jsd", batch_size=2)
    imgs = [rng.integers(0, 255, (64, 128, 3), dtype=np.uint8) for _ in range(2)]
    imgs.append(rng.integers(0, 255, (50, 90, 3), dtype=np.uint8))  # another size
    calls = []
    orig = s2m._inference().predict
    s2m._inference().predict = lambda x, **k: (calls.append(x.shape), orig(x, **k))[1]
    res = s2m(imgs)
    assert [c[0] for c in calls] == [2, 1]  # same-size images batched
    eng = Inference(model, scores=("jsd",), device="cpu", dtype="fp32")
    for im, r in zip(imgs, res):
        ref = eng.predict(im[None])["jsd"][0].numpy()
        np.testing.assert_allclose(r.anomaly_map, ref, atol=1e-5)
        assert r.instances.shape == im.shape[:2]
        assert r.timing["segmenter"] > 0
        assert len(r.scores) == len(r.masks) == len(r.boxes) == int(r.instances.max())


def test_build_s2m_prompter_choices(tmp_path, capsys, ckpt):
    from denseood.train.prompter import store_prompter_in_checkpoint

    ck = ckpt
    with pytest.raises(ConfigError, match="train-prompter"):
        build_s2m(ck, "learned", "grabcut", "cpu", "fp32", "jsd")
    s = build_s2m(ck, "auto", "grabcut", "cpu", "fp32", "jsd")
    assert isinstance(s.prompter, PeakPrompter)
    assert "peak" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        build_s2m(ck, "bogus", "grabcut", "cpu", "fp32", "jsd")
    with pytest.raises(ConfigError):
        build_s2m(ck, "peak", "sam:vit_b", "cpu", "fp32", "jsd")
    lp = LearnedPrompter.build("tiny", score_name="jsd")
    store_prompter_in_checkpoint(lp, ck)
    s = build_s2m(ck, "auto", "grabcut", "cpu", "fp32", "jsd")
    assert isinstance(s.prompter, LearnedPrompter)
    with pytest.raises(ConfigError, match="trained on 'jsd'"):
        build_s2m(ck, "learned", "grabcut", "cpu", "fp32", "msp")
    # a Segmenter object + the checkpoint path (as the eval runner can pass it), and a prompter file
    from denseood.models.sources.registry import load_checkpoint

    s = build_s2m(load_checkpoint(ck), "learned", "grabcut", torch.device("cpu"), torch.float32, "jsd", checkpoint=ck)
    assert isinstance(s.prompter, LearnedPrompter)
    f = lp.save(tmp_path / "p.pt")
    s = build_s2m(load_checkpoint(ck), str(f), "grabcut", "cpu", "fp32", "jsd")
    assert isinstance(s.prompter, LearnedPrompter)


def test_build_s2m_picks_the_score_from_candidates_without_rereading(monkeypatch, ckpt):
    """Given the evaluation's score names, S2M runs on the learned prompter's own score (else jsd, else the first),
    and a model from load_checkpoint is not read from disk a second time."""
    import denseood.models.checkpoint as ck_format
    from denseood.models.sources.registry import load_checkpoint
    from denseood.train.prompter import store_prompter_in_checkpoint

    assert build_s2m(ckpt, "peak", "grabcut", "cpu", "fp32", ["msp", "jsd"]).score == "jsd"
    assert build_s2m(ckpt, "peak", "grabcut", "cpu", "fp32", ["maxlogit", "msp"]).score == "maxlogit"
    store_prompter_in_checkpoint(LearnedPrompter.build("tiny", score_name="msp"), ckpt)
    model = load_checkpoint(ckpt)

    def no_read(*a, **k):
        raise AssertionError("checkpoint read a second time")

    monkeypatch.setattr(ck_format, "read_checkpoint", no_read)
    s = build_s2m(model, "learned", "grabcut", "cpu", "fp32", ["jsd", "msp", "maxlogit"], checkpoint=ckpt)
    assert isinstance(s.prompter, LearnedPrompter) and s.score == "msp"
    with pytest.raises(ConfigError, match="trained on 'msp'"):
        build_s2m(model, "learned", "grabcut", "cpu", "fp32", ["jsd", "maxlogit"], checkpoint=ckpt)


# ------------------------------------------------------------------------------------------ working size
class _Recorder:
    """Wraps a prompter or mask model and records the (H,W) of the images/maps it receives."""

    def __init__(self, inner):
        self.inner, self.shapes = inner, []

    def __call__(self, a, image=None):
        self.shapes.append(a.shape[:2])
        return self.inner(a, image)

    def predict(self, image, boxes, points=None):
        self.shapes.append(image.shape[:2])
        return self.inner.predict(image, boxes, points)


def test_work_size_leaves_images_within_the_bound_unchanged(rng):
    img, inst = disc_scene(96, 160, [(40, 48, 14), (115, 50, 16)], rng)
    amap = map_from_instances(inst, rng)
    full = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32", work_size=None)
    bounded = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32", work_size=160)
    a, b = full.segment_from_map(img, amap), bounded.segment_from_map(img, amap)
    assert len(a) == 2
    for k in ("instances", "masks", "boxes", "scores", "raw_scores", "quality", "refined_map"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    assert b.instances.dtype == np.int32


def test_work_size_bounds_prompts_and_masks_and_upsamples_the_instances(rng):
    img, inst = disc_scene(200, 320, [(80, 100, 30), (230, 100, 34)], rng)
    amap = map_from_instances(inst, rng, blur=3.0)
    prompter, backend = _Recorder(PeakPrompter()), _Recorder(GrabCutBackend())
    r = S2M(None, prompter, backend, device="cpu", dtype="fp32", work_size=80).segment_from_map(img, amap)
    assert prompter.shapes == [(50, 80)] and backend.shapes == [(50, 80)]
    assert r.instances.shape == (200, 320) and r.instances.dtype == np.uint16
    assert r.masks.shape[1:] == (50, 80) and r.full_masks().shape == (len(r), 200, 320)
    assert r.anomaly_map.shape == r.refined_map.shape == (200, 320)
    assert len(r) == 2
    for k in (1, 2):  # each true disc is found whole, in image pixels
        best = max(iou_mask(r.instances == i, inst == k) for i in range(1, len(r) + 1))
        assert best > 0.75
    for i in range(len(r)):  # boxes are in image pixels and hold the upsampled object
        ys, xs = np.nonzero(r.instances == i + 1)
        x0, y0, x1, y1 = r.boxes[i]
        assert x0 <= xs.min() + 4 and xs.max() < x1 + 4 and y0 <= ys.min() + 4 and ys.max() < y1 + 4
    assert np.all(r.prompts.boxes[:, 2] > 80)  # prompts scaled back to image pixels
    with pytest.raises(ConfigError, match="work_size"):
        S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32", work_size=-1)


def test_s2m_reads_no_checkpoint_extra_for_a_model_of_another_source(tmp_path):
    """``model.origin`` (not the spec string) tells S2M whether the model is a checkpoint holding ``extra``."""
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter
    from denseood.models.sources import load_model
    from denseood.s2m.pipeline import _checkpoint_extra
    from tests.model_builders import write_factory

    f = write_factory(tmp_path / "fac.py")
    py = load_model(f"python:{f}:make")
    py.checkpoint_meta = {"extra": {"prompter": "would be used"}}   # only the origin tells it is not a checkpoint
    assert _checkpoint_extra(py, None) == {} and _checkpoint_extra(py, f"python:{f}:make") == {}
    ck = load_model(save_checkpoint(create_segmenter("fpn", "resnet18", 19), tmp_path / "m.pt",
                                    extra={"prompter": {"x": 1}}))
    assert _checkpoint_extra(ck, None) == {"prompter": {"x": 1}}
