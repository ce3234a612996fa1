"""The README's Python example runs as written, in a folder holding the files it names (a tiny checkpoint at
weights/demo.pt and a small synthetic world at demo_out/data)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(heading: str) -> str:
    """The first ```python block after the README heading ``heading``."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    m = re.search(r"```python\n(.*?)```", section, re.S)
    assert m, f"README has no ```python block under {heading!r}"
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
    exec(compile(python_block("## Python"), str(README), "exec"), ns)  # noqa: S102 - the README's own example
    assert 0.0 <= float(ns["pix"].compute()["ap"]) <= 1.0
    assert ns["score"].shape[0] == 1 and ns["score"].ndim == 3


def test_readme_own_model_example_runs_offline(tmp_path, monkeypatch, capsys, no_network):
    pytest.importorskip("transformers")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(python_block("## Use your own model"), str(README), "exec"), ns)  # noqa: S102 - the README's own example
    assert tuple(ns["maps"]["msp"].shape) == (1, 256, 512)
    assert "(1, 256, 512)" in capsys.readouterr().out
