"""The README's Python example runs as written, in a folder holding the files it names (a tiny checkpoint at
weights/demo.pt and a small synthetic world at demo_out/data)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README has no ```python block under '## Python'"
    return m.group(1)


@pytest.mark.slow
def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    import denseood
    from denseood.data import synthetic

    monkeypatch.chdir(tmp_path)
    synthetic.write(tmp_path / "demo_out" / "data", 2, 3, seed=0, size=(64, 128))
    (tmp_path / "weights").mkdir()
    model = denseood.create_segmenter("fpn", "resnet18", num_classes=19, class_set="cityscapes", train_size=(64, 128))
    denseood.save_checkpoint(model, tmp_path / "weights" / "demo.pt")
    ns: dict = {}
    exec(compile(python_example(), str(README), "exec"), ns)  # noqa: S102 - the README's own example
    assert 0.0 <= float(ns["pix"].compute()["ap"]) <= 1.0
    assert ns["score"].shape[0] == 1 and ns["score"].ndim == 3


def own_model_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Use your own model"):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, "README has no ```python block under '## Use your own model'"
    return m.group(1)


def test_readme_own_model_example_runs_offline(tmp_path, monkeypatch, capsys):
    import socket

    pytest.importorskip("transformers")

    def refuse(*a, **k):
        raise OSError("network access in the README example")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(own_model_example(), str(README), "exec"), ns)  # noqa: S102 - the README's own example
    assert tuple(ns["maps"]["msp"].shape) == (1, 256, 512)
    assert "(1, 256, 512)" in capsys.readouterr().out
