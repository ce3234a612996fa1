"""Progress bars that read well on a terminal and in a log file: every progress bar of denseood is :func:`progress_bar`.

On a terminal it is a plain ``tqdm`` bar. When the bar's stream (stderr by default) is not a terminal (``make demo
2> log``, a batch job, a CI log) it prints plain lines instead: no carriage returns or cursor moves, an ASCII bar, at
most one line every :data:`FILE_INTERVAL_S` seconds per bar (the first one that long after it starts), nothing for
a bar that has not moved, and one last line when a bar that keeps its line (``leave``, tqdm's default) closes.
See docs/architecture.md.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

__all__ = ["progress_bar", "FILE_INTERVAL_S", "LogBar"]

#: seconds between two progress lines of one bar when its stream is not a terminal
FILE_INTERVAL_S = 10.0


class _LineFile:
    """A text stream for :class:`LogBar`: each write that holds text becomes one line (carriage returns,
    cursor-up escapes and padding dropped); writes of only whitespace (tqdm's clears) are dropped."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, s: str) -> int:
        text = s.replace("\r", "").replace("\x1b[A", "").strip()
        if text:
            self.stream.write(text + "\n")
        return len(s)

    def flush(self) -> None:
        self.stream.flush()


class LogBar(tqdm):
    """tqdm for a stream that is not a terminal: plain lines at most every ``line_interval`` seconds (see module)."""

    def __init__(self, *args: Any, line_interval: float = FILE_INTERVAL_S, **kw: Any):
        self.line_interval = float(line_interval)   # seconds between two lines
        self._last_line_t = time.monotonic()        # the first line after line_interval, or at the close
        self._last_line_n = -1
        super().__init__(*args, **kw)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        """One line for the bar's state when it has moved and ``line_interval`` has passed since its last line, or
        when it closes (tqdm sets ``disable`` before its closing display); ``msg`` (tqdm's clears) is dropped."""
        if msg is not None:
            return True
        now = time.monotonic()
        closing = bool(self.disable)
        due = closing or now - self._last_line_t >= self.line_interval
        if self.n == 0 or self.n == self._last_line_n or not due:
            return True
        self._last_line_t, self._last_line_n = now, self.n
        self.fp.write(self.__str__())
        self.fp.flush()
        return True


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable | None = None, **kw: Any) -> tqdm:
    """``tqdm(iterable, **kw)`` on a terminal; a :class:`LogBar` (plain lines, at most one every
    :data:`FILE_INTERVAL_S` s) when ``kw["file"]`` (default ``sys.stderr``) is not a terminal. Keywords are
    tqdm's (``total``, ``desc``, ``unit``, ``leave``, ``disable``, ``initial``, ...)."""
    stream = kw.pop("file", None) or sys.stderr
    if _is_terminal(stream):
        return tqdm(iterable, file=stream, **kw)
    kw.pop("dynamic_ncols", None)
    kw.setdefault("mininterval", 1.0)   # tqdm's own throttle of update(); LogBar's lines are further apart
    kw.setdefault("ascii", True)
    return LogBar(iterable, file=_LineFile(stream), line_interval=FILE_INTERVAL_S, **kw)
