"""Test helper: a torch file whose unpickling would run code (writes a marker file) - loaders must refuse it."""
from __future__ import annotations

from pathlib import Path

import torch


class WritesMarker:
    """Unpickling this object would call exec(...), creating ``marker``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def write_malicious(path: Path, marker: Path, wrap: str | None = None) -> Path:
    """torch.save a dict of one tensor plus a WritesMarker (under key ``wrap`` when given)."""
    inner = {"weight": torch.zeros(2), "payload": WritesMarker(marker)}
    torch.save({wrap: inner} if wrap else inner, path)
    return path


def assert_refused(msg: str, path: Path, marker: Path) -> None:
    """The message names the file, says why it is refused and what is safe; no torch advice; no code ran."""
    low = msg.lower()
    assert str(path) in msg
    assert "arbitrary python objects" in low and "could execute code" in low and "refuses" in low
    assert "state_dict()" in msg and "tensors" in low
    assert "weights_only" not in msg and "likely succeed" not in low and "truncated or corrupt" not in low
    assert not marker.exists()
