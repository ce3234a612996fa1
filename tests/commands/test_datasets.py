"""``denseood datasets``: the verb prints the inventory report, writes the JSON rows and documents every option."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from denseood.cli import build_parser, main
from denseood.data.inventory import scan


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)


@pytest.fixture
def root(tmp_path, rng) -> Path:
    """A Cityscapes val split (2 frames) in ROOT/cityscapes and an AnomalyTrack (1 validation frame) in ROOT."""
    for k in range(2):
        fid = f"bonn_{k:06d}_000019"
        _png(tmp_path / "cityscapes/leftImg8bit/val/bonn" / f"{fid}_leftImg8bit.png", rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
        _png(tmp_path / "cityscapes/gtFine/val/bonn" / f"{fid}_gtFine_labelTrainIds.png", np.zeros((8, 16), np.uint8))
    track = tmp_path / "dataset_AnomalyTrack"
    _png(track / "images/validation0000.png", rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
    _png(track / "labels_masks/validation0000_labels_semantic.png", np.zeros((8, 16), np.uint8))
    return tmp_path


def test_cli_prints_report_and_writes_json(root, tmp_path, capsys):
    out_json = tmp_path / "out" / "inv.json"
    assert main(["datasets", "--root", str(root), "--json", str(out_json)]) == 0
    text = capsys.readouterr().out
    assert "cityscapes" in text and "found" in text and "smiyc-obstacle" in text and "MISSING" in text
    lines = {ln.split()[0]: ln for ln in text.splitlines()[1:] if ln.strip() and not ln.startswith(" " * 10)}
    assert "found" in lines["cityscapes"] and "val 2" in lines["cityscapes"]
    assert "found" in lines["smiyc-anomaly"] and "validation 1" in lines["smiyc-anomaly"]
    assert "MISSING" in lines["smiyc-obstacle"]
    rows = json.loads(out_json.read_text())
    assert rows == json.loads(json.dumps(scan(root)))
    assert {r["name"]: r["found"] for r in rows}["cityscapes"] is True


def test_cli_without_json_writes_nothing(root, capsys):
    before = sorted(p for p in root.rglob("*"))
    assert main(["datasets", "--root", str(root)]) == 0
    assert "datasets under" in capsys.readouterr().out
    assert sorted(p for p in root.rglob("*")) == before


def test_missing_root_is_a_verb_error(tmp_path, capsys):
    assert main(["datasets", "--root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("denseood datasets: error:") and "nowhere" in err


def test_every_option_has_help():
    _, verbs = build_parser()
    p = verbs["datasets"]
    opts = [a for a in p._actions if a.option_strings and a.dest != "help"]
    assert {a.dest for a in opts} == {"root", "json"}
    assert all(a.help and a.help.strip() for a in opts)
    with pytest.raises(SystemExit):
        p.parse_args([])  # --root is required
