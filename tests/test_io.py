"""denseood.io: atomic writes, image / label round trips, label checks and their errors, the image-folder lister."""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from denseood import io
from denseood.errors import DatasetError, DenseOODError, OutputError


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------------------- atomic
def test_atomic_target_appears_only_complete(tmp_path):
    target = tmp_path / "sub" / "blob.bin"
    seen = []

    def write(f):
        f.write(b"first half ")
        seen.append(target.exists())  # mid-write: the target does not exist yet
        f.write(b"second half")

    assert io._atomic(target, write) == target
    assert seen == [False] and target.read_bytes() == b"first half second half"
    assert _listing(target.parent) == ["blob.bin"]

    old = target.read_bytes()
    seen.clear()

    def overwrite(f):
        f.write(b"new")
        seen.append(target.read_bytes())  # mid-write: the old content is still whole
        f.write(b" content")

    io._atomic(target, overwrite)
    assert seen == [old] and target.read_bytes() == b"new content"
    assert _listing(target.parent) == ["blob.bin"]


def test_atomic_failure_leaves_no_temp_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "blob.bin"

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        io._atomic(target, boom)
    assert _listing(tmp_path) == []  # neither the target nor a temp file
    io.atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        io._atomic(target, boom)
    assert _listing(tmp_path) == ["blob.bin"] and target.read_bytes() == b"old"


def test_atomic_text_and_json(tmp_path):
    assert io.atomic_write_text(tmp_path / "a.txt", "héllo\n").read_text() == "héllo\n"
    obj = {"n": np.int64(3), "x": np.float32(0.5), "arr": np.arange(3), "path": Path("/a/b"), "list": [1, "two"]}
    p = io.atomic_write_json(tmp_path / "a.json", obj)
    assert json.loads(p.read_text()) == {"n": 3, "x": 0.5, "arr": [0, 1, 2], "path": "/a/b", "list": [1, "two"]}
    assert p.read_text().endswith("\n")
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        io.atomic_write_json(tmp_path / "bad.json", {"o": object()})
    assert sorted(_listing(tmp_path)) == ["a.json", "a.txt"]


def test_atomic_torch_save_round_trip(tmp_path):
    import torch

    t = torch.arange(6).reshape(2, 3)
    p = io.atomic_torch_save({"t": t}, tmp_path / "ck.pt")
    assert torch.equal(torch.load(p)["t"], t) and _listing(tmp_path) == ["ck.pt"]


# ------------------------------------------------------------------------------------------------- round trips
def test_png_round_trips_rgb_gray_and_16_bit(tmp_path, rng):
    rgb = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)
    io.write_png(tmp_path / "rgb.png", rgb)
    back = io.read_image(tmp_path / "rgb.png")
    assert back.dtype == np.uint8 and np.array_equal(back, rgb)
    assert tuple(cv2.imread(str(tmp_path / "rgb.png"))[0, 0]) == (0, 0, 255)  # stored as a real RGB PNG (BGR in cv2)
    gray = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    io.write_png(tmp_path / "gray.png", gray)
    assert np.array_equal(io.read_label(tmp_path / "gray.png"), gray)
    deep = rng.integers(0, 65536, (9, 13), dtype=np.uint16)
    io.write_png(tmp_path / "deep.png", deep)
    lab = io.read_label(tmp_path / "deep.png")
    assert lab.dtype == np.uint16 and np.array_equal(lab, deep)


def test_write_image_png_exact_jpeg_close(tmp_path, rng):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[..., 0] = 200  # red, smooth: survives JPEG closely
    rgb[:, 24:, 1] = 120
    io.write_image(tmp_path / "x.png", rgb)
    assert np.array_equal(io.read_image(tmp_path / "x.png"), rgb)
    for name in ("x.jpg", "x.JPEG"):
        io.write_image(tmp_path / name, rgb, quality=95)
        back = io.read_image(tmp_path / name)
        assert back.shape == rgb.shape
        assert np.abs(back.astype(int) - rgb).mean() < 3  # same channel order, only JPEG loss
    noisy = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    lo = io.write_image(tmp_path / "lo.jpg", noisy, quality=10).stat().st_size
    hi = io.write_image(tmp_path / "hi.jpg", noisy, quality=95).stat().st_size
    assert lo < hi  # quality is passed on


# ---------------------------------------------------------------------------------------------- label errors
def test_read_label_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope_labels.png"
    with pytest.raises(DatasetError, match="label file not found: .*nope_labels.png"):
        io.read_label(missing)
    corrupt = tmp_path / "corrupt_labels.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DatasetError, match=f"cannot decode label file {corrupt}"):
        io.read_label(corrupt)
    empty = tmp_path / "empty_labels.png"
    empty.write_bytes(b"")
    with pytest.raises(DatasetError, match=str(empty)):
        io.read_label(empty)
    colour = np.zeros((4, 5, 3), np.uint8)
    colour[..., 2] = 7
    assert cv2.imwrite(str(tmp_path / "colour.png"), colour)
    with pytest.raises(DatasetError, match=r"colour.png has 3 differing channels"):
        io.read_label(tmp_path / "colour.png")
    same = np.full((4, 5, 3), 9, np.uint8)
    assert cv2.imwrite(str(tmp_path / "same.png"), same)
    lab = io.read_label(tmp_path / "same.png")  # a grey label saved as RGB is accepted
    assert lab.shape == (4, 5) and (lab == 9).all()


def test_check_label_values_names_file_and_values():
    lab = np.array([[0, 1, 255], [7, 7, 1]], np.uint8)
    io.check_label_values(lab, (0, 1, 7, 255), "ok.png", "test")
    with pytest.raises(DatasetError) as e:
        io.check_label_values(lab, (0, 1, 255), "some/lab.png", "binary (0, 1, 255)")
    msg = str(e.value)
    assert "some/lab.png" in msg and "{7}" in msg and "binary (0, 1, 255)" in msg
    many = np.arange(20, dtype=np.uint8).reshape(4, 5)
    with pytest.raises(DatasetError, match=r"\{2, 3, 4, 5, 6, 7, 8, 9, 10, 11 \.\.\.\}"):
        io.check_label_values(many, range(2), "many.png", "tiny")


def test_check_same_size_names_both_files():
    io.check_same_size(np.zeros((4, 6, 3)), np.zeros((4, 6)), "img.png", "lab.png")
    with pytest.raises(DatasetError) as e:
        io.check_same_size(np.zeros((4, 6, 3)), np.zeros((4, 5)), "dir/img.png", "dir/lab.png")
    msg = str(e.value)
    assert "dir/img.png is 6x4" in msg and "dir/lab.png is 5x4" in msg


# ---------------------------------------------------------------------------------------------------- lister
def test_list_images_filters_and_sorts(tmp_path):
    for rel in ("b.png", "a.JPG", "c.webp", "notes.txt", "noext", ".hidden.png", "sub/d.png", "sub/.e.jpg",
                "z.tiff", "y.bmp"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (tmp_path / "folder.png").mkdir()  # a folder with an image suffix is not an image
    names = lambda ps: [str(p.relative_to(tmp_path)) for p in ps]  # noqa: E731
    assert names(io.list_images(tmp_path)) == [".hidden.png", "a.JPG", "b.png", "c.webp", "y.bmp", "z.tiff"]
    assert names(io.list_images(tmp_path, hidden=False)) == ["a.JPG", "b.png", "c.webp", "y.bmp", "z.tiff"]
    assert names(io.list_images(str(tmp_path), recursive=True, hidden=False)) == [
        "a.JPG", "b.png", "c.webp", "sub/d.png", "y.bmp", "z.tiff"]
    assert "sub/.e.jpg" in names(io.list_images(tmp_path, recursive=True))


# ------------------------------------------------------------------------------------------------------ alpha
def test_read_image_alpha_with_and_without_alpha(tmp_path, rng):
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    rgb, alpha = io.read_image_alpha(tmp_path / "rgba.png")
    assert np.array_equal(rgb, rgba[..., :3]) and np.array_equal(alpha, rgba[..., 3])
    io.write_png(tmp_path / "rgb.png", rgba[..., :3])
    rgb, alpha = io.read_image_alpha(tmp_path / "rgb.png")
    assert alpha is None and np.array_equal(rgb, rgba[..., :3])
    gray = rgba[..., 0]
    io.write_png(tmp_path / "gray.png", gray)
    rgb, alpha = io.read_image_alpha(tmp_path / "gray.png")
    assert alpha is None and rgb.shape == (6, 7, 3) and all(np.array_equal(rgb[..., c], gray) for c in range(3))
    deep = (rgba.astype(np.uint16) << 8) | 0xFF  # 16-bit RGBA: scaled to 8 bit
    assert cv2.imwrite(str(tmp_path / "deep.png"), cv2.cvtColor(deep, cv2.COLOR_RGBA2BGRA))
    rgb, alpha = io.read_image_alpha(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and np.array_equal(rgb, rgba[..., :3]) and np.array_equal(alpha, rgba[..., 3])


# ---------------------------------------------------------------------------------------------- corrupt image
@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n\x00\x00", b""])
def test_corrupt_image_names_the_file(tmp_path, content):
    p = tmp_path / "broken.png"
    p.write_bytes(content)
    for read in (io.read_image, io.read_image_alpha):
        with pytest.raises(DatasetError, match=f"cannot decode image file {p}"):
            read(p)
    with pytest.raises(DatasetError, match=f"image file not found: {tmp_path / 'gone.jpg'}"):
        io.read_image(tmp_path / "gone.jpg")


# ----------------------------------------------------------------------------------- permissions, OSError, temp
@pytest.mark.parametrize("umask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_honour_the_umask(tmp_path, umask, expected):
    import stat

    old = os.umask(umask)
    try:
        paths = [io.atomic_write_bytes(tmp_path / "a.bin", b"x"), io.atomic_write_json(tmp_path / "b.json", {}),
                 io.write_png(tmp_path / "c.png", np.zeros((4, 4), np.uint8))]
    finally:
        os.umask(old)
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == expected, p


@pytest.mark.parametrize("err,cause", [(errno.ENOSPC, "disk full"), (errno.EROFS, "read-only file system"),
                                       (errno.EACCES, "permission denied")])
@pytest.mark.parametrize("where", ["replace", "write"])
def test_atomic_oserror_becomes_output_error(tmp_path, monkeypatch, err, cause, where):
    target = tmp_path / "run" / "last.pt"
    io.atomic_write_bytes(target, b"old")

    def fail(*a, **k):
        raise OSError(err, os.strerror(err))

    if where == "replace":
        monkeypatch.setattr(io.os, "replace", fail)
        write = lambda f: f.write(b"new")  # noqa: E731
    else:
        write = lambda f: fail()  # noqa: E731
    with pytest.raises(OutputError) as e:
        io._atomic(target, write)
    msg = str(e.value)
    assert msg == f"{cause} while writing {target}; the previous file is intact"
    assert isinstance(e.value, OSError) and isinstance(e.value, DenseOODError) and e.value.errno == err
    assert target.read_bytes() == b"old" and _listing(target.parent) == ["last.pt"]  # temp file removed


def test_atomic_oserror_on_new_file_and_read_only_folder(tmp_path, monkeypatch):
    def erofs(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(io.os, "open", erofs)
    with pytest.raises(OutputError, match=r"read-only file system while writing .*new\.json; nothing was written"):
        io.atomic_write_json(tmp_path / "new.json", {"a": 1})
    assert _listing(tmp_path) == []


def test_check_writable_dir(tmp_path, monkeypatch):
    out = tmp_path / "a" / "b"
    assert io.check_writable_dir(out) == out and out.is_dir() and _listing(out) == []
    real_open = open

    def enospc(path, *a, **k):
        if "denseood-tmp" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", enospc)
    with pytest.raises(OutputError, match=r"--eval-out folder .*b is not writable: disk full"):
        io.check_writable_dir(out, what="--eval-out")
    monkeypatch.undo()
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        try:
            with pytest.raises(OutputError, match="ro is not writable: permission denied"):
                io.check_writable_dir(ro)
        finally:
            ro.chmod(0o755)


def test_clean_stale_temp_removes_only_dead_writers_temp_files(tmp_path):
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    sub = tmp_path / "masks"
    sub.mkdir()
    stale = [tmp_path / f".last.pt.denseood-tmp-{dead.pid}-0a1b2c3d", sub / f".x.png.denseood-tmp-{dead.pid}-ff00ff00"]
    live = [tmp_path / f".best.pt.denseood-tmp-{os.getpid()}-12345678",
            tmp_path / f".m.json.denseood-tmp-{os.getppid()}-abcdef01"]
    others = [tmp_path / "last.pt", tmp_path / ".last.pt.abc.tmp", tmp_path / f"denseood-tmp-{dead.pid}-00",
              tmp_path / f".notes.denseood-tmp-{dead.pid}-zz"]
    for p in stale + live + others:
        p.write_bytes(b"x")
    removed = io.clean_stale_temp(tmp_path)
    assert sorted(removed) == sorted(stale)
    assert all(p.exists() for p in live + others) and not any(p.exists() for p in stale)
    assert io.clean_stale_temp(tmp_path / "missing") == []


def test_atomic_temp_name_is_recognised_by_clean_stale_temp(tmp_path):
    seen = []
    io._atomic(tmp_path / "a.bin", lambda f: seen.extend(p.name for p in tmp_path.iterdir()))
    assert len(seen) == 1 and io._TMP_RE.match(seen[0]) and f"-tmp-{os.getpid()}-" in seen[0]
