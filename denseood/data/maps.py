"""Folders of precomputed anomaly maps: one file per frame, matched to a dataset's frames by frame id.

A map of frame ``<fid>`` (``Sample.name``; ids with subfolders are relative paths) is the file ``<fid><ext>`` in
the folder (subfolders allowed), one of:

* ``.npy``: the (H,W) array (any float or integer dtype);
* ``.npz``: the single array it holds, or ``arr_0`` when it holds several (S2M's score files);
* ``.h5`` / ``.hdf5``: dataset ``value`` (the SegmentMeIfYouCan evaluator's own layout, float16 there);
* ``.png`` / ``.tif`` / ``.tiff``: a single-channel (8- or) 16-bit image, value = pixel / scale + offset; the
  scale must be stated (``--maps-scale``), because an image holds no unit.

Leading or trailing singleton axes are squeezed ((1,H,W) -> (H,W)), as the official evaluator does. Values are
returned as float32, higher = more anomalous (``higher_is_anomalous=False`` flips the sign). :meth:`MapFolder.open`
checks the whole folder against the frame list first: missing and extra maps are reported together in one
:class:`~denseood.errors.DatasetError`; :meth:`MapFolder.read` raises one naming the frame and the file for an
unreadable file, a size mismatch or NaN/inf values. :func:`write_map` writes each format back.

See docs/architecture.md.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from ..errors import ConfigError, DatasetError
from .names import SAVE_FORMATS
from ..io import atomic_write_bytes, read_hdf5, write_hdf5, write_png

#: file suffix -> reader kind
MAP_SUFFIXES = {".npy": "npy", ".npz": "npz", ".h5": "h5", ".hdf5": "h5", ".png": "image", ".tif": "image",
                ".tiff": "image"}
#: sidecar written beside png16 maps: the scale and offset to read them back with
FORMAT_SIDECAR = "maps_format.json"
#: names listed at most in one error
MAX_LISTED = 10
H5_KEY = "value"
F16_MAX = 65504.0


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f", ... ({len(names) - MAX_LISTED} more)" if len(names) > MAX_LISTED else "")


def map_files(folder: Path) -> dict[str, list[Path]]:
    """Frame id -> map files found for it under ``folder`` (recursive; hidden files and other suffixes skipped)."""
    found: dict[str, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            suffix = os.path.splitext(fn)[1].lower()
            if fn.startswith(".") or suffix not in MAP_SUFFIXES:
                continue
            p = Path(dirpath) / fn
            rel = p.relative_to(folder)
            fid = (rel.parent / rel.name[: len(rel.name) - len(suffix)]).as_posix()
            found.setdefault(fid, []).append(p)
    return found


@dataclass
class MapFolder:
    """A checked folder of maps: ``files`` maps every frame id to its file.

    scale / offset: PNG/TIFF value = pixel / scale + offset. higher_is_anomalous: False flips the sign on read.
    """

    folder: Path
    files: dict[str, Path]
    scale: float | None = None
    offset: float = 0.0
    higher_is_anomalous: bool = True
    kinds: set[str] = field(default_factory=set)

    @classmethod
    def open(cls, folder: str | os.PathLike, frames: Sequence[str], known: Sequence[str] | None = None, *,
             scale: float | None = None, offset: float = 0.0, higher_is_anomalous: bool = True) -> "MapFolder":
        """Match ``folder`` to the frame ids ``frames`` (the frames to score).

        known: every frame id of the dataset (default ``frames``); a map whose id is not in ``known`` is extra,
        a frame of ``frames`` without a map is missing: both are listed in one DatasetError (up to
        :data:`MAX_LISTED` names each). Two files for one frame (e.g. ``a.npy`` and ``a.png``) are an error, and so
        is a PNG/TIFF map without ``scale`` (ConfigError).
        """
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise DatasetError(f"--maps folder {folder} does not exist or is not a folder; give the folder that "
                               f"holds one map file per frame (<frame id>.npy|.npz|.h5|.hdf5|.png|.tif)")
        found = map_files(folder)
        dup = sorted(f"{fid} ({', '.join(p.name for p in ps)})" for fid, ps in found.items() if len(ps) > 1)
        if dup:
            raise DatasetError(f"--maps folder {folder} holds several files for one frame: {_listed(dup)}; keep one "
                               f"file per frame")
        known_set = set(known if known is not None else frames)
        missing = [f for f in frames if f not in found]
        extra = sorted(fid for fid in found if fid not in known_set)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} frame(s) have no map: {_listed(missing)}")
            if extra:
                parts.append(f"{len(extra)} map(s) match no frame: "
                             f"{_listed([found[f][0].relative_to(folder).as_posix() for f in extra])}")
            raise DatasetError(f"--maps folder {folder} does not match the {len(frames)} frames to score: "
                               f"{'; '.join(parts)}. Give exactly one map per frame, named <frame id>.<ext> "
                               f"(e.g. {frames[0] if frames else 'frame'}.npy); nothing was scored")
        files = {f: found[f][0] for f in frames}
        kinds = {MAP_SUFFIXES[p.suffix.lower()] for p in files.values()}
        if "image" in kinds and scale is None:
            first = next(p for p in files.values() if MAP_SUFFIXES[p.suffix.lower()] == "image")
            side = folder / FORMAT_SIDECAR
            hint = f" ({side} states the scale and offset they were written with)" if side.is_file() else ""
            raise ConfigError(f"map {first} is an image: give its scale with --maps-scale S (value = pixel / S "
                              f"+ --maps-offset){hint}")
        if scale is not None and not (np.isfinite(scale) and scale > 0):
            raise ConfigError(f"--maps-scale must be a positive finite number, got {scale!r}")
        return cls(folder, files, scale, float(offset), bool(higher_is_anomalous), kinds)

    def read(self, name: str, shape: tuple[int, int] | None = None) -> np.ndarray:
        """The map of frame ``name`` as float32 (H,W), higher = more anomalous; ``shape``: the frame's label size."""
        path = self.files[name]
        try:
            arr = read_map_file(path, self.scale, self.offset)
        except DatasetError as e:
            raise DatasetError(f"frame {name}: {e}") from e
        if shape is not None and arr.shape != tuple(shape):
            raise DatasetError(f"frame {name}: map {path} is {arr.shape[0]}x{arr.shape[1]} but the frame's label is "
                               f"{shape[0]}x{shape[1]}; write the map at the label's resolution")
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DatasetError(f"frame {name}: map {path} has {int(bad.sum())} NaN/inf value(s); every pixel needs "
                               f"a finite score")
        return arr if self.higher_is_anomalous else -arr


def read_map_file(path: Path, scale: float | None = None, offset: float = 0.0) -> np.ndarray:
    """Raw (H,W) float32 value map of one file (see the module docstring); DatasetError naming the file."""
    kind = MAP_SUFFIXES.get(path.suffix.lower())
    try:
        if kind == "npy":
            arr = np.load(path, allow_pickle=False)
        elif kind == "npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                if len(keys) != 1 and "arr_0" not in keys:
                    raise DatasetError(f"map {path} holds arrays {keys}; expected one array or 'arr_0'")
                arr = z[keys[0] if len(keys) == 1 else "arr_0"]
        elif kind == "h5":
            arr = read_hdf5(path, H5_KEY)
        elif kind == "image":
            data = np.fromfile(str(path), dtype=np.uint8)
            arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
            if arr is None:
                raise DatasetError(f"cannot decode map image {path} (corrupt or not a PNG/TIFF)")
            if arr.ndim == 3:
                raise DatasetError(f"map image {path} has {arr.shape[2]} channels; expected a single-channel "
                                   f"16-bit image")
            arr = arr.astype(np.float64) / float(scale) + offset if scale is not None else arr
        else:
            raise DatasetError(f"map {path}: unknown suffix; use one of {', '.join(MAP_SUFFIXES)}")
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy raises ValueError/OSError/EOFError/zipfile errors for bad files
        raise DatasetError(f"cannot read map {path} (truncated or not a {kind} file?): {type(e).__name__}: "
                           f"{str(e)[:200]}") from e
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiub":
        raise DatasetError(f"map {path} has dtype {arr.dtype}; expected a numeric (H,W) array")
    if arr.ndim > 2:
        arr = arr.squeeze()
    if arr.ndim != 2:
        raise DatasetError(f"map {path} has shape {arr.shape}; expected an (H,W) array")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def to_float16(arr: np.ndarray) -> np.ndarray:
    """float16 copy of a map, clipped to the float16 range (scores beyond +-65504 would become inf)."""
    return np.clip(np.asarray(arr, dtype=np.float32), -F16_MAX, F16_MAX).astype(np.float16)


def png16_pixels(arr: np.ndarray, scale: float, offset: float, path: Path) -> np.ndarray:
    """uint16 pixels round((value - offset) * scale); a value more than one step outside [0, 65535] raises."""
    px = np.rint((np.asarray(arr, dtype=np.float64) - offset) * scale)
    if px.size and (px.min() < -1 or px.max() > 65536):
        raise ConfigError(f"map for {path} has values in [{float(arr.min()):.4g}, {float(arr.max()):.4g}], outside "
                          f"the png16 range [{offset:.4g}, {offset + 65535 / scale:.4g}]; use --save-maps-format "
                          f"npy, npz or h5")
    return np.clip(px, 0, 65535).astype(np.uint16)


def write_map(path: str | os.PathLike, arr: np.ndarray, fmt: str, scale: float | None = None,
              offset: float = 0.0) -> Path:
    """Write the (H,W) map ``arr`` to ``path`` (its suffix is :data:`SAVE_FORMATS` [fmt]) so that
    :func:`read_map_file` reads it back: npy/npz float32 (lossless), h5 float16 dataset ``value`` (gzip 9, the
    SMIYC layout), png16 uint16 pixels = round((value - offset) * scale) (needs ``scale``)."""
    path = Path(path)
    a = np.asarray(arr, dtype=np.float32)
    if fmt in ("npy", "npz"):
        buf = io.BytesIO()
        np.save(buf, a) if fmt == "npy" else np.savez_compressed(buf, a)
        return atomic_write_bytes(path, buf.getvalue())
    if fmt == "h5":
        return write_hdf5(path, to_float16(a), H5_KEY, compression=9)
    if fmt == "png16":
        if scale is None:
            raise ConfigError("png16 maps need a scale (value = pixel / scale + offset)")
        return write_png(path, png16_pixels(a, scale, offset, path))
    raise ConfigError(f"unknown map format {fmt!r}; valid: {', '.join(SAVE_FORMATS)}")
