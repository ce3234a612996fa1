"""`denseood segment`: outputs per image, objects.json lines, unreadable files, --out protection."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from denseood.cli import main
from denseood.io import read_image, read_label, write_image

from s2m_helpers import disc_scene

ROOT = Path(__file__).resolve().parents[2]


def test_segment_folder_with_corrupt_file(tmp_path, rng, capsys, ckpt):
    ck = ckpt
    d = tmp_path / "imgs"
    d.mkdir()
    sizes = {"a.png": (64, 128), "b.jpg": (60, 100), "c.webp": (70, 90)}
    for name, (h, w) in sizes.items():
        img, _ = disc_scene(h, w, [(w // 2, h // 2, 12)], rng)
        write_image(d / name, img)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    out = tmp_path / "out"
    rc = main(["segment", "--images", str(d), "--checkpoint", str(ck), "--prompter", "peak", "--out", str(out),
               "--device", "cpu", "--dtype", "fp32", "--batch-size", "2"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "broken.png" in captured.err
    lines = (out / "objects.json").read_text().splitlines()
    assert len(lines) == 3
    recs = [json.loads(x) for x in lines]
    assert sorted(Path(r["image"]).name for r in recs) == sorted(sizes)
    for r in recs:
        name = Path(r["image"]).name
        stem = Path(name).stem
        h, w = sizes[name]
        assert r["size"] == [h, w]
        assert len(r["boxes"]) == len(r["scores"]) == len(r["areas"]) == len(r["ids"])
        assert {"segmenter", "prompts", "masks", "total"} <= set(r["timing"])
        ov = read_image(out / "overlays" / f"{stem}.png")
        assert ov.shape == (h, w, 3)
        m = read_label(out / "masks" / f"{stem}.png")
        assert m.dtype == np.uint16 and m.shape == (h, w)
        # areas in the JSON are the pixel counts of the ids in the mask PNG
        assert r["areas"] == [int((m == i).sum()) for i in r["ids"]]
        assert int(m.max()) == len(r["ids"])
    assert not (out / "overlays" / "broken.png").exists()

    # --out exists and is not empty -> error without --overwrite
    rc = main(["segment", "--images", str(d / "a.png"), "--checkpoint", str(ck), "--prompter", "peak", "--out",
               str(out), "--device", "cpu"])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    rc = main(["segment", "--images", str(d / "a.png"), "--checkpoint", str(ck), "--prompter", "peak", "--out",
               str(out), "--device", "cpu", "--overwrite"])
    assert rc == 0


def test_segment_missing_input_and_stems(tmp_path, capsys):
    from denseood.s2m.tool import unique_stems

    assert unique_stems([Path("x/a.png"), Path("y/a.jpg"), Path("z/a.png"), Path("b.png")]) == ["a", "a_jpg", "a_png", "b"]
    ck = tmp_path / "nope.pt"
    rc = main(["segment", "--images", str(tmp_path / "missing"), "--checkpoint", str(ck), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing" in capsys.readouterr().err


def test_tools_segment_script_forwards():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "segment.py"), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--prompt-model" in r.stdout
