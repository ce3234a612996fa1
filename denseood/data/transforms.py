"""Augmentations (albumentations 2): random scale-crop / flip / colour jitter for training, resize for evaluation.

Masks (train ids, ood masks) are always resampled nearest-neighbour and padded with 255 (ignore).
Determinism: pass ``seed`` to a call (e.g. derived from (epoch, sample index)) and the result depends only on the
inputs and that seed -- independent of DataLoader workers and of what was drawn before, so a resumed run
reproduces the same augmented data. Without a per-call seed the transform draws from its own generator, seeded
once by ``train_transform(..., seed=...)``. Sizes are parsed by :func:`denseood.config.parse_hw`.

See docs/architecture.md.
"""
from __future__ import annotations

import albumentations as A
import cv2
import numpy as np

from ..config import parse_hw
from ..errors import ConfigError
from .sample import IGNORE


def _check_inputs(image: np.ndarray, mask: np.ndarray | None) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"transform expects an (H,W,3) uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    if mask is not None:
        if mask.dtype != np.uint8 or mask.shape[:2] != image.shape[:2] or mask.ndim not in (2, 3):
            raise ConfigError(f"transform expects an (H,W) or (H,W,K) uint8 mask of the image size {image.shape[:2]}, "
                              f"got shape {mask.shape} dtype {mask.dtype}")


class AlbuTransform:
    """Callable ``t(image uint8 (H,W,3), mask uint8 (H,W)|(H,W,K)|None, seed=None) -> (image, mask)``."""

    def __init__(self, compose: A.Compose) -> None:
        self.compose = compose

    def set_seed(self, seed: int | None) -> None:
        """Reseed the transform's own generator (albumentations ``Compose.set_random_seed``)."""
        self.compose.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None, seed: int | None = None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        _check_inputs(image, mask)
        if seed is not None:
            self.compose.set_random_seed(int(seed))
        out = self.compose(image=image, mask=mask) if mask is not None else self.compose(image=image)
        img = np.ascontiguousarray(out["image"])
        m = np.ascontiguousarray(out["mask"]).astype(np.uint8, copy=False) if mask is not None else None
        return img, m

    def __repr__(self) -> str:
        return f"AlbuTransform({self.compose.transforms!r})"


def train_transform(crop: int | tuple[int, int] | str, scale: tuple[float, float] = (0.5, 2.0), hflip: bool = True,
                    color_jitter: bool = True, seed: int | None = None) -> AlbuTransform:
    """Random scale (uniform in ``scale``), pad to ``crop`` (image 0, mask 255) when smaller, random crop of
    ``crop`` ((h, w) or square int), horizontal flip (p=0.5), colour jitter (brightness/contrast/saturation 0.3,
    hue 0.05, p=0.8). Image bilinear, mask nearest. Output image (crop_h, crop_w, 3) uint8, mask (crop_h, crop_w)."""
    if crop is None:
        raise ConfigError("crop must be an int, (height, width) or 'HxW', got None")
    h, w = parse_hw(crop, "crop")
    lo, hi = (float(s) for s in scale)
    if not 0 < lo <= hi:
        raise ConfigError(f"scale range must satisfy 0 < low <= high, got {scale!r}")
    ops: list = [
        # albumentations' scale_limit is relative to 1: (lo-1, hi-1) samples a scale factor in [lo, hi]
        A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=h, min_width=w, position="center", border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=IGNORE, p=1.0),
        A.RandomCrop(height=h, width=w, p=1.0),
    ]
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if color_jitter:
        ops.append(A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.05, p=0.8))
    return AlbuTransform(A.Compose(ops, seed=seed))


def eval_transform(size: int | tuple[int, int] | str | None) -> AlbuTransform:
    """Resize to ``size`` = (h, w) (image bilinear, mask nearest); None = identity."""
    if size is None:
        return AlbuTransform(A.Compose([A.NoOp(p=1.0)]))
    h, w = parse_hw(size, "size")
    return AlbuTransform(A.Compose([A.Resize(height=h, width=w, interpolation=cv2.INTER_LINEAR,
                                             mask_interpolation=cv2.INTER_NEAREST, p=1.0)]))
