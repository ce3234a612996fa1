"""train.config: TrainConfig validation and the step count of its phases."""
from __future__ import annotations

import pytest

from denseood.errors import ConfigError
from denseood.train.config import TrainConfig


def ok(**kw) -> TrainConfig:
    return TrainConfig(root="/data", **kw)


def test_defaults_validate_with_a_root():
    ok().validate()
    with pytest.raises(ConfigError, match="--root is required"):
        TrainConfig().validate()


@pytest.mark.parametrize("kw, match", [
    ({"dataset": "kitti"}, "training supports cityscapes, streethazards, synthetic"),
    ({"negatives": "gan"}, "paste:DIR"),
    ({"steps": 0}, "steps must be positive"),
    ({"batch_size": -1}, "batch_size must be positive"),
    ({"crop": 0}, "crop must be positive"),
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
    ({"flow_pretrain_steps": -2}, "flow_pretrain_steps must be >= 0"),
    ({"amp": "fp8"}, "amp 'fp8'"),
    ({"schedule": "step"}, "schedule 'step'"),
    ({"optimizer": "lion"}, "optimizer 'lion'"),
    ({"lam": -0.1}, "lam must be >= 0"),
    ({"flow_js_weight": -1.0}, "flow_js_weight must be >= 0"),
    ({"lam": 0.0, "flow_js_weight": 0.1}, "needs lam > 0"),
])
def test_validate_names_the_bad_field(kw, match):
    with pytest.raises(ConfigError, match=match):
        ok(**kw).validate()


def test_paste_negatives_spec_is_accepted():
    ok(negatives="paste:/objects").validate()


def test_total_steps_counts_flow_pretraining_only_with_flow_negatives():
    assert ok(pretrain_steps=2, flow_pretrain_steps=3, steps=5).total_steps == 10
    assert ok(pretrain_steps=2, flow_pretrain_steps=3, steps=5, negatives="void").total_steps == 7
