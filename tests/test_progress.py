"""`denseood.progress.progress_bar`: tqdm on a terminal; plain, rate-limited lines in a file."""
from __future__ import annotations

import io

from tqdm import tqdm

import denseood.progress as P


class _Clock:
    """A fake time.monotonic the test moves by hand."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_bar_in_a_file_prints_plain_lines_at_most_every_interval(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    f = io.StringIO()
    with P.progress_bar(total=100, desc="work", file=f, mininterval=0) as bar:
        for i in range(100):
            clock.t += 0.5                      # 50 s in all, at FILE_INTERVAL_S = 10: at most 5 lines + the last
            bar.update(1)
            bar.set_postfix(loss=f"{i:.3f}")    # a refresh per step, as the trainers do
    text = f.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text and all(ln.strip() for ln in lines)
    assert 4 <= len(lines) <= 6, lines
    assert lines[-1].startswith("work: 100%") and "100/100" in lines[-1]
    assert isinstance(bar, P.LogBar)


def test_short_and_transient_bars_in_a_file(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(P.time, "monotonic", clock)
    f = io.StringIO()
    with P.progress_bar(total=3, desc="short", file=f) as bar:   # under the interval: its last line only
        bar.update(3)
    with P.progress_bar(total=3, desc="gone", file=f, leave=False) as bar:   # leave=False: no closing line
        bar.update(3)
    for _ in P.progress_bar(range(3), desc="off", file=f, disable=True):
        pass
    b = P.progress_bar(total=4, desc="msg", file=f)
    b.update(1)
    tqdm.write("a message", file=f)    # tqdm's clear/refresh around it leave no blank or partial lines
    b.update(3)
    b.close()
    assert f.getvalue().splitlines() == [ln for ln in f.getvalue().splitlines() if ln.strip()]
    lines = f.getvalue().splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["short", "a message", "msg"], lines


def test_a_bar_on_a_terminal_is_plain_tqdm():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = P.progress_bar(total=2, file=Tty(), dynamic_ncols=True)
    assert type(bar) is tqdm
    bar.close()
