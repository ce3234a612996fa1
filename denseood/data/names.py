"""Names of the data stage that command-line help needs (torch-free). See docs/architecture.md."""
from __future__ import annotations

#: StreetHazards "unlabeled" conventions (``--streethazards-unlabeled``; data/streethazards.py, docs/metrics.md)
STREETHAZARDS_UNLABELED = ("inlier", "void")

#: formats of saved score maps (``eval --save-maps-format``, ``data.maps.write_map``) -> file suffix
SAVE_FORMATS: dict[str, str] = {"npy": ".npy", "npz": ".npz", "h5": ".hdf5", "png16": ".png"}
