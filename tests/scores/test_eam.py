"""The ``eam`` score (issue 21 item 1): equal to a direct numpy computation of the authors' formula on a tiny random
HF Mask2Former (through the model, ``anomaly_score`` and the inference engine, flip and sliding windows included),
and refused for logit models with a message naming what it needs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import denseood
from denseood.errors import ConfigError
from denseood.models.sources import load_model
from denseood.scores import SCORES, anomaly_score, applicable_scores
from tests.model_builders import MEAN, STD, rba_pipeline_masks, tiny_mask2former, tiny_segformer

pytest.importorskip("transformers")

H, W = 40, 72


@pytest.fixture(scope="module")
def m2f(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2f_eam")
    return tiny_mask2former(d, num_labels=4, logit_scale=4.0), d


def _normalised(img):
    x = (img.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


def _np_eam(cls_logits: np.ndarray, mask_logits: np.ndarray) -> np.ndarray:
    """1 - sum_q sigmoid(m_q) max_{k<=K} softmax(c_q)[k], float64, from (Q,K+1) and (Q,H,W)."""
    e = np.exp(cls_logits - cls_logits.max(-1, keepdims=True))
    p = (e / e.sum(-1, keepdims=True))[:, :-1].max(-1)
    return 1.0 - np.einsum("q,qhw->hw", p, 1.0 / (1.0 + np.exp(-mask_logits)))


def test_eam_equals_direct_computation(m2f, no_network):
    net, d = m2f
    model = load_model(f"hf:{d}")
    img = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    x = _normalised(img)
    with torch.no_grad():
        cls, masks = rba_pipeline_masks(net, x)
        scores, queries = model(x, return_queries=True)
        direct = anomaly_score("eam", scores, queries=queries)
    ref = _np_eam(cls[0].double().numpy(), masks[0].double().numpy())
    assert float(np.ptp(ref)) > 1e-3, "the map must vary for the comparison to mean anything"
    np.testing.assert_allclose(direct[0].numpy(), ref, atol=1e-5)
    eng = denseood.Inference(model, scores=["eam", "rba"], device="cpu", dtype="fp32", input_size=None)
    np.testing.assert_allclose(eng.predict(img)["eam"][0].numpy(), ref, atol=1e-5)
    # the max leaves the no-object output out: a direct computation that kept it differs
    e = np.exp(cls[0].double().numpy())
    with_void = 1.0 - np.einsum("q,qhw->hw", (e / e.sum(-1, keepdims=True)).max(-1),
                                1.0 / (1.0 + np.exp(-masks[0].double().numpy())))
    assert not np.allclose(with_void, ref, atol=1e-4)


def test_eam_through_flip_and_sliding_windows(m2f, no_network):
    _, d = m2f
    model = load_model(f"hf:{d}")
    img = np.random.default_rng(6).integers(0, 256, (H, W, 3), dtype=np.uint8)
    x = _normalised(img)
    with torch.no_grad():
        s1, (c1, m1) = model(x, return_queries=True)
        _, (c2, m2) = model(x.flip(-1), return_queries=True)
    ref = anomaly_score("eam", s1, queries=(0.5 * (c1 + c2), 0.5 * (m1 + m2.flip(-1))))[0].numpy()
    eng = denseood.Inference(model, scores=["eam"], device="cpu", dtype="fp32", input_size=None, flip=True)
    np.testing.assert_allclose(eng.predict(img)["eam"][0].numpy(), ref, atol=1e-5)
    win = denseood.Inference(model, scores=["eam"], device="cpu", dtype="fp32", sliding_window=(H, 48))
    out = win.predict(img)["eam"][0].numpy()
    assert out.shape == (H, W) and np.isfinite(out).all()
    lo, hi = 1 - 6, 1.0   # [1 - Q, 1] with Q = 6 queries
    assert out.min() >= lo and out.max() <= hi


def test_eam_is_refused_for_logit_models(tmp_path, no_network):
    tiny_segformer(tmp_path, num_labels=3)
    model = load_model(f"hf:{tmp_path}")
    assert "eam" not in applicable_scores(model)
    with pytest.raises(ConfigError, match="'eam' needs a mask transformer.*scores which apply: msp"):
        denseood.Inference(model, scores=["eam"], device="cpu")
    with pytest.raises(ConfigError, match="no query outputs"):
        model(torch.zeros(1, 3, 32, 32), return_queries=True)
    with pytest.raises(ConfigError, match="needs a mask transformer's query outputs"):
        anomaly_score("eam", torch.zeros(1, 3, 4, 4))
    assert SCORES["eam"].needs == {"queries"} and SCORES["eam"].output_kinds == {"mask_scores"}


def test_eam_is_refused_for_mask_scores_without_query_outputs():
    """A python: factory may declare output_kind mask_scores; without per-query outputs eam cannot be computed."""
    class PixelOnly:
        output_kind = "mask_scores"

        def describe(self):
            return "python:pixels:make"

    with pytest.raises(ConfigError, match="'eam' needs a mask transformer's per-query outputs.*python:pixels:make"):
        denseood.scores.check_applicable("eam", PixelOnly())
    assert "eam" not in applicable_scores(PixelOnly()) and "rba" in applicable_scores(PixelOnly())
