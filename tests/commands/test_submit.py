"""`denseood submit`: the OoDIS zip on fixture trees with the benchmark's 2751 frame names (own check, and the
official verify_submission.py when DENSEOOD_OODIS_SUITE points to an anomaly-benchmark-suite checkout), full-size
masks, the 1-pixel dummy, resuming after SIGKILL, `--verify` rejections, and the SMIYC tree."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from denseood.cli import main
from denseood.data.oodis import FOLDERS, read_expected_files

from tests.commands.oodis_tree import SIZES, subset, write_expected, write_model, write_trees  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")
COMPONENTS = ["--objects", "components", "--threshold", "0.5", "--score", "msp"]


def _submit(laf, smiyc, spec, out, *extra) -> list[str]:
    return ["submit", "oodis", "--laf", str(laf), "--smiyc", str(smiyc), "--checkpoint", spec, "--out", str(out),
            "--device", "cpu", "--batch-size", "8", *extra]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The 2751-frame trees and a components submission of them, the network at 8x16 (smaller than every frame)."""
    base = tmp_path_factory.mktemp("oodis_full")
    laf, smiyc = write_trees(base)
    spec = write_model(base / "factory.py")
    out = base / "out"
    assert main(_submit(laf, smiyc, spec, out, "--input-size", "8x16", *COMPONENTS)) == 0
    return {"laf": laf, "smiyc": smiyc, "spec": spec, "out": out, "base": base}


def test_the_zip_has_every_benchmark_frame_and_full_size_masks(full):
    expected = read_expected_files()
    with zipfile.ZipFile(full["out"] / "oodis.zip") as zf:
        names = zf.namelist()
        dirs = {n for n in names if n.endswith("/")}
        assert dirs == {f"{f}/" for f in FOLDERS}
        txts = [n for n in names if n.endswith(".txt") and n != "description.txt"]
        assert len(txts) == 2751 == sum(len(v) for v in expected.values())
        assert {n.split("/")[0] for n in txts} == set(FOLDERS)
        pngs = {n for n in names if n.endswith(".png")}
        referenced = set()
        for txt in txts:
            lines = zf.read(txt).decode().splitlines()
            assert lines, txt
            conf = [float(line.split(" ")[2]) for line in lines]
            assert conf == sorted(conf, reverse=True)
            for line in lines:
                png = f"{txt.split('/')[0]}/{line.split(' ')[0]}"
                referenced.add(png)
                with Image.open(io.BytesIO(zf.read(png))) as im:
                    assert (im.height, im.width) == SIZES[txt.split("/")[0]], png  # the frame's size, not 8x16
        assert referenced == pngs
        assert zf.read("description.txt").decode().startswith("name: denseood\n")


def test_a_frame_without_objects_gets_the_one_pixel_dummy_at_the_lowest_confidence(small, tmp_path):
    """At a threshold above every score nothing is found: each frame holds exactly one 1-pixel mask at confidence =
    the threshold (below any component's mean score, every pixel of which is above it)."""
    out = tmp_path / "out"
    assert main(_submit(small["laf"], small["smiyc"], small["spec"], out, "--expected-files", str(small["exp"]),
                        "--objects", "components", "--threshold", "2", "--score", "msp")) == 0   # msp <= 1 everywhere
    txts = sorted((out / "oodis").glob("*/*.txt"))
    assert len(txts) == 6
    for txt in txts:
        (line,) = txt.read_text().splitlines()
        name, cls, conf = line.split(" ")
        assert float(conf) == 2.0 and cls == "26"
        mask = np.asarray(Image.open(txt.parent / name))
        assert mask.shape == SIZES[txt.parent.name] and np.count_nonzero(mask) == 1 and mask[0, 0] == 255


def test_own_check_accepts_the_zip_and_its_folder(full, capsys):
    assert main(["submit", "--verify", str(full["out"] / "oodis.zip"), "--laf", str(full["laf"]),
                 "--smiyc", str(full["smiyc"])]) == 0
    assert "valid OoDIS submission, 2751 frames" in capsys.readouterr().out
    assert main(["submit", "--verify", str(full["out"] / "oodis")]) == 0


@pytest.mark.skipif(not os.environ.get("DENSEOOD_OODIS_SUITE"),
                    reason="DENSEOOD_OODIS_SUITE (a checkout of kumuji/anomaly-benchmark-suite) is not set")
def test_official_verifier_accepts_the_zip(full):
    suite = Path(os.environ["DENSEOOD_OODIS_SUITE"])
    r = subprocess.run([sys.executable, "verify_submission.py", "--task", "segmentation", "--expected_files",
                        "assets/expected_files.txt", str(full["out"] / "oodis.zip")], cwd=suite,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Everything ready for submission" in r.stdout


def test_shipped_frame_list_equals_the_official_one_when_available():
    suite = os.environ.get("DENSEOOD_OODIS_SUITE")
    if not suite:
        pytest.skip("DENSEOOD_OODIS_SUITE is not set")
    official = (Path(suite) / "assets" / "expected_files.txt").read_text().split()
    assert official == (REPO / "denseood" / "data" / "assets" / "oodis_expected_files.txt").read_text().split()


# ------------------------------------------------------------------------------------------- resume after SIGKILL

def test_sigkill_mid_run_then_the_same_command_resumes_and_gives_a_valid_zip(tmp_path):
    exp = subset(read_expected_files(), 40)
    laf, smiyc = write_trees(tmp_path, exp)
    ef = write_expected(tmp_path / "exp.txt", exp)
    spec = write_model(tmp_path / "factory.py")
    out = tmp_path / "out"
    argv = _submit(laf, smiyc, spec, out, "--expected-files", str(ef), "--score", "msp", "--prompter", "peak")
    argv[argv.index("--batch-size") + 1] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "denseood", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("oodis/*/*.txt"))) < 10 and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p: p.read_bytes() for p in out.glob("oodis/*/*.txt")}
    assert 10 <= len(before) < 120, "the run must be killed mid-way"
    assert not (out / "oodis.zip").exists()
    r = subprocess.run([sys.executable, "-m", "denseood", *argv], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "kept from the killed run" in r.stdout
    assert all(p.read_bytes() == b for p, b in before.items())  # finished frames were not redone
    assert main(["submit", "--verify", str(out / "oodis.zip"), "--expected-files", str(ef), "--laf", str(laf),
                 "--smiyc", str(smiyc)]) == 0


def test_a_resumed_run_with_other_options_and_a_finished_run_are_refused(small, tmp_path, capsys):
    out = tmp_path / "out"
    args = _submit(small["laf"], small["smiyc"], small["spec"], out, "--expected-files", str(small["exp"]),
                   *COMPONENTS)
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2   # finished: never replaced without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    import json

    man = json.loads((out / "denseood-manifest.json").read_text())
    man["complete"] = False   # as a killed run leaves it
    (out / "denseood-manifest.json").write_text(json.dumps(man))
    other = [a if a != "0.5" else "0.7" for a in args]
    assert main(other) == 2
    assert "unfinished submission made with other options" in capsys.readouterr().err
    assert main([*other, "--overwrite"]) == 0


# ------------------------------------------------------------------------------------------------- --verify

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A valid 2-frames-per-folder submission folder and its trees."""
    base = tmp_path_factory.mktemp("oodis_small")
    exp = subset(read_expected_files(), 2)
    laf, smiyc = write_trees(base, exp)
    ef = write_expected(base / "exp.txt", exp)
    spec = write_model(base / "f.py")
    assert main(_submit(laf, smiyc, spec, base / "out", "--expected-files", str(ef), *COMPONENTS)) == 0
    return {"dir": base / "out" / "oodis", "exp": ef, "laf": laf, "smiyc": smiyc, "spec": spec}


def _zip(folder: Path, path: Path, *, dir_entries: bool = True, drop: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            if dir_entries and d.name != drop:
                zf.writestr(zipfile.ZipInfo(f"{d.name}/"), b"")
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if p.is_file() and (drop is None or not rel.startswith(f"{drop}/")):
                zf.write(p, rel)
    return path


def _copy(small, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(small["dir"], tmp_path / "sub"))


def _verify(small, path, capsys, sizes=True) -> list[str]:
    roots = ["--laf", str(small["laf"]), "--smiyc", str(small["smiyc"])] if sizes else []
    rc = main(["submit", "--verify", str(path), "--expected-files", str(small["exp"]), *roots])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 1, lines
    return lines


def _first_txt(sub: Path, folder: str = "roadanomaly") -> Path:
    return sorted((sub / folder).glob("*.txt"))[0]


def test_verify_rejects_an_empty_txt(small, tmp_path, capsys):
    sub = _copy(small, tmp_path)
    txt = _first_txt(sub)
    for line in txt.read_text().splitlines():
        (txt.parent / line.split(" ")[0]).unlink()
    txt.write_text("")
    (line,) = _verify(small, _zip(sub, tmp_path / "s.zip"), capsys)
    assert line.startswith(f"roadanomaly/{txt.name}: empty")


def test_verify_rejects_a_wrong_mask_name(small, tmp_path, capsys):
    sub = _copy(small, tmp_path)
    txt = _first_txt(sub)
    name = txt.read_text().split(" ")[0]
    (txt.parent / name).rename(txt.parent / name.replace("_instanceIds_1_1", "_mask_1"))
    txt.write_text(txt.read_text().replace("_instanceIds_1_1", "_mask_1"))
    lines = _verify(small, _zip(sub, tmp_path / "s.zip"), capsys)
    assert any("mask name" in x and "_mask_1.png" in x for x in lines)
    assert all(len(x.splitlines()) == 1 for x in lines)


def test_verify_rejects_an_unreferenced_png(small, tmp_path, capsys):
    sub = _copy(small, tmp_path)
    txt = _first_txt(sub, "fishyscapes")
    extra = txt.parent / txt.name.replace("_pred.txt", "_9_1.png")
    extra.write_bytes((txt.parent / txt.read_text().split(" ")[0]).read_bytes())
    (line,) = _verify(small, _zip(sub, tmp_path / "s.zip"), capsys)
    assert line.startswith(f"fishyscapes/{extra.name}: not referenced")


def test_verify_rejects_a_missing_folder(small, tmp_path, capsys):
    lines = _verify(small, _zip(small["dir"], tmp_path / "s.zip", drop="roadobstacle"), capsys)
    assert "roadobstacle/: missing folder" in lines
    assert sum("roadobstacle/" in x and "missing (a frame" in x for x in lines) == 2


def test_verify_rejects_a_zip_without_directory_entries(small, tmp_path, capsys):
    lines = _verify(small, _zip(small["dir"], tmp_path / "s.zip", dir_entries=False), capsys)
    assert len(lines) == 3 and all("no directory entry" in x for x in lines)


def test_verify_rejects_a_small_mask(small, tmp_path, capsys):
    sub = _copy(small, tmp_path)
    txt = _first_txt(sub, "roadobstacle")
    png = txt.parent / txt.read_text().split(" ")[0]
    m = np.asarray(Image.open(png))
    Image.fromarray(np.ascontiguousarray(m[::2, ::2])).save(png)
    (line,) = _verify(small, _zip(sub, tmp_path / "s.zip"), capsys)
    h, w = SIZES["roadobstacle"]
    assert line == f"roadobstacle/{png.name}: {h // 2}x{w // 2}, but the frame is {h}x{w}; masks must have the " \
                   f"frame's full resolution"


def test_verify_rejects_bad_lines_and_a_missing_description(small, tmp_path, capsys):
    sub = _copy(small, tmp_path)
    (sub / "description.txt").unlink()
    txt = _first_txt(sub)
    name = txt.read_text().split(" ")[0]
    txt.write_text(f"{name} 26\n")
    lines = _verify(small, sub, capsys, sizes=False)
    assert lines[0].startswith("description.txt: missing")
    assert any("is not '<mask png> <class id> <confidence>'" in x for x in lines)


def test_submit_options_are_checked_before_any_work(small, tmp_path, capsys):
    base = ["submit", "oodis", "--laf", str(small["laf"]), "--smiyc", str(small["smiyc"]), "--checkpoint", "x.pt",
            "--out", str(tmp_path / "o")]
    assert main([*base, "--objects", "components"]) == 2
    assert "needs --threshold" in capsys.readouterr().err
    assert main([*base, "--threshold", "0.3"]) == 2
    assert "applies to --objects components" in capsys.readouterr().err
    assert main(["submit"]) == 2
    assert "name a benchmark" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------------- smiyc

def test_submit_smiyc_writes_the_hdf5_tree_of_the_test_frames(tmp_path, capsys):
    from denseood.io import read_hdf5

    exp = {"roadanomaly": read_expected_files()["roadanomaly"][:2]}
    _, smiyc = write_trees(tmp_path, exp)
    spec = write_model(tmp_path / "f.py")
    out = tmp_path / "out"
    assert main(["submit", "smiyc", "--track", "anomaly", "--root", str(smiyc), "--checkpoint", spec, "--score", "msp",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert "checked: every frame has its file at full size" in capsys.readouterr().out
    files = sorted((out / "submission" / "anomaly_p" / "msp" / "AnomalyTrack-all").glob("*.hdf5"))
    assert [f.stem for f in files] == sorted(exp["roadanomaly"])
    assert all(read_hdf5(f).shape == SIZES["roadanomaly"] for f in files)
