"""Synthetic road world: layout, determinism, label consistency, class coverage, anomaly sizes, full size."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from denseood.data import synthetic as S
from denseood.data.classes import cityscapes_lut
from denseood.errors import ConfigError
from denseood.io import read_image, read_label

SIZE = (64, 128)


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _expected_files(n_train: int, n_val: int) -> set[str]:
    out = {"synthetic.json"}
    for i in range(n_train):
        out |= {f"leftImg8bit/train/synth/synth_000000_{i:06d}_leftImg8bit.png",
                f"gtFine/train/synth/synth_000000_{i:06d}_gtFine_labelTrainIds.png",
                f"gtFine/train/synth/synth_000000_{i:06d}_gtFine_labelIds.png"}
    for i in range(n_val):
        out |= {f"dataset_AnomalyTrack/images/synth{i:04d}.png",
                f"dataset_AnomalyTrack/labels_masks/synth{i:04d}_labels_semantic.png",
                f"dataset_AnomalyTrack/labels_masks/synth{i:04d}_labels_instance.png",
                f"dataset_AnomalyTrack/labels_masks/synth{i:04d}_labels_trainids.png"}
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    manifest = S.write(root, n_train=3, n_val=4, seed=7, size=SIZE, progress=False)
    return root, manifest


def test_exact_layout_and_manifest(written):
    root, manifest = written
    assert set(_hashes(root)) == _expected_files(3, 4)
    on_disk = json.loads((root / "synthetic.json").read_text())
    assert on_disk == manifest
    assert (on_disk["seed"], on_disk["size"], on_disk["n_train"], on_disk["n_val"]) == (7, list(SIZE), 3, 4)
    assert on_disk["version"] == S.GENERATOR_VERSION


def test_training_files_values(written):
    root, _ = written
    lut = cityscapes_lut()
    for i in range(3):
        img = read_image(root / f"leftImg8bit/train/synth/synth_000000_{i:06d}_leftImg8bit.png")
        tid = read_label(root / f"gtFine/train/synth/synth_000000_{i:06d}_gtFine_labelTrainIds.png")
        lid = read_label(root / f"gtFine/train/synth/synth_000000_{i:06d}_gtFine_labelIds.png")
        assert img.shape == (*SIZE, 3) and img.dtype == np.uint8
        assert tid.shape == SIZE and tid.dtype == np.uint8 and lid.dtype == np.uint8
        vals = np.unique(tid)
        assert np.all((vals <= 18) | (vals == 255))
        # labelIds map back to the train ids through the cityscapesScripts table; ignore is written as labelId 0
        assert np.array_equal(lut[lid], tid)
        assert np.all(lid[tid == 255] == 0)
        # the written files are exactly generate() of this (seed, split, index)
        g = S.generate(S.image_rng(7, "train", i), SIZE, anomalies=False)
        assert np.array_equal(g["image"], img) and np.array_equal(g["semantic"], tid)


def test_eval_files_values(written):
    root, _ = written
    for i in range(4):
        lm = root / "dataset_AnomalyTrack/labels_masks"
        img = read_image(root / f"dataset_AnomalyTrack/images/synth{i:04d}.png")
        sem = read_label(lm / f"synth{i:04d}_labels_semantic.png")
        inst = read_label(lm / f"synth{i:04d}_labels_instance.png")
        tid = read_label(lm / f"synth{i:04d}_labels_trainids.png")
        assert img.shape == (*SIZE, 3)
        assert sem.dtype == np.uint8 and inst.dtype == np.uint16 and tid.dtype == np.uint8
        assert set(np.unique(sem).tolist()) <= {0, 1, 255}
        assert (sem == 1).any(), f"eval image {i} has no anomaly"
        valid = sem != 255
        assert np.array_equal((inst > 0)[valid], (sem == 1)[valid])
        assert np.all(tid[sem != 0] == 255)
        tv = np.unique(tid)
        assert np.all((tv <= 18) | (tv == 255))
        g = S.generate(S.image_rng(7, "val", i), SIZE, anomalies=True)
        assert np.array_equal(g["image"], img) and np.array_equal(g["ood_mask"], sem)
        assert np.array_equal(g["instances"], inst.astype(np.int32))


def test_same_seed_byte_identical_other_seed_differs(tmp_path, written):
    root, _ = written
    again = tmp_path / "again"
    S.write(again, n_train=3, n_val=4, seed=7, size=SIZE, progress=False)
    assert _hashes(again) == _hashes(root)
    other = tmp_path / "other"
    S.write(other, n_train=3, n_val=4, seed=8, size=SIZE, progress=False)
    h1, h2 = _hashes(root), _hashes(other)
    imgs = [k for k in h1 if k.endswith("leftImg8bit.png") or "/images/" in k]
    assert all(h1[k] != h2[k] for k in imgs)


def test_n_train_does_not_change_val_and_order_free(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    S.write(a, n_train=1, n_val=2, seed=3, size=SIZE, progress=False)
    S.write(b, n_train=4, n_val=3, seed=3, size=SIZE, progress=False)
    ha, hb = _hashes(a), _hashes(b)
    shared = [k for k in ha if k != "synthetic.json"]
    assert shared and all(ha[k] == hb[k] for k in shared)
    # image 2 generated alone equals image 2 of a batch
    batch = S.generate_batch(3, 3, SIZE, anomalies=True)
    alone = S.generate(S.image_rng(3, "val", 2), SIZE, anomalies=True)
    for k in ("image", "semantic", "ood_mask", "instances"):
        assert np.array_equal(batch[2][k], alone[k])
    # and the train / val streams are not the same stream
    assert not np.array_equal(S.generate(S.image_rng(3, "train", 0), SIZE)["image"],
                              S.generate(S.image_rng(3, "val", 0), SIZE)["image"])


def test_rewrite_smaller_removes_stale_files(tmp_path):
    S.write(tmp_path, n_train=3, n_val=3, seed=0, size=SIZE, progress=False)
    S.write(tmp_path, n_train=1, n_val=2, seed=0, size=SIZE, progress=False)
    assert set(_hashes(tmp_path)) == _expected_files(1, 2)


def test_rewrite_never_deletes_files_of_a_folder_without_its_manifest(tmp_path):
    S.write(tmp_path, n_train=3, n_val=3, seed=0, size=SIZE, progress=False)
    (tmp_path / "synthetic.json").unlink()  # no manifest: not recognisably denseood's world any more
    stale = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    S.write(tmp_path, n_train=1, n_val=2, seed=0, size=SIZE, progress=False)
    assert all((tmp_path / p).is_file() for p in stale)  # nothing deleted


def test_anomalies_every_eval_image_never_training():
    H, W = 128, 256
    for g in S.generate_batch(11, 10, (H, W), anomalies=True):
        assert set(g) == {"image", "semantic", "ood_mask", "instances"}
        ood, inst, sem = g["ood_mask"], g["instances"], g["semantic"]
        assert ood.dtype == np.uint8 and inst.dtype == np.int32 and sem.dtype == np.uint8 and g["image"].dtype == np.uint8
        assert set(np.unique(ood).tolist()) <= {0, 1, 255}
        k = int(inst.max())
        assert 1 <= k <= 4
        ids = np.unique(inst)
        assert ids.tolist() == list(range(k + 1)), "instance ids must be 1..K, each visible"
        assert np.array_equal(inst > 0, ood == 1)   # void never lies on anomaly pixels here
        for i in range(1, k + 1):                    # no anomaly is wholly void
            assert np.count_nonzero((inst == i) & (ood == 1)) > 0
        assert np.all(sem[ood == 1] == 255)
        sv = np.unique(sem)
        assert np.all((sv <= 18) | (sv == 255))
        assert (ood == 255).any(), "each eval image carries some void"
    for g in S.generate_batch(11, 10, (H, W), anomalies=False):
        assert not (g["ood_mask"] == 1).any() and not g["instances"].any()
        assert set(np.unique(g["ood_mask"]).tolist()) <= {0, 255}
        # inlier pixels all carry a train id; 255 only on the ego-vehicle hood = the void of ood_mask
        assert np.array_equal(g["semantic"] == 255, g["ood_mask"] == 255)


def test_class_histogram_of_training_split_covers_19_ids():
    hist = np.zeros(256, np.int64)
    for g in S.generate_batch(0, 20, (128, 256), anomalies=False):
        hist += np.bincount(g["semantic"].ravel(), minlength=256)
    missing = [c for c in range(19) if hist[c] == 0]
    assert not missing, f"train ids never drawn: {missing}"
    assert hist[19:255].sum() == 0


def test_anomaly_sizes_span_small_and_large():
    H, W = 128, 256
    areas = []
    for g in S.generate_batch(0, 20, (H, W), anomalies=True):
        inst = g["instances"]
        areas += np.bincount(inst.ravel())[1:].tolist()
    frac = np.array(areas) / (H * W)
    assert frac.min() < 0.003, frac.min()   # a few tens of pixels at this size
    assert frac.max() > 0.08, frac.max()    # large objects up to ~a quarter of the image
    assert frac.max() <= 0.25 + 1e-9


def test_scene_geometry_sky_top_road_bottom():
    for g in S.generate_batch(5, 6, (128, 256), anomalies=False):
        sem = g["semantic"]
        H = sem.shape[0]
        assert not (sem[: H // 4] == 0).any(), "road above the horizon"
        assert not (sem[H // 2:] == 10).any(), "sky in the lower half"
        assert np.mean(sem[-H // 8:] == 0) > 0.2


def test_anomaly_pixels_are_not_inlier_colours_only():
    # anomalies have texture (photo crops, stripes, gradients...), not one flat colour: most instances vary
    stds = []
    for g in S.generate_batch(2, 10, (128, 256), anomalies=True):
        for i in range(1, int(g["instances"].max()) + 1):
            px = g["image"][g["instances"] == i].astype(np.float64)
            if len(px) >= 50:
                stds.append(px.std(0).max())
    assert stds and np.median(stds) > 8


def test_photos_come_from_installed_scikit_image():
    folder = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"
    names = S.photo_names()
    assert len(names) >= 3 and all((folder / n).is_file() for n in names)


def test_open_dataset_reads_what_was_written(written):
    root, _ = written
    from denseood.data import open_dataset

    val = list(open_dataset("synthetic", root, "val"))
    assert len(val) == 4
    for i, s in enumerate(sorted(val, key=lambda s: s.name)):
        g = S.generate(S.image_rng(7, "val", i), SIZE, anomalies=True)
        assert np.array_equal(s.image, g["image"]) and np.array_equal(s.ood_mask, g["ood_mask"])
        assert np.array_equal(np.asarray(s.instances), g["instances"])
    train = list(open_dataset("synthetic", root, "train"))
    assert len(train) == 3
    for i, s in enumerate(sorted(train, key=lambda s: s.name)):
        g = S.generate(S.image_rng(7, "train", i), SIZE, anomalies=False)
        assert np.array_equal(s.image, g["image"]) and np.array_equal(s.semantic, g["semantic"])


@pytest.mark.parametrize("kw", [dict(size=(16, 16)), dict(size="big"), dict(n_train=-1), dict(n_val=1.5), dict(seed=-3)])
def test_bad_arguments_raise_config_error(tmp_path, kw):
    args = dict(n_train=1, n_val=1, seed=0, size=SIZE, progress=False)
    args.update(kw)
    with pytest.raises(ConfigError):
        S.write(tmp_path / "x", **args)


def test_bad_split_and_root_is_file(tmp_path):
    with pytest.raises(ConfigError, match="split"):
        S.image_rng(0, "test", 0)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=str(f)):
        S.write(f, 1, 1, size=SIZE, progress=False)


def test_full_size_write(tmp_path):
    """The default evaluation size 512x1024 writes the full layout with full-size images and labels (no timing)."""
    size = (512, 1024)
    manifest = S.write(tmp_path, n_train=2, n_val=2, seed=1, size=size, progress=False)
    assert set(_hashes(tmp_path)) == _expected_files(2, 2)
    assert manifest["size"] == list(size) and manifest["n_val_anomalies"] >= 2
    for i in range(2):
        img = read_image(tmp_path / f"leftImg8bit/train/synth/synth_000000_{i:06d}_leftImg8bit.png")
        tid = read_label(tmp_path / f"gtFine/train/synth/synth_000000_{i:06d}_gtFine_labelTrainIds.png")
        assert img.shape == (*size, 3) and tid.shape == size
        sem = read_label(tmp_path / f"dataset_AnomalyTrack/labels_masks/synth{i:04d}_labels_semantic.png")
        assert sem.shape == size and (sem == 1).any()
        assert read_image(tmp_path / f"dataset_AnomalyTrack/images/synth{i:04d}.png").shape == (*size, 3)
