"""Synthetic road world: a deterministic procedural generator of perspective road scenes (the embedded default).

``generate(rng, size, anomalies)`` draws one scene with Cityscapes train ids (all 19 classes across a split),
optionally with anomalies (irregular polygons, ellipses, blobs, stripes/checkerboards and crops of the natural
photographs that ship inside scikit-image) and void regions. ``write(root, n_train, n_val, seed, size)`` writes a
Cityscapes-layout training split (no anomalies) and an SMIYC AnomalyTrack-layout evaluation split so the official
readers run on it unchanged. Every image is derived from ``(seed, split, index)`` only (``image_rng``).

Geometry: a pinhole camera at height ``ch`` metres looks along a straight road; a ground point at lateral ``X`` and
depth ``Z`` projects to ``x = xv + f X / Z``, ``y = yh + f (ch - h) / Z`` (``h`` = height above ground), so every
object is drawn at a perspective-consistent scale ``f / Z`` pixels per metre, far to near (painter's order).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import ConfigError, DenseOODError
from ..io import atomic_write_json, write_png
from .classes import CITYSCAPES_CLASSES, CITYSCAPES_LABELID_TO_TRAINID

GENERATOR_VERSION = "1"

#: spawn-key component of each split (image i of split s uses SeedSequence(seed, spawn_key=(SPLIT_KEYS[s], i)))
SPLIT_KEYS: dict[str, int] = {"train": 0, "val": 1}

#: sample photographs of scikit-image used for photo-crop anomalies (none shows road-scene classes)
PHOTO_FILES: tuple[str, ...] = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "coins.png", "camera.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "moon.png", "color.png",
)

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, TLIGHT, TSIGN, VEG, TERRAIN, SKY, PERSON, RIDER, CAR, TRUCK, BUS,
 TRAIN, MOTORCYCLE, BICYCLE) = range(19)
assert len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[TRAIN] == "train" and CITYSCAPES_CLASSES[SKY] == "sky"

_SHIFT = 3  # sub-pixel bits for OpenCV drawing
_ONE = 1 << _SHIFT

# per-class luminance texture amplitudes (fine value noise, coarse value noise, per-pixel grain); index 255 = void/anomaly
_AMP = np.zeros((3, 256), np.float32)
for _c, (_f, _k, _g) in {
    ROAD: (0.05, 0.10, 0.10), SIDEWALK: (0.06, 0.06, 0.08), BUILDING: (0.05, 0.12, 0.06), WALL: (0.10, 0.10, 0.10),
    FENCE: (0.04, 0.04, 0.05), POLE: (0.02, 0.03, 0.03), TLIGHT: (0.02, 0.02, 0.03), TSIGN: (0.02, 0.02, 0.03),
    VEG: (0.35, 0.25, 0.45), TERRAIN: (0.20, 0.20, 0.25), SKY: (0.0, 0.03, 0.01), PERSON: (0.05, 0.05, 0.05),
    RIDER: (0.05, 0.05, 0.05), CAR: (0.02, 0.06, 0.02), TRUCK: (0.03, 0.06, 0.03), BUS: (0.02, 0.05, 0.02),
    TRAIN: (0.02, 0.05, 0.02), MOTORCYCLE: (0.03, 0.04, 0.03), BICYCLE: (0.03, 0.03, 0.03), 255: (0.02, 0.03, 0.02),
}.items():
    _AMP[:, _c] = (_f, _k, _g)

_CAR_COLOURS = np.array([[235, 235, 235], [190, 192, 196], [120, 122, 128], [30, 30, 34], [25, 40, 90],
                         [140, 20, 20], [20, 60, 35], [200, 185, 150], [70, 90, 120], [90, 60, 40]], np.float32)
_CLOTH_COLOURS = np.array([[30, 30, 35], [60, 60, 70], [20, 30, 70], [110, 20, 25], [180, 180, 175], [90, 75, 60],
                           [40, 60, 40], [150, 120, 90], [200, 200, 205], [70, 40, 80]], np.float32)
_SKIN = np.array([[240, 200, 170], [210, 160, 120], [160, 110, 75], [100, 65, 45]], np.float32)
# anomaly colours: saturated hues that no inlier class uses
_NEON = np.array([[255, 0, 200], [0, 255, 255], [120, 255, 0], [255, 120, 0], [160, 0, 255], [255, 255, 0],
                  [255, 0, 60], [0, 120, 255], [255, 80, 255], [0, 255, 140]], np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------------
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


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[tuple[str, np.ndarray], ...]:
    """Natural photographs shipped inside scikit-image, as (name, (h,w,3) uint8 RGB); loaded once per process."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DenseOODError("the synthetic world needs scikit-image (its sample photographs make anomaly textures); "
                            "install it with `pip install scikit-image`")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    out = []
    for name in PHOTO_FILES:
        p = folder / name
        if not p.is_file():
            continue
        im = cv2.imdecode(np.fromfile(str(p), np.uint8), cv2.IMREAD_COLOR)
        if im is None or min(im.shape[:2]) < 64:
            continue
        im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
        im.setflags(write=False)
        out.append((name, im))
    if len(out) < 3:
        raise DenseOODError(f"found only {len(out)} of the scikit-image sample photographs {PHOTO_FILES} in {folder}; "
                            "reinstall scikit-image (`pip install --force-reinstall scikit-image`)")
    return tuple(out)


def photo_names() -> list[str]:
    """Names of the scikit-image sample photographs used for photo-crop anomalies in this installation."""
    return [n for n, _ in _photos()]


# ----------------------------------------------------------------------------------------------------------------------
# scene layout
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class _Layout:
    lane_w: float
    X_l: float       # road left edge (metres, camera at X = 0)
    X_r: float       # road right edge
    sw_l: float      # sidewalk widths
    sw_r: float
    tw_l: float      # terrain strip widths (beyond the sidewalk)
    tw_r: float
    z_end: float     # depth of the far cross block / end of the street
    two_way: bool


def _draw_sky(cv: _Canvas, cam: _Cam, rng: np.random.Generator) -> None:
    H, W = cam.H, cam.W
    kind = rng.integers(3)  # clear, hazy, overcast
    top = [(60, 110, 200), (140, 170, 210), (150, 155, 165)][kind]
    hor = [(185, 210, 235), (215, 220, 225), (200, 200, 205)][kind]
    top = np.array(_col(rng, top, 15), np.float32)
    hor = np.array(_col(rng, hor, 10), np.float32)
    t = np.clip(np.arange(H, dtype=np.float32) / max(cam.yh, 1.0), 0, 1)[:, None] ** 0.8
    grad = top[None] * (1 - t) + hor[None] * t                                   # (H,3)
    cv.img[:] = grad.astype(np.uint8)[:, None, :]
    if rng.random() < 0.55:  # clouds: soft thresholded value noise above the horizon
        hs = int(max(2, min(H, cam.yh + 2)))
        n = _value_noise(rng, hs, W, max(8, W // 10), cv2.INTER_CUBIC) + 0.5 * _value_noise(rng, hs, W, max(4, W // 40))
        thr = rng.uniform(0.0, 0.25)
        a = np.clip((n - thr) * 4.0, 0, 1)[..., None] * rng.uniform(0.5, 0.9)
        cloud = np.array(_col(rng, (238, 238, 242), 10), np.float32)
        reg = cv.img[:hs].astype(np.float32)
        cv.img[:hs] = (reg * (1 - a) + cloud * a).astype(np.uint8)


def _ground_quad(cam: _Cam, Xa: float, Xb: float, Za: float, Zb: float) -> np.ndarray:
    return np.stack([cam.x([Xa, Xb, Xb, Xa], np.array([Za, Za, Zb, Zb])),
                     cam.y(np.array([Za, Za, Zb, Zb]))], -1)


def _draw_ground(cv: _Canvas, cam: _Cam, L: _Layout, rng: np.random.Generator, tram_X: float | None) -> None:
    H, W = cam.H, cam.W
    zn, zf = cam.z_bottom * 0.5, 2000.0
    terr = _col(rng, (110, 120, 70) if rng.random() < 0.6 else (140, 125, 95), 15)
    cv.rect(-10, cam.yh - 0.5, W + 10, H + 10, terr, TERRAIN)
    sidew = _col(rng, (170, 165, 160), 15)
    curb = _shade(sidew, 1.18)
    for Xo, Xi, tw in ((L.X_l - L.sw_l, L.X_l, L.tw_l), (L.X_r, L.X_r + L.sw_r, L.tw_r)):
        cv.poly(_ground_quad(cam, Xo, Xi, zn, zf), sidew, SIDEWALK)
    # paving joints across the sidewalks
    step = rng.uniform(1.5, 3.0)
    zs = np.arange(np.ceil(cam.z_bottom / step) * step, min(L.z_end, 60.0), step)
    for Xo, Xi in ((L.X_l - L.sw_l, L.X_l), (L.X_r, L.X_r + L.sw_r)):
        for z in zs:
            cv.line(cam.x(Xo, z), cam.y(z), cam.x(Xi, z), cam.y(z), _shade(sidew, 0.85), SIDEWALK, max(1, cam.s(z) * 0.03))
    # curbs
    cw = 0.18
    cv.poly(_ground_quad(cam, L.X_l - cw, L.X_l, zn, zf), curb, SIDEWALK)
    cv.poly(_ground_quad(cam, L.X_r, L.X_r + cw, zn, zf), curb, SIDEWALK)
    # road
    asphalt = _col(rng, (rng.uniform(70, 115),) * 3, 6)
    cv.poly(_ground_quad(cam, L.X_l, L.X_r, zn, zf), asphalt, ROAD)
    for _ in range(rng.integers(0, 4)):  # asphalt repair patches
        za = rng.uniform(cam.z_bottom, 40)
        xa = rng.uniform(L.X_l, L.X_r - 1)
        cv.poly(_ground_quad(cam, xa, xa + rng.uniform(0.8, 3), za, za + rng.uniform(1, 6)), _shade(asphalt, rng.uniform(0.8, 1.15)), ROAD)
    if tram_X is not None:  # tram rails (class road)
        rail = _col(rng, (150, 150, 155), 8)
        for X in (tram_X - 0.72, tram_X + 0.72):
            cv.poly(_ground_quad(cam, X - 0.04, X + 0.04, zn, zf), rail, ROAD)
    # lane marks: dashed between lanes, solid centre line on two-way roads, solid edge lines sometimes
    mark = _col(rng, (235, 235, 225) if rng.random() < 0.8 else (230, 200, 60), 10)
    n_lanes = int(round((L.X_r - L.X_l) / L.lane_w))
    dash, gap = rng.uniform(2.5, 4.0), rng.uniform(4.0, 8.0)
    phase = rng.uniform(0, dash + gap)
    starts = np.arange(cam.z_bottom * 0.5 - phase, 300.0, dash + gap)
    for i in range(1, n_lanes):
        X = L.X_l + i * L.lane_w
        if L.two_way and abs(X) < L.lane_w * 0.5 + 1e-6 and X <= 0:
            cv.poly(_ground_quad(cam, X - 0.08, X + 0.08, zn, zf), mark, ROAD)
            continue
        quads = np.stack([_ground_quad(cam, X - 0.07, X + 0.07, max(z, 0.3), z + dash) for z in starts if z + dash > 0.3])
        cv.poly(quads, mark, ROAD)
    if rng.random() < 0.5:
        cv.poly(_ground_quad(cam, L.X_l + 0.2, L.X_l + 0.32, zn, zf), mark, ROAD)
        cv.poly(_ground_quad(cam, L.X_r - 0.32, L.X_r - 0.2, zn, zf), mark, ROAD)
    if rng.random() < 0.35:  # zebra crossing
        zc = rng.uniform(max(cam.z_bottom * 1.3, 8), 35)
        xs = np.arange(L.X_l + 0.3, L.X_r - 0.5, 1.0)
        cv.poly(np.stack([_ground_quad(cam, x, x + 0.5, zc, zc + 3.5) for x in xs]), mark, ROAD)


def _facade_windows(cam: _Cam, X: float, Z0: float, Z1: float, h0: float, h1: float, rng) -> np.ndarray:
    """(N,4,2) window quads on the vertical plane at lateral X between depths Z0..Z1 and heights h0..h1."""
    ww, wh = rng.uniform(0.9, 1.8), rng.uniform(1.1, 1.8)
    pitch_z, pitch_h = ww + rng.uniform(0.8, 2.0), rng.uniform(2.8, 3.5)
    za = np.arange(Z0 + 0.6, Z1 - ww, pitch_z)
    hb = np.arange(h0 + rng.uniform(0.8, 1.5), h1 - wh - 0.4, pitch_h)
    if za.size == 0 or hb.size == 0:
        return np.zeros((0, 4, 2))
    ZA, HB = np.meshgrid(za, hb)
    ZA, HB = ZA.ravel(), HB.ravel()
    ZB, HT = ZA + ww, HB + wh
    zz = np.stack([ZA, ZB, ZB, ZA], 1)
    hh = np.stack([HB, HB, HT, HT], 1)
    return np.stack([cam.x(X, zz), cam.y(zz, hh)], -1)


def _front_windows(cam: _Cam, Xa: float, Xb: float, Z: float, h1: float, rng) -> np.ndarray:
    """(N,4,2) window quads on a frontal plane at depth Z between lateral Xa<Xb."""
    ww, wh = rng.uniform(0.9, 1.6), rng.uniform(1.1, 1.7)
    xs = np.arange(Xa + 0.6, Xb - ww, ww + rng.uniform(0.8, 1.8))
    hs = np.arange(rng.uniform(1.0, 1.6), h1 - wh - 0.4, rng.uniform(2.8, 3.4))
    if xs.size == 0 or hs.size == 0:
        return np.zeros((0, 4, 2))
    XA, HB = (a.ravel() for a in np.meshgrid(xs, hs))
    XX = np.stack([XA, XA + ww, XA + ww, XA], 1)
    HH = np.stack([HB, HB, HB + wh, HB + wh], 1)
    return np.stack([cam.x(XX, Z), cam.y(Z, HH)], -1)


def _wall_colour(rng):
    return _col(rng, [(200, 190, 170), (170, 110, 90), (210, 200, 185), (150, 150, 150), (225, 215, 190),
                      (120, 100, 90), (190, 160, 120)][rng.integers(7)], 15)


def _draw_vegetation_mass(cv: _Canvas, cam: _Cam, X: float, Z0: float, Z1: float, h: float, rng) -> None:
    n = max(3, int((Z1 - Z0) / 1.5))
    zs = np.linspace(Z0, Z1, n)
    hs = np.clip(h + rng.normal(0, h * 0.18, n), 0.8, None)
    top = np.stack([cam.x(X, zs), cam.y(zs, hs)], -1)
    bottom = np.stack([cam.x(X, zs[::-1]), cam.y(zs[::-1])], -1)
    cv.poly(np.concatenate([top, bottom]), _col(rng, (60, 95, 40), 18), VEG)


def _draw_side(cv: _Canvas, cam: _Cam, L: _Layout, rng: np.random.Generator, side: int) -> None:
    """Facade line of one side (side=-1 left, +1 right): buildings, walls, fences, hedges, far to near."""
    Xs = (L.X_l - L.sw_l - L.tw_l) if side < 0 else (L.X_r + L.sw_r + L.tw_r)
    segs = []
    z = cam.z_bottom * 0.4
    while z < L.z_end:
        length = rng.uniform(8, 30)
        kind = rng.choice(["building", "building", "building", "wall", "fence", "veg", "gap"],
                          p=[0.22, 0.2, 0.13, 0.13, 0.13, 0.12, 0.07])
        segs.append((z, min(z + length, L.z_end), str(kind)))
        z += length
    for Z0, Z1, kind in reversed(segs):
        if kind == "building":
            setback = rng.uniform(0, 2.5)
            X = Xs + side * setback
            h = rng.uniform(6, 32)
            colour = _wall_colour(rng)
            dark = _shade(colour, 0.75)
            # frontal face at Z0 extends away from the road
            Xo = X + side * 40
            cv.poly(np.stack([cam.x([X, Xo, Xo, X], Z0), cam.y(Z0, [0, 0, h, h])], -1), dark, BUILDING)
            face = np.stack([cam.x(X, np.array([Z0, Z1, Z1, Z0])), cam.y(np.array([Z0, Z1, Z1, Z0]), [0, 0, h, h])], -1)
            cv.poly(face, colour, BUILDING)
            win = _col(rng, [(40, 50, 65), (70, 90, 110), (30, 30, 35), (150, 170, 190)][rng.integers(4)], 10)
            wq = _facade_windows(cam, X, Z0, Z1, 0.0, h, rng)
            if len(wq):
                cv.poly(wq, win, BUILDING)
            fq = _front_windows(cam, min(X, Xo), max(X, Xo), Z0, h, rng)
            if len(fq):
                cv.poly(fq, _shade(win, 0.85), BUILDING)
            if rng.random() < 0.4:  # storefront band
                cv.poly(np.stack([cam.x(X, np.array([Z0, Z1, Z1, Z0])), cam.y(np.array([Z0, Z1, Z1, Z0]), [0, 0, 3.2, 3.2])], -1),
                        _pick(rng, _CLOTH_COLOURS, 20), BUILDING)
        elif kind in ("wall", "fence"):
            if rng.random() < 0.6:
                _draw_vegetation_mass(cv, cam, Xs + side * rng.uniform(2, 6), Z0, Z1, rng.uniform(3, 9), rng)
            else:
                Xb = Xs + side * rng.uniform(4, 10)
                h = rng.uniform(6, 20)
                zz = np.array([Z0, Z1, Z1, Z0])
                cv.poly(np.stack([cam.x(Xb, zz), cam.y(zz, [0, 0, h, h])], -1), _wall_colour(rng), BUILDING)
            h = rng.uniform(1.0, 2.6)
            zz = np.array([Z0, Z1, Z1, Z0])
            quad = np.stack([cam.x(Xs, zz), cam.y(zz, [0, 0, h, h])], -1)
            if kind == "wall":
                cv.poly(quad, _col(rng, [(165, 160, 150), (140, 120, 105), (190, 185, 170)][rng.integers(3)], 12), WALL)
            else:  # fence: label covers the whole fence plane, image shows posts, rails and a mesh
                fc = _col(rng, [(90, 95, 90), (120, 90, 60), (60, 70, 60), (170, 170, 165)][rng.integers(4)], 10)
                pts = np.round(quad * _ONE).astype(np.int32)
                cv2.fillPoly(cv.sem, [pts], FENCE, cv2.LINE_8, _SHIFT)
                for zp in np.arange(Z0, Z1, rng.uniform(1.5, 3.0)):
                    s = cam.s(zp)
                    cv.line(cam.x(Xs, zp), cam.y(zp), cam.x(Xs, zp), cam.y(zp, h), fc, FENCE, max(1, 0.08 * s))
                for hr in np.linspace(0.1, h, rng.integers(2, 5)):
                    cv.line(cam.x(Xs, Z0), cam.y(Z0, hr), cam.x(Xs, Z1), cam.y(Z1, hr), fc, FENCE, max(1, 0.05 * cam.s(Z0)))
                for zp in np.arange(Z0, Z1, 0.35):  # mesh (fine vertical wires)
                    cv.line(cam.x(Xs, zp), cam.y(zp), cam.x(Xs, zp), cam.y(zp, h), _shade(fc, 1.1), FENCE, 1)
        elif kind == "veg":
            _draw_vegetation_mass(cv, cam, Xs + side * rng.uniform(0, 3), Z0, Z1, rng.uniform(1.2, 10), rng)


def _draw_end(cv: _Canvas, cam: _Cam, L: _Layout, rng: np.random.Generator) -> None:
    """Far end of the street: a row of frontal buildings, or a distant tree line."""
    Z = L.z_end
    if rng.random() < 0.65:
        X = -80.0
        while X < 80:
            w = rng.uniform(8, 25)
            h = rng.uniform(8, 35)
            cv.poly(np.stack([cam.x([X, X + w, X + w, X], Z), cam.y(Z, [0, 0, h, h])], -1), _wall_colour(rng), BUILDING)
            wq = _front_windows(cam, X, X + w, Z, h, rng)
            if len(wq):
                cv.poly(wq, _col(rng, (50, 60, 75), 10), BUILDING)
            X += w
    else:
        xs = np.linspace(-150, 150, 60)
        hs = np.clip(rng.uniform(4, 12) + rng.normal(0, 2.5, xs.size), 1, None)
        top = np.stack([cam.x(xs, Z), cam.y(Z, hs)], -1)
        bottom = np.stack([cam.x(xs[::-1], Z), cam.y(Z, np.zeros(xs.size))], -1)
        cv.poly(np.concatenate([top, bottom]), _col(rng, (70, 100, 55), 15), VEG)


# ----------------------------------------------------------------------------------------------------------------------
# objects (drawn far to near)
# ----------------------------------------------------------------------------------------------------------------------
def _draw_vehicle(cv: _Canvas, cam: _Cam, X: float, Z: float, kind: int, front: bool, rng) -> None:
    """Box vehicle seen from behind (or front when ``front``) with its camera-facing side; kind in CAR/TRUCK/BUS/TRAIN."""
    w, h, length = {CAR: (1.8, 1.5, 4.4), TRUCK: (2.5, 3.6, 9.0), BUS: (2.55, 3.1, 12.0), TRAIN: (2.65, 3.5, 25.0)}[kind]
    w *= rng.uniform(0.93, 1.07)
    h *= rng.uniform(0.92, 1.08)
    if kind == CAR:
        colour = _pick(rng, _CAR_COLOURS, 10)
    elif kind == TRAIN:
        colour = _col(rng, [(230, 230, 225), (200, 30, 35), (240, 200, 40), (40, 110, 60), (60, 110, 180)][rng.integers(5)], 10)
    else:
        colour = _col(rng, [(235, 235, 235), (200, 40, 30), (40, 80, 160), (240, 190, 40), (60, 130, 60), (150, 150, 155)][rng.integers(6)], 12)
    glass = _col(rng, (35, 45, 55), 8)
    tyre = (20, 20, 22)
    s = cam.s(Z)
    cx, yg = float(cam.x(X, Z)), float(cam.y(Z))
    side_dark = _shade(colour, 0.8)
    # the long side facing the camera
    Xs = X - w / 2 if X > w / 2 else (X + w / 2 if X < -w / 2 else None)
    if Xs is not None:
        zz = np.array([Z, Z + length, Z + length, Z])
        hb = 0.25 if kind == CAR else 0.35
        htop = h * (0.68 if kind == CAR else 1.0)
        cv.poly(np.stack([cam.x(Xs, zz), cam.y(zz, [hb, hb, htop, htop])], -1), side_dark, kind)
        if kind == CAR:
            z2 = np.array([Z + 0.25 * length, Z + 0.78 * length, Z + 0.7 * length, Z + 0.35 * length])
            cv.poly(np.stack([cam.x(Xs, z2), cam.y(z2, [htop, htop, h, h])], -1), glass, CAR)
        else:
            z2 = np.array([Z + 0.8, Z + length - 0.5, Z + length - 0.5, Z + 0.8])
            cv.poly(np.stack([cam.x(Xs, z2), cam.y(z2, [h * 0.55, h * 0.55, h * 0.85, h * 0.85])], -1),
                    glass if kind != TRUCK else _shade(colour, 0.7), kind)
        for zw in ((Z + 0.8, Z + length - 0.9) if kind != TRAIN else (Z + 2.5, Z + 4.5, Z + length - 4.5)):
            r = 0.33 * cam.s(zw) if kind == CAR else 0.5 * cam.s(zw)
            cv.circle(float(cam.x(Xs, zw)), float(cam.y(zw, r / cam.s(zw))), r, tyre, kind)
    # face
    x0, x1 = cx - w * s / 2, cx + w * s / 2
    if kind == CAR:
        cv.rect(x0 + 0.05 * s, yg - 0.35 * s, x0 + 0.35 * s, yg, tyre, CAR)
        cv.rect(x1 - 0.35 * s, yg - 0.35 * s, x1 - 0.05 * s, yg, tyre, CAR)
        cv.rect(x0, yg - 1.0 * h * 0.7 * s, x1, yg - 0.25 * s, colour, CAR)
        ytop, ymid = yg - h * s, yg - h * 0.68 * s
        cv.poly([[x0 + 0.05 * w * s, ymid], [x1 - 0.05 * w * s, ymid], [x1 - 0.16 * w * s, ytop], [x0 + 0.16 * w * s, ytop]], colour, CAR)
        cv.poly([[x0 + 0.12 * w * s, ymid - 0.03 * s], [x1 - 0.12 * w * s, ymid - 0.03 * s],
                 [x1 - 0.2 * w * s, ytop + 0.06 * s], [x0 + 0.2 * w * s, ytop + 0.06 * s]], glass, CAR)
        lamp = (255, 245, 220) if front else (200, 20, 20)
        ly = yg - 0.75 * s
        cv.rect(x0 + 0.04 * s, ly, x0 + 0.3 * s, ly + 0.12 * s, lamp, CAR)
        cv.rect(x1 - 0.3 * s, ly, x1 - 0.04 * s, ly + 0.12 * s, lamp, CAR)
        cv.rect(cx - 0.26 * s, yg - 0.5 * s, cx + 0.26 * s, yg - 0.38 * s, (235, 235, 235), CAR)
        return
    cv.rect(x0 + 0.1 * s, yg - 0.55 * s, x0 + 0.5 * s, yg, tyre, kind)
    cv.rect(x1 - 0.5 * s, yg - 0.55 * s, x1 - 0.1 * s, yg, tyre, kind)
    cv.rect(x0, yg - h * s, x1, yg - 0.35 * s, colour, kind)
    if kind == TRUCK:
        if front:
            cv.rect(x0 + 0.15 * s, yg - h * 0.85 * s, x1 - 0.15 * s, yg - h * 0.55 * s, glass, TRUCK)
        else:  # cargo doors
            cv.line(cx, yg - h * s, cx, yg - 0.4 * s, _shade(colour, 0.6), TRUCK, max(1, 0.04 * s))
            for xx in (x0 + 0.1 * s, x1 - 0.1 * s):
                cv.line(xx, yg - h * s, xx, yg - 0.4 * s, _shade(colour, 0.7), TRUCK, max(1, 0.05 * s))
    else:
        wy0 = yg - h * (0.92 if front else 0.85) * s
        wy1 = yg - h * (0.5 if front else 0.62) * s
        cv.rect(x0 + 0.12 * s, wy0, x1 - 0.12 * s, wy1, glass, kind)
        if front:
            cv.rect(x0 + 0.3 * s, yg - h * 0.98 * s, x1 - 0.3 * s, yg - h * 0.92 * s, (255, 150, 20), kind)
    lamp = (255, 245, 220) if front else (200, 20, 20)
    cv.rect(x0 + 0.08 * s, yg - 0.8 * s, x0 + 0.35 * s, yg - 0.6 * s, lamp, kind)
    cv.rect(x1 - 0.35 * s, yg - 0.8 * s, x1 - 0.08 * s, yg - 0.6 * s, lamp, kind)
    if kind == TRAIN:  # pantograph
        pc = (50, 50, 50)
        top = yg - h * s
        cv.line(cx - 0.5 * s, top, cx, top - 0.7 * s, pc, TRAIN, max(1, 0.05 * s))
        cv.line(cx + 0.5 * s, top, cx, top - 0.7 * s, pc, TRAIN, max(1, 0.05 * s))
        cv.line(cx - 0.6 * s, top - 0.7 * s, cx + 0.6 * s, top - 0.7 * s, pc, TRAIN, max(1, 0.05 * s))


def _draw_person(cv: _Canvas, cam: _Cam, X: float, Z: float, rng, cls: int = PERSON, y_base: float | None = None,
                 seated: bool = False) -> None:
    s = cam.s(Z)
    cx = float(cam.x(X, Z))
    yg = float(cam.y(Z)) if y_base is None else y_base
    hp = rng.uniform(1.5, 1.95)
    torso, legs, skin = _pick(rng, _CLOTH_COLOURS, 15), _pick(rng, _CLOTH_COLOURS, 10), _pick(rng, _SKIN, 10)
    hair = _pick(rng, np.array([[20, 15, 10], [70, 45, 25], [150, 110, 60], [200, 200, 200]], np.float32), 8)
    hw = 0.19 * hp * s  # half shoulder width
    if seated:
        y_hip = yg
        cv.poly([[cx - hw * 0.4, y_hip], [cx + 0.55 * hp * s, y_hip + 0.1 * hp * s], [cx + 0.6 * hp * s, y_hip + 0.45 * hp * s],
                 [cx + 0.5 * hp * s, y_hip + 0.45 * hp * s], [cx + 0.45 * hp * s, y_hip + 0.18 * hp * s], [cx - hw * 0.4, y_hip + 0.1 * hp * s]],
                legs, cls)
        y_sh = y_hip - 0.32 * hp * s
        cx_sh = cx + 0.1 * hp * s
    else:
        step = rng.uniform(-0.12, 0.12) * hp * s
        y_hip = yg - 0.48 * hp * s
        cv.poly([[cx - hw * 0.75, y_hip], [cx - 0.02 * hp * s, y_hip], [cx - 0.02 * hp * s - step, yg], [cx - hw * 0.8 - step, yg]], legs, cls)
        cv.poly([[cx + 0.02 * hp * s, y_hip], [cx + hw * 0.75, y_hip], [cx + hw * 0.8 + step, yg], [cx + 0.02 * hp * s + step, yg]], legs, cls)
        y_sh = yg - 0.82 * hp * s
        cx_sh = cx
    cv.poly([[cx_sh - hw, y_sh], [cx_sh + hw, y_sh], [cx + hw * 0.8, y_hip + 0.02 * hp * s], [cx - hw * 0.8, y_hip + 0.02 * hp * s]], torso, cls)
    arm = max(1.0, 0.07 * hp * s)
    cv.line(cx_sh - hw, y_sh + arm, cx_sh - hw * 1.15, y_sh + 0.33 * hp * s, torso, cls, arm)
    cv.line(cx_sh + hw, y_sh + arm, cx_sh + hw * (1.8 if seated else 1.15), y_sh + 0.33 * hp * s, torso, cls, arm)
    r = 0.065 * hp * s
    cv.rect(cx_sh - 0.3 * r, y_sh - 0.9 * r, cx_sh + 0.3 * r, y_sh + 0.1 * r, skin, cls)
    cv.circle(cx_sh, y_sh - 1.6 * r, r * 1.1, skin, cls)
    if seated and rng.random() < 0.7:  # helmet
        cv.circle(cx_sh, y_sh - 1.85 * r, r * 1.2, _pick(rng, _CLOTH_COLOURS, 30), cls)
    else:
        cv.circle(cx_sh, y_sh - 1.95 * r, r * 0.95, hair, cls)


def _draw_two_wheeler(cv: _Canvas, cam: _Cam, X: float, Z: float, motor: bool, ridden: bool, rng) -> None:
    """Side view bicycle / motorcycle at ground (X, Z), optionally with a rider (class rider)."""
    s = cam.s(Z)
    cx, yg = float(cam.x(X, Z)), float(cam.y(Z))
    cls = MOTORCYCLE if motor else BICYCLE
    d = -1 if rng.random() < 0.5 else 1
    r = (0.32 if motor else 0.34) * s
    base = 0.72 * s
    wheel_t = max(1.0, (0.1 if motor else 0.04) * s)
    col = _pick(rng, _CAR_COLOURS if motor else _CLOTH_COLOURS, 20)
    xa, xb = cx - d * base, cx + d * base
    for xw in (xa, xb):
        cv.circle(xw, yg - r, r - wheel_t / 2, (25, 25, 25), cls, wheel_t)
    t = max(1.0, 0.05 * s)
    if motor:
        cv.poly([[xa + d * 0.2 * s, yg - r], [xb - d * 0.25 * s, yg - r * 1.1], [xb - d * 0.15 * s, yg - 0.85 * s],
                 [cx, yg - 0.95 * s], [xa + d * 0.1 * s, yg - 0.8 * s]], col, cls)
        cv.line(xb, yg - r, xb - d * 0.2 * s, yg - 1.05 * s, (60, 60, 60), cls, t)
        seat_y = yg - 0.85 * s
    else:
        seat = (cx - d * 0.25 * s, yg - 0.95 * s)
        crank = (cx, yg - r)
        head = (xb - d * 0.15 * s, yg - 1.0 * s)
        for a, b in ((xa, yg - r), crank), (crank, seat), (seat, (xa, yg - r)), (crank, head), (seat, head), (head, (xb, yg - r)):
            cv.line(a[0], a[1], b[0], b[1], col, cls, t)
        cv.line(head[0], head[1], head[0] + d * 0.05 * s, head[1] - 0.12 * s, (40, 40, 40), cls, t)
        seat_y = seat[1]
    if ridden:
        _draw_person(cv, cam, X - d * 0.25, Z, rng, cls=RIDER, y_base=seat_y, seated=True)


def _draw_pole(cv: _Canvas, cam: _Cam, X: float, Z: float, kind: str, rng, toward: float) -> None:
    """Pole at ground (X, Z) with a street lamp, traffic light(s) or traffic sign. ``toward``: +1/-1 road direction."""
    s = cam.s(Z)
    cx, yg = float(cam.x(X, Z)), float(cam.y(Z))
    pw = max(1.0, rng.uniform(0.12, 0.22) * s)
    pc = _col(rng, [(110, 110, 110), (60, 70, 60), (150, 150, 145)][rng.integers(3)], 10)
    if kind == "sign":
        hp = rng.uniform(2.4, 3.2)
        cv.rect(cx - pw / 3, yg - hp * s, cx + pw / 3, yg, pc, POLE)
        sz = rng.uniform(0.55, 0.8) * s
        cy = yg - hp * s + sz * 0.5
        shape = rng.integers(5)
        if shape == 0:    # prohibitory: red ring, white centre
            cv.circle(cx, cy, sz / 2, (200, 20, 25), TSIGN)
            cv.circle(cx, cy, sz * 0.36, (245, 245, 245), TSIGN)
        elif shape == 1:  # mandatory: blue disc, white arrow
            cv.circle(cx, cy, sz / 2, (20, 70, 170), TSIGN)
            cv.rect(cx - sz * 0.06, cy - sz * 0.25, cx + sz * 0.06, cy + sz * 0.25, (245, 245, 245), TSIGN)
        elif shape == 2:  # warning triangle
            tri = [[cx - sz / 2, cy + sz * 0.4], [cx + sz / 2, cy + sz * 0.4], [cx, cy - sz * 0.5]]
            cv.poly(tri, (200, 20, 25), TSIGN)
            cv.poly([[cx - sz * 0.3, cy + sz * 0.28], [cx + sz * 0.3, cy + sz * 0.28], [cx, cy - sz * 0.25]], (245, 245, 245), TSIGN)
        elif shape == 3:  # priority diamond
            cv.poly([[cx, cy - sz / 2], [cx + sz / 2, cy], [cx, cy + sz / 2], [cx - sz / 2, cy]], (245, 245, 245), TSIGN)
            cv.poly([[cx, cy - sz * 0.33], [cx + sz * 0.33, cy], [cx, cy + sz * 0.33], [cx - sz * 0.33, cy]], (240, 200, 30), TSIGN)
        else:             # rectangular information sign
            c = [(20, 110, 60), (20, 70, 170), (245, 245, 245)][rng.integers(3)]
            cv.rect(cx - sz * 0.7, cy - sz * 0.35, cx + sz * 0.7, cy + sz * 0.35, c, TSIGN)
            cv.rect(cx - sz * 0.6, cy - sz * 0.05, cx + sz * 0.5, cy + sz * 0.05, _shade(c, 0.3) if c[0] > 200 else (240, 240, 240), TSIGN)
        return
    hp = rng.uniform(5.0, 8.5) if kind == "lamp" else rng.uniform(3.5, 6.0)
    cv.rect(cx - pw / 2, yg - hp * s, cx + pw / 2, yg, pc, POLE)
    top = yg - hp * s
    if kind == "lamp":
        arm = rng.uniform(1.0, 2.5) * s * toward
        cv.line(cx, top + pw, cx + arm, top, pc, POLE, max(1, pw * 0.6))
        cv.rect(cx + arm - 0.3 * s, top - 0.05 * s, cx + arm + 0.3 * s, top + 0.12 * s, _shade(pc, 0.8), POLE)
        return
    # traffic light(s): one on the pole, sometimes another hanging from an arm over the road
    housing = _col(rng, [(30, 30, 30), (40, 55, 40), (200, 170, 40)][rng.integers(3)], 8)
    lit = rng.integers(3)
    spots = [(cx, top)]
    if rng.random() < 0.5:
        arm = rng.uniform(2.5, 5.0) * s * toward
        cv.line(cx, top + pw, cx + arm, top + pw, pc, POLE, max(1, pw * 0.6))
        spots.append((cx + arm, top + pw))
    for (lx, ly) in spots:
        bw, bh = 0.33 * s, 0.95 * s
        cv.rect(lx - bw / 2, ly, lx + bw / 2, ly + bh, housing, TLIGHT)
        for k, lc in enumerate(((220, 30, 20), (230, 170, 20), (30, 200, 90))):
            c = lc if k == lit else _shade(lc, 0.25)
            cv.circle(lx, ly + bh * (0.18 + 0.32 * k), bw * 0.32, c, TLIGHT)


def _draw_tree(cv: _Canvas, cam: _Cam, X: float, Z: float, rng) -> None:
    s = cam.s(Z)
    cx, yg = float(cam.x(X, Z)), float(cam.y(Z))
    ht = rng.uniform(2.0, 4.0)
    tw = max(1.0, rng.uniform(0.25, 0.45) * s)
    cv.rect(cx - tw / 2, yg - ht * s, cx + tw / 2, yg, _col(rng, (85, 65, 45), 12), VEG)
    rc = rng.uniform(1.3, 2.8)
    base = _col(rng, (55, 100, 40), 20)
    for _ in range(rng.integers(4, 8)):
        dx, dy = rng.normal(0, rc * 0.45), rng.normal(0, rc * 0.35)
        cv.circle(cx + dx * s, yg - (ht + rc * 0.6 + dy) * s, rng.uniform(0.5, 0.85) * rc * s, _shade(base, rng.uniform(0.75, 1.2)), VEG)


def _object_box(cam: _Cam, spec: tuple, Z: float) -> tuple[float, float, float, float, float]:
    """Approximate pixel box (x0, y0, x1, y1) and nearest depth Z of a scene object spec (for anomaly occlusion)."""
    kind, X = spec[0], spec[1]
    if kind == "vehicle":
        w, h, length = {CAR: (1.9, 1.6, 4.6), TRUCK: (2.7, 3.9, 9.2), BUS: (2.7, 3.4, 12.2), TRAIN: (2.8, 4.3, 25.2)}[spec[3]]
        xs = cam.x(np.array([X - w / 2, X + w / 2, X - w / 2, X + w / 2]), np.array([Z, Z, Z + length, Z + length]))
        ys = cam.y(np.array([Z, Z + length]), h)
        return float(xs.min()), float(ys.min()), float(xs.max()), float(cam.y(Z)), Z
    half, h = {"two": (1.2, 2.0), "pole": (0.3, 8.5), "person": (0.5, 2.0), "tree": (3.0, 8.0)}[kind]
    xs = cam.x(np.array([X - half, X + half]), Z)
    return float(xs[0]), float(cam.y(Z, h)), float(xs[1]), float(cam.y(Z)), Z


def _draw_hood(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Ego-vehicle hood at the bottom (label 255); returns its (H,W) bool mask."""
    H, W = cv.sem.shape
    hh = rng.uniform(0.05, 0.1) * H
    mask = np.zeros((H, W), np.uint8)
    centre = (int(W * rng.uniform(0.45, 0.55) * _ONE), int((H + hh * 1.6) * _ONE))
    axes = (int(W * 0.75 * _ONE), int(hh * 2.6 * _ONE))
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    m = mask.astype(bool)
    c = np.array(_pick(rng, _CAR_COLOURS, 8), np.float32) * 0.7
    rows = np.linspace(1.25, 0.8, H, dtype=np.float32)[:, None, None]
    hood = np.clip(c[None, None] * rows, 0, 255).astype(np.uint8)
    cv.img[m] = np.broadcast_to(hood, (H, W, 3))[m]
    cv.sem[m] = 255
    return m


# ----------------------------------------------------------------------------------------------------------------------
# anomalies
# ----------------------------------------------------------------------------------------------------------------------
def _anomaly_mask(rng: np.random.Generator, bh: int, bw: int) -> np.ndarray:
    """(bh,bw) bool random shape touching most of its box: irregular polygon, ellipse, blob or rectangle-ish."""
    kind = rng.integers(4)
    m = np.zeros((bh, bw), np.uint8)
    cx, cy = bw / 2, bh / 2
    if kind == 0:  # irregular polygon
        n = rng.integers(5, 13)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.55, 1.0, n)
        pts = np.stack([cx + np.cos(ang) * rad * (bw / 2 - 0.5), cy + np.sin(ang) * rad * (bh / 2 - 0.5)], -1)
        cv2.fillPoly(m, [np.round(pts * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    elif kind == 1:  # ellipse, maybe rotated within the box
        ax = (int(max(1, bw / 2 - 0.5) * _ONE), int(max(1, bh / 2 - 0.5) * _ONE))
        cv2.ellipse(m, (int(cx * _ONE), int(cy * _ONE)), ax, float(rng.uniform(-15, 15)), 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    elif kind == 2:  # blob: smooth noise minus radial falloff
        g = rng.integers(3, 7)
        n = cv2.resize(rng.random((g, g), dtype=np.float32), (bw, bh), interpolation=cv2.INTER_CUBIC)
        yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
        r2 = ((xx - cx) / (bw / 2)) ** 2 + ((yy - cy) / (bh / 2)) ** 2
        m = ((n * 0.6 + 0.7 - r2) > 0.5).astype(np.uint8)
    else:  # rounded rectangle / box-like object with chipped corners
        c = rng.uniform(0.05, 0.3)
        pts = np.array([[c, 0], [1 - c, 0], [1, c], [1, 1], [0, 1], [0, c]]) * [bw - 1, bh - 1]
        cv2.fillPoly(m, [np.round(pts * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    if m.sum() < max(4, 0.15 * bh * bw):  # degenerate: fall back to the inscribed ellipse
        m[:] = 0
        cv2.ellipse(m, (int(cx * _ONE), int(cy * _ONE)), (int(max(1, bw / 2) * _ONE), int(max(1, bh / 2) * _ONE)),
                    0, 0, 360, 1, -1, cv2.LINE_8, _SHIFT)
    n_cc, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    if n_cc > 2:  # keep the largest component: one object per instance
        m = (lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    return m.astype(bool)


def _anomaly_texture(rng: np.random.Generator, bh: int, bw: int) -> np.ndarray:
    """(bh,bw,3) float32 RGB texture: photo crop, stripes, checkerboard, neon gradient or dots."""
    kind = rng.choice(5, p=[0.4, 0.17, 0.15, 0.14, 0.14])
    yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float32)
    c1 = np.array(_pick(rng, _NEON, 20), np.float32)
    c2 = np.array(_pick(rng, _NEON, 20), np.float32) if rng.random() < 0.6 else np.array(_col(rng, (250, 250, 250), 5), np.float32)
    if kind == 0:
        photos = _photos()
        _, ph = photos[rng.integers(len(photos))]
        Hh, Ww = ph.shape[:2]
        frac = rng.uniform(0.25, 1.0)
        ar = bw / bh
        ch = int(max(8, min(Hh, Ww / ar) * frac))
        cw = int(max(8, min(Ww, ch * ar)))
        ch = int(max(8, min(Hh, cw / ar)))
        y0, x0 = rng.integers(0, Hh - ch + 1), rng.integers(0, Ww - cw + 1)
        crop = ph[y0:y0 + ch, x0:x0 + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        tex = cv2.resize(np.ascontiguousarray(crop), (bw, bh), interpolation=cv2.INTER_AREA if cw > bw else cv2.INTER_LINEAR).astype(np.float32)
        if np.ptp(tex, axis=(0, 1)).max() < 1 or np.allclose(tex[..., 0], tex[..., 2]):  # grey photo: tint it
            tex = tex * (c1 / 255.0 * 0.6 + 0.4)
        return tex
    if kind in (1, 2):
        period = rng.uniform(0.08, 0.35) * max(bh, bw) + 2
        if kind == 1:
            a = rng.uniform(0, np.pi)
            t = ((xx * np.cos(a) + yy * np.sin(a)) / period) % 2.0 < 1.0
        else:
            t = ((np.floor(xx / period) + np.floor(yy / period)) % 2) == 0
        return np.where(t[..., None], c1, c2)
    if kind == 3:
        g = (xx / max(bw - 1, 1) * rng.uniform(-1, 1) + yy / max(bh - 1, 1) * rng.uniform(-1, 1))[..., None]
        g = (g - g.min()) / max(float(np.ptp(g)), 1e-6)
        return c1 * (1 - g) + c2 * g
    tex = np.broadcast_to(c1, (bh, bw, 3)).copy()  # dots
    r = max(1.0, rng.uniform(0.04, 0.12) * min(bh, bw))
    n = int(np.clip(bh * bw / (r * r * 6), 1, 400))
    for x, y in zip(rng.uniform(0, bw, n), rng.uniform(0, bh, n)):
        cv2.circle(tex, (int(x), int(y)), int(r), tuple(float(v) for v in c2), -1)
    return tex


_GROUND = np.zeros(256, bool)
_GROUND[[ROAD, SIDEWALK, TERRAIN]] = True


def _place_anomalies(img: np.ndarray, sem: np.ndarray, cam: _Cam, L: _Layout, rng: np.random.Generator,
                     y_limit: float, occluders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1..4 anomalies far to near into ``img`` (H,W,3 float32) with soft shadows.

    A placement is kept only when the object stands on ground pixels (road/sidewalk/terrain under its base), no
    nearer inlier object (``occluders``: (N,5) x0,y0,x1,y1,Z) overlaps its box, and it hides no more than half of an
    earlier anomaly. Returns (instances (H,W) int32 visible ids 1..K, anomaly mask (H,W) bool)."""
    H, W = cam.H, cam.W
    inst = np.zeros((H, W), np.int32)
    n = int(rng.integers(1, 5))
    dmin = max(5.0, 20.0 * H / 512.0)
    dmax = np.sqrt(H * W / 4.0)
    specs = []
    for _ in range(n):
        d = float(np.exp(rng.uniform(np.log(dmin), np.log(dmax))))
        ar = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        bw, bh = max(4, int(round(d * np.sqrt(ar)))), max(4, int(round(d / np.sqrt(ar))))
        bw, bh = min(bw, W - 2), min(bh, int(y_limit) - 2)
        phys = float(np.exp(rng.uniform(np.log(0.25), np.log(2.5))))
        yg = cam.yh + bw / phys * cam.ch
        yg = float(np.clip(yg, max(cam.yh + 2, bh * 0.6), y_limit))
        specs.append((yg, bw, bh))
    specs.sort(key=lambda t: t[0])  # far first, so later (nearer) anomalies occlude earlier ones
    k = 0
    for yg, bw, bh in specs:
        areas_before = np.bincount(inst.ravel(), minlength=k + 1) if k else None
        n_try = 12
        for attempt in range(n_try):
            last = attempt == n_try - 1 and k == 0  # the first anomaly is always placed
            Z = cam.f * cam.ch / max(yg - cam.yh, 1e-3)
            s = cam.s(Z)
            half = bw / s / 2
            if rng.random() < 0.78:  # on the road
                lo, hi = L.X_l + half, L.X_r - half
            else:                    # beside it: sidewalk / terrain
                if rng.random() < 0.5:
                    lo, hi = L.X_l - L.sw_l - L.tw_l, L.X_l - half
                else:
                    lo, hi = L.X_r + half, L.X_r + L.sw_r + L.tw_r
            X = rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2
            cx = float(np.clip(cam.x(X, Z), bw * 0.5, W - bw * 0.5))
            x0 = int(round(cx - bw / 2))
            y1 = int(round(min(yg, H)))
            y0 = y1 - bh
            x0, y0 = max(0, min(x0, W - bw)), max(0, y0)
            bh_e, bw_e = y1 - y0, bw
            if bh_e < 3:
                continue
            if not last:
                base = _GROUND[sem[y1 - 1, x0:x0 + bw_e]]
                if base.mean() < 0.6:
                    yg = float(np.clip(yg + rng.uniform(-0.04, 0.04) * H, cam.yh + 2, y_limit))
                    continue
                if len(occluders):
                    o = occluders
                    iw = np.clip(np.minimum(o[:, 2], x0 + bw_e) - np.maximum(o[:, 0], x0), 0, None)
                    ih = np.clip(np.minimum(o[:, 3], y1) - np.maximum(o[:, 1], y0), 0, None)
                    if np.any((o[:, 4] < Z) & (iw * ih > 0.03 * bw_e * bh_e)):
                        yg = float(np.clip(yg + rng.uniform(-0.04, 0.04) * H, cam.yh + 2, y_limit))
                        continue
            m = _anomaly_mask(rng, bh_e, bw_e)
            if k:
                cur = inst[y0:y0 + bh_e, x0:x0 + bw_e]
                lost = np.bincount(cur[m].ravel(), minlength=k + 1)
                vis = areas_before - lost
                if np.any(vis[1:] < 0.5 * areas_before[1:]):
                    yg = float(np.clip(yg + rng.uniform(-0.05, 0.05) * H, cam.yh + 2, y_limit))
                    continue
            break
        else:
            continue  # could not place it without hiding an earlier anomaly; the image keeps >= 1 anomaly
        k += 1
        tex = _anomaly_texture(rng, bh_e, bw_e)
        shade = np.linspace(rng.uniform(1.0, 1.15), rng.uniform(0.7, 0.9), bh_e, dtype=np.float32)[:, None, None]
        tex = tex * shade
        # soft contact shadow on the ground under the object
        sy0, sy1 = max(0, y1 - int(bh_e * 0.25) - 2), min(H, y1 + int(bh_e * 0.15) + 3)
        sx0, sx1 = max(0, x0 - bw_e // 6 - 2), min(W, x0 + bw_e + bw_e // 6 + 2)
        sh = np.zeros((sy1 - sy0, sx1 - sx0), np.float32)
        cv2.ellipse(sh, (int((cx - sx0) * _ONE), int((y1 - sy0) * _ONE)),
                    (int(bw_e * 0.55 * _ONE), int(max(1.5, bh_e * 0.1) * _ONE)), 0, 0, 360, 1.0, -1, cv2.LINE_8, _SHIFT)
        kz = 2 * int(max(1, bh_e * 0.04)) + 1
        sh = cv2.GaussianBlur(sh, (kz, kz), 0) * rng.uniform(0.3, 0.6)
        img[sy0:sy1, sx0:sx1] *= (1 - sh)[..., None]
        reg = img[y0:y0 + bh_e, x0:x0 + bw_e]
        reg[m] = tex[m]
        inst[y0:y0 + bh_e, x0:x0 + bw_e][m] = k
    return inst, inst > 0


# ----------------------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------------------
def _check_size(size) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic size must be (H, W) integers, got {size!r}") from None
    if H < 32 or W < 64:
        raise ConfigError(f"synthetic size {H}x{W} (HxW) is too small; use at least 32x64, e.g. (256, 512)")
    return H, W


def generate(rng: np.random.Generator, size: tuple[int, int] = (256, 512), anomalies: bool = False) -> dict:
    """Draw one scene, deterministic given ``rng``'s state.

    Returns dict with
      image: (H,W,3) uint8 RGB;
      semantic: (H,W) uint8 Cityscapes train ids 0..18, 255 at anomaly pixels and the ego-vehicle hood;
      ood_mask: (H,W) uint8 0 inlier, 1 anomaly, 255 void (void never on anomaly pixels; all 0/255 without anomalies);
      instances: (H,W) int32 visible anomaly instance ids 1..K, 0 elsewhere (K = 0 without anomalies).
    """
    H, W = _check_size(size)
    cam = _Cam(H, W, f=W * rng.uniform(0.75, 1.1), yh=H * rng.uniform(0.36, 0.5), xv=W * rng.uniform(0.4, 0.6),
               ch=rng.uniform(1.2, 1.7))
    lane_w = rng.uniform(2.9, 3.6)
    n_left, n_right = int(rng.integers(0, 3)), int(rng.integers(0, 3))
    park_l, park_r = rng.uniform(0, 2.2) * (rng.random() < 0.5), rng.uniform(0, 2.2) * (rng.random() < 0.5)
    L = _Layout(lane_w=lane_w, X_l=-(lane_w / 2 + n_left * lane_w) - park_l, X_r=lane_w / 2 + n_right * lane_w + park_r,
                sw_l=rng.uniform(1.8, 4.5), sw_r=rng.uniform(1.8, 4.5),
                tw_l=rng.uniform(0.5, 3.5) if rng.random() < 0.8 else 0.2, tw_r=rng.uniform(0.5, 3.5) if rng.random() < 0.8 else 0.2,
                z_end=rng.uniform(50, 160), two_way=bool(rng.random() < 0.6 and n_left > 0))
    lanes = L.X_l + park_l + (np.arange(n_left + n_right + 1) + 0.5) * lane_w
    tram_X = float(lanes[rng.integers(len(lanes))]) if rng.random() < 0.35 else None

    cv = _Canvas(H, W)
    _draw_sky(cv, cam, rng)
    _draw_end(cv, cam, L, rng)
    _draw_ground(cv, cam, L, rng, tram_X)
    _draw_side(cv, cam, L, rng, -1)
    _draw_side(cv, cam, L, rng, +1)

    # objects, painter's order (far first)
    objs: list[tuple[float, int, tuple]] = []
    z_min, z_max = max(cam.z_bottom * 1.15, 5.0), min(L.z_end - 2, 90.0)
    z_veh = max(cam.z_bottom * 1.5, 8.0)
    occupied: list[tuple[float, float, float]] = []  # (X, Z0, Z1) on the road

    def free(X: float, Z0: float, Z1: float) -> bool:
        return all(abs(X - x) > 1.6 or Z1 < a - 1 or Z0 > b + 1 for x, a, b in occupied)

    if tram_X is not None:
        Z = rng.uniform(max(z_veh, 14), max(z_veh + 1, min(z_max, 60)))
        occupied.append((tram_X, Z, Z + 25))
        objs.append((Z, 0, ("vehicle", tram_X, Z, TRAIN, bool(L.two_way and tram_X < 0))))
    for X in lanes:
        for _ in range(int(rng.integers(0, 4))):
            kind = int(rng.choice([CAR, TRUCK, BUS], p=[0.72, 0.14, 0.14]))
            length = {CAR: 4.4, TRUCK: 9.0, BUS: 12.0}[kind]
            Z = rng.uniform(z_veh * (1.4 if abs(X) < lane_w / 2 else 1.0), max(z_veh + 1, z_max))
            Xj = X + rng.uniform(-0.3, 0.3)
            if free(Xj, Z, Z + length):
                occupied.append((Xj, Z, Z + length))
                objs.append((Z, 0, ("vehicle", Xj, Z, kind, bool(L.two_way and X < 0))))
    for X in ([L.X_l + 1.1] if park_l > 1.5 else []) + ([L.X_r - 1.1] if park_r > 1.5 else []):  # parked cars
        for Z in np.arange(rng.uniform(z_min, z_min + 8), z_max, rng.uniform(5.5, 9)):
            if rng.random() < 0.6 and free(X, Z, Z + 4.4):
                occupied.append((X, Z, Z + 4.4))
                objs.append((Z, 0, ("vehicle", X, Z, CAR, False)))
    for _ in range(int(rng.integers(0, 3)) if rng.random() < 0.6 else 0):  # riders on the road edges
        X = rng.choice([L.X_l + 0.9, L.X_r - 0.9]) + rng.uniform(-0.3, 0.3)
        Z = rng.uniform(z_min, min(z_max, 40))
        if free(X, Z, Z + 2):
            occupied.append((X, Z, Z + 2))
            objs.append((Z, 1, ("two", X, Z, bool(rng.random() < 0.5), True)))
    for side in (-1, 1):
        Xc = L.X_l - 0.45 if side < 0 else L.X_r + 0.45
        Xo = L.X_l - L.sw_l if side < 0 else L.X_r + L.sw_r
        for Z in np.arange(rng.uniform(z_min * 0.8, z_min + 10), z_max, rng.uniform(9, 22)):  # poles
            kind = str(rng.choice(["lamp", "sign", "light"], p=[0.35, 0.35, 0.3]))
            objs.append((Z, 2, ("pole", Xc, Z, kind, -side)))
        for _ in range(int(rng.integers(0, 6))):  # pedestrians on the sidewalk
            X = rng.uniform(min(Xo, Xc) + 0.3, max(Xo, Xc) - 0.3) if abs(Xo - Xc) > 0.8 else Xc
            objs.append((rng.uniform(z_min * 0.9, min(z_max, 60)), 1, ("person", X)))
        if rng.random() < 0.3:  # parked bicycles / motorcycles
            for _ in range(int(rng.integers(1, 4))):
                X = Xo - side * 0.6 if side < 0 else Xo - 0.6
                objs.append((rng.uniform(z_min, min(z_max, 40)), 1, ("two", X, None, bool(rng.random() < 0.4), False)))
        tw = L.tw_l if side < 0 else L.tw_r
        if tw > 1.0 and rng.random() < 0.6:  # trees on the terrain strip
            Xt = Xo + side * tw / 2
            for Z in np.arange(rng.uniform(z_min, z_min + 6), z_max, rng.uniform(7, 15)):
                objs.append((Z, 3, ("tree", Xt)))
    if rng.random() < 0.25:  # pedestrians crossing
        Zc = rng.uniform(z_min, 30)
        for _ in range(int(rng.integers(1, 4))):
            objs.append((Zc + rng.uniform(0, 2), 1, ("person", rng.uniform(L.X_l, L.X_r))))

    objs.sort(key=lambda o: (-o[0], o[1]))
    occl = []
    for Z, _, spec in objs:
        kind = spec[0]
        occl.append(_object_box(cam, spec, Z))
        if kind == "vehicle":
            _draw_vehicle(cv, cam, spec[1], spec[2], spec[3], spec[4], rng)
        elif kind == "two":
            _draw_two_wheeler(cv, cam, spec[1], Z, spec[3], spec[4], rng)
        elif kind == "pole":
            _draw_pole(cv, cam, spec[1], spec[2], spec[3], rng, spec[4])
        elif kind == "person":
            _draw_person(cv, cam, spec[1], Z, rng)
        elif kind == "tree":
            _draw_tree(cv, cam, spec[1], Z, rng)

    hood = _draw_hood(cv, rng) if rng.random() < 0.3 else None
    y_limit = float(H)
    if hood is not None:
        rows = np.flatnonzero(hood.any(1))
        y_limit = float(rows[0]) if rows.size else float(H)

    # class textures (luminance value noise + grain)
    sem = cv.sem
    nf = _value_noise(rng, H, W, max(2, W // 256))
    nc = _value_noise(rng, H, W, max(4, W // 24))
    ng = rng.random((H, W), dtype=np.float32) - 0.5
    mod = 1.0 + _AMP[0][sem] * nf + _AMP[1][sem] * nc + _AMP[2][sem] * ng
    img = cv.img.astype(np.float32) * mod[..., None]

    semantic = sem.copy()
    ood = np.zeros((H, W), np.uint8)
    if anomalies:
        inst, amask = _place_anomalies(img, sem, cam, L, rng, y_limit, np.array(occl, np.float64).reshape(-1, 5))
        semantic[amask] = 255
        ood[amask] = 1
        void = np.zeros((H, W), bool) if hood is None else hood.copy()
        choices = rng.random(3)
        if choices[0] < 0.6 or (hood is None and choices[1] >= 0.3 and choices[2] >= 0.25):
            r = max(1, int(round(rng.uniform(1, 3) * H / 512)))
            dil = cv2.dilate(amask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
            void |= dil.astype(bool)
        if choices[1] < 0.3:
            void |= sem == SKY
        if choices[2] < 0.25:
            b = max(1, int(round(rng.uniform(0.01, 0.03) * H)))
            band = np.zeros((H, W), bool)
            band[:b], band[-b:], band[:, :b], band[:, -b:] = True, True, True, True
            void |= band
        void &= ~amask
        if not void.any():  # e.g. sky void chosen but no sky visible: fall back to the thin band around anomalies
            dil = cv2.dilate(amask.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))
            void = dil.astype(bool) & ~amask
        ood[void] = 255
    else:
        inst = np.zeros((H, W), np.int32)
        if hood is not None:
            ood[hood] = 255

    # lighting, colour cast, sensor noise
    gain = rng.uniform(0.65, 1.2) * (1 + rng.uniform(-0.07, 0.07, 3)).astype(np.float32)
    img *= gain.astype(np.float32)
    img += rng.standard_normal((H, W, 1), dtype=np.float32) * np.float32(rng.uniform(1.5, 4.0))
    out = np.clip(img, 0, 255).astype(np.uint8)
    gamma = rng.uniform(0.8, 1.2)
    out = cv2.LUT(out, (255.0 * (np.arange(256) / 255.0) ** gamma).round().astype(np.uint8))
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return {"image": out, "semantic": semantic, "ood_mask": ood, "instances": inst}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split`` ('train'|'val'): SeedSequence(seed).spawn tree leaf (split, index)."""
    if split not in SPLIT_KEYS:
        raise ConfigError(f"synthetic split must be one of {sorted(SPLIT_KEYS)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLIT_KEYS[split], int(index))))


def generate_batch(seed: int, n: int, size: tuple[int, int] = (256, 512), anomalies: bool = False) -> list[dict]:
    """``n`` scenes; with anomalies they equal the val split written by ``write(seed=seed)``, else the train split."""
    split = "val" if anomalies else "train"
    return [generate(image_rng(seed, split, i), size, anomalies) for i in range(int(n))]


_LABELIDS_OF_TRAINID = np.zeros(256, np.uint8)
for _lid, _tid in CITYSCAPES_LABELID_TO_TRAINID.items():
    _LABELIDS_OF_TRAINID[_tid] = _lid

TRAIN_IMAGE = "leftImg8bit/train/synth/synth_000000_{idx:06d}_leftImg8bit.png"
TRAIN_TRAINIDS = "gtFine/train/synth/synth_000000_{idx:06d}_gtFine_labelTrainIds.png"
TRAIN_LABELIDS = "gtFine/train/synth/synth_000000_{idx:06d}_gtFine_labelIds.png"
VAL_IMAGE = "dataset_AnomalyTrack/images/synth{idx:04d}.png"
VAL_SEMANTIC = "dataset_AnomalyTrack/labels_masks/synth{idx:04d}_labels_semantic.png"
VAL_INSTANCE = "dataset_AnomalyTrack/labels_masks/synth{idx:04d}_labels_instance.png"
VAL_TRAINIDS = "dataset_AnomalyTrack/labels_masks/synth{idx:04d}_labels_trainids.png"


def trainids_to_labelids(semantic: np.ndarray) -> np.ndarray:
    """(H,W) uint8 train ids (255 ignore) -> Cityscapes labelIds (ignore -> 0)."""
    return _LABELIDS_OF_TRAINID[semantic]


def _remove_stale(root: Path, n_train: int, n_val: int) -> None:
    """Delete generator files of an earlier, larger write (exact generator names only) so the root matches the manifest."""
    for pattern, n in ((TRAIN_IMAGE, n_train), (TRAIN_TRAINIDS, n_train), (TRAIN_LABELIDS, n_train),
                       (VAL_IMAGE, n_val), (VAL_SEMANTIC, n_val), (VAL_INSTANCE, n_val), (VAL_TRAINIDS, n_val)):
        folder = root / os.path.dirname(pattern)
        if not folder.is_dir():
            continue
        name = os.path.basename(pattern)
        rx = re.compile("^" + re.escape(name).replace(re.escape("{idx:06d}"), r"(\d{6})").replace(re.escape("{idx:04d}"), r"(\d{4,})") + "$")
        for p in folder.iterdir():
            mt = rx.match(p.name)
            if mt and int(mt.group(1)) >= n:
                p.unlink()


def write(root: str | os.PathLike, n_train: int, n_val: int, seed: int = 0, size: tuple[int, int] = (256, 512),
          progress: bool = True) -> dict:
    """Write the synthetic world under ``root`` and return its manifest (also written to ROOT/synthetic.json, last).

    train (no anomalies, Cityscapes layout): leftImg8bit/train/synth/synth_000000_<idx:06d>_leftImg8bit.png,
      gtFine/train/synth/..._gtFine_labelTrainIds.png (uint8, 255 ignore) and ..._gtFine_labelIds.png (ignore -> 0).
    val (anomalies, SMIYC AnomalyTrack layout): dataset_AnomalyTrack/images/synth<idx:04d>.png and labels_masks/
      synth<idx:04d>_labels_semantic.png (uint8 0/1/255), _labels_instance.png (uint16), _labels_trainids.png
      (uint8 train ids, 255 at anomaly and void).
    Image i of a split depends only on (seed, split, i); same seed -> byte-identical files.
    """
    from tqdm import tqdm

    H, W = _check_size(size)
    for name, v in (("n_train", n_train), ("n_val", n_val)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
            raise ConfigError(f"synthetic {name} must be an integer >= 0, got {v!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"synthetic seed must be an integer >= 0, got {seed!r}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"synthetic root {root} exists and is not a folder; pass a folder path")
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, int(n_train), int(n_val))
    photos = photo_names()
    n_anom = 0
    with tqdm(total=int(n_train) + int(n_val), desc="synthetic world", unit="img", disable=not progress) as bar:
        for i in range(int(n_train)):
            g = generate(image_rng(seed, "train", i), (H, W), anomalies=False)
            write_png(root / TRAIN_IMAGE.format(idx=i), g["image"])
            write_png(root / TRAIN_TRAINIDS.format(idx=i), g["semantic"])
            write_png(root / TRAIN_LABELIDS.format(idx=i), trainids_to_labelids(g["semantic"]))
            bar.update(1)
        for i in range(int(n_val)):
            g = generate(image_rng(seed, "val", i), (H, W), anomalies=True)
            trainids = g["semantic"].copy()
            trainids[g["ood_mask"] == 255] = 255
            write_png(root / VAL_IMAGE.format(idx=i), g["image"])
            write_png(root / VAL_SEMANTIC.format(idx=i), g["ood_mask"])
            write_png(root / VAL_INSTANCE.format(idx=i), g["instances"].astype(np.uint16))
            write_png(root / VAL_TRAINIDS.format(idx=i), trainids)
            n_anom += int(g["instances"].max())
            bar.update(1)
    manifest = {
        "generator": "denseood.data.synthetic",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": [H, W],
        "n_train": int(n_train),
        "n_val": int(n_val),
        "n_val_anomalies": n_anom,
        "splits": {"train": "cityscapes layout: leftImg8bit/train/synth, gtFine/train/synth",
                   "val": "smiyc AnomalyTrack layout: dataset_AnomalyTrack/images, dataset_AnomalyTrack/labels_masks"},
        "photos": photos,
    }
    atomic_write_json(root / "synthetic.json", manifest)
    return manifest
