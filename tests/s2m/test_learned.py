"""LearnedPrompter inference side: calibration table, rescale to the training height, architecture record."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from denseood.errors import ConfigError
from denseood.s2m.learned import INPUTS, LearnedPrompter, build_detector, quantile_levels


def test_learned_prompter_calibration_is_piecewise_linear(rng):

    lv = quantile_levels(5)
    assert lv[0] == 0 and lv[-1] == 1 and np.all(np.diff(lv) > 0) and np.all(np.diff(lv, 2) < 0)  # denser near 1
    lp = LearnedPrompter.build("tiny", quantiles=[0.0, 1.0, 3.0])
    a = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 9.0]], np.float32)
    np.testing.assert_allclose(lp.calibrate(a), [[0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]], atol=1e-6)
    with pytest.raises(ConfigError):
        LearnedPrompter.build("tiny", quantiles=[1.0, 0.0])


def test_learned_prompter_rescales_to_training_height(rng):
    lp = LearnedPrompter.build("tiny", ref_height=32)
    x = lp.make_input(rng.random((64, 128)).astype(np.float32))
    assert tuple(x.shape) == (1, 32, 64)
    lp4 = LearnedPrompter.build("tiny", input="score+image")
    x = lp4.make_input(rng.random((20, 30)).astype(np.float32), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8))
    assert tuple(x.shape) == (4, 20, 30)
    with pytest.raises(ConfigError):
        lp4.make_input(np.zeros((20, 30), np.float32))


@pytest.mark.parametrize("backbone,input", [("tiny", "score"), ("resnet18", "score+image")])
def test_arch_recorded_from_model(backbone, input):
    lp = LearnedPrompter(build_detector(backbone, INPUTS[input], max_boxes=7), input=input)
    st = lp.state()
    assert st["meta"]["arch"] == {"backbone": backbone, "in_channels": INPUTS[input], "max_boxes": 7}
    lp2 = LearnedPrompter.from_state(st)
    for k, v in lp.model.state_dict().items():
        assert torch.equal(v, lp2.model.state_dict()[k])
