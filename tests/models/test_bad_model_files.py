"""Every bad model file ends in one line naming the file (or value) and the fix, exit 2, no traceback, nothing of
the user's changed and no results written: unsafe pickles (HF .bin, plain pickle .pt), truncated or garbage
safetensors, wrong-shape tensors, wrong field types and huge sizes in stored configs, huge smp_kwargs, an
oversized --input-size, a corrupt train_state, torchvision key mismatches, NaN weights and NaN logits."""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
import torch

from denseood.cli import main as cli_main
from denseood.models.checkpoint import save_checkpoint
from denseood.models.segmenter import create_segmenter
from denseood.models.sources import load_model
from tests.model_builders import tiny_lraspp, tiny_segformer
from tests.models.unsafe_pickle import assert_refused, write_malicious

pytestmark = pytest.mark.usefixtures("one_thread")

NAN_FACTORY = '''import torch
import torch.nn as nn


class NaNNet(nn.Module):
    def __init__(self, num_classes=19):
        super().__init__()
        self.conv = nn.Conv2d(3, num_classes, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x) * float("nan")


def make(num_classes=19):
    return NaNNet(num_classes)
'''


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 2-frame synthetic world, a tiny SegFormer folder (19 classes), its denseood checkpoint, an smp checkpoint
    and a torchvision LRASPP state dict."""
    from denseood.data.synthetic import write

    d = tmp_path_factory.mktemp("badfiles")
    write(d / "synthetic", n_train=2, n_val=2, seed=0, size=(32, 64))
    tiny_segformer(d / "segformer", num_labels=19)
    save_checkpoint(load_model(f"hf:{d / 'segformer'}"), d / "hf.pt")
    save_checkpoint(create_segmenter("fpn", "resnet18", 19), d / "smp.pt")
    tiny_lraspp(d / "lraspp.pth")
    return d


def _digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (or of the file itself)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _eval_argv(base: Path, spec: str, out: Path, *extra: str) -> list[str]:
    return ["eval", "--dataset", "synthetic", "--root", str(base / "synthetic"), "--checkpoint", spec, "--out",
            str(out), "--device", "cpu", "--workers", "0", "--score", "msp", "--no-components", *extra]


def _error_line(stderr: str, verb: str) -> str:
    """The one error line of ``stderr`` (progress lines may precede it); no traceback, no torch advice."""
    assert "Traceback" not in stderr and "weights_only" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith(f"denseood {verb}: error: ")]
    assert len(lines) == 1 and sum("error" in ln.lower() for ln in stderr.splitlines()) == 1, stderr
    return lines[0]


def _refused(argv: list[str], inputs: Path, out: Path, capsys) -> str:
    """Run ``argv``: exit 2, one line without a traceback, ``inputs`` unchanged, no results; the message."""
    before = _digest(inputs)
    assert cli_main(argv) == 2
    err = _error_line(capsys.readouterr().err, argv[0])
    assert _digest(inputs) == before
    assert not (out / "results.json").exists() and not (out / "objects.json").exists()
    return err


def _hf_copy(base: Path, tmp: Path) -> Path:
    import shutil

    d = tmp / "hfmodel"
    shutil.copytree(base / "segformer", d)
    return d


def test_hf_bin_with_a_malicious_pickle_is_refused_as_unsafe(base, tmp_path, capsys):
    d = _hf_copy(base, tmp_path)
    (d / "model.safetensors").unlink()
    marker = tmp_path / "MARKER"
    write_malicious(d / "pytorch_model.bin", marker)
    err = _refused(_eval_argv(base, f"hf:{d}", tmp_path / "out"), d, tmp_path / "out", capsys)
    assert_refused(err, d / "pytorch_model.bin", marker)


def test_plain_pickle_checkpoint_is_called_unsafe_not_corrupt(base, tmp_path, capsys):
    f = tmp_path / "plain.pt"
    with open(f, "wb") as h:
        pickle.dump({"state_dict": {"w": [1.0, 2.0]}}, h)
    err = _refused(_eval_argv(base, str(f), tmp_path / "out"), f, tmp_path / "out", capsys)
    assert str(f) in err and "plain Python pickle" in err and "refuses to unpickle" in err
    assert "truncated or corrupt" not in err


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_broken_safetensors_is_named_truncated_or_corrupt(base, tmp_path, capsys, damage):
    d = _hf_copy(base, tmp_path)
    st = d / "model.safetensors"
    st.write_bytes(st.read_bytes()[:300] if damage == "truncated" else b"\x00garbage" * 40)
    err = _refused(_eval_argv(base, f"hf:{d}", tmp_path / "out"), d, tmp_path / "out", capsys)
    assert str(st) in err and "not a readable safetensors file" in err and "save_pretrained" in err


def test_hf_tensor_of_the_wrong_shape_is_named(base, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    d = _hf_copy(base, tmp_path)
    sd = load_file(d / "model.safetensors")
    key = "decode_head.classifier.weight"
    sd[key] = torch.zeros(7, *sd[key].shape[1:])
    save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
    err = _refused(_eval_argv(base, f"hf:{d}", tmp_path / "out"), d, tmp_path / "out", capsys)
    assert str(d) in err and key in err and "shape mismatches" in err


def _edit_hf_record(base: Path, tmp: Path, **fields) -> Path:
    """A copy of the HF checkpoint whose stored transformers config has ``fields`` replaced."""
    raw = torch.load(base / "hf.pt", weights_only=True)
    raw["meta"]["external"]["config"].update(fields)
    torch.save(raw, tmp / "edited.pt")
    return tmp / "edited.pt"


def test_stored_hf_config_with_a_wrong_field_type_is_named(base, tmp_path, capsys):
    f = _edit_hf_record(base, tmp_path, hidden_sizes="notalist")
    err = _refused(_eval_argv(base, str(f), tmp_path / "out"), f, tmp_path / "out", capsys)
    assert str(f) in err and "stored transformers config" in err


def test_folder_config_with_a_wrong_field_type_is_named(base, tmp_path, capsys):
    import json

    d = _hf_copy(base, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden_sizes"] = "notalist"
    (d / "config.json").write_text(json.dumps(cfg))
    err = _refused(_eval_argv(base, f"hf:{d}", tmp_path / "out"), d, tmp_path / "out", capsys)
    assert str(d / "config.json") in err


def test_stored_hf_config_with_huge_sizes_allocates_nothing(base, tmp_path, capsys):
    f = _edit_hf_record(base, tmp_path, hidden_sizes=[100000, 100000])
    err = _refused(_eval_argv(base, str(f), tmp_path / "out"), f, tmp_path / "out", capsys)
    assert str(f) in err and "shape mismatches" in err


def test_folder_config_with_huge_sizes_is_compared_with_the_weights(base, tmp_path, capsys):
    import json

    d = _hf_copy(base, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["hidden_sizes"] = [100000, 100000]
    (d / "config.json").write_text(json.dumps(cfg))
    err = _refused(_eval_argv(base, f"hf:{d}", tmp_path / "out"), d, tmp_path / "out", capsys)
    assert str(d / "config.json") in err and "does not belong to these weights" in err


def test_huge_smp_kwargs_are_checked_on_the_meta_device(base, tmp_path, capsys):
    raw = torch.load(base / "smp.pt", weights_only=True)
    raw["meta"]["smp_kwargs"] = {**(raw["meta"].get("smp_kwargs") or {}), "decoder_pyramid_channels": 2_000_000}
    f = tmp_path / "huge.pt"
    torch.save(raw, f)
    err = _refused(_eval_argv(base, str(f), tmp_path / "out"), f, tmp_path / "out", capsys)
    assert str(f) in err and "shape mismatches" in err


@pytest.mark.parametrize("verb", ["eval", "segment"])
def test_input_size_is_checked_against_max_pixels_before_loading(base, tmp_path, capsys, verb):
    out = tmp_path / "out"
    if verb == "eval":
        argv = _eval_argv(base, str(base / "smp.pt"), out, "--input-size", "99999999x99999999")
    else:
        argv = ["segment", "--images", str(base / "synthetic" / "dataset_AnomalyTrack" / "images"), "--checkpoint",
                str(base / "smp.pt"), "--out", str(out), "--device", "cpu", "--prompter", "peak",
                "--input-size", "99999999x99999999"]
    err = _refused(argv, base / "smp.pt", out, capsys)
    assert "--input-size" in err and "--max-pixels" in err


def test_resume_with_a_corrupt_train_step_is_named(base, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--root", str(base / "synthetic"), "--out", str(out), "--arch", "fpn",
            "--encoder", "resnet18", "--negatives", "none", "--batch-size", "2", "--crop", "32", "--device", "cpu",
            "--set", "workers=0", "--set", "val_every=0", "--set", "val_limit=1", "--set", "stats_batches=1"]
    assert cli_main([*argv, "--steps", "1"]) == 0
    capsys.readouterr()
    last = out / "last.pt"
    raw = torch.load(last, weights_only=True)
    raw["extra"]["train_state"]["step"] = "x"
    torch.save(raw, last)
    before = _digest(out)
    assert cli_main([*argv, "--steps", "2", "--resume"]) == 2
    err = _error_line(capsys.readouterr().err, "train")
    assert str(last) in err and "train_state.step" in err and "'x'" in err
    assert _digest(out) == before


def test_torchvision_mismatch_names_the_key(base, tmp_path, capsys):
    sd = torch.load(base / "lraspp.pth", weights_only=True)
    key = next(k for k in sd if k.startswith("backbone."))
    sd.pop(key)
    f = tmp_path / "lraspp.pth"
    torch.save(sd, f)
    spec = f"torchvision:lraspp_mobilenet_v3_large:{f}"
    err = _refused(_eval_argv(base, spec, tmp_path / "out"), f, tmp_path / "out", capsys)
    assert str(f) in err and key in err and "missing" in err


@pytest.mark.parametrize("source", ["denseood", "torchvision", "hf"])
def test_nan_weights_are_named_at_load(base, tmp_path, capsys, source):
    if source == "denseood":
        raw = torch.load(base / "smp.pt", weights_only=True)
        key = next(k for k, v in raw["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
        raw["state_dict"][key][0] = float("nan")
        f = tmp_path / "nan.pt"
        torch.save(raw, f)
        spec, inputs, where = str(f), f, str(f)
    elif source == "torchvision":
        sd = torch.load(base / "lraspp.pth", weights_only=True)
        key = "classifier.low_classifier.weight"
        sd[key][0] = float("inf")
        f = tmp_path / "lraspp.pth"
        torch.save(sd, f)
        spec, inputs, where = f"torchvision:lraspp_mobilenet_v3_large:{f}", f, str(f)
    else:
        from safetensors.torch import load_file, save_file

        d = _hf_copy(base, tmp_path)
        sd = load_file(d / "model.safetensors")
        key = "decode_head.classifier.weight"
        sd[key][0] = float("nan")
        save_file(sd, d / "model.safetensors", metadata={"format": "pt"})
        spec, inputs, where = f"hf:{d}", d, str(d / "model.safetensors")
    err = _refused(_eval_argv(base, spec, tmp_path / "out"), inputs, tmp_path / "out", capsys)
    assert where in err and key in err and "non-finite weights" in err


@pytest.mark.parametrize("verb", ["eval", "segment"])
def test_nan_logits_name_the_model_and_the_frames(base, tmp_path, capsys, verb):
    factory = tmp_path / "nanfactory.py"
    factory.write_text(NAN_FACTORY)
    spec = f"python:{factory}:make"
    out = tmp_path / "out"
    images = base / "synthetic" / "dataset_AnomalyTrack" / "images"
    if verb == "eval":
        argv = _eval_argv(base, spec, out)
    else:
        argv = ["segment", "--images", str(images), "--checkpoint", spec, "--out", str(out), "--device", "cpu",
                "--prompter", "peak"]
    err = _refused(argv, factory, out, capsys)
    assert "NaN/inf logits" in err and str(factory) in err
    assert str(images) in err or "dataset_AnomalyTrack" in err   # a frame file is named
    assert "score function" not in err
