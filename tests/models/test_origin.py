"""The model-source registry and ``model.origin``: every spec form has one row, ``load_model`` records where each
model came from, and ``save_checkpoint`` follows that record rather than the spec string (eval's provenance:
tests/commands/test_own_models.py; S2M's checkpoint extra: tests/s2m/test_pipeline.py)."""
from __future__ import annotations

import pytest
import torch

from denseood.errors import ConfigError
from denseood.models.checkpoint import save_checkpoint
from denseood.models.origin import ModelOrigin
from denseood.models.segmenter import create_segmenter
from denseood.models.sources import SOURCES, SPEC_FORMS, load_checkpoint, load_model, parse_spec
from tests.model_builders import tiny_lraspp, write_factory


def test_every_row_is_reached_by_its_own_spec_form(tmp_path):
    """parse_spec hands each prefix to its row's parse; a spec without a prefix is the checkpoint row's."""
    specs = {"checkpoint": str(tmp_path / "m.pt"), "hf": "hf:some/dir", "torchvision": "torchvision:fcn_resnet50:w.pth",
             "python": "python:pkg.mod:make"}
    assert set(SOURCES) == set(specs) and SPEC_FORMS == tuple(s.form for s in SOURCES.values())
    parts = {"checkpoint": (specs["checkpoint"],), "hf": ("some/dir",), "torchvision": ("fcn_resnet50", "w.pth"),
             "python": ("pkg.mod", "make")}
    for kind, spec in specs.items():
        assert parse_spec(spec) == (kind, parts[kind])
    with pytest.raises(ConfigError, match="must be torchvision:NAME:STATE_DICT.pth"):
        parse_spec("torchvision:fcn_resnet50")


def test_origin_of_each_source(tmp_path):
    tiny_lraspp(tmp_path / "tv.pth")
    tv = load_model(f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'tv.pth'}")
    assert tv.origin == ModelOrigin("torchvision", f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'tv.pth'}",
                                    str(tmp_path / "tv.pth"), None, "torchvision", None,
                                    {"name": "lraspp_mobilenet_v3_large"})
    f = write_factory(tmp_path / "fac.py")
    py = load_model(f"python:{f}:make")
    assert (py.origin.kind, py.origin.path, py.origin.model_source) == ("python", str(f.resolve()), "python")
    assert py.origin.extra == {"module": str(f), "factory": "make", "weights": None}

    smp = save_checkpoint(create_segmenter("fpn", "resnet18", 19), tmp_path / "smp.pt")
    tuned = save_checkpoint(tv, tmp_path / "tv.pt")
    for path, made_from, network in ((smp, None, "smp"), (tuned, tv.origin.spec, "torchvision")):
        m = load_model(path)
        assert m.origin == load_checkpoint(path).origin == ModelOrigin(
            "checkpoint", str(path), str(path), m.checkpoint_sha256, network, made_from, {})
        assert len(m.origin.sha256) == 16
    weighted = load_model(f"python:{f}:make", weights=save_checkpoint(py, tmp_path / "py.pt"))
    assert weighted.origin.sha256 == weighted.checkpoint_sha256 and weighted.origin.made_from == f"python:{f}:make"
    assert weighted.origin.extra["weights"] == str(tmp_path / "py.pt")


def test_save_checkpoint_reads_the_origin_not_the_spec(tmp_path):
    tiny_lraspp(tmp_path / "tv.pth")
    tv = load_model(f"torchvision:lraspp_mobilenet_v3_large:{tmp_path / 'tv.pth'}")
    tv.spec = tv.source = "python:looks:wrong"   # the strings no longer decide
    raw = torch.load(save_checkpoint(tv, tmp_path / "a.pt"), weights_only=True)
    assert raw["meta"]["model_source"] == "torchvision"
    tv.origin = None
    with pytest.raises(ConfigError, match="cannot tell the source.*load it with denseood.load_model"):
        save_checkpoint(tv, tmp_path / "b.pt")

