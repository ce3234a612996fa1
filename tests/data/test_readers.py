"""Readers for the official layouts: tiny fixture trees written here with cv2 (never downloaded), checked pixel by
pixel against the arrays written; every bad-input case of issue 2 has a test."""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from denseood.data import DATASETS, Sample, open_dataset
from denseood.errors import ConfigError, DatasetError

H, W = 16, 32


# ---------------------------------------------------------------------------------------------------------- helpers
def rgb(rng, h=H, w=W):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def put_image(path: Path, img: np.ndarray) -> np.ndarray:
    """Write RGB ``img``; returns what a correct reader must return (lossy formats: cv2's own decode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = img[..., ::-1]
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if path.suffix == ".webp" else []  # 101 = lossless webp
    assert cv2.imwrite(str(path), bgr, params)
    if path.suffix in (".jpg", ".jpeg"):
        return cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1]
    return img


def put_label(path: Path, lab: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), lab)


def ood_mask(rng, void=True, anomaly=True):
    m = np.zeros((H, W), np.uint8)
    if anomaly:
        m[4:9, 10:17] = 1
    if void:
        m[:3, :] = 255
    return m


# Cityscapes labelId -> trainId pairs written out from cityscapesScripts' labels.py (independent of classes.py)
CS_PAIRS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
            27: 14, 28: 15, 31: 16, 32: 17, 33: 18}


def cs_reference(label_ids: np.ndarray) -> np.ndarray:
    out = np.full(label_ids.shape, 255, np.uint8)
    for y in range(label_ids.shape[0]):
        for x in range(label_ids.shape[1]):
            out[y, x] = CS_PAIRS.get(int(label_ids[y, x]), 255)
    return out


def build_cityscapes(root: Path, rng, split="val", cities=("aachen", "bonn"), per_city=2, trainids=False):
    """Cityscapes tree; returns {fid: (image, expected semantic)}."""
    expect = {}
    for city in cities:
        for k in range(per_city):
            fid = f"{city}_{k:06d}_000019"
            img = put_image(root / "leftImg8bit" / split / city / f"{fid}_leftImg8bit.png", rgb(rng))
            lid = rng.integers(0, 34, (H, W)).astype(np.uint8)
            put_label(root / "gtFine" / split / city / f"{fid}_gtFine_labelIds.png", lid)
            sem = cs_reference(lid)
            if trainids:
                tid = rng.choice(np.array([*range(19), 255], np.uint8), (H, W))
                put_label(root / "gtFine" / split / city / f"{fid}_gtFine_labelTrainIds.png", tid)
                sem = tid
            expect[fid] = (img, sem)
    return expect


def build_smiyc(root: Path, rng, track="dataset_AnomalyTrack", ext=".jpg", val=("validation0000", "validation0001"),
                test=("cow0000", "zebra0000"), extras=False):
    base = root / track
    expect = {}
    for i, fid in enumerate(val):
        img = put_image(base / "images" / f"{fid}{ext}", rgb(rng))
        m = ood_mask(rng, void=(i % 2 == 0), anomaly=(i != 1))  # frame 1: no anomaly, no void
        put_label(base / "labels_masks" / f"{fid}_labels_semantic.png", m)
        sem = inst = None
        if extras:
            sem = rng.integers(0, 19, (H, W)).astype(np.uint8)
            sem[m != 0] = 255
            put_label(base / "labels_masks" / f"{fid}_labels_trainids.png", sem)
            inst = np.zeros((H, W), np.uint16)
            inst[m == 1] = 300 + i  # > 255: needs the 16-bit PNG
            put_label(base / "labels_masks" / f"{fid}_labels_instance.png", inst)
        expect[fid] = (img, m, sem, inst)
    for fid in test:
        expect[fid] = (put_image(base / "images" / f"{fid}{ext}", rgb(rng)), None, None, None)
    return expect


def laf_labels(rng):
    lab = np.zeros((H, W), np.uint8)          # 0 unlabeled
    lab[8:, :] = 1                             # free space (road)
    lab[10:13, 5:9] = 2                        # obstacle
    lab[10:13, 20:24] = 37                     # obstacle
    lab[14:, 28:] = 201                        # > 200: void
    return lab


def laf_reference(lab):
    out = np.full(lab.shape, 255, np.uint8)
    for y in range(lab.shape[0]):
        for x in range(lab.shape[1]):
            v = int(lab[y, x])
            out[y, x] = 0 if v == 1 else 1 if 2 <= v <= 200 else 255
    return out


def build_laf(root: Path, rng, split="test", fids=("01_Hanns_Klemm_Str_45_000000_000080",
                                                    "04_Maurener_Weg_8_000000_000030"), empty=(), ext=".png"):
    expect = {}
    for fid in fids:
        scene = fid.rsplit("_", 2)[0]
        img = put_image(root / "leftImg8bit" / split / scene / f"{fid}_leftImg8bit{ext}", rgb(rng))
        lab = np.zeros((H, W), np.uint8) if fid in empty else laf_labels(rng)
        put_label(root / "gtCoarse" / split / scene / f"{fid}_gtCoarse_labelIds.png", lab)
        expect[fid] = (img, laf_reference(lab))
    return expect


def build_folder_pairs(root: Path, rng, stems=("a", "b"), ext=".png"):
    expect = {}
    for i, stem in enumerate(stems):
        img = put_image(root / "images" / f"{stem}{ext}", rgb(rng))
        m = ood_mask(rng, void=True, anomaly=(i == 0))
        put_label(root / "labels" / f"{stem}.png", m)
        expect[stem] = (img, m)
    return expect


SH_CLASS_VALUES = np.arange(0, 15, dtype=np.uint8)


def build_streethazards(root: Path, rng, split="test"):
    top, sub, town = {"train": ("train", "training", "t1"), "val": ("train", "validation", "t4"),
                      "test": ("test", "test", "t5")}[split]
    expect = {}
    for k in range(2):
        img = put_image(root / top / "images" / sub / town / f"{300 + k}.png", rgb(rng))
        lab = rng.integers(1, 14 if split != "test" else 15, (H, W)).astype(np.uint8)
        lab[0, :15] = SH_CLASS_VALUES if split == "test" else np.r_[SH_CLASS_VALUES[1:14], 1, 1]  # every value
        put_label(root / top / "annotations" / sub / town / f"{300 + k}.png", lab)
        expect[f"{town}_{300 + k}"] = (img, lab)
    return expect


# ------------------------------------------------------------------------------------------------------- cityscapes
def test_cityscapes_labelids(tmp_path, rng):
    expect = build_cityscapes(tmp_path, rng)
    ds = open_dataset("cityscapes", tmp_path)
    assert ds.split == "val" and len(ds) == 4 and sorted(ds.names) == sorted(expect)
    assert ds.class_set == "cityscapes" and ds.num_classes == 19 and ds.has_semantic and not ds.has_ood_labels
    assert ds.default_protocol == "streaming" and ds.component_sizes == (500, 100)
    for s in ds:
        img, sem = expect[s.name]
        assert isinstance(s, Sample) and s.ood_mask is None
        assert s.image.dtype == np.uint8 and np.array_equal(s.image, img)
        assert s.semantic.dtype == np.uint8 and np.array_equal(s.semantic, sem)
    assert all(p.exists() for p in ds.image_paths)


def test_cityscapes_prefers_trainids(tmp_path, rng):
    expect = build_cityscapes(tmp_path, rng, split="train", trainids=True, cities=("bonn",))
    ds = open_dataset("cityscapes", tmp_path, "train")
    for s in ds:
        assert np.array_equal(s.semantic, expect[s.name][1])
        assert s.meta["label_path"].endswith("_gtFine_labelTrainIds.png")


def test_cityscapes_bad_label_value(tmp_path, rng):
    build_cityscapes(tmp_path, rng, cities=("bonn",), per_city=1)
    lab_path = next((tmp_path / "gtFine").rglob("*_labelIds.png"))
    lab = cv2.imread(str(lab_path), cv2.IMREAD_UNCHANGED)
    lab[0, 0] = 40
    put_label(lab_path, lab)
    ds = open_dataset("cityscapes", tmp_path)
    with pytest.raises(DatasetError) as e:
        ds[0]
    assert str(lab_path) in str(e.value) and "40" in str(e.value)


def test_cityscapes_missing_label_names_both(tmp_path, rng):
    build_cityscapes(tmp_path, rng, cities=("bonn",), per_city=2)
    lab = sorted((tmp_path / "gtFine").rglob("*_labelIds.png"))[1]
    lab.unlink()
    fid = lab.name.replace("_gtFine_labelIds.png", "")
    with pytest.raises(DatasetError) as e:
        open_dataset("cityscapes", tmp_path)
    msg = str(e.value)
    assert f"{fid}_leftImg8bit.png" in msg and str(lab) in msg


# ------------------------------------------------------------------------------------------------------------ SMIYC
def test_smiyc_anomaly_validation_and_test(tmp_path, rng):
    expect = build_smiyc(tmp_path, rng, extras=True)
    ds = open_dataset("smiyc-anomaly", tmp_path)
    assert ds.split == "validation" and ds.names == ["validation0000", "validation0001"]
    assert ds.has_ood_labels and ds.has_semantic and ds.default_protocol == "smiyc"
    assert ds.component_sizes == (500, 100) and ds.class_set == "cityscapes"
    for s in ds:
        img, m, sem, inst = expect[s.name]
        assert np.array_equal(s.image, img)  # jpg: equal to cv2's own decode
        assert s.ood_mask.dtype == np.uint8 and np.array_equal(s.ood_mask, m)
        assert np.array_equal(s.semantic, sem)
        assert s.instances.dtype == np.int32 and np.array_equal(s.instances, inst.astype(np.int32))
    assert ds[1].ood_mask.max() == 0  # image with no anomaly stays a frame
    test = open_dataset("smiyc-anomaly", tmp_path / "dataset_AnomalyTrack", "test")  # ROOT = the track folder
    assert test.names == ["cow0000", "zebra0000"] and not test.has_ood_labels
    for s in test:
        assert s.ood_mask is None and s.semantic is None and np.array_equal(s.image, expect[s.name][0])


def test_smiyc_obstacle_webp_and_official_splits(tmp_path, rng):
    val = ("validation_1_a", "validation_19_b", "validation_2_c")
    test = ("curvy-street_x", "snowstorm1_y", "driveway_z")
    expect = build_smiyc(tmp_path, rng, track="dataset_ObstacleTrack", ext=".webp", val=val, test=test)
    ds = open_dataset("smiyc-obstacle", tmp_path)
    assert ds.names == ["validation_1_a", "validation_2_c"]  # validation_19 excluded as in the official config
    assert "validation_19_b" in ds.excluded and ds.component_sizes == (50, 10)
    for s in ds:
        assert np.array_equal(s.image, expect[s.name][0]) and np.array_equal(s.ood_mask, expect[s.name][1])
    assert ds[0].semantic is None and ds[0].instances is None and not ds.has_semantic
    t = open_dataset("smiyc-obstacle", tmp_path, "test")
    assert t.names == ["curvy-street_x"]  # snowstorm / night scenes are not in ObstacleTrack-test


def test_smiyc_official_validation_frame_without_label(tmp_path, rng):
    build_smiyc(tmp_path, rng)
    lab = tmp_path / "dataset_AnomalyTrack" / "labels_masks" / "validation0001_labels_semantic.png"
    lab.unlink()
    with pytest.raises(DatasetError) as e:
        open_dataset("smiyc-anomaly", tmp_path)
    assert "validation0001.jpg" in str(e.value) and str(lab) in str(e.value)


def test_smiyc_anomaly_frame_of_no_split_is_an_error_not_a_silent_skip(tmp_path, rng):
    """A labelled frame whose id is in neither official AnomalyTrack list (and one without a label) used to be
    dropped without a word: now both splits refuse to open and name the frames."""
    build_smiyc(tmp_path, rng)
    base = tmp_path / "dataset_AnomalyTrack"
    put_image(base / "images" / "frame0001.jpg", rgb(rng))                  # unlabelled, no official id
    put_image(base / "images" / "mycar0000.jpg", rgb(rng))                  # labelled, no official id
    put_label(base / "labels_masks" / "mycar0000_labels_semantic.png", ood_mask(rng))
    for split in ("validation", "test"):
        with pytest.raises(DatasetError) as e:
            open_dataset("smiyc-anomaly", tmp_path, split)
        msg = str(e.value)
        assert "frame0001.jpg" in msg and "mycar0000.jpg" in msg and "2 image(s)" in msg
        assert str(base / "images") in msg and "validation0000..validation0009" in msg


def test_smiyc_anomaly_splits_follow_the_official_id_lists(tmp_path, rng):
    """Official rule (road-anomaly-benchmark FRAME_IDS): the split comes from the id, not from a label's presence;
    a test frame with a label file stays a test frame, read without labels."""
    from denseood.data.smiyc import ANOMALY_TEST_IDS, ANOMALY_VALIDATION_IDS

    assert len(ANOMALY_VALIDATION_IDS) == 10 and len(ANOMALY_TEST_IDS) == 100
    assert not ANOMALY_VALIDATION_IDS & ANOMALY_TEST_IDS
    assert {"cow0013", "boat_trailer0004", "tent0000", "carriage0007"} <= ANOMALY_TEST_IDS
    build_smiyc(tmp_path, rng)
    base = tmp_path / "dataset_AnomalyTrack"
    put_label(base / "labels_masks" / "cow0000_labels_semantic.png", ood_mask(rng))
    val = open_dataset("smiyc-anomaly", tmp_path)
    assert val.names == ["validation0000", "validation0001"]
    assert val.excluded == {"cow0000": "official test frame", "zebra0000": "official test frame"}
    test = open_dataset("smiyc-anomaly", tmp_path, "test")
    assert test.names == ["cow0000", "zebra0000"] and test[0].ood_mask is None and not test.has_ood_labels


def test_smiyc_obstacle_scene_of_no_split_is_an_error(tmp_path, rng):
    build_smiyc(tmp_path, rng, track="dataset_ObstacleTrack", ext=".webp", val=("validation_1_a",),
                test=("curvy-street_x", "mystreet_y"))
    with pytest.raises(DatasetError) as e:
        open_dataset("smiyc-obstacle", tmp_path)
    assert "mystreet_y.webp" in str(e.value) and "curvy-street" in str(e.value)


def test_smiyc_value_7_names_file_and_value(tmp_path, rng):
    build_smiyc(tmp_path, rng)
    lab = tmp_path / "dataset_AnomalyTrack" / "labels_masks" / "validation0000_labels_semantic.png"
    m = ood_mask(rng)
    m[5, 5] = 7
    put_label(lab, m)
    ds = open_dataset("smiyc-anomaly", tmp_path)
    with pytest.raises(DatasetError) as e:
        ds[0]
    assert str(lab) in str(e.value) and "{7}" in str(e.value)


def test_size_mismatch_names_both_files(tmp_path, rng):
    build_smiyc(tmp_path, rng)
    lab = tmp_path / "dataset_AnomalyTrack" / "labels_masks" / "validation0000_labels_semantic.png"
    put_label(lab, np.zeros((H + 2, W), np.uint8))
    with pytest.raises(DatasetError) as e:
        open_dataset("smiyc-anomaly", tmp_path)[0]
    msg = str(e.value)
    assert str(lab) in msg and str(tmp_path / "dataset_AnomalyTrack" / "images" / "validation0000.jpg") in msg


def test_corrupt_image_names_file(tmp_path, rng):
    build_smiyc(tmp_path, rng)
    img = tmp_path / "dataset_AnomalyTrack" / "images" / "validation0001.jpg"
    img.write_bytes(b"\xff\xd8 this is not a jpeg")
    ds = open_dataset("smiyc-anomaly", tmp_path)
    ds[0]  # the intact frame still reads
    with pytest.raises(DatasetError) as e:
        ds[1]
    assert str(img) in str(e.value)


# ------------------------------------------------------------------------------------------------------ LostAndFound
def test_laf_mapping_and_no_known(tmp_path, rng):
    fids = ("01_Hanns_Klemm_Str_45_000000_000080", "01_Hanns_Klemm_Str_45_000006_000010",
            "04_Maurener_Weg_8_000000_000030", "13_Elly_Beinhorn_Str_000000_000050",
            "15_Rechbergstr_Deckenpfronn_000000_000100")
    empty = ("13_Elly_Beinhorn_Str_000000_000050",)
    expect = build_laf(tmp_path / "dataset_LostAndFound", rng, fids=fids, empty=empty)
    full = open_dataset("smiyc-laf", tmp_path, "test")
    assert full.names == sorted(fids) and full.has_ood_labels and full.component_sizes == (50, 10)
    for s in full:
        assert np.array_equal(s.image, expect[s.name][0]) and np.array_equal(s.ood_mask, expect[s.name][1])
    nk = open_dataset("smiyc-laf", tmp_path)
    assert nk.split == "testNoKnown"
    assert nk.names == ["01_Hanns_Klemm_Str_45_000000_000080", "04_Maurener_Weg_8_000000_000030"]
    assert set(nk.excluded) == {fids[1], fids[3], fids[4]}


def test_laf_instances_from_instance_ids_else_label_components(tmp_path, rng):
    """OoDIS scores LostAndFound objects: the frame's own _gtCoarse_instanceIds.png where present (each id on
    obstacle pixels one object), else 8-connected components of each obstacle label id separately."""
    fids = ("01_Hanns_Klemm_Str_45_000000_000080", "04_Maurener_Weg_8_000000_000030")
    build_laf(tmp_path, rng, fids=fids)
    scene0 = fids[0].rsplit("_", 2)[0]
    ids = np.zeros((H, W), np.uint16)
    ids[8:, :] = 1                           # free space (not an object)
    ids[10:13, 5:7], ids[10:13, 7:9] = 2000, 2001  # obstacle 2 is two objects by its instance ids
    ids[10:13, 20:24] = 37000
    put_label(tmp_path / "gtCoarse" / "test" / scene0 / f"{fids[0]}_gtCoarse_instanceIds.png", ids)
    scene1 = fids[1].rsplit("_", 2)[0]
    lab = laf_labels(rng)
    lab[10:13, 9:12] = 5                     # touches obstacle 2 (cols 5:9): another label id, another object
    put_label(tmp_path / "gtCoarse" / "test" / scene1 / f"{fids[1]}_gtCoarse_labelIds.png", lab)
    ds = open_dataset("lostandfound", tmp_path, "test")  # the alias of smiyc-laf
    a, b = ds[0], ds[1]
    assert a.meta["instance_source"] == "instanceIds" and b.meta["instance_source"] == "label components"
    assert set(np.unique(a.instances)) == {0, 2000, 2001, 37000}  # free space (id 1) is no object
    assert np.array_equal(a.instances[10:13, 5:7], np.full((3, 2), 2000))
    objs = [b.instances == k for k in np.unique(b.instances) if k]
    assert len(objs) == 3  # labels 2, 5 and 37; 2 and 5 touch but stay two objects
    assert {int(m.sum()) for m in objs} == {12, 9}
    assert np.array_equal(b.instances > 0, b.ood_mask == 1)


def test_laf_frame_list(tmp_path, rng):
    fids = ("01_Hanns_Klemm_Str_45_000000_000080", "04_Maurener_Weg_8_000000_000030")
    build_laf(tmp_path, rng, fids=fids, ext=".webp")
    lst = tmp_path / "keep.txt"
    lst.write_text("# noKnown subset\n04_Maurener_Weg_8_000000_000030\n")
    ds = open_dataset("smiyc-laf", tmp_path, "test", frame_list=lst)
    assert ds.names == ["04_Maurener_Weg_8_000000_000030"]
    lst.write_text("99_Nowhere_000000_000001\n")
    with pytest.raises(DatasetError, match="99_Nowhere"):
        open_dataset("smiyc-laf", tmp_path, "test", frame_list=lst)


# ------------------------------------------------------------------------------------------------------ Fishyscapes
def test_fs_laf_smiyc_form(tmp_path, rng):
    laf = tmp_path / "dataset_LostAndFound"
    imgs = build_laf(laf, rng, split="train", fids=("01_Hanns_Klemm_Str_45_000000_000080",))
    imgs.update(build_laf(laf, rng, split="test", fids=("04_Maurener_Weg_8_000000_000030",)))
    expect = {}
    for i, fid in enumerate(sorted(imgs)):
        m = ood_mask(rng, anomaly=(i == 0))
        put_label(tmp_path / "dataset_FishyLAF" / "labels" / "val" / f"{fid}_fishy-labels.png", m)
        expect[fid] = m
    ds = open_dataset("fs-laf", tmp_path)
    assert ds.names == sorted(expect) and ds.default_protocol == "exact" and ds.component_sizes == (500, 100)
    for s in ds:
        assert np.array_equal(s.image, imgs[s.name][0]) and np.array_equal(s.ood_mask, expect[s.name])
    # ROOT = dataset_FishyLAF with an explicit LostAndFound root
    ds2 = open_dataset("fs-laf", tmp_path / "dataset_FishyLAF", laf_root=laf)
    assert ds2.names == ds.names


def test_fs_laf_label_without_image(tmp_path, rng):
    build_laf(tmp_path / "dataset_LostAndFound", rng, fids=("01_Hanns_Klemm_Str_45_000000_000080",))
    lab = tmp_path / "dataset_FishyLAF" / "labels" / "val" / "04_Maurener_Weg_8_000000_000030_fishy-labels.png"
    put_label(lab, ood_mask(rng))
    with pytest.raises(DatasetError) as e:
        open_dataset("fs-laf", tmp_path)
    assert str(lab) in str(e.value) and "04_Maurener_Weg_8_000000_000030_leftImg8bit" in str(e.value)


@pytest.mark.parametrize("name", ["fs-static", "fs-laf"])
def test_fs_folder_form(tmp_path, rng, name):
    expect = build_folder_pairs(tmp_path, rng, stems=("x0", "x1", "x2"), ext=".jpg")
    ds = open_dataset(name, tmp_path)
    assert ds.split == "val" and ds.names == ["x0", "x1", "x2"] and ds.has_ood_labels
    for s in ds:
        assert np.array_equal(s.image, expect[s.name][0]) and np.array_equal(s.ood_mask, expect[s.name][1])


def test_fs_static_missing_label(tmp_path, rng):
    build_folder_pairs(tmp_path, rng)
    (tmp_path / "labels" / "b.png").unlink()
    with pytest.raises(DatasetError) as e:
        open_dataset("fs-static", tmp_path)
    assert str(tmp_path / "images" / "b.png") in str(e.value) and str(tmp_path / "labels" / "b.png") in str(e.value)


# ---------------------------------------------------------------------------------------------------- StreetHazards
def sh_reference(lab, unlabeled_as_inlier=False):
    """Independent statement of the DESIGN.md mapping: PNG value - 1 -> 0 unlabeled, 1..12 inliers, 13 anomaly."""
    sem = np.full(lab.shape, 255, np.uint8)
    ood = np.full(lab.shape, 255, np.uint8)
    for y in range(lab.shape[0]):
        for x in range(lab.shape[1]):
            c = int(lab[y, x]) - 1
            if 1 <= c <= 12:
                sem[y, x], ood[y, x] = c - 1, 0
            elif c == 13:
                ood[y, x] = 1
            elif c == 0 and unlabeled_as_inlier:
                ood[y, x] = 0
    return sem, ood


def test_streethazards_test_mapping(tmp_path, rng):
    expect = build_streethazards(tmp_path, rng, "test")
    ds = open_dataset("streethazards", tmp_path)
    assert ds.split == "test" and ds.class_set == "streethazards" and ds.num_classes == 12
    assert ds.class_names[0] == "building" and ds.class_names[-1] == "traffic sign"
    assert ds.default_protocol == "caos" and ds.has_ood_labels and ds.names == ["t5_300", "t5_301"]
    for s in ds:
        img, lab = expect[s.name]
        sem, ood = sh_reference(lab, unlabeled_as_inlier=True)  # the official convention is the default
        assert np.array_equal(s.image, img) and np.array_equal(s.semantic, sem) and np.array_equal(s.ood_mask, ood)
        assert set(np.unique(s.ood_mask)) == {0, 1, 255}
    assert ds.convention == {"unlabeled": "inlier"}
    ds2 = open_dataset("streethazards", tmp_path, unlabeled_as_inlier=True)
    assert np.array_equal(ds2[0].ood_mask, sh_reference(expect["t5_300"][1], True)[1])
    ds3 = open_dataset("streethazards", tmp_path, unlabeled="void")
    assert ds3.convention == {"unlabeled": "void"}
    for s in ds3:
        assert np.array_equal(s.ood_mask, sh_reference(expect[s.name][1])[1])
        assert np.array_equal(s.semantic, sh_reference(expect[s.name][1])[0])
    assert np.array_equal(open_dataset("streethazards", tmp_path, unlabeled_as_inlier=False)[0].ood_mask,
                          ds3[0].ood_mask)
    with pytest.raises(ConfigError, match="unlabeled"):
        open_dataset("streethazards", tmp_path, unlabeled="ignore")
    with pytest.raises(ConfigError, match="contradicts"):
        open_dataset("streethazards", tmp_path, unlabeled="void", unlabeled_as_inlier=True)


def test_streethazards_conventions_give_different_masks_and_ap(tmp_path, rng):
    """Same frames, same scores: 'unlabeled' as inlier (official) vs void changes the OOD mask and the AP."""
    from denseood.eval import PixelMetrics
    build_streethazards(tmp_path, rng, "test")
    inl = open_dataset("streethazards", tmp_path)
    void = open_dataset("streethazards", tmp_path, unlabeled="void")
    aps = {}
    for name, ds in (("inlier", inl), ("void", void)):
        pm = PixelMetrics("exact")
        for k in range(len(ds)):
            lab = cv2.imread(str(ds.frames[k].label), cv2.IMREAD_UNCHANGED)
            score = (lab == 14) * 1.0 + (lab == 1) * 1.5 + 0.01 * (lab % 7)  # unlabeled scores highest
            pm.update(score.astype(np.float32), ds[k].ood_mask)
        aps[name] = pm.compute()["ap"]
    for a, b in zip(inl, void):
        unl = a.ood_mask != b.ood_mask
        assert unl.any() and (a.ood_mask[unl] == 0).all() and (b.ood_mask[unl] == 255).all()
    assert aps["void"] == pytest.approx(1.0) and aps["inlier"] < 0.9


@pytest.mark.parametrize("split", ["train", "val"])
def test_streethazards_train_val(tmp_path, rng, split):
    expect = build_streethazards(tmp_path, rng, split)
    ds = open_dataset("streethazards", tmp_path, split)
    assert not ds.has_ood_labels and ds.has_semantic
    for s in ds:
        assert s.ood_mask is None and np.array_equal(s.semantic, sh_reference(expect[s.name][1])[0])
        assert s.semantic[s.semantic != 255].max() <= 11


def test_streethazards_value_out_of_range(tmp_path, rng):
    build_streethazards(tmp_path, rng, "test")
    lab = tmp_path / "test" / "annotations" / "test" / "t5" / "300.png"
    a = cv2.imread(str(lab), cv2.IMREAD_UNCHANGED)
    a[3, 3] = 20
    put_label(lab, a)
    with pytest.raises(DatasetError) as e:
        open_dataset("streethazards", tmp_path)[0]
    assert str(lab) in str(e.value) and "20" in str(e.value)


# ----------------------------------------------------------------------------------------------------------- folder
def test_folder_mixed_formats_recursive(tmp_path, rng):
    a = put_image(tmp_path / "a.png", rgb(rng))
    b = put_image(tmp_path / "b.jpg", rgb(rng))
    c = put_image(tmp_path / "c.webp", rgb(rng))
    d = put_image(tmp_path / "sub" / "d.png", rgb(rng))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = open_dataset("folder", tmp_path)
    assert ds.split == "all" and ds.names == ["a", "b", "c"] and not ds.has_ood_labels and ds.class_set is None
    for s, ref in zip(ds, (a, b, c)):
        assert np.array_equal(s.image, ref) and s.ood_mask is None and s.semantic is None
    rec = open_dataset("folder", tmp_path, recursive=True)
    assert rec.names == ["a", "b", "c", "sub__d"] and np.array_equal(rec[3].image, d)
    one = open_dataset("folder", tmp_path / "b.jpg")
    assert one.names == ["b"] and np.array_equal(one[0].image, b)


def test_folder_empty(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(DatasetError) as e:
        open_dataset("folder", tmp_path)
    assert str(tmp_path) in str(e.value) and "empty" in str(e.value)


def test_folder_corrupt_image(tmp_path, rng):
    put_image(tmp_path / "ok.png", rgb(rng))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ds = open_dataset("folder", tmp_path)
    with pytest.raises(DatasetError) as e:
        ds[ds.names.index("bad")]
    assert str(tmp_path / "bad.png") in str(e.value)


# -------------------------------------------------------------------------------------------------------- synthetic
def build_synthetic(root: Path, rng, n_train=2, n_val=2):
    train = {}
    for i in range(n_train):
        fid = f"synth_000000_{i:06d}"
        img = put_image(root / "leftImg8bit" / "train" / "synth" / f"{fid}_leftImg8bit.png", rgb(rng))
        tid = rng.integers(0, 19, (H, W)).astype(np.uint8)
        put_label(root / "gtFine" / "train" / "synth" / f"{fid}_gtFine_labelTrainIds.png", tid)
        put_label(root / "gtFine" / "train" / "synth" / f"{fid}_gtFine_labelIds.png", np.zeros((H, W), np.uint8))
        train[fid] = (img, tid)
    val = build_smiyc(root, rng, ext=".png", val=tuple(f"synth{i:04d}" for i in range(n_val)), test=(), extras=True)
    return train, val


def test_synthetic_layout(tmp_path, rng):
    train, val = build_synthetic(tmp_path, rng)
    tr = open_dataset("synthetic", tmp_path, "train")
    assert tr.name == "synthetic" and tr.class_set == "cityscapes" and not tr.has_ood_labels and tr.has_semantic
    for s in tr:
        assert np.array_equal(s.image, train[s.name][0]) and np.array_equal(s.semantic, train[s.name][1])
        assert s.ood_mask is None
    va = open_dataset("synthetic", tmp_path, min_segment_size=20, min_instance_size=4)
    assert va.split == "val" and va.names == ["synth0000", "synth0001"] and va.has_ood_labels and va.has_semantic
    assert va.component_sizes == (20, 4) and va.default_protocol == "streaming"
    assert open_dataset("synthetic", tmp_path).component_sizes == (500, 100)
    for s in va:
        img, m, sem, inst = val[s.name]
        assert np.array_equal(s.image, img) and np.array_equal(s.ood_mask, m)
        assert np.array_equal(s.semantic, sem) and np.array_equal(s.instances, inst.astype(np.int32))
    pickle.loads(pickle.dumps(va))[0]  # DataLoader workers need picklable readers


# ------------------------------------------------------------------------------------------------ registry / errors
def test_registry_names_and_kwargs(tmp_path, rng):
    assert set(DATASETS) == {"cityscapes", "smiyc-anomaly", "smiyc-obstacle", "smiyc-laf", "fs-laf", "fs-static",
                             "streethazards", "synthetic", "folder"}
    with pytest.raises(ConfigError) as e:
        open_dataset("smiyc", tmp_path)
    assert "smiyc-anomaly" in str(e.value) and "folder" in str(e.value)
    with pytest.raises(ConfigError, match="frame_list"):
        open_dataset("cityscapes", tmp_path, frame_list="x.txt")
    build_cityscapes(tmp_path, rng, cities=("bonn",), per_city=1)
    with pytest.raises(ConfigError, match="train, val, test"):
        open_dataset("cityscapes", tmp_path, "validation")


@pytest.mark.parametrize("name", sorted(n for n in DATASETS if n != "folder"))
def test_missing_root_names_path_and_layout(tmp_path, name):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as e:
        open_dataset(name, root)
    assert str(root) in str(e.value) and "ROOT/" in str(e.value)  # the expected layout is printed


def test_missing_split_folder_names_path_and_layout(tmp_path, rng):
    build_cityscapes(tmp_path, rng, split="val", cities=("bonn",), per_city=1)
    with pytest.raises(DatasetError) as e:
        open_dataset("cityscapes", tmp_path, "train")
    assert str(tmp_path / "leftImg8bit" / "train") in str(e.value) and "gtFine" in str(e.value)
    build_streethazards(tmp_path / "sh", rng, "test")
    with pytest.raises(DatasetError) as e:
        open_dataset("streethazards", tmp_path / "sh", "train")
    assert str(tmp_path / "sh" / "train" / "images" / "training") in str(e.value) and "ROOT/test" in str(e.value)


def test_empty_split_says_so(tmp_path):
    (tmp_path / "leftImg8bit" / "val" / "bonn").mkdir(parents=True)
    (tmp_path / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        open_dataset("cityscapes", tmp_path)
    assert "no images found under" in str(e.value) and str(tmp_path / "leftImg8bit" / "val") in str(e.value)
    (tmp_path / "dataset_ObstacleTrack" / "images").mkdir(parents=True)
    (tmp_path / "dataset_ObstacleTrack" / "labels_masks").mkdir()
    with pytest.raises(DatasetError, match="no images found under"):
        open_dataset("smiyc-obstacle", tmp_path)


# -------------------------------------------------------------------------------------------------------- inventory
def test_inventory_scan_and_report(tmp_path, rng):
    build_cityscapes(tmp_path / "cityscapes", rng, split="val", cities=("bonn",), per_city=2)
    build_cityscapes(tmp_path / "cityscapes", rng, split="train", cities=("aachen",), per_city=3)
    build_smiyc(tmp_path, rng)  # DIR/dataset_AnomalyTrack directly under the root
    sh = tmp_path / "streethazards"
    build_streethazards(sh, rng, "test")
    (sh / "train" / "images" / "training").mkdir(parents=True)  # partial: train images folder, no annotations

    from denseood.data.inventory import format_report, scan

    rows = {r["name"]: r for r in scan(tmp_path)}
    assert set(rows) == set(DATASETS) - {"folder"}
    cs = rows["cityscapes"]
    assert cs["found"] and cs["locations"][0]["path"] == str(tmp_path / "cityscapes")
    assert cs["locations"][0]["splits"] == {"train": 3, "val": 2}
    assert "test" in cs["locations"][0]["problems"]
    an = rows["smiyc-anomaly"]
    assert an["found"] and an["locations"][0]["splits"] == {"validation": 2, "test": 2}
    assert rows["streethazards"]["found"] and rows["streethazards"]["locations"][0]["splits"] == {"test": 2}
    assert "annotations" in rows["streethazards"]["locations"][0]["problems"]["train"]
    ob = rows["smiyc-obstacle"]
    assert not ob["found"] and ob["missing"] and "dataset_ObstacleTrack" in ob["layout"]

    # the report text of the same rows (the CLI verb is tested in tests/commands/test_datasets.py)
    text = format_report(list(rows.values()), tmp_path)
    assert "cityscapes" in text and "found" in text and "smiyc-obstacle" in text and "MISSING" in text


def test_laf_official_index_rule(tmp_path, rng, monkeypatch):
    """With the official number of test frames, empty-label frames are taken from the official index list
    (shrunk here to 3 frames / index 1), not from the label contents."""
    import denseood.data.smiyc as smiyc

    fids = ("01_Hanns_Klemm_Str_45_000000_000080", "04_Maurener_Weg_8_000000_000030",
            "13_Elly_Beinhorn_Str_000000_000050")
    build_laf(tmp_path, rng, fids=fids, empty=(fids[0],))
    monkeypatch.setattr(smiyc, "LAF_TEST_LENGTH", 3)
    monkeypatch.setattr(smiyc, "LAF_TEST_INVALID_INDICES", (1,))
    ds = open_dataset("smiyc-laf", tmp_path)
    assert ds.names == [fids[0], fids[2]] and list(ds.excluded) == [fids[1]]


def test_synthetic_ids_are_no_official_smiyc_split_and_vice_versa(tmp_path, rng):
    build_synthetic(tmp_path, rng)
    with pytest.raises(DatasetError, match="belong to no split") as e:
        open_dataset("smiyc-anomaly", tmp_path, "validation")  # synth<NNNN> is not an official AnomalyTrack id
    assert "synth0000" in str(e.value)
    put_image(tmp_path / "dataset_AnomalyTrack" / "images" / "validation0000.png", rgb(rng))
    with pytest.raises(DatasetError, match="synth<NNNN>"):
        open_dataset("synthetic", tmp_path, "val")  # and an official id is no synthetic frame
