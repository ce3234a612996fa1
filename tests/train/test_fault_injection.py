"""A ``train`` process SIGKILLed mid-run, inside the write of ``last.pt`` and inside the write of ``model.pt``:
``train --resume`` (same arguments) then finishes with final weights and statistics bit-identical to an
uninterrupted run; after each kill every checkpoint on disk is complete and loadable, the previous ``last.pt``
survives an interrupted write, and the killed writer's temp file is removed by the next start.

The in-write kills use the test-only hook of the atomic writer (``denseood.io._test_pause_before_rename``)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from denseood.models.checkpoint import read_checkpoint

REPO = Path(__file__).resolve().parents[2]
TMP_TAG = ".denseood-tmp-"
STEPS, FLOW_PRETRAIN = 3, 1          # the bit-exact resume test's config (tests/train/test_trainer.py::tiny_cfg)
TOTAL = STEPS + FLOW_PRETRAIN
PAUSE = "4"                          # seconds the paused writer sleeps before its rename (the kill lands inside)


def train_argv(root: Path, out: Path, resume: bool = False) -> list[str]:
    """``denseood train`` with tests/train/test_trainer.py's tiny flow config, a checkpoint after every step."""
    return [sys.executable, "-m", "denseood", "train", "--dataset", "synthetic", "--root", str(root), "--out", str(out),
            "--arch", "fpn", "--encoder", "resnet18", "--negatives", "flow", "--steps", str(STEPS), "--batch-size", "2",
            "--crop", "48", "--lr", "1e-3", "--device", "cpu",
            "--set", f"flow_pretrain_steps={FLOW_PRETRAIN}", "--set", "workers=0", "--set", "val_every=0",
            "--set", "ckpt_every=1", "--set", "log_every=1", "--set", "flow_levels=2", "--set", "flow_steps=1",
            "--set", "flow_hidden=8", "--set", "neg_size=[8, 24]", "--set", "val_limit=2",
            "--set", "stats_batches=2"] + (["--resume"] if resume else [])


def _env(**extra: str) -> dict[str, str]:
    old = os.environ.get("PYTHONPATH")
    # one thread each: four trainings run at once on 2 cores
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO)] + ([old] if old else [])), "OMP_NUM_THREADS": "1",
            **extra}


def _start(argv: list[str], log: Path, **env: str) -> subprocess.Popen:
    with open(log, "w") as f:                # the child keeps its own copy of the descriptor
        return subprocess.Popen(argv, env=_env(**env), cwd=str(log.parent), stdout=f, stderr=subprocess.STDOUT)


def _finish(argv: list[str], log: Path) -> None:
    p = _start(argv, log)
    rc = p.wait(timeout=600)
    assert rc == 0, (rc, log.read_text()[-3000:])


def _kill_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 400) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; fail if it exits (or times out) first."""
    t0 = time.monotonic()
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"train exited ({proc.returncode}) before the kill point: {log.read_text()[-3000:]}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            pytest.fail("kill point not reached in time")
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.is_file() else 0


def _temps(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(f".*{TMP_TAG}*"))


def _state_step(path: Path) -> int:
    return int(read_checkpoint(path)["extra"]["train_state"]["step"])


def _assert_checkpoints_complete(out: Path) -> None:
    """Every checkpoint-named file in ``out`` (temp files aside) is a whole, loadable checkpoint."""
    for p in out.glob("*.pt"):
        ck = read_checkpoint(p)                  # CheckpointError on a truncated or corrupt file
        assert ck["state_dict"], p


def _assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for k in a:
        assert torch.equal(a[k], b[k]), (what, k)


def _scenario(kind: str, root: Path, base: Path) -> Path:
    """Start a run, SIGKILL it at ``kind``'s point, check the files left, resume to the end; returns the run."""
    out = base / kind
    out.mkdir()
    marker = base / f"{kind}.marker"
    log = base / f"{kind}.log"
    if kind == "mid_run":                    # between checkpoint writes, after the first last.pt
        proc = _start(train_argv(root, out), log)
        _kill_when(proc, lambda: (out / "last.pt").is_file(), log)
        assert not (out / "model.pt").exists()
    elif kind == "in_last_write":            # inside the second write of last.pt: the first must survive
        proc = _start(train_argv(root, out), log, DENSEOOD_TEST_SLOW_WRITE=PAUSE,
                      DENSEOOD_TEST_SLOW_WRITE_NAME="last.pt", DENSEOOD_TEST_WRITE_MARKER=str(marker))
        _kill_when(proc, lambda: _lines(marker) >= 2, log)
        assert _state_step(out / "last.pt") == 1                # the interrupted step-2 write did not land
        assert [p.name.split(TMP_TAG)[0] for p in _temps(out)] == [".last.pt"]
    else:                                    # inside the write of model.pt, after the last step
        proc = _start(train_argv(root, out), log, DENSEOOD_TEST_SLOW_WRITE=PAUSE,
                      DENSEOOD_TEST_SLOW_WRITE_NAME="model.pt", DENSEOOD_TEST_WRITE_MARKER=str(marker))
        _kill_when(proc, lambda: _lines(marker) >= 1, log)
        assert not (out / "model.pt").exists()
        assert _state_step(out / "last.pt") == TOTAL
        assert [p.name.split(TMP_TAG)[0] for p in _temps(out)] == [".model.pt"]
    _assert_checkpoints_complete(out)
    assert (out / "last.pt").is_file()
    _finish(train_argv(root, out, resume=True), base / f"{kind}.resume.log")
    assert _temps(out) == []                 # the killed writer's temp file was removed by the resumed start
    return out


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    from denseood.data import synthetic

    root = tmp_path / "synth"
    synthetic.write(root, n_train=6, n_val=2, seed=3, size=(64, 128), progress=False)
    ref = tmp_path / "reference"
    kinds = ("mid_run", "in_last_write", "in_model_write")
    with ThreadPoolExecutor(len(kinds) + 1) as pool:
        ref_job = pool.submit(_finish, train_argv(root, ref), tmp_path / "reference.log")
        jobs = {k: pool.submit(_scenario, k, root, tmp_path) for k in kinds}
        ref_job.result()
        runs = {k: j.result() for k, j in jobs.items()}
    want = read_checkpoint(ref / "model.pt")
    want_flow = read_checkpoint(ref / "last.pt")["extra"]["train_state"]["flow"]
    assert want["stats"], "the reference run fitted no statistics: nothing to compare"
    for kind, out in runs.items():
        got = read_checkpoint(out / "model.pt")
        _assert_same_tensors(want["state_dict"], got["state_dict"], f"{kind}: state_dict")
        _assert_same_tensors(want["stats"], got["stats"], f"{kind}: stats")
        _assert_same_tensors(want_flow, read_checkpoint(out / "last.pt")["extra"]["train_state"]["flow"],
                             f"{kind}: flow")
