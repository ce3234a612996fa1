"""denseood.outdir: the output-folder protocol on its own (the verbs' cases are in
tests/commands/test_output_safety.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from denseood.errors import ConfigError, OutputError
from denseood.outdir import LOCK, MANIFEST, check_out_dir, is_own_entry, open_output, read_manifest


def test_own_entries_are_recognised_and_user_names_are_not():
    for name in (LOCK, ".results.json.denseood-tmp-12-ab12cd34", ".denseood-stage-12-ab12cd34",
                 ".denseood-eval-maps-r0-k2j4x_9a", ".denseood-eval-maps-r3-77-abc"):
        assert is_own_entry(name), name
    for name in (MANIFEST, "results.json", ".denseood-notes", ".denseood-stage", "denseood-stage-1-ab", ".denseood-s2m-9-x"):
        assert not is_own_entry(name), name


def test_staged_files_appear_only_at_commit_with_a_manifest(tmp_path):
    out = tmp_path / "out"
    with open_output(out) as run:
        assert run.dir.parent == out and run.dir.name.startswith(".denseood-stage-")
        (run.dir / "sub").mkdir()
        (run.dir / "sub" / "a.txt").write_text("abc")
        assert not (out / "sub").exists() and (out / LOCK).is_file()
        run.commit({"verb": "test"})
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "sub"]
    man = read_manifest(out)
    # sha256("abc") from `printf abc | sha256sum`
    assert man["files"] == {"sub/a.txt": {"size": 3, "sha256":
                                          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}}
    assert man["verb"] == "test" and man["complete"] is True


def test_a_run_that_fails_leaves_the_previous_run_and_removes_a_folder_it_created(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(RuntimeError), open_output(out) as run:
        (run.dir / "x.txt").write_text("half")
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()


def test_reentrant_open_returns_the_same_run(tmp_path):
    with open_output(tmp_path / "o") as a:
        with open_output(tmp_path / "o") as b:
            assert a is b
        assert (tmp_path / "o" / LOCK).exists()  # still held by the outer one
    assert not (tmp_path / "o").exists()


def test_commit_never_replaces_a_file_the_manifest_does_not_list(tmp_path):
    out = tmp_path / "out"
    with open_output(out) as run:
        (run.dir / "a.txt").write_text("1")
        run.commit()
    (out / "b.txt").write_text("the user's")
    with open_output(out, overwrite=True) as run:
        (run.dir / "b.txt").write_text("2")
        with pytest.raises(OutputError, match="holds b.txt, which is not in its denseood-manifest.json"):
            run.commit()
    assert (out / "b.txt").read_text() == "the user's" and (out / "a.txt").read_text() == "1"


def test_in_place_runs_write_an_in_progress_manifest_and_overwrite_removes_the_listed_files(tmp_path):
    out = tmp_path / "run"
    with open_output(out, stage=False, outputs=("last.pt",)) as run:
        assert run.dir == out and read_manifest(out)["complete"] is False
        (out / "last.pt").write_bytes(b"1")
        (out / "best.pt").write_bytes(b"1")
        run.commit()
    assert set(read_manifest(out)["files"]) == {"last.pt", "best.pt"}
    with open_output(out, overwrite=True, stage=False, outputs=("last.pt",)) as run:
        assert (out / "last.pt").exists()  # kept until the new run's inputs are loaded
        run.remove_previous()
        assert sorted(p.name for p in out.iterdir()) == [LOCK, MANIFEST]  # the old run is gone before writing
        (out / "model.pt").write_bytes(b"2")
        run.commit()
    assert set(json.loads((out / MANIFEST).read_text())["files"]) == {"model.pt"}


def test_the_lock_names_the_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('ok', flush=True); "
        "time.sleep(30)"), str(out / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(OutputError, match=f"is in use by process {holder.pid} "):
            open_output(out)
    finally:
        holder.kill()
        holder.wait()
    assert (out / LOCK).exists()  # the holder's file is not ours to remove


def test_check_out_dir_messages(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        check_out_dir(f, False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "y").write_text("y")
    with pytest.raises(ConfigError, match=r"not empty \(y\); pass --overwrite to replace the denseood run there, "
                                          r"--resume to continue it, or choose another folder"):
        check_out_dir(tmp_path / "d", False, alternative="--resume to continue it")
    (tmp_path / "d" / MANIFEST).write_text('{"format": "denseood-outputs", "files": {}}')
    assert check_out_dir(tmp_path / "d", True) == tmp_path / "d"
