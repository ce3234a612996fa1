"""File I/O shared by all stages: atomic writes (temp file + rename), image/label reading with errors that name the
file, label value / size checks and the image-folder lister.

See docs/architecture.md.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import DatasetError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def _atomic(path: str | os.PathLike, write_fn, mode: str = "wb") -> Path:
    """Write through ``write_fn(fileobj)`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return _atomic(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text), "w")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` that never leaves a half-written file at ``path`` (safe against SIGKILL)."""
    import torch

    return _atomic(path, lambda f: torch.save(obj, f), "wb")


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a (H,W) uint8/uint16 or (H,W,3) uint8 RGB array as PNG, atomically."""
    arr = np.asarray(array)
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise OSError(f"could not encode PNG for {path}")
    return atomic_write_bytes(path, buf.tobytes())


def write_image(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write an (H,W,3) uint8 RGB image; format from the suffix (.png lossless, .jpg/.webp at ``quality``)."""
    path = Path(path)
    ext = path.suffix.lower()
    bgr = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise OSError(f"could not encode {ext} image for {path}")
    return atomic_write_bytes(path, buf.tobytes())


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H,W,3) uint8 RGB. Raises DatasetError naming the file if missing or unreadable."""
    img = _decode_image(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _decode_image(path: str | os.PathLike, flags: int) -> np.ndarray:
    """cv2.imdecode of ``path`` with ``flags``; DatasetError naming the file when missing or undecodable.

    EXIF orientation is ignored by the callers (IMREAD_IGNORE_ORIENTATION / IMREAD_UNCHANGED) so that images stay
    aligned pixel for pixel with their label PNGs.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"image file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, flags) if data.size else None
    if img is None:
        raise DatasetError(f"cannot decode image file {path} (corrupt or not an image); re-extract or remove it")
    return img


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG unchanged (uint8 or uint16, (H,W)). Raises DatasetError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"label file not found: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    lab = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if lab is None:
        raise DatasetError(f"cannot decode label file {path} (corrupt or not a PNG)")
    if lab.ndim == 3:
        # palette/RGB-saved single-channel labels: accept only if all channels agree
        if lab.shape[2] >= 3 and np.array_equal(lab[..., 0], lab[..., 1]) and np.array_equal(lab[..., 1], lab[..., 2]):
            lab = lab[..., 0]
        else:
            raise DatasetError(f"label file {path} has {lab.shape[2]} differing channels; expected a single-channel PNG of label ids")
    return lab


def check_label_values(lab: np.ndarray, allowed: np.ndarray | list[int] | range, path: str | os.PathLike, convention: str) -> None:
    """Raise DatasetError naming ``path`` and the offending values when ``lab`` holds values outside ``allowed``."""
    allowed_arr = np.asarray(list(allowed))
    vals = np.unique(lab)
    bad = vals[~np.isin(vals, allowed_arr)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:10]) + (" ..." if bad.size > 10 else "")
        raise DatasetError(f"label file {path} holds values {{{shown}}} outside the {convention} convention; check the dataset root or the label version")


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: str | os.PathLike, label_path: str | os.PathLike) -> None:
    if image.shape[:2] != label.shape[:2]:
        raise DatasetError(
            f"size mismatch: image {image_path} is {image.shape[1]}x{image.shape[0]} but label {label_path} is "
            f"{label.shape[1]}x{label.shape[0]} (WxH); the label must match its image pixel for pixel")


def list_images(folder: str | os.PathLike, recursive: bool = False, *, hidden: bool = True) -> list[Path]:
    """Image files (suffix in IMAGE_EXTENSIONS, case-insensitive) in ``folder``, sorted by path.

    recursive: also search subfolders. hidden: False skips files whose name starts with '.' (e.g. macOS ``._x.png``
    resource forks); the dataset readers pass False. The one image-folder lister of the package.
    """
    folder = Path(folder)
    it = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and (hidden or not p.name.startswith(".")))


def read_image_alpha(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image as ((H,W,3) uint8 RGB, (H,W) uint8 alpha or None when the file has no alpha channel).

    16-bit images are scaled to 8 bit. Raises DatasetError naming the file if missing or unreadable.
    """
    img = _decode_image(path, cv2.IMREAD_UNCHANGED)
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.dtype != np.uint8:
        raise DatasetError(f"image file {path} has pixel type {img.dtype}; expected 8- or 16-bit")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB), None
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB), np.ascontiguousarray(img[..., 3])
    if img.shape[2] == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB), None
    if img.shape[2] == 2:  # gray + alpha
        return cv2.cvtColor(np.ascontiguousarray(img[..., 0]), cv2.COLOR_GRAY2RGB), np.ascontiguousarray(img[..., 1])
    raise DatasetError(f"image file {path} has {img.shape[2]} channels; expected gray, RGB or RGBA")
