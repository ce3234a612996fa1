"""Nothing of the user's is overwritten, no mixed results, disk full, killed runs, paths and images (issue 18,
items 2, 3, 6, 7, 8), each case through the CLI (``denseood.cli.main``): the one-line message naming the file or
value, exit 2, and the user's files byte-identical (sha256 before and after).

Disk full is the kernel's own ENOSPC: the write of the one file under test is redirected to ``/dev/full``."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

import denseood.io as dio
from denseood.cli import main
from denseood.outdir import LOCK, MANIFEST

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A synthetic root (3 labelled validation frames, 64x128) and a tiny random checkpoint."""
    from tests.s2m.s2m_helpers import tiny_checkpoint

    from denseood.data.synthetic import write

    base = tmp_path_factory.mktemp("safety")
    write(base / "syn", n_train=1, n_val=3, seed=0, size=(64, 128), progress=False)
    return {"root": base / "syn", "ckpt": tiny_checkpoint(base / "ck.pt")}


def _eval(world, out, *extra, root=None) -> list[str]:
    return ["eval", "--dataset", "synthetic", "--root", str(root or world["root"]), "--checkpoint",
            str(world["ckpt"]), "--score", "msp", "--out", str(out), "--device", "cpu", "--workers", "0",
            "--min-segment-size", "5", "--min-instance-size", "2", *extra]


def _hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (hidden ones included), by relative path."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_line(err: str, verb: str) -> str:
    """The one error line; no traceback, no DataLoader worker preamble."""
    assert "Traceback" not in err and "Caught " not in err, err
    tag = f"denseood {verb}: error: "
    lines = [ln[ln.index(tag):] for ln in re.split(r"[\r\n]", err) if tag in ln]  # after a progress bar's text
    assert len(lines) == 1, err
    return lines[0]


def _check_manifest(out: Path) -> dict:
    """The manifest lists exactly the files in ``out`` (besides itself), with their sizes and sha256."""
    man = json.loads((out / MANIFEST).read_text())
    on_disk = _hashes(out)
    on_disk.pop(MANIFEST)
    assert man["format"] == "denseood-outputs" and man["complete"] is True
    assert {k: v["sha256"] for k, v in man["files"].items()} == on_disk
    assert all(v["size"] == (out / k).stat().st_size for k, v in man["files"].items())
    return man


# ----------------------------------------------------------------------------------------------- item 2
def test_demo_never_replaces_an_existing_weights_file(tmp_path, capsys):
    """A fresh --out would retrain; an existing --weights file is then refused, not copied over."""
    w = tmp_path / "mine.pt"
    w.write_bytes(os.urandom(4096))
    before = _hashes(tmp_path)
    assert main(["demo", "--quick", "--out", str(tmp_path / "d"), "--weights", str(w)]) == 2
    line = _error_line(capsys.readouterr().err, "demo")
    assert f"--weights {w} exists" in line and "--overwrite" in line
    assert _hashes(tmp_path) == before and not (tmp_path / "d").exists()


@pytest.mark.parametrize("extra, says", [([], "already exists and is not empty (model.pt)"),
                                         (["--overwrite"], "holds files denseood did not write (model.pt")])
def test_train_refuses_a_non_empty_out_without_resume_or_overwrite(tmp_path, capsys, extra, says):
    out = tmp_path / "run"
    out.mkdir()
    (out / "model.pt").write_bytes(os.urandom(2048))  # the user's own checkpoint, no last.pt
    before = _hashes(out)
    assert main(["train", "--root", str(tmp_path), "--out", str(out), "--device", "cpu", *extra]) == 2
    line = _error_line(capsys.readouterr().err, "train")
    assert str(out) in line and says in line
    if not extra:
        assert "--resume" in line
    assert _hashes(out) == before


def test_train_overwrite_keeps_the_previous_run_when_the_new_one_is_refused(tmp_path, capsys):
    """--overwrite of a denseood training folder removes the old run only once the new run's data has loaded."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(os.urandom(1024))
    (out / MANIFEST).write_text(json.dumps({"format": "denseood-outputs", "complete": False, "files": {}}))
    before = _hashes(out)
    assert main(["train", "--root", str(tmp_path / "missing"), "--out", str(out), "--device", "cpu",
                 "--overwrite"]) == 2
    assert str(tmp_path / "missing") in _error_line(capsys.readouterr().err, "train")
    assert _hashes(out) == before


# ----------------------------------------------------------------------------------------------- item 3
def test_eval_overwrite_replaces_the_previous_run_whole(world, tmp_path):
    out = tmp_path / "out"
    assert main(_eval(world, out, "--save-maps")) == 0
    assert len(list((out / "score_maps" / "msp").iterdir())) == 3
    assert main(_eval(world, out, "--overwrite", "--limit", "1", "--save-maps", "--no-components")) == 0
    assert [p.name for p in (out / "score_maps" / "msp").iterdir()] == ["synth0000.npy"]  # no old frames left
    man = _check_manifest(out)
    assert sorted(p.name for p in out.iterdir()) == sorted({MANIFEST, *(k.split("/")[0] for k in man["files"])})
    res = json.loads((out / "results.json").read_text())
    assert man["verb"] == "eval" and man["model"]["spec"] == str(world["ckpt"]) and man["command"] == res["command"]
    assert res["n_images"] == 1


def test_eval_overwrite_of_a_submission_leaves_no_frame_of_the_other_model(world, tmp_path):
    """The issue's case: a SMIYC submission of model A, then ``--overwrite --limit 1`` with model B: the folder
    holds B's one frame only (no .hdf5 of A left beside it)."""
    from tests.s2m.s2m_helpers import tiny_checkpoint

    from denseood.io import read_hdf5, write_image

    root = tmp_path / "smiyc"
    fids = ["airplane0000", "bear0000", "cow0000"]  # official AnomalyTrack test ids
    for i, fid in enumerate(fids):
        write_image(root / "dataset_AnomalyTrack" / "images" / f"{fid}.png", __import__("numpy").full(
            (64, 128, 3), 40 * i, "uint8"))
    other = tiny_checkpoint(tmp_path / "other.pt", seed=1)
    out = tmp_path / "out"
    argv = ["eval", "--dataset", "smiyc-anomaly", "--root", str(root), "--split", "test", "--score", "msp",
            "--out", str(out), "--device", "cpu", "--workers", "0", "--method", "m"]
    assert main([*argv, "--checkpoint", str(other)]) == 0
    sub = out / "submission" / "anomaly_p" / "m" / "AnomalyTrack-all"
    assert sorted(p.name for p in sub.iterdir()) == [f"{f}.hdf5" for f in fids]
    a_map = read_hdf5(sub / "airplane0000.hdf5")
    assert main([*argv, "--checkpoint", str(world["ckpt"]), "--overwrite", "--limit", "1"]) == 0
    assert sorted(p.name for p in sub.iterdir()) == ["airplane0000.hdf5"]
    assert not (read_hdf5(sub / "airplane0000.hdf5") == a_map).all()  # B's map, not A's
    assert set(_check_manifest(out)["files"]) == {"results.json", "results.md", "report.html",
                                                  "submission/anomaly_p/m/AnomalyTrack-all/airplane0000.hdf5"}


def test_two_concurrent_evals_one_fails_at_once_naming_the_other(world, tmp_path, capsys):
    """Run A (a real process) pauses inside its results.json write, holding --out; run B fails at once naming
    A's pid; A then finishes with whole results (every file matches its manifest hash)."""
    out, marker = tmp_path / "out", tmp_path / "in-write"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DENSEOOD_TEST_SLOW_WRITE": "3",
           "DENSEOOD_TEST_SLOW_WRITE_NAME": "results.json", "DENSEOOD_TEST_WRITE_MARKER": str(marker)}
    a = subprocess.Popen([sys.executable, "-m", "denseood", *_eval(world, out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.monotonic()
        while not marker.exists():
            assert a.poll() is None, a.communicate()
            assert time.monotonic() - t0 < 120
            time.sleep(0.05)
        t1 = time.monotonic()
        assert main(_eval(world, out)) == 2
        assert time.monotonic() - t1 < 2.5  # at once, while A still sleeps in its write
        line = _error_line(capsys.readouterr().err, "eval")
        assert f"--out {out} is in use by process {a.pid}" in line
    finally:
        _, err = a.communicate(timeout=120)
    assert a.returncode == 0, err
    man = _check_manifest(out)
    assert {f for f in man["files"] if not f.startswith("frames/")} == {"results.json", "results.md", "pr_curve.png",
                                                                        "roc_curve.png", "report.html"}
    assert "frames/frames.json" in man["files"]  # the report's per-frame records
    assert not (out / LOCK).exists()


@pytest.mark.slow
def test_under_torchrun_every_ranks_frames_land_in_out_with_one_manifest(world, tmp_path):
    """2 gloo ranks: rank 0 owns the folder, rank 1 writes its frames' maps into rank 0's staging folder, and the
    committed --out holds all 3 frames, listed by one manifest, with no staging folder or lock left."""
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "denseood", *_eval(world, out, "--save-maps", "--batch-size", "1")],
                       env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    man = _check_manifest(out)
    assert sorted(k for k in man["files"] if k.startswith("score_maps/")) == [
        f"score_maps/msp/synth{i:04d}.npy" for i in range(3)]
    assert not [e for e in out.iterdir() if e.name.startswith(".")]


# ----------------------------------------------------------------------------------------------- item 6
def _dev_full_for(monkeypatch, needle: str) -> None:
    """Writes to a path containing ``needle`` go to /dev/full (ENOSPC from the kernel)."""
    real_os_open, real_open = os.open, open

    def os_open(path, flags, *a, **k):
        if needle in str(path) and flags & (os.O_WRONLY | os.O_RDWR):
            return real_os_open("/dev/full", os.O_WRONLY)
        return real_os_open(path, flags, *a, **k)

    def py_open(path, *a, **k):
        return real_open("/dev/full", "wb") if needle in str(path) else real_open(path, *a, **k)

    monkeypatch.setattr(dio.os, "open", os_open)
    monkeypatch.setattr(dio, "open", py_open, raising=False)


def test_disk_full_in_the_eval_scratch_maps_is_one_line(world, tmp_path, capsys, monkeypatch):
    _dev_full_for(monkeypatch, ".denseood-eval-maps-")
    out = tmp_path / "new" / "out"
    assert main(_eval(world, out)) == 2
    line = _error_line(capsys.readouterr().err, "eval")
    assert "disk full while writing" in line and ".npy" in line
    assert not (tmp_path / "new").exists()  # nothing left behind, not even the folder the run created


def test_disk_full_while_writing_a_curve_keeps_the_previous_run(world, tmp_path, capsys, monkeypatch):
    """eval without components: a failed last write never leaves a partial set (results.json without curves)."""
    out = tmp_path / "out"
    assert main(_eval(world, out, "--no-components")) == 0
    before = _hashes(out)
    _dev_full_for(monkeypatch, "roc_curve.png")
    assert main(_eval(world, out, "--no-components", "--overwrite", "--limit", "1")) == 2
    line = _error_line(capsys.readouterr().err, "eval")
    assert f"disk full while writing {out / 'roc_curve.png'}; nothing was written" in line  # not the staging path
    assert _hashes(out) == before


def test_disk_full_in_a_training_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    """torch.save hides the ENOSPC behind an inline_container RuntimeError; the user sees "disk full"."""
    from tests.s2m.s2m_helpers import write_synthetic_train

    root = write_synthetic_train(tmp_path / "cs", n=2, size=(64, 128))
    _dev_full_for(monkeypatch, "last.pt")
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--root", str(root), "--out", str(out), "--negatives", "none",
                 "--steps", "1", "--batch-size", "2", "--crop", "64", "--device", "cpu", "--set", "workers=0",
                 "--set", "val_every=0", "--set", "ckpt_every=1", "--set", "fit_stats=false"]) == 2
    line = _error_line(capsys.readouterr().err, "train")
    assert "disk full while writing" in line and str(out / "last.pt") in line


# ----------------------------------------------------------------------------------------------- item 7
def test_a_killed_evals_temporary_folders_are_removed_and_do_not_count(world, tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    out = tmp_path / "out"
    for name in (".denseood-eval-maps-r0-k2j4x_9a", f".denseood-eval-maps-r1-{dead}-abc", f".denseood-eval-maps-r2-{dead}-x1",
                 f".denseood-stage-{dead}-ab12cd34"):
        (out / name).mkdir(parents=True)
        (out / name / "msp_0.npy").write_bytes(b"\0" * 4096)
    (out / LOCK).write_text(f"{dead}\n")  # the killed run's lock file (its flock died with it)
    assert main(_eval(world, out, "--no-components")) == 0  # looks empty: no --overwrite needed
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST, "pr_curve.png", "results.json", "results.md",
                                                            "roc_curve.png", "frames", "report.html"])


# ----------------------------------------------------------------------------------------------- item 8
@pytest.mark.parametrize("method", ["../../x", "ABS", "a/b", ".."])
def test_method_must_stay_inside_out(world, tmp_path, capsys, method):
    method = str(tmp_path / "abs") if method == "ABS" else method
    out = tmp_path / "a" / "b" / "out"
    assert main(_eval(world, out, "--method", method)) == 2
    line = _error_line(capsys.readouterr().err, "eval")
    assert f"--method {method!r}" in line and "plain folder name" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written anywhere


def _corrupt_root(tmp_path: Path) -> tuple[Path, Path]:
    from denseood.data.synthetic import write

    write(tmp_path / "syn", n_train=1, n_val=3, seed=0, size=(64, 128), progress=False)
    images = sorted((tmp_path / "syn").rglob("*.png"))
    bad = next(p for p in images if "images" in p.parts)
    bad.write_bytes(b"not an image at all")
    return tmp_path / "syn", bad


def test_a_corrupt_image_in_a_dataloader_worker_is_the_same_one_line(world, tmp_path, capsys):
    root, bad = _corrupt_root(tmp_path)
    lines = []
    for workers in ("2", "0"):
        argv = _eval(world, tmp_path / f"out{workers}", root=root)
        argv[argv.index("--workers") + 1] = workers
        assert main(argv) == 2
        lines.append(_error_line(capsys.readouterr().err, "eval"))
        assert not (tmp_path / f"out{workers}").exists()
    assert lines[0] == lines[1] and str(bad) in lines[0]


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_broken_image_symlinks_are_named(world, tmp_path, capsys, kind):
    from denseood.io import write_png

    folder = tmp_path / "imgs"
    write_png(folder / "good.png", __import__("numpy").zeros((8, 8, 3), "uint8"))
    link = folder / "bad.jpg"
    if kind == "dangling":
        link.symlink_to(tmp_path / "gone.jpg")
    else:
        link.symlink_to(folder / "bad2.jpg")
        (folder / "bad2.jpg").symlink_to(link)
    before = _hashes(folder)
    assert main(["segment", "--images", str(folder), "--checkpoint", str(world["ckpt"]), "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    line = _error_line(capsys.readouterr().err, "segment")
    assert f"{link} ({'dangling' if kind == 'dangling' else 'symlink loop'}" in line
    assert _hashes(folder) == before and not (tmp_path / "out").exists()


def test_a_broken_symlink_given_as_an_image_file_is_named(world, tmp_path, capsys):
    link = tmp_path / "x.jpg"
    link.symlink_to(link)  # loops onto itself
    assert main(["segment", "--images", str(link), "--checkpoint", str(world["ckpt"]), "--out",
                 str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert f"--images: {link} is a broken symlink (symlink loop)" in _error_line(capsys.readouterr().err, "segment")


def test_a_dangling_symlink_in_a_dataset_is_named(world, tmp_path, capsys):
    root, bad = _corrupt_root(tmp_path)
    bad.unlink()
    bad.symlink_to(tmp_path / "nowhere.png")
    assert main(_eval(world, tmp_path / "out", root=root)) == 2
    line = _error_line(capsys.readouterr().err, "eval")
    assert f"{bad} (dangling -> {tmp_path / 'nowhere.png'})" in line


@pytest.mark.parametrize("verb", ["eval", "segment"])
def test_overwrite_refuses_a_folder_without_denseoods_manifest(world, tmp_path, capsys, verb):
    out = tmp_path / "thesis"
    (out / "ch1").mkdir(parents=True)
    (out / "ch1" / "a.tex").write_text("years of work")
    (out / "results.json").write_text("{}")
    before = _hashes(out)
    argv = _eval(world, out, "--overwrite") if verb == "eval" else [
        "segment", "--images", str(world["root"]), "--checkpoint", str(world["ckpt"]), "--out", str(out),
        "--overwrite", "--device", "cpu"]
    if verb == "segment":
        argv[2] = str(next(world["root"].rglob("*.png")))
    assert main(argv) == 2
    line = _error_line(capsys.readouterr().err, verb)
    assert f"--out {out} holds files denseood did not write (ch1, results.json; no {MANIFEST})" in line
    assert _hashes(out) == before


@pytest.mark.parametrize("verb", ["eval", "train", "train-prompter"])
def test_a_refused_run_leaves_no_empty_out_behind(world, tmp_path, capsys, verb):
    out = tmp_path / "new" / "out"
    missing = tmp_path / "no-such-root"
    argv = {"eval": _eval(world, out, root=missing),
            "train": ["train", "--dataset", "synthetic", "--root", str(missing), "--out", str(out), "--device", "cpu"],
            "train-prompter": ["train-prompter", "--checkpoint", str(world["ckpt"]), "--root", str(missing),
                               "--out", str(out / "prompter.pt"), "--device", "cpu"]}[verb]
    assert main(argv) == 2
    assert str(missing) in _error_line(capsys.readouterr().err, verb)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
