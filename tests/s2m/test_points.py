"""Point-prompted objects (denseood.s2m.points, UGainS-style): farthest-point sampling, candidates above the
quantile, one positive point per prompt, SAM without boxes, mask NMS at 0.7, mean-normalised-score confidence,
bad settings, and `segment --prompter points` on an smp checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest

from denseood.cli import main
from denseood.errors import ConfigError
from denseood.io import read_label, write_image
from denseood.s2m.boxes import normalize_map
from denseood.s2m.pipeline import S2M, build_prompter, build_s2m, mask_iou_matrix
from denseood.s2m.points import NMS_IOU, PointPrompter, farthest_points, mask_confidence
from denseood.s2m.promptable import GrabCutBackend, SamBackend

from tests.s2m.s2m_helpers import disc_scene, iou_mask, map_from_instances, tiny_sam


def _fps_reference(c: np.ndarray, n: int) -> list[int]:
    """Farthest-point sampling written out: start at 0, then argmax of the min distance to the chosen."""
    chosen = [0]
    while len(chosen) < min(n, len(c)):
        d = [min(float(np.hypot(*(c[i] - c[j]))) for j in chosen) for i in range(len(c))]
        chosen.append(int(np.argmax(d)))
    return chosen


def test_farthest_points_matches_reference(rng):
    c = rng.integers(0, 50, (40, 2)).astype(np.float64)
    assert farthest_points(c, 7).tolist() == _fps_reference(c, 7)
    assert farthest_points(c[:3], 10).tolist() == _fps_reference(c[:3], 10)   # capped at the candidates
    assert farthest_points(c, 1).tolist() == [0]
    line = np.array([[0, 0], [1, 0], [2, 0], [10, 0]], float)
    assert farthest_points(line, 3).tolist() == [0, 3, 2]    # the far end first, then the middle's far point


def test_prompts_sample_above_the_quantile(rng):
    _, inst = disc_scene(80, 140, [(35, 40, 12), (105, 40, 15)], rng)
    a = map_from_instances(inst, rng)
    p = PointPrompter(30, 0.9)(a)
    assert 1 <= len(p) <= 30 and p.points.shape == (len(p), 1, 2)
    assert (p.point_labels == 1).all() and p.meta["point_only"]
    xs, ys = p.points[:, 0, 0].astype(int), p.points[:, 0, 1].astype(int)
    assert (a[ys, xs] >= np.quantile(a, 0.9)).all()
    assert len({(x, y) for x, y in zip(xs, ys)}) == len(p)          # no point twice
    assert ((p.boxes[:, 0] <= xs) & (xs < p.boxes[:, 2]) & (p.boxes[:, 1] <= ys) & (ys < p.boxes[:, 3])).all()
    assert ((p.confidence >= 0) & (p.confidence <= 1)).all()
    # both objects get points: farthest-point sampling spreads them over the candidates
    assert set(inst[ys, xs]) >= {1, 2}
    assert len(PointPrompter()(np.zeros((20, 30), np.float32))) == 0   # a flat map: nothing to sample


def test_mask_confidence_is_mean_normalised_score(rng):
    a = rng.normal(0, 1, (30, 40)).astype(np.float32)
    masks = rng.random((3, 30, 40)) > 0.7
    masks[2] = False
    n, _, _ = normalize_map(a, smooth=1.0)
    got = mask_confidence(a, masks)
    assert got[:2] == pytest.approx([n[masks[0]].mean(), n[masks[1]].mean()], rel=1e-5)
    assert got[2] == 0.0 and ((got >= 0) & (got <= 1)).all()


@pytest.mark.parametrize("spec, words", [("points:0", "integer > 0"), ("points:-3", "integer > 0"),
                                          ("points:2.5", "integer > 0"), ("points:x", "integer > 0"),
                                          ("points:10:0", "between 0 and 1"), ("points:10:1", "between 0 and 1"),
                                          ("points:10:1.5", "between 0 and 1"), ("points:10:q", "between 0 and 1"),
                                          ("points:1:0.5:3", "write points"), ("points:", "write points")])
def test_bad_settings_are_one_line_errors(spec, words):
    with pytest.raises(ConfigError) as e:
        build_prompter(spec, {}, "jsd", None)
    assert words in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError):
        PointPrompter(0)
    with pytest.raises(ConfigError):
        PointPrompter(5, 1.0)


def test_spec_parsing_and_nms_default(ckpt):
    p = build_prompter("points:12:0.8", {}, "jsd", None)
    assert isinstance(p, PointPrompter) and (p.n_points, p.quantile) == (12, 0.8)
    assert build_prompter("points", {}, "jsd", None).n_points == 50
    assert build_s2m(str(ckpt), prompter="points", device="cpu", dtype="fp32").nms_iou == NMS_IOU == 0.7
    assert build_s2m(str(ckpt), prompter="points", device="cpu", dtype="fp32", nms_iou=0.3).nms_iou == 0.3


def test_grabcut_objects_nms_removes_duplicates(rng):
    img, inst = disc_scene(96, 160, [(40, 40, 14), (115, 55, 18)], rng)
    a = map_from_instances(inst, rng)
    prompter = PointPrompter(20, 0.9)
    assert len(prompter(a)) == 20                     # many points per disc ...
    r = S2M(None, prompter, GrabCutBackend(), nms_iou=0.7, device="cpu", dtype="fp32").segment_from_map(img, a)
    assert 2 <= len(r) < 20                           # ... one mask each after NMS
    ious = mask_iou_matrix(r.masks)
    assert (ious[~np.eye(len(r), dtype=bool)] <= 0.7).all()
    assert r.masks.shape[1:] == r.instances.shape == img.shape[:2]
    assert ((r.scores >= 0) & (r.scores <= 1)).all()
    assert r.scores == pytest.approx(mask_confidence(a, r.masks), rel=1e-6)
    assert list(r.scores) == sorted(r.scores, reverse=True)    # ids in confidence order
    for k in (1, 2):
        assert max(iou_mask(m, inst == k) for m in r.masks) > 0.8


def test_sam_gets_the_point_alone(rng, monkeypatch):
    img, inst = disc_scene(64, 64, [(30, 30, 10)], rng)
    a = map_from_instances(inst, rng)
    sam = SamBackend(model=tiny_sam(), device="cpu", dtype="fp32")
    seen = {}
    real = sam.predictor.predict_torch

    def spy(point_coords, point_labels, boxes=None, multimask_output=True, **kw):
        seen.update(boxes=boxes, labels=point_labels.clone(), multimask=multimask_output)
        return real(point_coords, point_labels, boxes, multimask_output=multimask_output, **kw)

    monkeypatch.setattr(sam.predictor, "predict_torch", spy)
    r = S2M(None, PointPrompter(6, 0.9), sam, nms_iou=0.7, min_area=1, device="cpu",
            dtype="fp32").segment_from_map(img, a)
    assert seen["boxes"] is None and seen["multimask"] is True
    assert seen["labels"].shape == (6, 1) and (seen["labels"] == 1).all()
    assert r.masks.shape[1:] == img.shape[:2] and ((r.scores >= 0) & (r.scores <= 1)).all()


def test_segment_cli_points_on_smp_checkpoint(tmp_path, rng, capsys, ckpt):
    d = tmp_path / "imgs"
    d.mkdir()
    for name, (h, w) in {"a.png": (64, 128), "b.png": (50, 90)}.items():
        write_image(d / name, disc_scene(h, w, [(w // 2, h // 2, 12)], rng)[0])
    out = tmp_path / "out"
    base = ["segment", "--images", str(d), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "fp32"]
    assert main(base + ["--prompter", "points:8:0.9", "--out", str(out)]) == 0
    recs = [json.loads(x) for x in (out / "objects.json").read_text().splitlines()]
    assert len(recs) == 2 and sum(len(r["ids"]) for r in recs) >= 1
    for r in recs:
        h, w = r["size"]
        m = read_label(out / "masks" / f"{r['image'].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.png")
        assert m.shape == (h, w) and int(m.max()) == len(r["ids"])
        assert all(0.0 <= s <= 1.0 for s in r["scores"])
        assert (out / "overlays" / f"{r['image'].rsplit('/', 1)[-1].rsplit('.', 1)[0]}.png").is_file()
    capsys.readouterr()
    assert main(base + ["--prompter", "points:0", "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "integer > 0" in err and len(err.splitlines()) == 1


def test_eval_s2m_prompter_points(tmp_path, ckpt):
    """`eval --s2m --prompter points:N:Q` on an smp checkpoint: the S2M rows are written."""
    from denseood.data.synthetic import write

    write(tmp_path / "synthetic", n_train=1, n_val=2, seed=0, size=(64, 128))
    out = tmp_path / "out"
    assert main(["eval", "--dataset", "synthetic", "--root", str(tmp_path / "synthetic"), "--checkpoint", str(ckpt),
                 "--score", "jsd", "--device", "cpu", "--workers", "0", "--protocol", "exact", "--bootstrap", "0",
                 "--s2m", "--prompter", "points:10:0.9", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["s2m"]["s2m"]["n_images"] == 2 and 0.0 <= res["s2m"]["s2m"]["iou"] <= 1.0
