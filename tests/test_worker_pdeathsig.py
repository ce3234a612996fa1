"""DataLoader workers of the package die with their parent: a SIGKILLed main process leaves no orphan
(``dist.worker_init`` sets PR_SET_PDEATHSIG; Linux only)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import os, sys, time
import torch
from torch.utils.data import DataLoader, Dataset
from denseood import dist

class Slow(Dataset):
    def __len__(self):
        return 1000
    def __getitem__(self, i):
        sys.stdout.write(f"worker {os.getpid()}\n"); sys.stdout.flush()
        time.sleep(60)
        return i

init = dist.worker_init if sys.argv[1] == "on" else None
for _ in DataLoader(Slow(), num_workers=1, worker_init_fn=init, prefetch_factor=1):
    pass
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def _orphan_survives(mode: str) -> bool:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode], stdout=subprocess.PIPE, text=True, env=env)
    line = p.stdout.readline()
    assert line.startswith("worker "), line
    wpid = int(line.split()[1])
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and _alive(wpid):
        time.sleep(0.05)
    survived = _alive(wpid)
    if survived:
        os.kill(wpid, signal.SIGKILL)
    return survived


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_worker_dies_with_its_sigkilled_parent():
    assert not _orphan_survives("on")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_without_the_hook_the_worker_outlives_its_parent():
    """The control: the test above can fail (torch's own worker watchdog takes longer than the deadline)."""
    assert _orphan_survives("off")


def test_every_dataloader_of_the_package_uses_the_hook():
    import re

    for p in (ROOT / "denseood").rglob("*.py"):
        text = p.read_text()
        for m in re.finditer(r"DataLoader\(", text):
            call = text[m.start(): text.find(")\n", m.start())]
            assert "worker_init_fn=" in call and "worker_init" in call, f"{p}: {call[:80]}"

