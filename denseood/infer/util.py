"""Inference helpers: dtypes, the image-size limit, sliding-window geometry, rank sharding, batching, resizing
maps. See docs/architecture.md.
"""
from __future__ import annotations

import math
import resource

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Sampler

from ..data.sample import Sample
from ..errors import ConfigError
from .names import DTYPE_NAMES, MAX_PIXELS  # MAX_PIXELS re-exported: the default largest image (H * W pixels)


DTYPES = {name: getattr(torch, attr) for name, attr in DTYPE_NAMES.items()}



def check_max_pixels(h: int, w: int, limit: int | float | None, what: str, option: str = "--max-pixels") -> None:
    """Raise ConfigError when an image of h x w pixels exceeds ``limit`` pixels (None or <= 0: no limit).

    what: the image's name for the message (e.g. its file path); option: the setting that raises the limit."""
    if limit is None or limit <= 0 or int(h) * int(w) <= limit:
        return
    raise ConfigError(f"{what} is {int(h)}x{int(w)} = {int(h) * int(w) / 1e6:.4g} MP, over the limit of "
                      f"{limit / 1e6:.4g} MP; downscale it or raise {option} (memory grows with the pixel count)")


def check_network_sizes(limit: int | float | None, input_size: Any = None, sliding_window: Any = None) -> None:
    """:func:`check_max_pixels` for the network input itself: ``input_size`` / ``sliding_window`` as (h, w)
    tuples (anything else, e.g. None or "full", is no size and passes), named by their command-line options."""
    for hw, what in ((input_size, "--input-size"), (sliding_window, "--sliding-window")):
        if isinstance(hw, tuple):
            check_max_pixels(hw[0], hw[1], limit, what)


# ----------------------------------------------------------------------------------------------- helpers
def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """'auto' -> bf16 on CUDA when supported, else fp16 on CUDA, fp32 on CPU; or fp32|bf16|fp16 explicitly; a
    torch dtype (one already resolved, e.g. by a verb's options) is returned as is."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; valid: auto, {', '.join(DTYPES)}")
    dt = DTYPES[dtype]
    if dt is torch.float32:
        return dt
    if device.type == "cuda" and dt is torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype bf16 requested but {torch.cuda.get_device_name(device)} does not support bfloat16; use fp16 or fp32")
    if device.type == "cpu":
        try:  # probe: some torch builds lack CPU autocast for this dtype
            with torch.no_grad(), torch.autocast("cpu", dtype=dt):
                torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1))
        except Exception as e:  # noqa: BLE001 - any failure means the dtype is unusable here
            raise ConfigError(f"dtype {dtype} autocast is not supported on CPU by torch {torch.__version__} ({e}); use fp32 or bf16") from e
    return dt


def dtype_name(dt: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dt]


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on ``device`` (MiB), or the process's peak resident set size on CPU (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def window_positions(length: int, window: int, overlap: float) -> list[int]:
    """Start offsets of windows of size ``window`` covering [0, length) with at least ``overlap`` fractional overlap."""
    if length <= window:
        return [0]
    stride = max(1, int(window * (1.0 - overlap)))
    n = math.ceil((length - window) / stride) + 1
    return [int(round(v)) for v in np.linspace(0, length - window, n)]


def window_weights(h: int, w: int, kind: str = "gaussian") -> torch.Tensor:
    """(h, w) float32 blending weights: 'uniform' ones or a separable Gaussian (sigma = size/4), min 1e-3."""
    if kind == "uniform":
        return torch.ones(h, w)
    if kind != "gaussian":
        raise ConfigError(f"unknown window weighting {kind!r}; valid: gaussian, uniform")

    def g(n: int) -> torch.Tensor:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        return torch.exp(-0.5 * (x / (n / 4)) ** 2)

    return (g(h)[:, None] * g(w)[None, :]).clamp_min(1e-3)


class ShardSampler(Sampler[int]):
    """Splits indices 0..n-1 over ranks exactly (rank r gets r, r+W, r+2W, ...): no padding, no duplicates,
    so metrics reduced over ranks equal the single-process ones."""

    def __init__(self, n: int, rank: int, world_size: int):
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def collate_samples(samples: list[Sample]) -> list[tuple[list[Sample], torch.Tensor]]:
    """Group a batch of Samples by image size: list of (samples, images uint8 (b,H,W,3)) groups.

    Same-size batches give one group; mixed sizes fall back to groups of one frame.
    """
    sizes = {s.image.shape for s in samples}
    if len(sizes) == 1:
        return [(list(samples), torch.from_numpy(np.stack([np.ascontiguousarray(s.image) for s in samples])))]
    return [([s], torch.from_numpy(np.ascontiguousarray(s.image))[None]) for s in samples]


# ----------------------------------------------------------------------------------------------- engine


def _linear_taps(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source taps of 1-D linear resizing n_in -> n_out as ``F.interpolate(align_corners=False)`` computes
    them: (i0 (n_out,) int64, i1 (n_out,) int64, lam (n_out,) float32); out[k] = (1-lam) x[i0] + lam x[i1]."""
    scale = torch.tensor(n_in / n_out, dtype=torch.float32)
    src = (scale * (torch.arange(n_out, dtype=torch.float32) + 0.5) - 0.5).clamp_min(0.0)
    i0 = src.long().clamp_max(n_in - 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    lam = src - i0.float()
    return i0.to(device), i1.to(device), lam.to(device)


def _resize_map(m: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B,h,w) float -> (B,H,W) float32 by bilinear interpolation (no-op when already that size)."""
    if tuple(m.shape[-2:]) == tuple(hw):
        return m.float()
    return F.interpolate(m[:, None].float(), size=hw, mode="bilinear", align_corners=False)[:, 0]
