"""File I/O shared by all stages: atomic writes (temp file + rename), image/label reading with errors that name the
file, label value / size checks and the image-folder lister.

See docs/architecture.md.
"""
from __future__ import annotations

import errno
import json
import os
import pickle
import re
import warnings
import secrets
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .errors import CheckpointError, DatasetError, DenseOODError, OutputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


_TMP_TAG = ".denseood-tmp-"
_TMP_RE = re.compile(r"^\..+" + re.escape(_TMP_TAG) + r"(\d+)-[0-9a-f]+$")
_ERRNO_CAUSE = {errno.ENOSPC: "disk full", errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted", errno.EDQUOT: "disk quota exceeded"}


def _cause(e: OSError) -> str:
    """Short human cause of an OSError ("disk full", "read-only file system", ...)."""
    return _ERRNO_CAUSE.get(e.errno or 0) or (e.strerror or str(e) or type(e).__name__)


def _output_error(e: OSError, doing: str, path: Path, tail: str = "") -> OutputError:
    err = OutputError(f"{_cause(e)} while {doing} {path}{tail}")
    err.errno = e.errno
    return err


def _tmp_name(path: Path) -> Path:
    """``.<name>.denseood-tmp-<pid>-<random hex>`` beside ``path`` (recognised by :func:`clean_stale_temp`)."""
    return path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}-{secrets.token_hex(4)}")


def _atomic(path: str | os.PathLike, write_fn, mode: str = "wb", *, sync: bool = True) -> Path:
    """Write through ``write_fn(fileobj)`` to a temp file in the same folder, fsync (``sync``), then rename over
    ``path``.

    The file gets the mode a plain ``open()`` would give (0o666 & ~umask). An OSError (disk full, read-only file
    system, permission denied) becomes OutputError naming ``path`` and the cause; the temp file is removed and a
    previous file at ``path`` stays intact.
    """
    path = Path(path)
    existed = path.exists()
    tail = "; the previous file is intact" if existed else "; nothing was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _output_error(e, "creating the folder of", path) from e
    tmp = _tmp_name(path)
    try:
        # 0o666 through the kernel's umask: the same permissions an ordinary open(path, "w") would give
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _output_error(e, "writing", path, tail) from e
    try:
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        _test_pause_before_rename(path)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OutputError):
            raise
        os_err = _os_error_in(e)
        if os_err is not None:
            raise _output_error(os_err, "writing", path, tail) from e
        if isinstance(e, RuntimeError) and any(k in str(e) for k in _TORCH_WRITE_FAIL):
            raise _output_error(OSError(errno.ENOSPC if _low_space(path.parent) else errno.EIO, "write failed"),
                                "writing", path, tail) from e
        raise
    return path


#: torch.save's own messages for a failed write (its C++ writer hides the OSError behind these)
_TORCH_WRITE_FAIL = ("inline_container", "PytorchStreamWriter", "file write failed")


def _os_error_in(e: BaseException) -> OSError | None:
    """``e`` itself, or the OSError in its cause/context chain (torch.save turns a failed write into RuntimeError)."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e, seen = (e.__cause__ or e.__context__), seen + 1
    return None


def _low_space(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < (64 << 20)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """``np.save`` of a scratch file through the atomic writer, without fsync (a reader never sees a partial
    file; a crash may lose it); OSError -> OutputError naming it."""
    return _atomic(path, lambda f: np.save(f, array), sync=False)


def _test_pause_before_rename(path: Path) -> None:
    """TEST-ONLY hook of the atomic writers (never set these outside tests), for killing a process inside a write.

    ``DENSEOOD_TEST_SLOW_WRITE=<seconds>``: sleep that long after the temp file is written and synced and before
    it is renamed over ``path``; ``DENSEOOD_TEST_SLOW_WRITE_NAME=<file name>`` limits that to targets of that
    name (e.g. ``last.pt``); ``DENSEOOD_TEST_WRITE_MARKER=<path>``: append the target path as one line to that
    file when the sleep starts. Unset (the normal case) this does nothing.
    """
    seconds = os.environ.get("DENSEOOD_TEST_SLOW_WRITE")
    if not seconds or os.environ.get("DENSEOOD_TEST_SLOW_WRITE_NAME", path.name) != path.name:
        return
    marker = os.environ.get("DENSEOOD_TEST_WRITE_MARKER")
    if marker:
        with open(marker, "a") as f:
            f.write(f"{path}\n")
    time.sleep(float(seconds))


def check_writable_dir(path: str | os.PathLike, what: str = "--out") -> Path:
    """Create folder ``path`` if needed and write + remove one probe file; OutputError naming ``what``, the folder
    and the cause (read-only file system, permission denied, disk full) otherwise. Returns the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = _tmp_name(path / "write-probe")
        with open(probe, "wb") as f:
            f.write(b"denseood write probe")
            f.flush()
            os.fsync(f.fileno())
        os.unlink(probe)
    except OSError as e:
        err = OutputError(f"{what} folder {path} is not writable: {_cause(e)}")
        err.errno = e.errno
        raise err from e
    return path


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_temp(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temp files (``.<name>.denseood-tmp-<pid>-<hex>``) that this package's atomic writers left in
    ``folder`` (and its subfolders when ``recursive``) when a run was killed; only files whose writer pid is no
    longer alive. Other files are never touched. Returns the removed paths; a missing folder gives []."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed: list[Path] = []
    for p in (folder.rglob(f".*{_TMP_TAG}*") if recursive else folder.glob(f".*{_TMP_TAG}*")):
        m = _TMP_RE.match(p.name)
        if not m or not p.is_file() or p.is_symlink():
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


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
    found = [p for p in it if p.suffix.lower() in IMAGE_EXTENSIONS and (hidden or not p.name.startswith("."))]
    broken = [p for p in found if p.is_symlink() and not p.is_file()]
    if broken:
        shown = ", ".join(f"{p} ({broken_link_reason(p)})" for p in broken[:3]) + (" ..." if len(broken) > 3 else "")
        raise DatasetError(f"image folder {folder} holds {len(broken)} broken symlink(s): {shown}; fix or remove them")
    return sorted(p for p in found if p.is_file())


def broken_link_reason(link: Path) -> str:
    """"dangling -> target", "symlink loop" or "points to a folder" for a symlink that is not a file."""
    try:
        link.resolve(strict=True)
    except RuntimeError:
        return "symlink loop"
    except OSError as e:
        return "symlink loop" if e.errno == errno.ELOOP else f"dangling -> {os.readlink(link)}"
    return "points to a folder"


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


_TORCH_ADVICE = ("weights_only", "weights only", "file an issue", "trust", "will likely succeed")


def _unsafe_global(msg: str) -> str:
    m = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", msg, re.IGNORECASE)
    return m.group(1) if m else ""


def _is_plain_pickle(src: Any) -> bool:
    """Whether ``src`` (a path or a seekable binary file) starts with a pickle protocol header (0x80) rather
    than torch's zip container ("PK"): a file written by pickle.dump, which torch's safe loader cannot read."""
    try:
        if hasattr(src, "read"):
            pos = src.tell()
            src.seek(0)
            head = src.read(2)
            src.seek(pos)
        else:
            with open(src, "rb") as f:
                head = f.read(2)
    except (OSError, ValueError):
        return False
    return len(head) == 2 and head[0] == 0x80 and head[1] >= 2


def safe_torch_load(src: Any, *, path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu",
                    error: type[DenseOODError] = CheckpointError, kind: str | None = None) -> Any:
    """``torch.load(src, weights_only=True)``: the one torch.load of the package.

    src: a path or a binary file object; path: the file to name in errors; what: what the file is ("checkpoint",
    "encoder weight file", "SAM checkpoint", "prompter file"); kind: how the refusal names the file (default
    "a safe <what>"). A file holding arbitrary pickled Python objects is
    refused with ``error`` saying so (loading it could execute code) and what a safe file is; any other failure gives
    ``error`` naming the file as unreadable. torch's advice to retry with weights_only=False is never passed on.
    """
    import torch

    try:
        with warnings.catch_warnings():   # torch warns about a plain pickle's protocol before refusing it
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(src, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        msg = str(e)
        low = msg.lower()
        # type first (the weights_only unpickler raises pickle.UnpicklingError), message second, case-insensitive
        # ("Unsupported global" in older torch, "unsupported GLOBAL" in 2.14)
        unsafe = "unsupported global" in low or (isinstance(e, pickle.UnpicklingError)
                                                 and "weights only load failed" in low
                                                 and re.search(r"\bglobal\b", low) is not None)
        if unsafe:
            g = _unsafe_global(msg)
            raise error(
                f"{path} is not {kind or 'a safe ' + what}: it contains arbitrary Python objects"
                f"{f' ({g})' if g else ''}, not just tensors; "
                f"denseood refuses to load it because unpickling it could execute code. A safe file holds only "
                f"tensors and plain types (dict, list, str, int, float, bool, None): re-save it from a trusted "
                f"environment with torch.save(model.state_dict(), path)") from e
        if isinstance(e, pickle.UnpicklingError) and _is_plain_pickle(src) and not any(
                k in low for k in ("truncated", "ran out of input", "eof")):
            raise error(
                f"{path} is not {kind or 'a safe ' + what}: it is a plain Python pickle (pickle.dump), not a "
                f"torch.save file of tensors; denseood refuses to unpickle it because that could execute code. "
                f"Re-save it from a trusted environment with torch.save(model.state_dict(), path)") from e
        first = next((ln.strip() for ln in msg.splitlines()
                      if ln.strip() and not any(k in ln.lower() for k in _TORCH_ADVICE)), "")
        raise error(f"{path} is not a readable {what} (truncated or corrupt?): "
                    f"{type(e).__name__}{': ' + first[:200] if first else ''}") from e


# ----------------------------------------------------------------------------------------------- HDF5
def write_hdf5(path: str | os.PathLike, array: np.ndarray, key: str = "value", compression: int | None = 9) -> Path:
    """Write ``array`` as the one dataset ``key`` of an HDF5 file, atomically (gzip ``compression`` 0-9 or None).

    ``key="value"``, ``compression=9`` is the layout the SegmentMeIfYouCan evaluator reads and writes
    (``road_anomaly_benchmark.datasets.dataset_io.ChannelLoaderHDF5``). The file is built in memory first.
    """
    import io as _io

    import h5py

    buf = _io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.create_dataset(key, data=np.asarray(array), compression=compression)
    return atomic_write_bytes(path, buf.getvalue())


def read_hdf5(path: str | os.PathLike, key: str = "value") -> np.ndarray:
    """Dataset ``key`` of HDF5 file ``path`` as an array; DatasetError naming the file (missing, unreadable, no key)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"HDF5 file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if key not in f:
                raise DatasetError(f"HDF5 file {path} has no dataset {key!r} (it holds {sorted(f.keys())}); "
                                   f"write the array as dataset {key!r}")
            return np.asarray(f[key][()])
    except DatasetError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises OSError/KeyError/ValueError for bad files
        raise DatasetError(f"cannot read HDF5 file {path} (truncated or not HDF5?): {type(e).__name__}: "
                           f"{str(e)[:200]}") from e


def image_header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """(H, W) of an image file read from its header only (nothing is decoded); None when the header is unreadable
    (``read_image`` then reports the file). PIL's own decompression-bomb limit is lifted for this one call only,
    since the caller applies its own limit (``--max-pixels``)."""
    import warnings

    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings(), Image.open(path) as im:
            warnings.simplefilter("ignore")
            w, h = im.size
        return int(h), int(w)
    except Exception:  # noqa: BLE001 - unreadable headers are reported by read_image later
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = old
