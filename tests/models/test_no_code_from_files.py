"""A checkpoint never makes denseood import or run code: a format-2 .pt whose ``meta.external`` names a .py file
(absolute or relative), ``code.interact`` or ``os.abort`` is refused on every route (load_model, load_checkpoint,
eval, segment, train --init) with one line and exit 2, its marker never appears and no results are written. Code
runs only where the user names it: ``python:MODULE:FACTORY --weights FILE`` or ``--trust-code`` (printed)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from denseood.cli import main as cli_main
from denseood.errors import CheckpointError
from denseood.models.checkpoint import save_checkpoint
from denseood.models.sources import load_checkpoint, load_model
from tests.model_builders import write_factory

REPO = Path(__file__).resolve().parents[2]
ATTACKS = ("abs_py", "rel_py", "interact", "abort")
INNOCENT = "torchvision:lraspp_mobilenet_v3_large:weights/lraspp.pth"   # the spec the tampered file claims
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A genuine checkpoint of a python: model (19 classes) and a 3-frame synthetic world."""
    from denseood.data.synthetic import write

    d = tmp_path_factory.mktemp("nocode")
    write(d / "synthetic", n_train=2, n_val=2, seed=0, size=(32, 64))
    f = write_factory(d / "factory.py")
    save_checkpoint(load_model(f"python:{f}:make"), d / "genuine.pt")
    return d


def _tamper(base: Path, tmp: Path, attack: str) -> tuple[Path, Path]:
    """(a tampered copy of the genuine checkpoint in ``tmp``, the marker its code would create)."""
    marker = tmp / f"MARKER_{attack}"
    raw = torch.load(base / "genuine.pt", weights_only=True)
    ext = raw["meta"]["external"]
    if attack in ("abs_py", "rel_py"):
        (tmp / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('pwned')\ndef make(**k):\n    raise SystemExit\n")
        ext["module"], ext["factory"] = (str(tmp / "evil.py") if attack == "abs_py" else "evil.py"), "make"
    else:
        ext["module"], ext["factory"] = ("code", "interact") if attack == "interact" else ("os", "abort")
    ext["spec"] = INNOCENT
    torch.save(raw, tmp / "model.pt")
    return tmp / "model.pt", marker


@pytest.fixture
def armed(monkeypatch, tmp_path):
    """cwd = tmp_path (so "evil.py" resolves), stdin that would create the marker if code.interact ran, and an
    os.abort that leaves the marker instead of killing pytest (the real one is run in a subprocess below)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"open({str(tmp_path / 'MARKER_interact')!r}, 'w').write('x')\n"))
    monkeypatch.setattr(os, "abort", lambda: (tmp_path / "MARKER_abort").write_text("aborted"))
    return tmp_path


def _assert_refused(msg: str, ckpt: Path, marker: Path) -> None:
    assert "\n" not in msg.strip() and str(ckpt) in msg and "never runs code named by a file" in msg
    assert "--trust-code" in msg and "python:MODULE:FACTORY --weights" in msg
    assert not marker.exists()


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("loader", [load_model, load_checkpoint])
def test_python_api_refuses_code_named_by_checkpoint(base, armed, attack, loader):
    ckpt, marker = _tamper(base, armed, attack)
    with pytest.raises(CheckpointError) as e:
        loader(ckpt)
    _assert_refused(str(e.value), ckpt, marker)


def _argv(verb: str, base: Path, ckpt: Path, out: Path) -> list[str]:
    if verb == "eval":
        return ["eval", "--dataset", "synthetic", "--root", str(base / "synthetic"), "--checkpoint", str(ckpt),
                "--out", str(out), "--device", "cpu", "--workers", "0", "--score", "msp"]
    if verb == "segment":
        return ["segment", "--images", str(base / "synthetic" / "dataset_AnomalyTrack" / "images"), "--checkpoint",
                str(ckpt), "--out", str(out), "--device", "cpu", "--prompter", "peak"]
    return ["train", "--dataset", "synthetic", "--root", str(base / "synthetic"), "--init", str(ckpt), "--out",
            str(out), "--steps", "1", "--batch-size", "1", "--crop", "32", "--negatives", "none", "--device", "cpu",
            "--set", "val_limit=1"]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("verb", ["eval", "segment", "train"])
def test_cli_refuses_code_named_by_checkpoint(base, armed, attack, verb, capsys):
    ckpt, marker = _tamper(base, armed, attack)
    before = ckpt.read_bytes()
    out = armed / "out"
    assert cli_main(_argv(verb, base, ckpt, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"denseood {verb}: error: ") and "Traceback" not in err
    _assert_refused(err, ckpt, marker)
    assert not (out / "results.json").exists() and not (out / "objects.json").exists()
    assert not (out / "model.pt").exists() and ckpt.read_bytes() == before


def test_real_os_abort_and_interactive_console_never_run(base, tmp_path):
    """The real os.abort (a crash without a message) and code.interact on a real stdin, through a subprocess."""
    for attack in ("abort", "interact"):
        ckpt, marker = _tamper(base, tmp_path, attack)
        r = subprocess.run([sys.executable, "-m", "denseood", *_argv("eval", base, ckpt, tmp_path / "out")],
                           input=f"open({str(marker)!r}, 'w').write('x')\n", capture_output=True, text=True,
                           cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert r.returncode == 2, r.stderr[-2000:]
        assert len(r.stderr.strip().splitlines()) == 1 and "never runs code named by a file" in r.stderr
        assert not marker.exists() and not (tmp_path / "out" / "results.json").exists()


def test_named_code_with_weights_and_trust_code_run_the_model(base, tmp_path, capsys):
    """What is allowed: python:MODULE:FACTORY named by the user with --weights FILE (the file's record is ignored),
    and --trust-code, which prints what it imports."""
    genuine = load_checkpoint(base / "genuine.pt", trust_code=True)
    assert "importing" in capsys.readouterr().err
    with torch.no_grad():
        for p in genuine.parameters():
            p.add_(0.5)   # the factory re-seeds: only loading the file restores these weights
    save_checkpoint(genuine, tmp_path / "tuned.pt")
    x = torch.randn(1, 3, 16, 16)
    named = load_model(f"python:{base / 'factory.py'}:make", weights=tmp_path / "tuned.pt")
    torch.save(genuine.net.state_dict(), tmp_path / "bare.pth")
    bare = load_model(f"python:{base / 'factory.py'}:make", weights=tmp_path / "bare.pth")
    with torch.no_grad():
        assert torch.equal(named(x), genuine(x)) and torch.equal(bare(x), genuine(x))
    assert named.checkpoint_meta["external"]["spec"] == f"python:{base / 'factory.py'}:make"
    trusted = load_model(tmp_path / "tuned.pt", trust_code=True)
    err = capsys.readouterr().err
    assert f"--trust-code: importing {str((base / 'factory.py').resolve())!r} and calling make()" in err
    with torch.no_grad():
        assert torch.equal(trusted(x), genuine(x))


def test_weights_apply_only_to_a_named_python_model_and_trust_code_not_from_config(base, tmp_path, capsys):
    with pytest.raises(Exception, match="applies to a python:MODULE:FACTORY model only"):
        load_model(base / "genuine.pt", weights=base / "genuine.pt")
    (tmp_path / "c.yaml").write_text("trust_code: true\n")
    with pytest.raises(SystemExit) as e:
        cli_main(["eval", "--config", str(tmp_path / "c.yaml"), "--dataset", "synthetic", "--root", "x",
                  "--checkpoint", "y.pt", "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "give --trust-code on the command line" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["train-prompter", "bench"])
def test_train_prompter_and_bench_take_named_code_with_weights_and_refuse_a_tampered_file(base, armed, verb, capsys):
    """train-prompter and bench infer offer --weights / --trust-code (their refusal suggests them): the named
    factory with --weights runs; a tampered .pt is refused and runs nothing."""
    spec = f"python:{base / 'factory.py'}:make"

    def argv(ckpt: str, *extra: str) -> list[str]:
        if verb == "bench":
            return ["bench", "infer", "--checkpoint", ckpt, "--sizes", "16x32", "--iters", "1", "--device", "cpu",
                    *extra]
        return ["train-prompter", "--checkpoint", ckpt, "--root", str(base / "synthetic"), "--out",
                str(armed / "p.pt"), "--steps", "1", "--batch-size", "2", "--crop", "32", "--pool-size", "2",
                "--negatives", "flow", "--device", "cpu", *extra]

    assert cli_main(argv(spec, "--weights", str(base / "genuine.pt"))) == 0
    capsys.readouterr()
    ckpt, marker = _tamper(base, armed, "abs_py")
    assert cli_main(argv(str(ckpt))) == 2
    _assert_refused(capsys.readouterr().err.strip().splitlines()[-1], ckpt, marker)
