"""Synthetic road world: a deterministic procedural generator of perspective road scenes (the embedded default).

``generate(rng, size, anomalies)`` draws one scene with Cityscapes train ids (all 19 classes across a split),
optionally with anomalies (irregular polygons, ellipses, blobs, stripes/checkerboards and crops of the natural
photographs that ship inside scikit-image) and void regions. ``write(root, n_train, n_val, seed, size)`` writes a
Cityscapes-layout training split (no anomalies) and an SMIYC AnomalyTrack-layout evaluation split so the official
readers run on it unchanged. Every image is derived from ``(seed, split, index)`` only (``image_rng``).

Geometry: a pinhole camera at height ``ch`` metres looks along a straight road; a ground point at lateral ``X`` and
depth ``Z`` projects to ``x = xv + f X / Z``, ``y = yh + f (ch - h) / Z`` (``h`` = height above ground), so every
object is drawn at a perspective-consistent scale ``f / Z`` pixels per metre, far to near (painter's order).

Modules: ``render`` (class ids, camera, canvas), ``street`` (layout, sky, ground, facades), ``props`` (vehicles,
people, poles, trees, hood), ``anomalies`` (shapes, textures, placement), ``scene`` (``generate``, ``image_rng``),
``writer`` (``write`` and the file layout). See docs/architecture.md.
"""
from ..classes import CITYSCAPES_CLASSES, CITYSCAPES_LABELID_TO_TRAINID
from .anomalies import PHOTO_FILES, photo_names
from .render import (BICYCLE, BUILDING, BUS, CAR, FENCE, MOTORCYCLE, PERSON, POLE, RIDER, ROAD, SIDEWALK, SKY,
                     TERRAIN, TLIGHT, TRAIN, TRUCK, TSIGN, VEG, WALL)
from .scene import SPLIT_KEYS, generate, generate_batch, image_rng
from .writer import (GENERATOR_VERSION, TRAIN_IMAGE, TRAIN_LABELIDS, TRAIN_TRAINIDS, VAL_IMAGE, VAL_INSTANCE,
                     VAL_SEMANTIC, VAL_TRAINIDS, trainids_to_labelids, write)

__all__ = [
    "GENERATOR_VERSION", "SPLIT_KEYS", "PHOTO_FILES", "generate", "generate_batch", "image_rng", "photo_names",
    "write", "trainids_to_labelids", "TRAIN_IMAGE", "TRAIN_TRAINIDS", "TRAIN_LABELIDS", "VAL_IMAGE", "VAL_SEMANTIC",
    "VAL_INSTANCE", "VAL_TRAINIDS", "CITYSCAPES_CLASSES", "CITYSCAPES_LABELID_TO_TRAINID",
    "ROAD", "SIDEWALK", "BUILDING", "WALL", "FENCE", "POLE", "TLIGHT", "TSIGN", "VEG", "TERRAIN", "SKY", "PERSON",
    "RIDER", "CAR", "TRUCK", "BUS", "TRAIN", "MOTORCYCLE", "BICYCLE",
]
