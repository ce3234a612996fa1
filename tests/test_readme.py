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


def shell_block(heading: str) -> list[str]:
    """The commands of the first ```sh block after the README heading ``heading``, one per line."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    m = re.search(r"```sh\n(.*?)```", section, re.S)
    assert m, f"README has no ```sh block under {heading!r}"
    return [ln.strip() for ln in m.group(1).splitlines() if ln.strip()]


@pytest.mark.slow
def test_readme_commands_on_the_demo_data_run_as_written(tmp_path, monkeypatch, capsys):
    """eval and segment run exactly as printed, in a folder holding a tiny weights/demo.pt and demo_out/data;
    the train and train-prompter lines (minutes of training) are checked by the command-line parser."""
    import json
    import shlex

    import denseood
    from denseood.cli import build_parser, main
    from denseood.data import synthetic

    monkeypatch.chdir(tmp_path)
    synthetic.write(tmp_path / "demo_out" / "data", 2, 3, seed=0, size=(64, 128), progress=False)
    (tmp_path / "weights").mkdir()
    model = denseood.create_segmenter("fpn", "resnet18", num_classes=19, class_set="cityscapes", train_size=(64, 128))
    denseood.save_checkpoint(model, tmp_path / "weights" / "demo.pt")
    lines = shell_block("### On the demo's own data")
    assert [shlex.split(ln)[:2] for ln in lines] == [["denseood", "eval"], ["denseood", "segment"],
                                                     ["denseood", "train"], ["denseood", "train-prompter"]]
    for ln in lines[:2]:
        assert main(shlex.split(ln)[1:]) == 0, ln
    res = json.loads((tmp_path / "results" / "demo_eval" / "results.json").read_text())
    assert set(res["scores"]) == {"msp", "jsd"} and res["dataset"]
    assert len((tmp_path / "results" / "demo_segment" / "objects.json").read_text().splitlines()) == 3
    parser, _ = build_parser()
    for ln in lines[2:]:
        args = parser.parse_args(shlex.split(ln)[1:])
        assert args.root == "demo_out/data" and args.dataset == "synthetic"
