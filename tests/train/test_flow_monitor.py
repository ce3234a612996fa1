"""train.flow_monitor: fixed inlier patches, held-out bits/dim, ActNorm init and the sample figure."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from denseood.errors import DatasetError
from denseood.models.flow import PatchFlow
from denseood.train.flow_monitor import (heldout_bpd, heldout_patches, init_flow_actnorm, patch_size,
                                         save_flow_samples)


def frame(h=64, w=96, seed=0, ood=None, void=None):
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    sem = np.zeros((h, w), np.uint8)
    if void is not None:
        sem[void] = 255
    mask = np.zeros((h, w), np.uint8)
    if ood is not None:
        mask[ood] = 1
    return SimpleNamespace(image=img, semantic=sem, ood_mask=mask)


@pytest.fixture(scope="module")
def flow():
    torch.manual_seed(0)
    return PatchFlow(levels=2, steps=1, hidden=8)


def test_patch_size_is_a_multiple_of_the_downsampling(flow):
    ds = flow.downsampling
    assert patch_size(flow, 256) == (32 // ds) * ds and patch_size(flow, 1) == ds


def test_heldout_patches_avoid_anomaly_and_void_pixels():
    # everything below row 40 is anomalous in frame 1 and void in frame 0: no patch may come from there
    frames = [frame(seed=0, void=np.s_[40:, :]), frame(seed=1, ood=np.s_[40:, :])]
    p = heldout_patches(frames, 16, torch.device("cpu"), n=16)
    assert p.shape[1:] == (3, 16, 16) and 0 <= float(p.min()) and float(p.max()) <= 1
    allowed = [f.image[:40] for f in frames]
    for patch in (p * 255).round().byte().permute(0, 2, 3, 1).numpy():
        assert any(any(np.array_equal(a[y:y + 16, x:x + 16], patch) for y in range(40 - 16 + 1) for x in range(96 - 16 + 1))
                   for a in allowed)
    with pytest.raises(DatasetError, match="no 16x16 inlier patch"):
        heldout_patches([frame(ood=np.s_[:, :])], 16, torch.device("cpu"))


def test_heldout_bpd_is_repeatable_and_leaves_the_flow_training(flow):
    p = heldout_patches([frame(seed=2)], patch_size(flow, 64), torch.device("cpu"))
    init_flow_actnorm(flow, [frame(seed=3)], 64, seed=0, device=torch.device("cpu"))
    a, b = heldout_bpd(flow, p, seed=1), heldout_bpd(flow, p, seed=1)
    assert a == b and np.isfinite(a) and flow.training


def test_save_flow_samples_writes_a_grid(flow, tmp_path):
    from denseood.io import read_image

    path = save_flow_samples(flow, tmp_path / "s.png", seed=0, sizes=(8, 16))
    img = read_image(path)
    assert img.shape[:2] == (2 * (16 + 4), 6 * (16 + 4))
