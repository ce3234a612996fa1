"""Checkpoint format version 2: external models (torchvision:, python:, hf:) saved by save_checkpoint rebuild from
the file alone (no source folder or state-dict file needed) and give the same outputs; corrupt records are refused."""
from __future__ import annotations

import shutil

import pytest
import torch

from denseood.errors import CheckpointError
from denseood.models.checkpoint import save_checkpoint
from denseood.models.sources import load_checkpoint, load_model
from tests.model_builders import tiny_lraspp, tiny_segformer, write_factory


def _round_trip(spec, tmp_path, remove):
    model = load_model(spec, class_set="cityscapes")
    model.stats = {"sml_mean": torch.arange(19.0)}
    path = save_checkpoint(model, tmp_path / "ck.pt", metrics={"ap": 0.5})
    shutil.rmtree(remove) if remove.is_dir() else remove.unlink()   # the checkpoint alone must suffice
    again = load_model(path, class_set="cityscapes")
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    assert torch.equal(again.stats["sml_mean"], torch.arange(19.0))
    assert again.class_names == model.class_names and again.mean == model.mean
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 2 and raw["meta"]["external"]["spec"] == spec
    return raw, again


def test_torchvision_round_trip(tmp_path):
    tiny_lraspp(tmp_path / "tv.pth")
    raw, again = _round_trip(f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'tv.pth'}", tmp_path,
                             tmp_path / "tv.pth")
    assert raw["meta"]["model_source"] == "torchvision" and raw["meta"]["external"]["name"] == "lraspp_mobilenet_v3_large"
    assert raw["meta"]["external"]["num_classes"] == 19 and raw["meta"]["external"]["aux_loss"] is False


def test_python_round_trip_records_module_and_factory(tmp_path):
    f = write_factory(tmp_path / "fac.py")
    model = load_model(f"python:{f}:make")
    raw = torch.load(save_checkpoint(model, tmp_path / "p.pt"), weights_only=True)
    assert raw["meta"]["external"]["module"] == str(f.resolve()) and raw["meta"]["external"]["factory"] == "make"
    with torch.no_grad():   # the factory re-seeds: perturb the weights so strict loading is what restores them
        for p in model.parameters():
            p.add_(1.0)
    save_checkpoint(model, tmp_path / "p.pt")
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "p.pt", trust_code=True)(x), model(x))   # names code: trusted


def test_hf_round_trip_without_the_folder(tmp_path):
    pytest.importorskip("transformers")
    tiny_segformer(tmp_path / "segf", num_labels=19)
    raw, again = _round_trip(f"hf:{tmp_path / 'segf'}", tmp_path, tmp_path / "segf")
    assert raw["meta"]["external"]["config"]["model_type"] == "segformer"


def test_unknown_model_source_and_missing_record_are_refused(tmp_path):
    tiny_lraspp(tmp_path / "tv.pth")
    path = save_checkpoint(load_model(f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'tv.pth'}"),
                           tmp_path / "ck.pt")
    raw = torch.load(path, weights_only=True)
    raw["meta"]["model_source"] = "keras"
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: unknown model_source 'keras'"):
        load_checkpoint(tmp_path / "bad.pt")
    raw["meta"]["model_source"] = "torchvision"
    del raw["meta"]["external"]
    torch.save(raw, tmp_path / "bad2.pt")
    with pytest.raises(CheckpointError, match=r"bad2.pt: checkpoint meta lacks \['external'\]"):
        load_checkpoint(tmp_path / "bad2.pt")
