"""Files holding arbitrary pickled Python objects are refused on every model route, without running their code."""
from __future__ import annotations

import pytest
import torch

from denseood.errors import CheckpointError, ConfigError
from denseood.models.checkpoint import read_checkpoint
from denseood.models.encoder_weights import load_encoder_weights
from denseood.models.segmenter import create_segmenter
from denseood.models.sources.registry import load_checkpoint

from tests.models.unsafe_pickle import assert_refused, write_malicious


@pytest.mark.parametrize("reader", [load_checkpoint, read_checkpoint])
def test_checkpoint_with_python_objects_is_refused(tmp_path, reader):
    marker = tmp_path / "MARKER"
    bad = write_malicious(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as e:
        reader(bad)
    assert_refused(str(e.value), bad, marker)
    assert "not a denseood checkpoint" in str(e.value)


def test_encoder_weights_with_python_objects_are_refused(tmp_path):
    marker = tmp_path / "MARKER"
    bad = write_malicious(tmp_path / "enc.pth", marker, wrap="state_dict")
    with pytest.raises(ConfigError) as e:  # the --encoder-weights route
        create_segmenter("fpn", "resnet18", 3, encoder_weights=bad)
    assert_refused(str(e.value), bad, marker)
    with pytest.raises(ConfigError) as e:
        load_encoder_weights(create_segmenter("fpn", "resnet18", 3).encoder, bad)
    assert_refused(str(e.value), bad, marker)


def test_truncated_file_is_called_corrupt_without_torch_advice(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"a": torch.zeros(3)}, good)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:200])
    for f in (junk, trunc):
        with pytest.raises(CheckpointError) as e:
            read_checkpoint(f)
        msg = str(e.value)
        assert "truncated or corrupt" in msg and str(f) in msg
        assert "weights_only" not in msg and "arbitrary" not in msg.lower()


def test_prompter_file_with_python_objects_runs_no_code(tmp_path):
    from denseood.s2m.learned import LearnedPrompter

    marker = tmp_path / "MARKER"
    bad = write_malicious(tmp_path / "prompter.pt", marker)
    with pytest.raises(CheckpointError) as e:
        LearnedPrompter.load(bad)
    assert not marker.exists() and str(bad) in str(e.value)


def test_prompter_file_with_python_objects_is_refused_honestly(tmp_path):
    from denseood.s2m.learned import LearnedPrompter

    marker = tmp_path / "MARKER"
    bad = write_malicious(tmp_path / "prompter.pt", marker)
    with pytest.raises(CheckpointError) as e:
        LearnedPrompter.load(bad)
    assert_refused(str(e.value), bad, marker)
