"""S2MEval (denseood.commands.eval.s2m) and pass 2 (denseood.commands.eval.passes): the S2M row and the oracle
thresholded baseline against independent references."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve

from denseood.commands.eval.passes import MapCache, threshold_pass
from denseood.commands.eval.s2m import S2MEval
from denseood.eval import PixelMetrics
from denseood.s2m.pipeline import S2M
from denseood.s2m.promptable import GrabCutBackend
from denseood.s2m.prompts import PeakPrompter

from tests.s2m.s2m_helpers import disc_scene, map_from_instances  # noqa: E402


def _frames(rng, n=3):
    import cv2

    out = []
    specs = [[(40, 40, 18), (120, 44, 14)], [(80, 30, 20)], [(30, 50, 12), (100, 30, 16), (150, 50, 10)]]
    for k in range(n):
        img, inst = disc_scene(80, 180, specs[k], rng)
        field = cv2.GaussianBlur(rng.random(inst.shape).astype(np.float32), (0, 0), 3)
        field = 0.3 + 0.7 * (field - field.min()) / (field.max() - field.min())
        amap = map_from_instances(inst, rng, peak=0.5, noise=0.03, blur=2.0) * field + 0.05 * rng.random(inst.shape)
        mask = (inst > 0).astype(np.uint8)
        mask[:4] = 255  # some void
        out.append((img, amap.astype(np.float32), mask))
    return out


def test_s2m_eval_against_references(rng):
    frames = _frames(rng)
    s2m = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32")
    ev = S2MEval(s2m, min_instance_size=10, pixel_mode="exact")
    results = [ev.update(*f) for f in frames]
    out = ev.compute()
    assert not hasattr(ev, "raw_pixels")  # one pixel metric per score: the runner's

    valid = np.concatenate([(m != 255).ravel() for _, _, m in frames])
    gt = np.concatenate([(m == 1).ravel() for _, _, m in frames])[valid]
    # s2m row: IoU of the union of predicted masks vs GT, void excluded, pooled over images
    inter = sum(int(((r.instances > 0) & (m == 1)).sum()) for r, (_, _, m) in zip(results, frames))
    union = sum(int((((r.instances > 0) & (m != 255)) | (m == 1)).sum()) for r, (_, _, m) in zip(results, frames))
    assert out["iou"] == pytest.approx(inter / union)
    refined = np.concatenate([r.refined_map.ravel() for r in results])[valid]
    assert out["pixel_ap"] == pytest.approx(average_precision_score(gt, refined), abs=1e-6)
    assert out["n_images"] == 3

    # on these fragmented maps S2M recovers whole objects: better object IoU than the oracle threshold
    base = _baseline(frames, tmp=None)
    assert out["iou"] > base["iou"]


def _baseline(frames, tmp, score="jsd", components=(), min_seg=20):
    """threshold_pass on the frames, with the runner's pixel row (exact PixelMetrics of the float32 maps)."""
    import tempfile

    pm = PixelMetrics(mode="exact")
    for _, a, m in frames:
        pm.update(a[None], m[None])
    per_score = {score: dict(pm.compute())}
    with tempfile.TemporaryDirectory() as d:
        cache = MapCache(Path(tmp or d), 0, [score])
        for _, a, m in frames:
            cache.add({score: a}, m)
        row = threshold_pass(cache, per_score, list(components), min_segment_size=min_seg, min_instance_size=10,
                             baseline_score=score)
        cache.close()
        assert not cache.dir.exists()
    return row if not components else (row, per_score[score])


def test_threshold_pass_baseline_against_references(rng, tmp_path):
    """The threshold@bestF1 row: the runner's best-F1 pixel threshold (sklearn on the float32 maps), components
    formed as SMIYC forms them (road-anomaly-benchmark default_instancer: map > t, void set to 0, 8-connected,
    small components dropped) on the cached float16 maps, and the score row's own pixel numbers."""
    frames = _frames(rng)
    row, score_row = _baseline(frames, tmp_path, components=("jsd",))
    valid = np.concatenate([(m != 255).ravel() for _, _, m in frames])
    gt = np.concatenate([(m == 1).ravel() for _, _, m in frames])[valid]
    raw = np.concatenate([a.ravel() for _, a, _ in frames])[valid]
    p, r, t = precision_recall_curve(gt, raw)
    f1 = 2 * p[:-1] * r[:-1] / np.maximum(p[:-1] + r[:-1], 1e-12)
    thr = t[int(np.argmax(f1))]
    assert row["threshold"] == pytest.approx(thr)
    inter = union = 0
    for _, a, m in frames:
        pred = (a.astype(np.float16).astype(np.float32) > thr) & (m != 255)
        lab, n = ndimage.label(pred, structure=np.ones((3, 3)))
        sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
        keep = np.isin(lab, 1 + np.flatnonzero(sizes >= 20))
        inter += int((keep & (m == 1)).sum())
        union += int(((keep & (m != 255)) | (m == 1)).sum())
    assert row["iou"] == pytest.approx(inter / union)
    assert row["pixel_ap"] == pytest.approx(average_precision_score(gt, raw), abs=1e-9)
    assert row["pixel_ap"] == score_row["ap"] and row["pixel_fpr95"] == score_row["fpr95"]
    # one component rule: the baseline row's component metrics are the score row's, from the same pass
    for k in ("sIoU", "PPV", "mean_F1", "n_pred"):
        assert row[k] == pytest.approx(score_row[k], abs=1e-12), k
    assert not list(tmp_path.iterdir())  # the cache folder is gone


def test_threshold_pass_without_component_rows(rng):
    """components=False still gives the baseline row (the cache then holds only the S2M score's maps)."""
    frames = _frames(rng)
    row = _baseline(frames, tmp=None)
    ref, _ = _baseline(frames, tmp=None, components=("jsd",))
    assert row == ref


def test_threshold_components_min_size():
    from denseood.eval.components import threshold_components

    a = np.zeros((10, 10), np.float32)
    a[1:4, 1:4] = 1.0   # 9 px
    a[7:9, 7:8] = 1.0   # 2 px, dropped
    a[6, 1] = 0.5       # below threshold
    inst = threshold_components(a, np.zeros(a.shape, np.uint8), 0.6, 5)
    assert set(np.unique(inst)) == {0, 1} and (inst == 1).sum() == 9


def test_s2m_paper_protocol_and_instance_ap(rng):
    """The s2m row's paper_protocol entry: valid ranges, and equal to ObjectScoreCurve / InstanceAP fed the same
    masks and confidences (ground truth: the dataset's instance ids when given, else 8-connected components)."""
    from denseood.commands.eval.report import results_markdown
    from denseood.eval.objects import CURVE_KEYS, gt_instance_ids as gt_instances
    from denseood.eval.instance_ap import InstanceAPReport
    from denseood.eval.object_curve import ObjectScoreCurve, paint_objects

    frames = _frames(rng)
    ids = [None, None, None]
    # frame 2: two touching ground-truth objects that only the dataset's instance ids separate
    img, amap, mask = frames[2]
    inst = np.zeros(mask.shape, np.int32)
    inst[mask == 1] = 1
    inst[:, 90:][mask[:, 90:] == 1] = 2
    ids[2] = inst
    s2m = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32")
    ev = S2MEval(s2m, min_instance_size=10, pixel_mode="exact")
    results = [ev.update(*f, instances=i) for f, i in zip(frames, ids)]
    out = {"s2m": ev.compute()}
    p = out["s2m"]["paper_protocol"]
    assert set(CURVE_KEYS) <= set(p) and "0:0.01:1" in p["protocol"]
    iap = out["s2m"]["instance_ap"]
    assert [iap[k]["protocol"] for k in iap] == ["oodis", "coco"]  # OoDIS first: the headline
    for k in ("best_iou", "au_iou", "mean_f1"):
        assert 0.0 <= p[k] <= 1.0, k
    for proto in iap.values():
        assert 0.0 <= proto["ap"] <= 1.0 and 0.0 <= proto["ap50"] <= 1.0
    assert "ap" not in out["s2m"] and "ap" not in p  # no null beside the real number
    assert 0.0 <= p["best_threshold"] <= 1.0
    assert p["best_iou"] > 0 and iap["oodis"]["ap50"] > 0  # S2M finds these discs
    assert sum(len(r) for r in results) > 0 and all(np.all((r.scores >= 0) & (r.scores <= 1)) for r in results)

    curve, ref_ap = ObjectScoreCurve(step=0.01), InstanceAPReport(min_size=10)
    for r, (_, _, m), i in zip(results, frames, ids):
        curve.update(paint_objects(r.instances, r.scores), m)
        gt = np.where(m == 1, i, 0) if i is not None else ndimage.label(m == 1, structure=np.ones((3, 3)))[0]
        assert np.array_equal(gt_instances(m, i) > 0, gt > 0)
        ref_ap.update(r.full_masks(), r.scores, gt, m == 255)
    c, a = curve.compute(), ref_ap.compute()
    for k in ("best_iou", "best_threshold", "au_iou", "mean_f1"):
        assert p[k] == pytest.approx(c[k]), k
    for proto in ("oodis", "coco"):
        assert iap[proto]["ap"] == pytest.approx(a[proto]["ap"]) and iap[proto]["ap50"] == pytest.approx(a[proto]["ap50"])
    # connected components give the same instances as scipy's 8-connected labelling (up to renumbering)
    g = gt_instances(frames[0][2])
    ref = ndimage.label(frames[0][2] == 1, structure=np.ones((3, 3)))[0]
    assert len(np.unique(g)) == len(np.unique(ref)) and len(set(zip(g.ravel(), ref.ravel()))) == len(np.unique(ref))
    # the dataset's ids win over components: frame 2's instances 1 and 2 stay two instances
    assert set(np.unique(gt_instances(frames[2][2], inst))) == {0, 1, 2}

    md = results_markdown({"dataset": "d", "split": "s", "n_images": 3, "checkpoint": {"path": "c", "sha256": "x"},
                           "device": "cpu", "dtype": "fp32", "world_size": 1, "protocol": "p", "denseood_version": "0",
                           "has_labels": True, "scores": {}, "images_per_s": 1.0, "peak_mem_mb": 1.0,
                           "s2m": out, "s2m_score": "jsd"})
    assert "objects (S2M paper protocol: object-score maps, thresholds 0:0.01:1; instance AP" in md
    assert f"| {100 * iap['oodis']['ap']:.2f} | {100 * iap['oodis']['ap50']:.2f} | {100 * iap['coco']['ap']:.2f} |" in md
    assert f"| s2m | {100 * p['best_iou']:.2f} | {p['best_threshold']:.2f} |" in md
