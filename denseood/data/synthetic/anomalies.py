"""Anomalies of the synthetic world: random shapes (:func:`_anomaly_mask`), textures (photo crops of the
scikit-image sample photographs, stripes, checkerboards, gradients, dots) and their placement on the ground with
occlusion rules and contact shadows (:func:`_place_anomalies`).

See docs/architecture.md.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ...errors import DenseOODError
from .render import ROAD, SIDEWALK, TERRAIN, _ONE, _SHIFT, _Cam, _col, _pick
from .street import _Layout

#: sample photographs of scikit-image used for photo-crop anomalies (none shows road-scene classes)
PHOTO_FILES: tuple[str, ...] = (
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "coins.png", "camera.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "moon.png", "color.png",
)

# anomaly colours: saturated hues that no inlier class uses
_NEON = np.array([[255, 0, 200], [0, 255, 255], [120, 255, 0], [255, 120, 0], [160, 0, 255], [255, 255, 0],
                  [255, 0, 60], [0, 120, 255], [255, 80, 255], [0, 255, 140]], np.float32)


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


class _Placed(NamedTuple):
    """One placed anomaly: its box (columns x0..x0+bw, rows y0..y1 = y0+bh; pixels), the projected centre column
    ``cx`` and its shape ``m`` ((bh,bw) bool)."""

    x0: int
    y0: int
    y1: int
    bw: int
    bh: int
    cx: float
    m: np.ndarray


def _anomaly_sizes(rng: np.random.Generator, cam: _Cam, y_limit: float) -> list[tuple[float, int, int]]:
    """1..4 anomaly sizes (ground row yg, box width bw, box height bh; pixels), far first."""
    H, W = cam.H, cam.W
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
    return specs


def _ground_x(rng: np.random.Generator, L: _Layout, half: float) -> float:
    """Lateral position X (metres) of an object ``2 * half`` metres wide: on the road (78 %) or on the sidewalk /
    terrain beside it."""
    if rng.random() < 0.78:  # on the road
        lo, hi = L.X_l + half, L.X_r - half
    else:                    # beside it: sidewalk / terrain
        if rng.random() < 0.5:
            lo, hi = L.X_l - L.sw_l - L.tw_l, L.X_l - half
        else:
            lo, hi = L.X_r + half, L.X_r + L.sw_r + L.tw_r
    return rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2


def _stands_free(sem: np.ndarray, occluders: np.ndarray, x0: int, y0: int, y1: int, bw: int, bh: int,
                 Z: float) -> bool:
    """Whether the box stands on ground pixels (>= 60 % of its base row) and no nearer inlier object overlaps
    more than 3 % of it."""
    base = _GROUND[sem[y1 - 1, x0:x0 + bw]]
    if base.mean() < 0.6:
        return False
    if len(occluders):
        o = occluders
        iw = np.clip(np.minimum(o[:, 2], x0 + bw) - np.maximum(o[:, 0], x0), 0, None)
        ih = np.clip(np.minimum(o[:, 3], y1) - np.maximum(o[:, 1], y0), 0, None)
        if np.any((o[:, 4] < Z) & (iw * ih > 0.03 * bw * bh)):
            return False
    return True


def _hides_earlier(inst: np.ndarray, areas_before: np.ndarray, k: int, x0: int, y0: int, m: np.ndarray) -> bool:
    """Whether shape ``m`` at (x0, y0) would hide more than half of one of the ``k`` anomalies in ``inst``."""
    bh, bw = m.shape
    cur = inst[y0:y0 + bh, x0:x0 + bw]
    lost = np.bincount(cur[m].ravel(), minlength=k + 1)
    vis = areas_before - lost
    return bool(np.any(vis[1:] < 0.5 * areas_before[1:]))


def _place_one(rng: np.random.Generator, cam: _Cam, L: _Layout, sem: np.ndarray, inst: np.ndarray, k: int,
               yg: float, bw: int, bh: int, y_limit: float, occluders: np.ndarray) -> _Placed | None:
    """Up to 12 tries to place a (bh,bw) anomaly whose base is near row ``yg``, nudging ``yg`` after each refusal;
    None when every try fails (the first anomaly, ``k == 0``, skips the checks on its last try)."""
    H, W = cam.H, cam.W
    areas_before = np.bincount(inst.ravel(), minlength=k + 1) if k else None
    n_try = 12
    for attempt in range(n_try):
        last = attempt == n_try - 1 and k == 0  # the first anomaly is always placed
        Z = cam.f * cam.ch / max(yg - cam.yh, 1e-3)
        X = _ground_x(rng, L, bw / cam.s(Z) / 2)
        cx = float(np.clip(cam.x(X, Z), bw * 0.5, W - bw * 0.5))
        x0 = int(round(cx - bw / 2))
        y1 = int(round(min(yg, H)))
        y0 = y1 - bh
        x0, y0 = max(0, min(x0, W - bw)), max(0, y0)
        bh_e, bw_e = y1 - y0, bw
        if bh_e < 3:
            continue
        if not last and not _stands_free(sem, occluders, x0, y0, y1, bw_e, bh_e, Z):
            yg = float(np.clip(yg + rng.uniform(-0.04, 0.04) * H, cam.yh + 2, y_limit))
            continue
        m = _anomaly_mask(rng, bh_e, bw_e)
        if k and _hides_earlier(inst, areas_before, k, x0, y0, m):
            yg = float(np.clip(yg + rng.uniform(-0.05, 0.05) * H, cam.yh + 2, y_limit))
            continue
        return _Placed(x0, y0, y1, bw_e, bh_e, cx, m)
    return None


def _paint_anomaly(img: np.ndarray, rng: np.random.Generator, p: _Placed) -> None:
    """Texture of a placed anomaly, shaded top to bottom, over a soft contact shadow on the ground, into ``img``."""
    H, W = img.shape[:2]
    x0, y0, y1, bw_e, bh_e, cx, m = p
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


def _place_anomalies(img: np.ndarray, sem: np.ndarray, cam: _Cam, L: _Layout, rng: np.random.Generator,
                     y_limit: float, occluders: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1..4 anomalies far to near into ``img`` (H,W,3 float32) with soft shadows.

    A placement is kept only when the object stands on ground pixels (road/sidewalk/terrain under its base), no
    nearer inlier object (``occluders``: (N,5) x0,y0,x1,y1,Z) overlaps its box, and it hides no more than half of an
    earlier anomaly. Returns (instances (H,W) int32 visible ids 1..K, anomaly mask (H,W) bool)."""
    inst = np.zeros((cam.H, cam.W), np.int32)
    k = 0
    for yg, bw, bh in _anomaly_sizes(rng, cam, y_limit):
        p = _place_one(rng, cam, L, sem, inst, k, yg, bw, bh, y_limit, occluders)
        if p is None:
            continue  # could not place it without hiding an earlier anomaly; the image keeps >= 1 anomaly
        k += 1
        _paint_anomaly(img, rng, p)
        inst[p.y0:p.y0 + p.bh, p.x0:p.x0 + p.bw][p.m] = k
    return inst, inst > 0
