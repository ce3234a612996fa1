"""Outputs are checked before the work: an unwritable ``--out`` ends train, eval, segment and train-prompter with a
one-line error before any model or data is loaded.

Tests run as root (chmod does not block root), so an unwritable folder is simulated two ways: a path whose parent
is a regular file (ENOTDIR), and ``open`` in denseood.io raising a read-only file system error (EROFS) for the
probe file."""
from __future__ import annotations

import errno

import pytest

import denseood.io as dio
from denseood.cli import main


def _loud(what: str):
    def fail(*a, **k):
        raise AssertionError(f"{what} was called although --out is not writable")
    return fail


@pytest.fixture
def no_loading(monkeypatch):
    """Every loader the four verbs use fails loudly when called."""
    import denseood.data as data
    import denseood.models.segmenter as seg
    import denseood.models.sources as sources
    import denseood.models.sources.registry as registry
    import denseood.s2m.pipeline as pipe
    import denseood.train.prompter as tp
    import denseood.train.trainer as trainer

    monkeypatch.setattr(data, "open_dataset", _loud("open_dataset"))
    monkeypatch.setattr(registry, "load_checkpoint", _loud("load_checkpoint"))
    monkeypatch.setattr(seg, "create_segmenter", _loud("create_segmenter"))
    monkeypatch.setattr(sources, "load_model", _loud("load_model"))  # every --checkpoint/--init SPEC goes through it
    monkeypatch.setattr(pipe, "build_s2m", _loud("build_s2m"))
    monkeypatch.setattr(tp, "train_prompter", _loud("train_prompter"))
    monkeypatch.setattr(trainer, "open_train_data", _loud("open_train_data"))


def _argv(verb: str, tmp_path, out) -> list[str]:
    img = tmp_path / "img.png"
    img.write_bytes(b"")  # never read: the probe fails first
    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"")
    return {
        "train": ["train", "--root", str(tmp_path), "--out", str(out), "--device", "cpu"],
        "eval": ["eval", "--dataset", "synthetic", "--root", str(tmp_path), "--checkpoint", str(ck), "--out", str(out),
                 "--device", "cpu"],
        "segment": ["segment", "--images", str(img), "--checkpoint", str(ck), "--out", str(out), "--device", "cpu"],
        "train-prompter": ["train-prompter", "--checkpoint", str(ck), "--root", str(tmp_path),
                           "--out", str(out / "prompter.pt"), "--device", "cpu"],
    }[verb]


VERBS = ("train", "eval", "segment", "train-prompter")


def _one_line_error(err: str, verb: str, cause: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err  # no traceback
    assert lines[0].startswith(f"denseood {verb}: error: --out folder ") and "is not writable" in lines[0]
    assert cause in lines[0].lower(), lines[0]
    return lines[0]


@pytest.mark.parametrize("verb", VERBS)
def test_out_under_a_regular_file_fails_before_loading(verb, tmp_path, capsys, no_loading):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    assert main(_argv(verb, tmp_path, out)) == 2
    line = _one_line_error(capsys.readouterr().err, verb, "not a directory")
    assert str(blocker) in line
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("verb", VERBS)
def test_read_only_out_fails_before_loading(verb, tmp_path, capsys, no_loading, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()

    def ro_open(path, *a, **k):
        if "write-probe" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return open(path, *a, **k)

    monkeypatch.setattr(dio, "open", ro_open, raising=False)
    assert main(_argv(verb, tmp_path, out)) == 2
    line = _one_line_error(capsys.readouterr().err, verb, "read-only file system")
    assert str(out) in line
    assert list(out.iterdir()) == []  # no probe file left behind


def test_stale_temp_files_of_dead_writers_are_removed_at_the_start(tmp_path, capsys, monkeypatch):
    """A run killed mid-write leaves ``.<name>.denseood-tmp-<pid>-<hex>``; the next command on that --out removes it
    (only files of dead pids; a user's file stays)."""
    import subprocess
    import sys

    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = out / f".last.pt.denseood-tmp-{pid}-ab12cd34"
    stale.write_bytes(b"half")
    mine = out / "notes.txt"
    mine.write_text("keep")
    (out / "denseood-manifest.json").write_text('{"format": "denseood-outputs", "files": {}}')  # denseood's folder
    import denseood.models.sources as sources

    monkeypatch.setattr(sources, "load_model", _loud("load_model"))  # stop right after the clean-up
    with pytest.raises(AssertionError, match="load_model"):
        main(["segment", "--images", str(mine), "--checkpoint", str(tmp_path / "ck.pt"), "--out", str(out),
              "--overwrite", "--device", "cpu"])
    assert not stale.exists() and mine.read_text() == "keep"


@pytest.fixture
def tiny_eval(tmp_path):
    """A synthetic root (2 validation frames) and a tiny checkpoint."""
    import sys
    from pathlib import Path

    from tests.s2m.s2m_helpers import tiny_checkpoint

    from denseood.data.synthetic import write

    root = tmp_path / "syn"
    write(root, n_train=1, n_val=3, seed=0, size=(64, 128), progress=False)
    return root, tiny_checkpoint(tmp_path / "ck.pt")


def _eval(tiny_eval, out, **kw):
    from denseood.commands.eval.runner import evaluate_checkpoint

    root, ck = tiny_eval
    return evaluate_checkpoint(dataset="synthetic", root=root, checkpoint=ck, out=out, scores="msp", device="cpu",
                               workers=0, progress=False, min_segment_size=5, min_instance_size=2, **kw)


@pytest.mark.parametrize("s2m", [False, True], ids=["pixels", "s2m"])
def test_eval_component_maps_live_under_out_not_the_system_tmp(tiny_eval, tmp_path, monkeypatch, s2m):
    """Pass 2's temporary score maps (one cache, also with --s2m, whose baseline row replays it) are written under
    --out (removed at the end), never into the system /tmp: with tempfile's default folder pointing nowhere the
    evaluation still runs."""
    import tempfile

    seen: list[str] = []
    real = tempfile.mkdtemp

    def spy(*a, **k):
        seen.append(str(k.get("dir")))
        return real(*a, **k)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    out = tmp_path / "out"
    res = _eval(tiny_eval, out, **({"s2m": True, "prompter": "peak"} if s2m else {}))
    assert "sIoU" in res["scores"]["msp"]
    assert seen == [str(out)]
    assert ("s2m" in res) is s2m
    assert sorted(p.name for p in out.iterdir()) == ["denseood-manifest.json", "frames", "pr_curve.png", "report.html",
                                                     "results.json", "results.md", "roc_curve.png"]


def test_eval_prints_and_records_the_frame_count_per_split(tiny_eval, tmp_path, capsys):
    import json

    res = _eval(tiny_eval, tmp_path / "a", components=False)
    assert "evaluating 3 frames of synthetic/val" in capsys.readouterr().err
    assert res["frames"] == {"val": 3}
    assert json.loads((tmp_path / "a" / "results.json").read_text())["frames"] == {"val": 3}
    res = _eval(tiny_eval, tmp_path / "b", components=False, limit=2)
    assert "evaluating 2 of 3 (--limit) frames of synthetic/val" in capsys.readouterr().err
    assert res["frames"] == {"val": 2}


@pytest.mark.parametrize("argv, opt", [
    (["segment", "--images", "x.png", "--checkpoint", "c.pt", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["segment", "--images", "x.png", "--checkpoint", "c.pt", "--out", "o", "--batch-size", "-1"], "--batch-size"),
    (["eval", "--dataset", "synthetic", "--root", "r", "--checkpoint", "c.pt", "--out", "o", "--workers", "-3"],
     "--workers"),
])
def test_counts_are_rejected_at_parse_time(argv, opt, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and opt in capsys.readouterr().err


def test_segment_bad_score_fails_before_any_image_and_leaves_no_out(tmp_path, capsys, monkeypatch, no_loading):
    import denseood.io as dio2

    monkeypatch.setattr(dio2, "read_image", _loud("read_image"))
    img = tmp_path / "img.png"
    img.write_bytes(b"")
    out = tmp_path / "out"
    assert main(["segment", "--images", str(img), "--checkpoint", str(tmp_path / "c.pt"), "--out", str(out),
                 "--score", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "bogus" in err and "jsd" in err
    assert not out.exists()
