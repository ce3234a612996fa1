"""No verb touches the network: ``train``, ``eval``, ``segment``, ``train-prompter`` and ``demo --quick`` run as
subprocesses under a ``sitecustomize`` that makes every socket connect and name lookup fail and log the call; each
must exit 0 with an empty log. A control process proves the hook is active (it must fail and log)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SIZES = ["--min-segment-size", "20", "--min-instance-size", "10"]

SITECUSTOMIZE = '''
"""Test-only: block the network. Every connect / lookup appends one line to $NET_BLOCK_LOG and raises OSError."""
import os
import socket

_LOG = os.environ["NET_BLOCK_LOG"]


def _blocked(name, original):
    def blocked(*args, **kwargs):
        with open(_LOG, "a") as fh:
            fh.write(f"pid {os.getpid()}: {name} args={args!r} kwargs={kwargs!r}\\n")
        raise OSError(f"network access blocked by the test: {name}{args!r}")
    blocked.__wrapped__ = original
    return blocked


socket.socket.connect = _blocked("socket.socket.connect", socket.socket.connect)
socket.socket.connect_ex = _blocked("socket.socket.connect_ex", socket.socket.connect_ex)
socket.create_connection = _blocked("socket.create_connection", socket.create_connection)
socket.getaddrinfo = _blocked("socket.getaddrinfo", socket.getaddrinfo)
'''


class Offline:
    """Starts Python processes that import the blocking sitecustomize (its folder first on PYTHONPATH, then the
    worktree, then whatever was there), each with its own network log ``tmp/logs/<name>.log``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        site = tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
        (tmp / "logs").mkdir()
        old = os.environ.get("PYTHONPATH")
        # one thread each: the demo runs beside the other verbs on 2 cores
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)] + ([old] if old else [])),
                    "OMP_NUM_THREADS": "1"}

    def log(self, name: str) -> Path:
        return self.tmp / "logs" / f"{name}.log"

    def start(self, name: str, *argv: str) -> subprocess.Popen:
        """Start ``python *argv``; stdout/stderr go to files (a pipe could fill and block a long run)."""
        with open(self.tmp / "logs" / f"{name}.out", "w") as out:   # the child keeps its own copy
            return subprocess.Popen([sys.executable, *argv], env={**self.env, "NET_BLOCK_LOG": str(self.log(name))},
                                    cwd=str(self.tmp), stdout=out, stderr=subprocess.STDOUT, text=True)

    def finish(self, name: str, proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
        """Wait for ``proc``: (exit code, its output, its network log ('' when nothing was attempted))."""
        try:
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = self.log(name)
        return rc, (self.tmp / "logs" / f"{name}.out").read_text(), log.read_text() if log.exists() else ""

    def verb(self, *argv: str) -> None:
        """Run ``denseood *argv`` offline: exit 0 and not one network call."""
        self.check(argv[0], self.start(argv[0], "-m", "denseood", *argv))

    def check(self, name: str, proc: subprocess.Popen) -> None:
        rc, out, log = self.finish(name, proc)
        assert rc == 0, (name, rc, out[-3000:])
        assert log == "", (name, log)


@pytest.mark.slow
def test_no_command_touches_the_network(tmp_path):
    off = Offline(tmp_path)

    # the hook is live: a lookup in a process started the same way fails and is logged
    rc, out, log = off.finish("control", off.start("control", "-c",
                                                   "import socket; socket.getaddrinfo('example.com', 443)"))
    assert rc != 0 and "network access blocked by the test" in out
    assert len(log.splitlines()) == 1 and "socket.getaddrinfo" in log and "example.com" in log

    # demo --quick (the longest) runs in the background, with its own scratch --out and --weights
    demo = off.start("demo", "-m", "denseood", "demo", "--quick", "--out", str(tmp_path / "demo"),
                     "--weights", str(tmp_path / "w.pt"))
    try:
        _chain(off, tmp_path)
    finally:
        off.check("demo", demo)
    assert (tmp_path / "demo" / "eval" / "results.json").is_file()


def _chain(off: Offline, tmp_path: Path) -> None:
    """train (tiny) -> eval, segment, train-prompter on its model.pt, each in its own offline process."""
    from denseood.data.synthetic import write

    root = tmp_path / "synthetic"
    write(root, n_train=4, n_val=2, seed=0, size=(64, 128), progress=False)
    run = tmp_path / "run"
    off.verb("train", "--dataset", "synthetic", "--root", str(root), "--out", str(run), "--arch", "fpn",
             "--encoder", "resnet18", "--negatives", "none", "--steps", "2", "--batch-size", "2", "--crop", "48",
             "--device", "cpu", "--set", "workers=0", "--set", "val_every=0", "--set", "val_limit=2",
             "--set", "fit_stats=false", "--set", "log_every=1")
    ckpt = run / "model.pt"
    assert ckpt.is_file()
    off.verb("eval", "--dataset", "synthetic", "--root", str(root), "--checkpoint", str(ckpt),
             "--score", "msp,jsd", "--out", str(tmp_path / "eval"), "--device", "cpu", "--workers", "0", *SIZES)
    assert (tmp_path / "eval" / "results.json").is_file()
    images = sorted((root / "dataset_AnomalyTrack" / "images").iterdir())[:2]
    off.verb("segment", "--images", *map(str, images), "--checkpoint", str(ckpt), "--prompter", "peak",
             "--out", str(tmp_path / "segment"), "--device", "cpu", "--dtype", "fp32")
    assert len((tmp_path / "segment" / "objects.json").read_text().splitlines()) == 2
    off.verb("train-prompter", "--checkpoint", str(ckpt), "--root", str(root), "--steps", "2",
             "--batch-size", "2", "--crop", "64", "--device", "cpu", "--pool-size", "2")
