"""load_model over every source (checkpoint, hf:, torchvision:, python:), checked against the models called
directly and scores computed in NumPy from their formulas; all offline (sockets blocked)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import denseood
from denseood.errors import CheckpointError, ConfigError
from denseood.models.sources import load_model
from tests.model_builders import MEAN, STD, rba_pipeline_masks, tiny_mask2former, tiny_segformer

transformers = pytest.importorskip("transformers")

H, W = 48, 80


@pytest.fixture(scope="module")
def segformer(tmp_path_factory):
    d = tmp_path_factory.mktemp("segformer")
    return tiny_segformer(d, num_labels=5, labels={i: f"thing{i}" for i in range(5)}), d


@pytest.fixture(scope="module")
def mask2former(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2f")
    return tiny_mask2former(d, num_labels=4), d


def _image(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def _normalised(img, mean, std):
    x = (img.astype(np.float64) / 255.0 - np.array(mean)) / np.array(std)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


def _np_msp(logits):  # (C,H,W) float64
    e = np.exp(logits - logits.max(0, keepdims=True))
    return 1.0 - (e / e.sum(0, keepdims=True)).max(0)


def _engine_scores(model, img, scores):
    eng = denseood.Inference(model, scores=scores, device="cpu", dtype="fp32", input_size=None)
    out = eng.predict(img)
    return {s: out[s][0].numpy() for s in scores}


def test_segformer_logits_classes_and_msp(segformer, no_network):
    net, d = segformer
    model = load_model(f"hf:{d}")
    assert model.output_kind == "logits"
    assert model.class_names == tuple(f"thing{i}" for i in range(5))
    np.testing.assert_allclose(model.mean, MEAN)
    np.testing.assert_allclose(model.std, STD)
    assert model.train_size is None
    img = _image()
    x = _normalised(img, MEAN, STD)
    np.testing.assert_allclose(model.normalize(img).numpy(), x.numpy(), atol=1e-6)
    with torch.no_grad():
        assert tuple(model(x).shape) == (1, 5, H, W)
        ref = F.interpolate(net(pixel_values=x).logits, size=(H, W), mode="bilinear", align_corners=False)
    got = _engine_scores(model, img, ["msp"])["msp"]
    np.testing.assert_allclose(got, _np_msp(ref[0].double().numpy()), atol=1e-5)


def test_mask_score_on_semantic_model_lists_applicable(segformer, no_network):
    model = load_model(f"hf:{segformer[1]}")
    with pytest.raises(ConfigError, match="rba.*mask transformer.*scores which apply: msp, maxlogit"):
        denseood.Inference(model, scores=["msp", "rba"], device="cpu")
    with pytest.raises(ConfigError, match="mahalanobis needs features|'mahalanobis' needs features"):
        model(torch.zeros(1, 3, H, W), return_features=True)


def test_mask2former_scores_match_numpy(mask2former, no_network):
    net, d = mask2former
    model = load_model(f"hf:{d}")
    assert model.output_kind == "mask_scores"
    assert model.num_classes == 4 and len(model.class_names) == 4
    np.testing.assert_allclose(model.mean, MEAN)
    img = _image(3)
    x = _normalised(img, MEAN, STD)
    with torch.no_grad():
        cls_logits, masks = rba_pipeline_masks(net, x)   # padded to a multiple of 32, as RbA's pipeline does
        scores_t, feats = model(x, return_features=True)
    cl = cls_logits[0].double().numpy()  # (Q, C+1)
    p = np.exp(cl - cl.max(-1, keepdims=True))
    p = (p / p.sum(-1, keepdims=True))[:, :-1]
    sig = 1.0 / (1.0 + np.exp(-masks[0].double().numpy()))  # (Q,H,W)
    s = np.einsum("qc,qhw->chw", p, sig)
    assert tuple(scores_t.shape) == (1, 4, H, W) and feats.ndim == 4
    np.testing.assert_allclose(scores_t[0].numpy(), s, atol=1e-5)
    names = ["msp", "rba", "mask_msp", "mask_maxlogit"]
    got = _engine_scores(model, img, names)
    ref = {"msp": _np_msp(s), "rba": -np.tanh(s).sum(0), "mask_msp": 1.0 - s.max(0), "mask_maxlogit": -s.max(0)}
    for n in names:
        np.testing.assert_allclose(got[n], ref[n], atol=1e-5, err_msg=n)


def test_hf_without_transformers_says_pip_install(segformer, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install denseood\[hf\]"):
        load_model(f"hf:{segformer[1]}")


def test_torchvision_state_dict(tmp_path, no_network):
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    torch.manual_seed(2)
    net = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=19).eval()
    f = tmp_path / "lraspp.pth"
    torch.save(net.state_dict(), f)
    model = load_model(f"torchvision:lraspp_mobilenet_v3_large:{f}", class_set="cityscapes")
    assert model.num_classes == 19 and model.class_set == "cityscapes" and model.class_names[0] == "road"
    np.testing.assert_allclose(model.mean, (0.485, 0.456, 0.406))
    img = _image(5)
    x = _normalised(img, model.mean, model.std)
    with torch.no_grad():
        ref = net(x)["out"]
        assert tuple(model(x).shape) == (1, 19, H, W)
    got = _engine_scores(model, img, ["msp"])["msp"]
    np.testing.assert_allclose(got, _np_msp(ref[0].double().numpy()), atol=1e-5)
    with pytest.raises(CheckpointError, match="19 classes.*expects 12"):
        load_model(f"torchvision:lraspp_mobilenet_v3_large:{f}", num_classes=12)
    with pytest.raises(ConfigError, match="valid: deeplabv3_resnet50"):
        load_model(f"torchvision:resnet18:{f}")


FACTORY = '''
import torch, torch.nn as nn

class Net(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.conv = nn.Conv2d(3, n, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)

def make(num_classes=3):
    torch.manual_seed(4)
    return Net(num_classes)
'''


@pytest.mark.parametrize("by", ["file", "dotted"])
def test_python_factory_with_yaml(tmp_path, monkeypatch, no_network, by):
    (tmp_path / "mynet.py").write_text(FACTORY)
    (tmp_path / "mynet.yaml").write_text("class_names: [a, b, c]\nmean: [0.5, 0.4, 0.3]\nstd: [0.2, 0.25, 0.3]\n"
                                         "train_size: [32, 64]\n")
    if by == "dotted":
        monkeypatch.syspath_prepend(str(tmp_path))
        spec = "python:mynet:make"
    else:
        spec = f"python:{tmp_path / 'mynet.py'}:make"
    model = load_model(spec)
    assert model.class_names == ("a", "b", "c") and model.train_size == (32, 64)
    np.testing.assert_allclose(model.std, STD)
    img = _image(6)
    x = _normalised(img, MEAN, STD)
    with torch.no_grad():
        ref = F.interpolate(model.net(x), size=(H, W), mode="bilinear", align_corners=False)
        assert tuple(model(x).shape) == (1, 3, H, W)
    got = _engine_scores(model, img, ["msp"])["msp"]
    np.testing.assert_allclose(got, _np_msp(ref[0].double().numpy()), atol=1e-5)
    with pytest.raises(ConfigError, match="mahalanobis"):
        model(x, return_features=True)


def test_python_factory_without_yaml_probes_classes(tmp_path, no_network):
    (tmp_path / "bare.py").write_text(FACTORY)
    model = load_model(f"python:{tmp_path / 'bare.py'}:make", num_classes=5)  # passed to make(num_classes=...)
    assert model.num_classes == 5 and model.class_names == tuple(f"class{i}" for i in range(5))
    with pytest.raises(ConfigError, match="no callable 'nope'"):
        load_model(f"python:{tmp_path / 'bare.py'}:nope")
    (tmp_path / "denseood.yaml").write_text("colour: red\n")
    with pytest.raises(ConfigError, match="unknown key.*colour"):
        load_model(f"python:{tmp_path / 'bare.py'}:make")


def test_checkpoint_spec_and_unknown_prefix(tmp_path, no_network):
    m = denseood.create_segmenter("fpn", "resnet18", 3, decoder_segmentation_channels=32, decoder_pyramid_channels=32)
    f = denseood.save_checkpoint(m, tmp_path / "m.pt")
    model = load_model(f)
    assert type(model).__name__ == "Segmenter" and model.checkpoint_sha256 is not None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), m.eval()(x))
    with pytest.raises(ConfigError, match="unknown model spec prefix 'onnx'.*hf:DIR.*torchvision:NAME.*python:MODULE"):
        load_model("onnx:model.onnx")
    assert denseood.load_model is load_model


@pytest.mark.parametrize("hw", [(80, 144), (720, 1280), (64, 128)])
def test_mask_transformer_input_is_padded_to_a_multiple_of_32_as_rba_does(mask2former, hw, no_network):
    """rba / mask_msp / mask_maxlogit equal the RbA pipeline (pad to 32, upsample to the padded size, crop) at
    80x144 and SMIYC's 720x1280; at a multiple of 32 (64x128) nothing is padded: equal to the net run on the image as it is."""
    net, d = mask2former
    model = load_model(f"hf:{d}")
    img = np.random.default_rng(7).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x = _normalised(img, MEAN, STD)
    with torch.no_grad():
        cls_logits, masks = rba_pipeline_masks(net, x)
        plain = net(pixel_values=x)
    p = torch.softmax(cls_logits.double(), -1)[..., :-1]
    s = torch.einsum("bqc,bqhw->bchw", p, masks.double().sigmoid())[0]
    ref = {"rba": -torch.tanh(s).sum(0), "mask_msp": 1 - s.amax(0), "mask_maxlogit": -s.amax(0)}
    eng = denseood.Inference(model, scores=list(ref), device="cpu", dtype="fp32", input_size=None)
    got = eng.predict(img)
    for k, v in ref.items():
        np.testing.assert_allclose(got[k][0].numpy(), v.numpy(), atol=1e-4, err_msg=k)
    unpadded = F.interpolate(plain.masks_queries_logits, size=hw, mode="bilinear", align_corners=False)
    s0 = torch.einsum("bqc,bqhw->bchw", torch.softmax(plain.class_queries_logits, -1)[..., :-1], unpadded.sigmoid())
    same = np.allclose(got["rba"][0].numpy(), -torch.tanh(s0[0]).sum(0).numpy(), atol=1e-4)
    assert same == (hw[0] % 32 == 0 and hw[1] % 32 == 0)
    assert model.meta()["input_padding"]["multiple"] == 32
