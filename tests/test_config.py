"""denseood.config: YAML configs are type-checked and YAML 1.1 ambiguities are resolved by the field types."""
from __future__ import annotations

import pytest

from denseood.config import dump_yaml, from_dict, load_yaml
from denseood.errors import ConfigError
from denseood.train.trainer import TrainConfig


def test_scientific_notation_string_becomes_float(tmp_path):
    # PyYAML reads ``1e-3`` (no dot) as a string; a float field must still get a float
    p = tmp_path / "c.yaml"
    p.write_text("lr: 1e-3\nflow_lr: 2e-4\nsteps: 10\nscale: [0.5, 2]\nencoder_weights: null\n")
    cfg = load_yaml(TrainConfig, p)
    assert cfg.lr == pytest.approx(1e-3) and isinstance(cfg.lr, float)
    assert cfg.flow_lr == pytest.approx(2e-4)
    assert cfg.scale == (0.5, 2.0) and isinstance(cfg.scale, tuple) and isinstance(cfg.scale[1], float)
    assert cfg.encoder_weights is None


def test_round_trip(tmp_path):
    cfg = from_dict(TrainConfig, {"lr": 0.01, "neg_size": [8, 64], "negatives": "void"})
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(TrainConfig, tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize("key,value,expect", [
    ("lr", "fast", "lr: expected a number"),
    ("steps", 2.5, "steps: expected an integer"),
    ("steps", "100", "steps: expected an integer"),
    ("fit_stats", "yes", "fit_stats: expected true/false"),
    ("neg_size", [1, 2, 3], "neg_size: expected 2 values"),
    ("scale", 1.0, "scale: expected a list"),
])
def test_wrong_types_name_the_key(key, value, expect):
    with pytest.raises(ConfigError, match=expect):
        from_dict(TrainConfig, {key: value}, "cfg.yaml")


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="unknown key.*'learning_rate'.*valid keys"):
        from_dict(TrainConfig, {"learning_rate": 1.0})
