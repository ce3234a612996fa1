"""denseood.data.maps: the map-folder reader (formats, matching, bad maps) and write_map round trips."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from denseood.data.maps import MapFolder, read_map_file, write_map
from denseood.errors import ConfigError, DatasetError
from denseood.io import read_hdf5, write_hdf5, write_png

FRAMES = ["a", "b", "sub/c"]


def _arr(seed: int, shape=(5, 7)) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _npy_folder(tmp_path, frames=FRAMES):
    folder = tmp_path / "m"
    for i, f in enumerate(frames):
        write_map(folder / f"{f}.npy", _arr(i), "npy")
    return folder


def test_each_format_reads_back(tmp_path):
    a = _arr(0)
    write_map(tmp_path / "x.npy", a, "npy")
    write_map(tmp_path / "x.npz", a, "npz")
    write_map(tmp_path / "x.hdf5", a, "h5")
    np.testing.assert_array_equal(read_map_file(tmp_path / "x.npy"), a)
    np.testing.assert_array_equal(read_map_file(tmp_path / "x.npz"), a)
    np.testing.assert_array_equal(read_map_file(tmp_path / "x.hdf5"), a.astype(np.float16).astype(np.float32))
    with h5py.File(tmp_path / "x.hdf5", "r") as f:  # the SMIYC evaluator's layout
        assert list(f.keys()) == ["value"] and f["value"].dtype == np.float16
    u = np.abs(a) / 10
    write_map(tmp_path / "x.png", u, "png16", scale=1000.0, offset=-0.5)
    np.testing.assert_allclose(read_map_file(tmp_path / "x.png", 1000.0, -0.5), u, atol=0.5 / 1000 + 1e-7)


def test_npz_with_several_arrays_uses_arr_0_and_h5_takes_a_squeezable_value(tmp_path):
    a = _arr(1)
    np.savez(tmp_path / "s2m.npz", arr_0=a, arr_1=a * 2)
    np.testing.assert_array_equal(read_map_file(tmp_path / "s2m.npz"), a)
    np.savez(tmp_path / "bad.npz", x=a, y=a)
    with pytest.raises(DatasetError, match="bad.npz.*arr_0"):
        read_map_file(tmp_path / "bad.npz")
    write_hdf5(tmp_path / "o.h5", a[None].astype(np.float16))  # (1,H,W) as written by the benchmark's methods
    assert read_map_file(tmp_path / "o.h5").shape == a.shape
    write_hdf5(tmp_path / "k.h5", a, key="anomaly")
    with pytest.raises(DatasetError, match="k.h5.*'value'"):
        read_hdf5(tmp_path / "k.h5")


def test_tiff_16_bit_with_scale(tmp_path):
    import cv2

    px = (np.arange(35).reshape(5, 7) * 1000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "t.tif"), px)
    np.testing.assert_allclose(read_map_file(tmp_path / "t.tif", 100.0), px / 100.0, rtol=1e-6)


def test_folder_matches_frames_with_subfolders_and_flips_sign(tmp_path):
    folder = _npy_folder(tmp_path)
    (folder / "notes.txt").write_text("not a map")  # other suffixes are ignored
    m = MapFolder.open(folder, FRAMES)
    np.testing.assert_array_equal(m.read("sub/c"), _arr(2))
    flipped = MapFolder.open(folder, FRAMES, higher_is_anomalous=False)
    np.testing.assert_array_equal(flipped.read("a"), -_arr(0))


def test_missing_and_extra_maps_are_listed_in_one_error(tmp_path):
    folder = _npy_folder(tmp_path, ["a", "zz_extra"])
    with pytest.raises(DatasetError) as e:
        MapFolder.open(folder, FRAMES)
    msg = str(e.value)
    assert str(folder) in msg and "2 frame(s) have no map: b, sub/c" in msg and "zz_extra.npy" in msg
    assert "nothing was scored" in msg


def test_missing_list_is_capped(tmp_path):
    frames = [f"f{i:02d}" for i in range(25)]
    folder = _npy_folder(tmp_path, frames[:1])
    with pytest.raises(DatasetError, match=r"24 frame\(s\) have no map: f01, .*f10, \.\.\. \(14 more\)"):
        MapFolder.open(folder, frames)


def test_maps_of_known_frames_outside_the_scored_ones_are_not_extra(tmp_path):
    folder = _npy_folder(tmp_path)
    m = MapFolder.open(folder, FRAMES[:1], known=FRAMES)  # --limit 1
    assert list(m.files) == ["a"]


def test_two_files_for_one_frame(tmp_path):
    folder = _npy_folder(tmp_path)
    write_map(folder / "a.npz", _arr(0), "npz")
    with pytest.raises(DatasetError, match="several files for one frame: a"):
        MapFolder.open(folder, FRAMES)


def test_png_without_scale_is_refused(tmp_path):
    folder = tmp_path / "m"
    for f in FRAMES:
        write_png(folder / f"{f}.png", np.zeros((5, 7), np.uint16))
    with pytest.raises(ConfigError, match=r"a.png is an image: give its scale with --maps-scale"):
        MapFolder.open(folder, FRAMES)


def test_size_mismatch_names_frame_and_file(tmp_path):
    m = MapFolder.open(_npy_folder(tmp_path), FRAMES)
    with pytest.raises(DatasetError, match=r"frame b: map .*b.npy is 5x7 but the frame's label is 6x7"):
        m.read("b", (6, 7))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_names_frame_and_file(tmp_path, bad):
    folder = _npy_folder(tmp_path)
    a = _arr(1)
    a[2, 3] = bad
    np.save(folder / "b.npy", a)
    with pytest.raises(DatasetError, match=r"frame b: map .*b.npy has 1 NaN/inf value"):
        MapFolder.open(folder, FRAMES).read("b")


def test_unreadable_file_names_frame_and_file(tmp_path):
    folder = _npy_folder(tmp_path)
    (folder / "sub" / "c.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match=r"frame sub/c: cannot read map .*c.npy"):
        MapFolder.open(folder, FRAMES).read("sub/c")


def test_wrong_shape_or_dtype(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(DatasetError, match=r"x.npy has shape \(2, 3, 4\)"):
        read_map_file(tmp_path / "x.npy")
    np.save(tmp_path / "s.npy", np.array([["a"]]))
    with pytest.raises(DatasetError, match="s.npy has dtype"):
        read_map_file(tmp_path / "s.npy")


def test_png16_refuses_values_outside_its_range(tmp_path):
    with pytest.raises(ConfigError, match="outside the png16 range"):
        write_map(tmp_path / "x.png", np.full((2, 2), -1.0), "png16", scale=100.0, offset=0.0)
