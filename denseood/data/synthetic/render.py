"""Drawing primitives of the synthetic road world: the class ids, colour helpers, the pinhole camera over a flat
ground plane (:class:`_Cam`, metres -> pixels) and the canvas that draws an RGB image and its train-id map with
identical geometry (:class:`_Canvas`). No randomness is drawn here except through the ``rng`` passed in.

See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..classes import CITYSCAPES_CLASSES

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TLIGHT, TSIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS,
 TRAIN, MOTORCYCLE, BICYCLE) = range(19)
assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[TRAIN] == "train" and CITYSCAPES_CLASSES[SKY] == "sky"

_SHIFT = 3  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT

# colour palettes of the inlier objects (RGB)
_CAR_COLOURS = np.array([[235, 235, 235], [190, 192, 196], [120, 122, 128], [30, 30, 34], [25, 40, 90],
                         [140, 20, 20], [20, 60, 35], [200, 185, 150], [70, 90, 120], [90, 60, 40]], np.float32)
_CLOTH_COLOURS = np.array([[30, 30, 35], [60, 60, 70], [20, 30, 70], [110, 20, 25], [180, 180, 175], [90, 75, 60],
                           [40, 60, 40], [150, 120, 90], [200, 200, 205], [70, 40, 80]], np.float32)
_SKIN = np.array([[240, 200, 170], [210, 160, 120], [160, 110, 75], [100, 65, 45]], np.float32)


def _col(rng: np.random.Generator, base, jitter: float = 12.0) -> tuple[int, int, int]:
    """RGB tuple of ints near ``base`` (3 floats), jittered by ``jitter`` per channel."""
    c = np.asarray(base, np.float32) + rng.uniform(-jitter, jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _pick(rng: np.random.Generator, table: np.ndarray, jitter: float = 12.0) -> tuple[int, int, int]:
    return _col(rng, table[rng.integers(len(table))], jitter)


def _shade(c: tuple[int, int, int], k: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * k))) for v in c)


@dataclass
class _Cam:
    """Pinhole camera over a flat ground plane (metres -> pixels)."""

    H: int
    W: int
    f: float   # focal length, pixels
    yh: float  # horizon row
    xv: float  # vanishing point column
    ch: float  # camera height, metres

    def x(self, X, Z):
        return self.xv + self.f * np.asarray(X, np.float64) / Z

    def y(self, Z, h=0.0):
        return self.yh + self.f * (self.ch - np.asarray(h, np.float64)) / Z

    def s(self, Z) -> float:
        return self.f / Z

    @property
    def z_bottom(self) -> float:
        """Depth of the ground seen at the bottom image row."""
        return self.f * self.ch / (self.H - self.yh)


class _Canvas:
    """An RGB image and its train-id map drawn together with identical geometry (painter's order)."""

    def __init__(self, H: int, W: int):
        self.img = np.zeros((H, W, 3), np.uint8)
        self.sem = np.full((H, W), SKY, np.uint8)

    @staticmethod
    def _pts(pts) -> list[np.ndarray]:
        arr = np.asarray(pts, np.float64)
        if arr.ndim == 2:
            arr = arr[None]
        return list(np.round(np.clip(arr, -1e6, 1e6) * _ONE).astype(np.int32))

    def poly(self, pts, color, cls: int | None) -> None:
        """Fill polygon(s): pts (N,2) or (K,N,2) float pixel coords."""
        p = self._pts(pts)
        if not p:
            return
        cv2.fillPoly(self.img, p, color, cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.fillPoly(self.sem, p, int(cls), cv2.LINE_8, _SHIFT)

    def rect(self, x0, y0, x1, y1, color, cls: int | None) -> None:
        self.poly([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], color, cls)

    def circle(self, cx, cy, r, color, cls: int | None, thickness: float = -1) -> None:
        c = (int(round(cx * _ONE)), int(round(cy * _ONE)))
        r = int(round(max(r, 0.5) * _ONE))
        t = -1 if thickness < 0 else max(1, int(round(thickness)))
        cv2.circle(self.img, c, r, color, t, cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.circle(self.sem, c, r, int(cls), t, cv2.LINE_8, _SHIFT)

    def line(self, x0, y0, x1, y1, color, cls: int | None, thickness: float = 1) -> None:
        a = (int(round(x0 * _ONE)), int(round(y0 * _ONE)))
        b = (int(round(x1 * _ONE)), int(round(y1 * _ONE)))
        t = max(1, int(round(thickness)))
        cv2.line(self.img, a, b, color, t, cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.line(self.sem, a, b, int(cls), t, cv2.LINE_8, _SHIFT)


def _value_noise(rng: np.random.Generator, H: int, W: int, cell: int, interp: int = cv2.INTER_LINEAR) -> np.ndarray:
    """(H,W) float32 smooth noise in [-0.5, 0.5] with features about ``cell`` pixels wide."""
    h, w = max(2, H // cell + 2), max(2, W // cell + 2)
    return cv2.resize(rng.random((h, w), dtype=np.float32) - 0.5, (W, H), interpolation=interp)

