"""Watching the flow of flow negatives: fixed inlier patches, held-out bits/dim and the sample figure.

Everything here is deterministic in the run's seed (the same patches, dequantisation noise and sample noise every
call), so logged numbers of a resumed run continue those of a straight run. See docs/architecture.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DatasetError
from ..models.flow import PatchFlow
from .config import IGNORE


def patch_size(flow: PatchFlow, crop: int) -> int:
    """Side of the monitoring patches: ``min(32, crop)`` rounded down to a multiple of the flow's downsampling."""
    ds = flow.downsampling
    return max(ds, (min(32, crop) // ds) * ds)


@torch.no_grad()
def init_flow_actnorm(flow: PatchFlow, frames: Any, crop: int, seed: int, device: torch.device) -> None:
    """Data-dependent ActNorm init on a fixed batch of inlier patches (the same on every rank and world size).

    frames: a reader (``len``, ``[i].image`` (H,W,3) uint8); the centre patch of each of its first 8 frames is used.
    Without this the first training batch would initialise ActNorm, and that batch differs between one process
    and N ranks. A resumed run overwrites the result with the checkpoint's flow state.
    """
    s = patch_size(flow, crop)
    patches = []
    for i in range(min(8, len(frames))):
        img = frames[i].image
        h, w = img.shape[:2]
        y, x = max(0, h // 2 - s // 2), max(0, w // 2 - s // 2)
        patches.append(torch.from_numpy(img[y:y + s, x:x + s].copy()).permute(2, 0, 1))
    batch = torch.stack(patches).float().div(255.0).to(device)
    flow.bits_per_dim(batch, generator=torch.Generator(device="cpu").manual_seed(seed))


def heldout_patches(frames: Any, size: int, device: torch.device, n: int = 16) -> torch.Tensor:
    """(<=n, 3, size, size) float in [0, 1]: inlier patches from the last frames of ``frames``, at most 2 per frame.

    Patches lie below the horizon (rows from h/3 down) and hold no anomaly (``ood_mask != 0``) and no void
    (semantic 255) pixel. Raises DatasetError when no frame has such a patch.
    """
    s = size
    patches: list[torch.Tensor] = []
    for i in range(len(frames)):
        smp = frames[len(frames) - 1 - i]
        img = smp.image
        h, w = img.shape[:2]
        if h < s or w < s:
            continue
        bad = np.zeros((h, w), bool)
        if smp.ood_mask is not None:
            bad |= smp.ood_mask != 0
        if smp.semantic is not None:
            bad |= smp.semantic == IGNORE
        taken = 0
        for yy in np.linspace(h // 3, h - s, 3).astype(int):  # below the horizon, where anomalies are pasted
            for xx in np.linspace(0, w - s, 5).astype(int):
                if taken < 2 and not bad[yy:yy + s, xx:xx + s].any():
                    patches.append(torch.from_numpy(img[yy:yy + s, xx:xx + s].copy()).permute(2, 0, 1))
                    taken += 1
        if len(patches) >= n:
            break
    if not patches:
        raise DatasetError(f"no {s}x{s} inlier patch without anomaly/void pixels found in the held-out frames "
                           "for the flow's bits/dim log")
    return torch.stack(patches[:n]).float().div(255.0).to(device)


def heldout_bpd(flow: PatchFlow, patches: torch.Tensor, seed: int) -> float:
    """Mean bits/dim (>= 0 in practice) of ``flow`` on ``patches`` (N,3,S,S) in [0,1], with fixed dequantisation noise."""
    with torch.no_grad():
        flow.eval()
        g = torch.Generator(device="cpu").manual_seed(seed)  # same dequantisation noise every time
        v = float(flow.bits_per_dim(patches, generator=g).mean())
        flow.train()
    return v


@torch.no_grad()
def save_flow_samples(flow: PatchFlow, path: Path, seed: int, temperature: float = 1.0,
                      sizes: tuple[int, ...] = (32, 64, 128)) -> Path:
    """Write a PNG grid of flow samples: one row per size (rounded to the downsampling), 6 samples each."""
    from ..io import write_png

    ds = flow.downsampling
    sizes = tuple(max(ds, (s // ds) * ds) for s in sizes)
    big = max(sizes)
    rows = []
    g = torch.Generator(device="cpu").manual_seed(seed)
    flow.eval()
    for s in sizes:
        smp = flow.sample(6, s, s, temperature=temperature, generator=g).clamp(0, 1)
        tiles = []
        for k in range(6):
            tile = np.full((big, big, 3), 255, np.uint8)
            tile[:s, :s] = (smp[k].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
            tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
        rows.append(np.concatenate(tiles, 1))
    flow.train()
    return write_png(path, np.concatenate(rows, 0))
