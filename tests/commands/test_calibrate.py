"""Issue 23 items 2-3 end to end on the synthetic world: `eval` ci95 rows, `denseood calibrate`, `eval
--threshold-from` (held-out inlier FPR near the target) and `segment --threshold-from` (binary anomaly masks)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from denseood.cli import main as cli_main

from tests.commands.test_eval import _eval_args, _reference_maps, world  # noqa: E402, F401  (the session fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TARGET = 0.05


def _calibrate(world, out, *extra, score="maxlogit"):
    return cli_main(["calibrate", "--checkpoint", str(world["ckpt"]), "--score", score, "--out", str(out),
                     "--target-fpr", str(TARGET), "--device", "cpu", "--workers", "0", "--dtype", "fp32", *extra])


def test_eval_rows_carry_bootstrap_intervals(world, tmp_path):
    out = tmp_path / "out"
    assert cli_main(_eval_args(world, out, "--protocol", "exact", "--no-components", "--bootstrap", "300")) == 0
    res = json.loads((out / "results.json").read_text())
    boot = res["bootstrap"]
    assert boot["B"] == 300 and boot["n_frames"] == 6 and boot["unit"] == "frame" and boot["seed"] == 0
    for s, row in res["scores"].items():
        for k in ("ap", "fpr95", "auroc"):
            lo, hi = row["ci95"][k]
            assert 0.0 <= lo <= hi <= 1.0, (s, k, lo, hi)
            # the bootstrap's own point estimate (4096-bin histograms) is within 1e-2 of the exact number
            assert abs(boot["scores"][s]["point_minus_reported"][k]) < 1e-2, (s, k)
        assert row["ci95"]["ap"][1] - row["ci95"]["ap"][0] > 0  # 6 different frames: a non-degenerate interval
    off = tmp_path / "off"
    assert cli_main(_eval_args(world, off, "--limit", "2", "--no-components", "--bootstrap", "0")) == 0
    res0 = json.loads((off / "results.json").read_text())
    assert "bootstrap" not in res0 and all("ci95" not in r for r in res0["scores"].values())


def test_calibrate_then_eval_gives_the_target_fpr_on_held_out_inliers(world, tmp_path):
    """Calibrated on the 8 train frames (semantic labels, ignore pixels excluded), the threshold flags 5 % of
    them; on the 6 held-out val frames' inlier pixels the FPR is within 0.6x..1.6x the target (frames of a tiny
    synthetic world differ a lot; the bound holds with margin here), and at_threshold counts equal NumPy's."""
    cal = tmp_path / "cal"
    assert _calibrate(world, cal, "--dataset", "synthetic", "--root", str(world["root"]), "--split", "train") == 0
    doc = json.loads((cal / "threshold.json").read_text())
    assert doc["score"] == "maxlogit" and doc["target_fpr"] == TARGET and doc["n_frames"] == 8
    assert doc["method"] == "exact" and doc["threshold_error"] == 0.0
    assert doc["source"]["chosen_on"] == "synthetic/train" and doc["source"]["kind"] == "dataset"
    assert TARGET - 1.0 / doc["n_pixels"] <= doc["calibration_fpr"] <= TARGET
    out = tmp_path / "eval"
    assert cli_main(_eval_args(world, out, "--protocol", "exact", "--no-components", "--bootstrap", "0",
                               "--threshold-from", str(cal / "threshold.json"), scores="msp,maxlogit")) == 0
    res = json.loads((out / "results.json").read_text())
    at = res["scores"]["maxlogit"]["at_threshold"]
    assert "at_threshold" not in res["scores"]["msp"]
    assert at["threshold"] == doc["threshold"] and at["source"]["chosen_on"] == "synthetic/train"
    assert at["source"]["file"] == str(cal / "threshold.json") and res["threshold_from"] == at["source"]
    assert 0.6 * TARGET <= at["fpr"] <= 1.6 * TARGET, at["fpr"]
    maps, masks = _reference_maps(world)
    pred = maps > doc["threshold"]
    fp, tn = int((pred & (masks == 0)).sum()), int((~pred & (masks == 0)).sum())
    tp, fn = int((pred & (masks == 1)).sum()), int((~pred & (masks == 1)).sum())
    assert abs(at["fp"] - fp) <= 2 and at["fp"] + at["tn"] == fp + tn and at["tp"] + at["fn"] == tp + fn
    assert at["tpr"] == pytest.approx(tp / (tp + fn), abs=1e-3) and 0 <= at["precision"] <= 1


def test_calibrate_refuses_a_split_with_anomalies_and_bad_sources(world, tmp_path, capsys):
    capsys.readouterr()
    assert _calibrate(world, tmp_path / "a", "--dataset", "synthetic", "--root", str(world["root"]),
                      "--split", "val") == 2
    err = capsys.readouterr().err
    assert "split synthetic/val has anomaly pixels (label 1)" in err and "--images" in err
    assert not (tmp_path / "a" / "threshold.json").exists()
    assert _calibrate(world, tmp_path / "b") == 2
    assert "exactly one of --images" in capsys.readouterr().err
    assert _calibrate(world, tmp_path / "c", "--dataset", "synthetic") == 2
    assert "needs --root" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _calibrate(world, tmp_path / "d", "--images", str(tmp_path), "--target-fpr", "1.5")


def test_images_folder_threshold_drives_segment_masks(world, tmp_path, capsys):
    """--images counts every pixel; segment --threshold-from writes 0/1 masks at it: on the calibration images
    themselves the flagged fraction is the calibration FPR (same maps, same rule)."""
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for p in sorted((world["root"] / "leftImg8bit" / "train").rglob("*.png"))[:3]:
        shutil.copy(p, imgs / p.name)
    cal = tmp_path / "cal"
    assert _calibrate(world, cal, "--images", str(imgs), score="msp") == 0
    doc = json.loads((cal / "threshold.json").read_text())
    assert doc["n_frames"] == 3 and doc["n_pixels"] == 3 * 64 * 128 and doc["source"]["kind"] == "images"
    seg = tmp_path / "seg"
    base = ["segment", "--images", str(imgs), "--checkpoint", str(world["ckpt"]), "--prompter", "peak", "--device",
            "cpu", "--dtype", "fp32"]
    assert cli_main(base + ["--score", "msp", "--out", str(seg), "--threshold-from", str(cal)]) == 0
    from denseood.io import read_label

    masks = [read_label(p) for p in sorted((seg / "anomaly_masks").glob("*.png"))]
    assert len(masks) == 3 and all(m.dtype == np.uint8 and set(np.unique(m)) <= {0, 1} for m in masks)
    flagged = sum(int(m.sum()) for m in masks) / doc["n_pixels"]
    assert flagged == pytest.approx(doc["calibration_fpr"], abs=2e-4)
    capsys.readouterr()
    assert cli_main(base + ["--score", "jsd", "--out", str(tmp_path / "s2"), "--threshold-from", str(cal)]) == 2
    assert "threshold of score 'msp', not of --score 'jsd'" in capsys.readouterr().err
