"""Metrics reduced over 2 CPU processes (gloo) equal a single process that saw all frames."""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from denseood.eval import ComponentMetrics, ObjectMetrics, PixelMetrics

N_FRAMES = 5


def make_frames():
    rng = np.random.default_rng(0)
    h, w = 40, 64
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for i in range(N_FRAMES):
        m = np.zeros((h, w), np.uint8)
        s = 0.3 + 0.1 * rng.normal(size=(h, w))
        for _ in range(2):
            cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(3, 7)
            blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            m[blob] = 1
            s[blob] += 0.4 + 0.1 * rng.normal(size=int(blob.sum()))
        m[:4] = 255
        if i == 3:
            m[:] = 255  # an all-void frame on rank 1
        if i == 1:
            m[m == 1] = 0  # a frame without anomalies
        s = np.round(s, 3) * (1.0 + 0.5 * i)  # ties, and a range that grows from frame to frame
        frames.append((s.astype(np.float32), m))
    return frames


def compute_all(frames):
    pix = {
        "exact": PixelMetrics("exact"),
        "streaming_range": PixelMetrics("streaming", bins=5000, score_range=(-1.0, 4.0)),
        "streaming_auto": PixelMetrics("streaming", bins=20000),
        "smiyc": PixelMetrics("smiyc"),
        "caos": PixelMetrics("caos", bins=5000),
    }
    comp = ComponentMetrics(threshold=0.6, min_segment_size=5, min_instance_size=5)
    obj = ObjectMetrics(min_instance_size=5)
    for s, m in frames:
        for pm in pix.values():
            pm.update(s, m)
        comp.update(s, m)
        obj.update((s > 0.7).astype(np.int64) * 3, m, scores=[0.1, 0.2, float(np.clip(s.max() - 0.5, 0, 1))])
    out = {k: pm.compute() for k, pm in pix.items()}
    out["components"] = comp.compute()
    out["objects"] = obj.compute()
    return out


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        res = compute_all(make_frames()[rank::world])
        with open(os.path.join(out_dir, f"rank{rank}.pkl"), "wb") as f:
            pickle.dump(res, f)
    finally:
        dist.destroy_process_group()


def same(a, b, tol):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float):
        return abs(a - b) <= tol
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    return a == b


@pytest.mark.slow
def test_two_process_gloo_reduction_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = pickle.loads((tmp_path / "rank0.pkl").read_bytes())
    r1 = pickle.loads((tmp_path / "rank1.pkl").read_bytes())
    single = compute_all(make_frames())
    assert r0.keys() == single.keys()
    for name in single:
        for k, v in single[name].items():
            assert same(r0[name][k], r1[name][k], 0.0), (name, k)  # every rank returns the same
            if name == "streaming_auto" and k in ("bin_width", "n_thresholds"):
                continue  # the merged grid may be coarser than the single-process one
            tol = 1e-3 if name == "streaming_auto" and isinstance(v, float) else 1e-12
            assert same(r0[name][k], v, tol), (name, k, r0[name][k], v)
    assert single["caos"]["n_skipped"] == 2 and single["smiyc"]["n_skipped"] == 1
    assert single["components"]["n_gt"] > 0 and single["objects"]["n_images"] == N_FRAMES
    iap = single["objects"]["instance_ap"]
    assert math.isfinite(iap["oodis"]["ap"]) and math.isfinite(iap["coco"]["ap"]) and "best_iou" in single["objects"]
