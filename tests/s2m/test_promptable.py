"""Promptable mask models: SAM plumbing with a tiny random SAM, SAM file errors, GrabCut."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from denseood.errors import CheckpointError, ConfigError
from denseood.s2m.promptable import GrabCutBackend, SamBackend, build_prompt_model

from tests.s2m.s2m_helpers import disc_scene, iou_mask, tiny_sam

REAL_SAM = Path(__file__).resolve().parents[2] / "weights" / "sam_vit_b_01ec64.pth"


def _spy_predict_torch(backend, calls):
    orig = backend.predictor.predict_torch

    def spy(point_coords, point_labels, boxes=None, mask_input=None, multimask_output=True, return_logits=False):
        calls.append({"coords": None if point_coords is None else point_coords.clone(),
                      "labels": None if point_labels is None else point_labels.clone(),
                      "boxes": boxes.clone(), "multimask": multimask_output})
        out = orig(point_coords, point_labels, boxes, mask_input, multimask_output, return_logits)
        calls[-1]["iou"] = out[1].clone()
        calls[-1]["masks"] = out[0].clone()
        return out

    backend.predictor.predict_torch = spy


@pytest.mark.parametrize("hw", [(48, 96), (100, 60), (64, 64)])
def test_sam_backend_shapes_transforms_and_one_call(hw, rng):
    h, w = hw
    sam = tiny_sam(img_size=64)
    be = SamBackend("vit_b", None, device="cpu", dtype="fp32", model=sam)
    calls: list = []
    _spy_predict_torch(be, calls)
    sets: list = []
    orig_set = be.predictor.set_image
    be.predictor.set_image = lambda im, fmt="RGB": (sets.append(im.shape), orig_set(im, fmt))[1]
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    boxes = np.array([[1, 2, w // 2, h // 2], [w // 3, h // 4, w - 1, h - 2], [0, 0, w, h]], np.float32)
    coords = np.array([[[5, 6], [0, 0]], [[w - 5, h - 6], [w // 2, h // 2]], [[w / 2, h / 2], [1, 1]]], np.float32)
    labels = np.array([[1, -1], [1, 0], [1, 0]])
    masks, q = be.predict(img, boxes, (coords, labels))
    assert masks.shape == (3, h, w) and masks.dtype == bool and q.shape == (3,)
    assert len(sets) == 1 and len(calls) == 1  # one embedding, one batched decoder call for all boxes
    c = calls[0]
    assert c["multimask"] is True and tuple(c["boxes"].shape) == (3, 4)
    # coordinates scaled as ResizeLongestSide does: long side -> 64, rounding the new size to the nearest int
    scale = 64 / max(h, w)
    nh, nw = int(h * scale + 0.5), int(w * scale + 0.5)
    exp_boxes = boxes.astype(np.float64).copy()
    exp_boxes[:, [0, 2]] *= nw / w
    exp_boxes[:, [1, 3]] *= nh / h
    np.testing.assert_allclose(c["boxes"].numpy(), exp_boxes, rtol=1e-5)
    exp_coords = coords.astype(np.float64).copy()
    exp_coords[..., 0] *= nw / w
    exp_coords[..., 1] *= nh / h
    np.testing.assert_allclose(c["coords"].numpy(), exp_coords, rtol=1e-5)
    assert c["labels"].tolist() == labels.tolist()
    # best-of-3 by predicted IoU
    best = c["iou"].argmax(1)
    for i in range(3):
        np.testing.assert_array_equal(masks[i], c["masks"][i, best[i]].numpy())
        assert q[i] == pytest.approx(float(c["iou"][i, best[i]]))


def test_sam_backend_boxes_only_and_empty(rng):
    be = SamBackend("vit_b", None, device="cpu", dtype="fp32", model=tiny_sam())
    calls: list = []
    _spy_predict_torch(be, calls)
    img = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)
    m, q = be.predict(img, np.array([[3, 3, 30, 30]], np.float32), None)
    assert m.shape == (1, 40, 70) and calls[0]["coords"] is None
    m, q = be.predict(img, np.zeros((0, 4), np.float32), None)
    assert m.shape == (0, 40, 70) and q.shape == (0,)
    # all-padding points are the same as no points
    m2, _ = be.predict(img, np.array([[3, 3, 30, 30]], np.float32),
                       (np.zeros((1, 2, 2), np.float32), np.full((1, 2), -1)))
    assert calls[-1]["coords"] is None


def test_sam_backend_batches_large_prompt_sets(rng):
    be = SamBackend("vit_b", None, device="cpu", dtype="fp32", model=tiny_sam(), max_batch=2)
    calls: list = []
    _spy_predict_torch(be, calls)
    img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    boxes = np.tile(np.array([[2, 2, 20, 20]], np.float32), (5, 1))
    m, q = be.predict(img, boxes, None)
    assert m.shape == (5, 32, 32) and [len(c["boxes"]) for c in calls] == [2, 2, 1]
    # identical prompts give identical masks, whichever call they were in
    assert all(np.array_equal(m[0], m[i]) for i in range(5))


def test_sam_missing_and_wrong_files(tmp_path):
    with pytest.raises(CheckpointError, match=r"sam_vit_b_01ec64\.pth"):
        SamBackend("vit_b", tmp_path / "nope.pth", device="cpu")
    with pytest.raises(CheckpointError, match=str(tmp_path / "nope.pth").replace("\\", "\\\\")):
        SamBackend("vit_b", tmp_path / "nope.pth", device="cpu")
    with pytest.raises(ConfigError, match="vit_b.*vit_l.*vit_h"):
        SamBackend("vit_x", tmp_path / "nope.pth", device="cpu")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        SamBackend("vit_b", junk, device="cpu")
    # a state dict that does not fit vit_b (the tiny SAM's weights) -> names the file and the expected type
    wrong = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), wrong)
    with pytest.raises(CheckpointError, match=r"tiny\.pth.*vit_b"):
        SamBackend("vit_b", wrong, device="cpu")


def test_build_prompt_model_specs(tmp_path):
    assert isinstance(build_prompt_model("grabcut"), GrabCutBackend)
    for bad in ("sam", "sam:vit_b", "sam:vit_b:", "mask2former", ""):
        with pytest.raises(ConfigError):
            build_prompt_model(bad)
    with pytest.raises(CheckpointError, match="sam_vit_l_0b3195"):
        build_prompt_model(f"sam:vit_l:{tmp_path / 'x.pth'}", device="cpu")


def test_sam_real_checkpoint(rng):
    if not REAL_SAM.is_file():
        pytest.skip("weights/sam_vit_b_01ec64.pth not found: download the official SAM ViT-B checkpoint into weights/ to run this test")
    be = SamBackend("vit_b", REAL_SAM, device="auto")
    img, inst = disc_scene(240, 320, [(160, 120, 50)], rng)
    m, q = be.predict(img, np.array([[100, 60, 220, 180]], np.float32), None)
    assert m.shape == (1, 240, 320)
    assert iou_mask(m[0], inst == 1) > 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sam_backend_autocast_cuda(rng):
    be = SamBackend("vit_b", None, device="cuda", dtype="bf16", model=tiny_sam())
    img = rng.integers(0, 255, (48, 96, 3), dtype=np.uint8)
    m, q = be.predict(img, np.array([[1, 2, 40, 40]], np.float32), None)
    assert m.shape == (1, 48, 96) and q.dtype == np.float32


def test_grabcut_disc_from_loose_box(rng):
    img, inst = disc_scene(120, 160, [(80, 60, 28)], rng)
    box = np.array([80 - 28 - 12, 60 - 28 - 10, 80 + 28 + 14, 60 + 28 + 9], np.float32)  # loose
    gc = GrabCutBackend()
    m, q = gc.predict(img, box[None], None)
    assert m.shape == (1, 120, 160)
    assert iou_mask(m[0], inst == 1) > 0.8
    assert 0.0 <= q[0] <= 1.0
    # points as definite marks: still the disc; a positive point is always in the mask
    pts = (np.array([[[80, 60], [box[0] + 3, box[1] + 3]]], np.float32), np.array([[1, 0]]))
    m2, q2 = gc.predict(img, box[None], pts)
    assert iou_mask(m2[0], inst == 1) > 0.8 and m2[0, 60, 80] and not m2[0, int(box[1]) + 3, int(box[0]) + 3]


def test_grabcut_two_objects_and_quality(rng):
    img, inst = disc_scene(100, 200, [(50, 50, 20), (150, 50, 25)], rng)
    boxes = np.array([[22, 22, 80, 80], [118, 18, 182, 84]], np.float32)
    m, q = GrabCutBackend().predict(img, boxes, None)
    assert iou_mask(m[0], inst == 1) > 0.8 and iou_mask(m[1], inst == 2) > 0.8
    # a box covering the whole image leaves no background samples: falls back to the box with quality 0
    m3, q3 = GrabCutBackend(margin=0).predict(img, np.array([[0, 0, 200, 100]], np.float32), None)
    assert q3[0] == 0.0 and m3[0].all()
    with pytest.raises(ConfigError):
        GrabCutBackend().predict(img[..., 0], boxes, None)


def test_sam_file_with_python_objects_is_refused(tmp_path):
    from tests.models.unsafe_pickle import assert_refused, write_malicious

    marker = tmp_path / "MARKER"
    bad = write_malicious(tmp_path / "sam_vit_b_01ec64.pth", marker, wrap="model")
    with pytest.raises(CheckpointError) as e:
        SamBackend("vit_b", bad, device="cpu")
    assert_refused(str(e.value), bad, marker)


def test_sam_wrong_file_says_what_differs(tmp_path):
    wrong = tmp_path / "tiny.pth"
    torch.save(tiny_sam().state_dict(), wrong)
    with pytest.raises(CheckpointError) as e:
        SamBackend("vit_b", wrong, device="cpu")
    msg = str(e.value)
    assert "Loader said:" not in msg and not msg.rstrip().endswith(":")
    assert "shape mismatches" in msg and "image_encoder" in msg


def test_grabcut_mask_does_not_depend_on_the_opencv_rng_state(rng):
    """GrabCut's k-means draws from OpenCV's thread RNG: a box's mask must not depend on what ran before
    (1 vs 2 torchrun ranks see different image sequences, and must give the same S2M numbers)."""
    import cv2

    img, _ = disc_scene(120, 160, [(80, 60, 28), (40, 30, 12)], rng, colours=[(120, 110, 100), (100, 120, 110)])
    boxes = np.array([[40, 22, 124, 100], [20, 10, 60, 50]], np.float32)
    runs = []
    for seed in (1, 2, 3):
        cv2.setRNGSeed(seed)
        runs.append(GrabCutBackend().predict(img, boxes, None))
    for m, q in runs[1:]:
        np.testing.assert_array_equal(m, runs[0][0])
        np.testing.assert_array_equal(q, runs[0][1])
