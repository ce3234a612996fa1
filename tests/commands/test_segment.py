"""`denseood segment`: outputs per image, objects.json lines, unreadable files, --out protection, the Python-level
segment_images, --config."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from denseood.cli import main
from denseood.errors import ConfigError
from denseood.io import read_image, read_label, write_image

ROOT = Path(__file__).resolve().parents[2]
from tests.s2m.s2m_helpers import _ckpt_master, ckpt, disc_scene  # noqa: E402, F401  (fixtures)


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
        # per object: score = confidence in [0, 1], raw_score = mean anomaly score inside the mask
        assert len(r["objects"]) == len(r["ids"]) == len(r["raw_scores"])
        for o, i, sc, raw, a in zip(r["objects"], r["ids"], r["scores"], r["raw_scores"], r["areas"]):
            assert o["id"] == i and o["score"] == sc and o["raw_score"] == raw and o["area"] == a
            assert 0.0 <= o["score"] <= 1.0 and isinstance(o["raw_score"], float)
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
    from denseood.commands.segment import unique_stems

    assert unique_stems([Path("x/a.png"), Path("y/a.jpg"), Path("z/a.png"), Path("b.png")]) == ["a", "a_jpg", "a_png", "b"]
    ck = tmp_path / "nope.pt"
    rc = main(["segment", "--images", str(tmp_path / "missing"), "--checkpoint", str(ck), "--out", str(tmp_path / "o")])
    assert rc == 2 and "missing" in capsys.readouterr().err


def test_tools_segment_script_forwards():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "segment.py"), "--help"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "--prompt-model" in r.stdout


def test_segment_images_python_api(tmp_path, rng, ckpt):
    from denseood.commands.segment import segment_images
    from denseood.models.sources.registry import load_checkpoint

    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        img, _ = disc_scene(64, 128, [(40 + 20 * i, 30, 10)], rng)
        write_image(d / f"im{i}.png", img)
    (d / "bad.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    summary = segment_images([d], load_checkpoint(ckpt), out, prompter="peak", device="cpu", dtype="fp32",
                             batch_size=2, input_size="full", progress=False)
    assert summary["images"] == 4 and summary["segmented"] == 3 and summary["out"] == out
    assert [p.name for p, _ in summary["failed"]] == ["bad.png"]
    recs = [json.loads(x) for x in (out / "objects.json").read_text().splitlines()]
    assert len(recs) == 3 and summary["objects"] == sum(len(r["ids"]) for r in recs)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["im0.png", "im1.png", "im2.png"]
    with pytest.raises(ConfigError, match="--overwrite"):
        segment_images([d / "im0.png"], ckpt, out, prompter="peak", device="cpu", progress=False)
    with pytest.raises(ConfigError, match="batch_size"):
        segment_images([d / "im0.png"], ckpt, tmp_path / "o2", batch_size=0, progress=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        segment_images([d / "im0.png"], ckpt, tmp_path / "afile", progress=False)


def test_segment_reads_options_from_a_config_file(tmp_path, rng, ckpt):
    img, _ = disc_scene(64, 128, [(60, 30, 12)], rng)
    write_image(tmp_path / "a.png", img)
    cfg = tmp_path / "seg.yaml"
    cfg.write_text("prompter: peak\ndevice: cpu\ndtype: fp32\nbatch_size: 1\n")
    out = tmp_path / "out"
    rc = main(["segment", "--config", str(cfg), "--images", str(tmp_path / "a.png"), "--checkpoint", str(ckpt),
               "--out", str(out)])
    assert rc == 0 and len((out / "objects.json").read_text().splitlines()) == 1


def test_segment_rejects_a_bad_batch_size_at_parse_time(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["segment", "--images", str(tmp_path), "--checkpoint", "x.pt", "--out", str(tmp_path / "o"),
              "--batch-size", "0"])
    assert e.value.code == 2 and "--batch-size" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["segment", "train-prompter"])
def test_every_option_has_help(verb):
    import argparse

    from denseood.commands import segment, train_prompter

    sub = argparse.ArgumentParser().add_subparsers()
    p = {"segment": segment, "train-prompter": train_prompter}[verb].add_parser(sub)
    for a in p._actions:
        assert a.help and a.help.strip(), f"{verb} {a.option_strings} has no help"


def test_image_over_max_pixels_is_refused_before_the_model_loads(tmp_path, rng, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    write_image(d / "small.png", disc_scene(40, 50, [(20, 20, 6)], rng)[0])
    write_image(d / "big.jpg", disc_scene(80, 100, [(40, 40, 9)], rng)[0])
    missing = tmp_path / "no_such_model.pt"  # loading it would fail with a CheckpointError instead
    rc = main(["segment", "--images", str(d), "--checkpoint", str(missing), "--out", str(tmp_path / "o"),
               "--max-pixels", "5000", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc != 0 and "big.jpg is 80x100 = 0.008 MP" in err and "--max-pixels" in err
    assert "small.png" not in err and "no_such_model" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("work_size", [None, 48])
def test_banded_overlay_equals_the_one_shot_composition(rng, work_size):
    from denseood.commands.segment import overlay
    from denseood.s2m.pipeline import S2M
    from denseood.s2m.promptable import GrabCutBackend
    from denseood.s2m.prompts import PeakPrompter
    from denseood.viz import blend, draw_objects, heatmap
    from tests.s2m.s2m_helpers import map_from_instances

    img, inst = disc_scene(90, 150, [(40, 45, 15), (110, 40, 18)], rng)
    amap = map_from_instances(inst, rng)
    amap[0, 0] = np.nan
    r = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32",
            work_size=work_size).segment_from_map(img, amap)
    assert len(r) >= 2
    want = draw_objects(blend(img, heatmap(r.anomaly_map), alpha=0.4), r.instances, r.boxes, r.scores)
    np.testing.assert_array_equal(overlay(img, r, rows=7), want)


def test_segment_work_size_option_keeps_the_output_at_image_size(tmp_path, rng, ckpt):
    d = tmp_path / "imgs"
    d.mkdir()
    write_image(d / "a.png", disc_scene(96, 160, [(50, 48, 14)], rng)[0])
    out = tmp_path / "out"
    assert main(["segment", "--images", str(d), "--checkpoint", str(ckpt), "--prompter", "peak", "--out", str(out),
                 "--device", "cpu", "--dtype", "fp32", "--work-size", "40"]) == 0
    rec = json.loads((out / "objects.json").read_text())
    m = read_label(out / "masks" / "a.png")
    assert rec["size"] == [96, 160] and m.shape == (96, 160)
    assert rec["areas"] == [int((m == i).sum()) for i in rec["ids"]]
