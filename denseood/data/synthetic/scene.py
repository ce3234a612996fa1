"""Scene composition of the synthetic world: :func:`generate` draws one scene from a random stream (street,
objects in painter's order, class textures, anomalies and void, lighting and sensor noise); :func:`image_rng`
derives image i of a split's stream from (seed, split, i) only.

See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ...errors import ConfigError
from .anomalies import _place_anomalies
from .props import (_draw_hood, _draw_person, _draw_pole, _draw_tree, _draw_two_wheeler, _draw_vehicle,
                    _object_box)
from .render import (BICYCLE, BUILDING, BUS, CAR, FENCE, MOTORCYCLE, PERSON, POLE, RIDER, ROAD, SIDEWALK, SKY,
                     TERRAIN, TLIGHT, TRAIN, TRUCK, TSIGN, VEG, WALL, _Cam, _Canvas, _value_noise)
from .street import _draw_end, _draw_ground, _draw_side, _draw_sky, _Layout

#: spawn-key component of each split (image i of split s uses SeedSequence(seed, spawn_key=(SPLIT_KEYS[s], i)))
SPLIT_KEYS: dict[str, int] = {"train": 0, "val": 1}

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


def _check_size(size) -> tuple[int, int]:
    try:
        H, W = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"synthetic size must be (H, W) integers, got {size!r}") from None
    if H < 32 or W < 64:
        raise ConfigError(f"synthetic size {H}x{W} (HxW) is too small; use at least 32x64, e.g. (256, 512)")
    return H, W


#: one object to draw: (depth Z in metres, painter's tie-break rank, draw spec ("vehicle" | "two" | "pole" |
#: "person" | "tree", args...)); drawn far first, rank ascending at equal depth
_Obj = tuple[float, int, tuple]


@dataclass
class _Street:
    """The random street of one scene: camera, layout, lane centres X (metres), tram track X (None: no tram) and
    the widths of the parking strips left and right (metres, 0 = none)."""

    cam: _Cam
    L: _Layout
    lanes: np.ndarray
    tram_X: float | None
    park_l: float
    park_r: float


def _random_street(rng: np.random.Generator, H: int, W: int) -> _Street:
    """Camera and street layout of an (H,W) scene: the first draws of the scene's stream."""
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
    return _Street(cam, L, lanes, tram_X, park_l, park_r)


def _draw_street(cv: _Canvas, st: _Street, rng: np.random.Generator) -> None:
    """Sky, street end, ground and both facade lines of ``st`` into ``cv``."""
    _draw_sky(cv, st.cam, rng)
    _draw_end(cv, st.cam, st.L, rng)
    _draw_ground(cv, st.cam, st.L, rng, st.tram_X)
    _draw_side(cv, st.cam, st.L, rng, -1)
    _draw_side(cv, st.cam, st.L, rng, +1)


def _road_objects(rng: np.random.Generator, st: _Street, z_min: float, z_max: float, z_veh: float) -> list[_Obj]:
    """Tram, lane traffic, parked cars and riders on the road edges, none overlapping another on the road."""
    L, lanes, tram_X = st.L, st.lanes, st.tram_X
    objs: list[_Obj] = []
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
            Z = rng.uniform(z_veh * (1.4 if abs(X) < L.lane_w / 2 else 1.0), max(z_veh + 1, z_max))
            Xj = X + rng.uniform(-0.3, 0.3)
            if free(Xj, Z, Z + length):
                occupied.append((Xj, Z, Z + length))
                objs.append((Z, 0, ("vehicle", Xj, Z, kind, bool(L.two_way and X < 0))))
    for X in ([L.X_l + 1.1] if st.park_l > 1.5 else []) + ([L.X_r - 1.1] if st.park_r > 1.5 else []):  # parked cars
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
    return objs


def _side_objects(rng: np.random.Generator, L: _Layout, z_min: float, z_max: float) -> list[_Obj]:
    """Per side poles, pedestrians, parked two-wheelers and trees, then pedestrians crossing the road."""
    objs: list[_Obj] = []
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
    return objs


def _scene_objects(rng: np.random.Generator, st: _Street) -> list[_Obj]:
    """All objects of the scene in painter's order (far first)."""
    cam, L = st.cam, st.L
    z_min, z_max = max(cam.z_bottom * 1.15, 5.0), min(L.z_end - 2, 90.0)
    z_veh = max(cam.z_bottom * 1.5, 8.0)
    objs = _road_objects(rng, st, z_min, z_max, z_veh) + _side_objects(rng, L, z_min, z_max)
    objs.sort(key=lambda o: (-o[0], o[1]))
    return objs


def _draw_objects(cv: _Canvas, cam: _Cam, objs: list[_Obj], rng: np.random.Generator) -> list[tuple]:
    """Draw ``objs`` in their order; returns each one's image box (x0, y0, x1, y1, Z), the anomalies' occluders."""
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
    return occl


def _maybe_hood(cv: _Canvas, rng: np.random.Generator) -> tuple[np.ndarray | None, float]:
    """Ego-vehicle hood (30 %): its (H,W) bool mask (None: no hood) and the first hood row (H without one)."""
    H = cv.sem.shape[0]
    hood = _draw_hood(cv, rng) if rng.random() < 0.3 else None
    y_limit = float(H)
    if hood is not None:
        rows = np.flatnonzero(hood.any(1))
        y_limit = float(rows[0]) if rows.size else float(H)
    return hood, y_limit


def _textured(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """(H,W,3) float32 image of ``cv`` with per-class luminance textures (value noise + grain)."""
    H, W = cv.sem.shape
    sem = cv.sem
    nf = _value_noise(rng, H, W, max(2, W // 256))
    nc = _value_noise(rng, H, W, max(4, W // 24))
    ng = rng.random((H, W), dtype=np.float32) - 0.5
    mod = 1.0 + _AMP[0][sem] * nf + _AMP[1][sem] * nc + _AMP[2][sem] * ng
    return cv.img.astype(np.float32) * mod[..., None]


def _void_mask(rng: np.random.Generator, amask: np.ndarray, sem: np.ndarray, hood: np.ndarray | None) -> np.ndarray:
    """(H,W) bool void of an anomaly scene, never on ``amask``: the hood, plus a random mix of a thin band around
    the anomalies, the sky and an image border band (the band around anomalies when the mix is empty)."""
    H, W = sem.shape
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
    return void


def _labels(img: np.ndarray, cv: _Canvas, st: _Street, rng: np.random.Generator, hood: np.ndarray | None,
            y_limit: float, occl: list[tuple], anomalies: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(semantic, ood_mask, instances) as :func:`generate` returns them; with ``anomalies`` they are drawn into
    ``img`` (H,W,3 float32) first."""
    H, W = cv.sem.shape
    sem = cv.sem
    semantic = sem.copy()
    ood = np.zeros((H, W), np.uint8)
    if anomalies:
        inst, amask = _place_anomalies(img, sem, st.cam, st.L, rng, y_limit, np.array(occl, np.float64).reshape(-1, 5))
        semantic[amask] = 255
        ood[amask] = 1
        ood[_void_mask(rng, amask, sem, hood)] = 255
    else:
        inst = np.zeros((H, W), np.int32)
        if hood is not None:
            ood[hood] = 255
    return semantic, ood, inst


def _sensor(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lighting, colour cast, sensor noise, gamma and maybe blur of ``img`` (H,W,3 float32, changed in place) ->
    (H,W,3) uint8."""
    H, W = img.shape[:2]
    gain = rng.uniform(0.65, 1.2) * (1 + rng.uniform(-0.07, 0.07, 3)).astype(np.float32)
    img *= gain.astype(np.float32)
    img += rng.standard_normal((H, W, 1), dtype=np.float32) * np.float32(rng.uniform(1.5, 4.0))
    out = np.clip(img, 0, 255).astype(np.uint8)
    gamma = rng.uniform(0.8, 1.2)
    out = cv2.LUT(out, (255.0 * (np.arange(256) / 255.0) ** gamma).round().astype(np.uint8))
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


def generate(rng: np.random.Generator, size: tuple[int, int] = (256, 512), anomalies: bool = False) -> dict:
    """Draw one scene, deterministic given ``rng``'s state.

    Returns dict with
      image: (H,W,3) uint8 RGB;
      semantic: (H,W) uint8 Cityscapes train ids 0..18, 255 at anomaly pixels and the ego-vehicle hood;
      ood_mask: (H,W) uint8 0 inlier, 1 anomaly, 255 void (void never on anomaly pixels; all 0/255 without anomalies);
      instances: (H,W) int32 visible anomaly instance ids 1..K, 0 elsewhere (K = 0 without anomalies).
    The stream is drawn in this order: street, objects, hood, textures, anomalies and void, sensor.
    """
    H, W = _check_size(size)
    st = _random_street(rng, H, W)
    cv = _Canvas(H, W)
    _draw_street(cv, st, rng)
    occl = _draw_objects(cv, st.cam, _scene_objects(rng, st), rng)
    hood, y_limit = _maybe_hood(cv, rng)
    img = _textured(cv, rng)
    semantic, ood, inst = _labels(img, cv, st, rng, hood, y_limit, occl, anomalies)
    return {"image": _sensor(img, rng), "semantic": semantic, "ood_mask": ood, "instances": inst}


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of image ``index`` of ``split`` ('train'|'val'): SeedSequence(seed).spawn tree leaf (split, index)."""
    if split not in SPLIT_KEYS:
        raise ConfigError(f"synthetic split must be one of {sorted(SPLIT_KEYS)}, got {split!r}")
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(SPLIT_KEYS[split], int(index))))


def generate_batch(seed: int, n: int, size: tuple[int, int] = (256, 512), anomalies: bool = False) -> list[dict]:
    """``n`` scenes; with anomalies they equal the val split written by ``write(seed=seed)``, else the train split."""
    split = "val" if anomalies else "train"
    return [generate(image_rng(seed, split, i), size, anomalies) for i in range(int(n))]
