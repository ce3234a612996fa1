"""Scene objects of the synthetic world, drawn far to near: vehicles, people, two-wheelers, poles with lamps /
traffic lights / signs, trees and the ego-vehicle hood; :func:`_object_box` gives an object's pixel box for the
anomaly occlusion test.

See docs/architecture.md.
"""
from __future__ import annotations

import cv2
import numpy as np

from .render import (_CAR_COLOURS, _CLOTH_COLOURS, _ONE, _SHIFT, _SKIN, BICYCLE, BUS, CAR, MOTORCYCLE, PERSON, POLE,
                     RIDER, TLIGHT, TRAIN, TRUCK, TSIGN, VEG, _Cam, _Canvas, _col, _pick, _shade)


_TYRE = (20, 20, 22)
_Colour = tuple[int, int, int]


def _vehicle_colours(rng: np.random.Generator, kind: int) -> tuple[_Colour, _Colour]:
    """(body, glass) RGB colours of a vehicle of ``kind`` (CAR/TRUCK/BUS/TRAIN)."""
    if kind == CAR:
        colour = _pick(rng, _CAR_COLOURS, 10)
    elif kind == TRAIN:
        colour = _col(rng, [(230, 230, 225), (200, 30, 35), (240, 200, 40), (40, 110, 60), (60, 110, 180)][rng.integers(5)], 10)
    else:
        colour = _col(rng, [(235, 235, 235), (200, 40, 30), (40, 80, 160), (240, 190, 40), (60, 130, 60), (150, 150, 155)][rng.integers(6)], 12)
    return colour, _col(rng, (35, 45, 55), 8)


def _draw_vehicle_side(cv: _Canvas, cam: _Cam, Xs: float, Z: float, h: float, length: float, kind: int,
                       colour: _Colour, glass: _Colour) -> None:
    """The long side (``length`` m from depth ``Z``, ``h`` m high) at lateral position ``Xs`` (metres) facing the
    camera: body, windows and wheels."""
    zz = np.array([Z, Z + length, Z + length, Z])
    hb = 0.25 if kind == CAR else 0.35
    htop = h * (0.68 if kind == CAR else 1.0)
    cv.poly(np.stack([cam.x(Xs, zz), cam.y(zz, [hb, hb, htop, htop])], -1), _shade(colour, 0.8), kind)
    if kind == CAR:
        z2 = np.array([Z + 0.25 * length, Z + 0.78 * length, Z + 0.7 * length, Z + 0.35 * length])
        cv.poly(np.stack([cam.x(Xs, z2), cam.y(z2, [htop, htop, h, h])], -1), glass, CAR)
    else:
        z2 = np.array([Z + 0.8, Z + length - 0.5, Z + length - 0.5, Z + 0.8])
        cv.poly(np.stack([cam.x(Xs, z2), cam.y(z2, [h * 0.55, h * 0.55, h * 0.85, h * 0.85])], -1),
                glass if kind != TRUCK else _shade(colour, 0.7), kind)
    for zw in ((Z + 0.8, Z + length - 0.9) if kind != TRAIN else (Z + 2.5, Z + 4.5, Z + length - 4.5)):
        r = 0.33 * cam.s(zw) if kind == CAR else 0.5 * cam.s(zw)
        cv.circle(float(cam.x(Xs, zw)), float(cam.y(zw, r / cam.s(zw))), r, _TYRE, kind)


def _draw_car_face(cv: _Canvas, cx: float, yg: float, s: float, w: float, h: float, front: bool,
                   colour: _Colour, glass: _Colour) -> None:
    """Rear (or front) of a car centred on column ``cx`` standing on row ``yg``, ``s`` pixels per metre."""
    x0, x1 = cx - w * s / 2, cx + w * s / 2
    cv.rect(x0 + 0.05 * s, yg - 0.35 * s, x0 + 0.35 * s, yg, _TYRE, CAR)
    cv.rect(x1 - 0.35 * s, yg - 0.35 * s, x1 - 0.05 * s, yg, _TYRE, CAR)
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


def _draw_large_face(cv: _Canvas, cx: float, yg: float, s: float, w: float, h: float, kind: int, front: bool,
                     colour: _Colour, glass: _Colour) -> None:
    """Rear (or front) of a truck, bus or train (cargo doors, windscreen, destination sign, pantograph)."""
    x0, x1 = cx - w * s / 2, cx + w * s / 2
    cv.rect(x0 + 0.1 * s, yg - 0.55 * s, x0 + 0.5 * s, yg, _TYRE, kind)
    cv.rect(x1 - 0.5 * s, yg - 0.55 * s, x1 - 0.1 * s, yg, _TYRE, kind)
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


def _draw_vehicle(cv: _Canvas, cam: _Cam, X: float, Z: float, kind: int, front: bool, rng) -> None:
    """Box vehicle seen from behind (or front when ``front``) with its camera-facing side; kind in CAR/TRUCK/BUS/TRAIN."""
    w, h, length = {CAR: (1.8, 1.5, 4.4), TRUCK: (2.5, 3.6, 9.0), BUS: (2.55, 3.1, 12.0), TRAIN: (2.65, 3.5, 25.0)}[kind]
    w *= rng.uniform(0.93, 1.07)
    h *= rng.uniform(0.92, 1.08)
    colour, glass = _vehicle_colours(rng, kind)
    s = cam.s(Z)
    cx, yg = float(cam.x(X, Z)), float(cam.y(Z))
    Xs = X - w / 2 if X > w / 2 else (X + w / 2 if X < -w / 2 else None)
    if Xs is not None:
        _draw_vehicle_side(cv, cam, Xs, Z, h, length, kind, colour, glass)
    if kind == CAR:
        _draw_car_face(cv, cx, yg, s, w, h, front, colour, glass)
    else:
        _draw_large_face(cv, cx, yg, s, w, h, kind, front, colour, glass)


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
