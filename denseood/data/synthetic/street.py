"""The static street of a synthetic scene: the layout (:class:`_Layout`: road edges, sidewalks, terrain strips,
street end), sky, ground with lane marks and the facade lines (buildings, walls, fences, vegetation) on both sides.

See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .render import (_CLOTH_COLOURS, _ONE, _SHIFT, BUILDING, FENCE, ROAD, SIDEWALK, TERRAIN, VEG, WALL, _Cam, _Canvas,
                     _col, _pick, _shade, _value_noise)


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
