"""The segmenter contract (denseood/models/base.py, ``SegmenterBase``), checked over every model source that
``load_model`` reads (tests/models/segmenter_sources.py: smp checkpoint, hf: semantic and universal,
torchvision:, python:): eval mode and metadata; any input size gives scores at the input size; features given or
refused with a ConfigError; ``normalize`` applies the mean/std the source documents; save_checkpoint -> load_model
restores the same outputs; float64 / bf16-autocast / device moves. Everything runs offline on tiny random models.
"""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from denseood.errors import ConfigError
from denseood.models import load_model, save_checkpoint
from tests.models.segmenter_sources import SOURCES

SIZES = [(37, 53), (64, 96)]   # odd (padding paths) and a multiple of 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core test machine two threads per process run many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module", params=SOURCES, ids=lambda s: s.name)
def source(request, tmp_path_factory):
    """(Source, spec, loaded model, the folder holding the source's files), built once per source."""
    src = request.param
    if src.needs:
        pytest.importorskip(src.needs)
    folder = tmp_path_factory.mktemp(src.name)
    spec = src.build(folder)
    return src, spec, load_model(spec), folder


def _x(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(b, 3, h, w)).astype(np.float32))


def _run(model, x, **kw):
    with torch.no_grad():
        return model(x, **kw)


def test_loaded_in_eval_mode_with_metadata(source):
    src, spec, model, _ = source
    assert not model.training, "load_model must return the model in eval mode"
    assert model.output_kind == src.output_kind
    assert model.num_classes == len(model.class_names) >= 1
    assert model.train_size is None or (len(model.train_size) == 2 and min(model.train_size) > 0)
    meta = model.meta()
    assert meta["num_classes"] == model.num_classes and list(meta["class_names"]) == list(model.class_names)
    assert isinstance(model.describe(), str) and model.describe()


@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_any_input_size_gives_scores_at_that_size(source, hw):
    _, _, model, _ = source
    x = _x(2, *hw)
    out = _run(model, x)
    assert torch.equal(x, _x(2, *hw)), "the forward must not change its input"
    assert tuple(out.shape) == (2, model.num_classes, *hw)
    assert out.is_floating_point() and bool(torch.isfinite(out).all())
    if model.output_kind == "mask_scores":   # s_k in [0, Q]
        assert float(out.min()) >= 0.0
    # batch members do not see each other (no train-mode statistics, equal padding per image)
    _close(_run(model, x[1:]), out[1:], 1e-5)
    # the engine's --channels-last memory format gives the same scores
    _close(_run(model, x.contiguous(memory_format=torch.channels_last)), out, 1e-5)


def test_features_present_or_refused(source):
    src, _, model, _ = source
    x = _x(2, *SIZES[0])
    if not src.features:
        with pytest.raises(ConfigError, match="exposes no decoder features") as e:
            _run(model, x, return_features=True)
        assert model.describe() in str(e.value)
        return
    scores, feats = _run(model, x, return_features=True)
    torch.testing.assert_close(scores, _run(model, x), atol=1e-6, rtol=0)
    assert feats.ndim == 4 and feats.shape[0] == 2 and feats.shape[1] >= 1
    assert 1 <= feats.shape[-2] <= x.shape[-2] and 1 <= feats.shape[-1] <= x.shape[-1]
    assert bool(torch.isfinite(feats).all())
    _, feats2 = _run(model, _x(1, *SIZES[1]), return_features=True)
    assert feats2.shape[1] == feats.shape[1], "the feature width F must not depend on the input size"


def test_normalize_applies_the_documented_mean_std(source):
    src, _, model, _ = source
    np.testing.assert_allclose(model.mean, src.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.std, src.std, rtol=0, atol=1e-12)
    assert model.meta()["mean"] == list(model.mean) and model.meta()["std"] == list(model.std)
    img = np.random.default_rng(1).integers(0, 256, (2, 21, 30, 3), dtype=np.uint8)
    ref = (img.astype(np.float64) / 255.0 - np.array(src.mean)) / np.array(src.std)
    ref = ref.transpose(0, 3, 1, 2)
    x = model.normalize(img)
    assert x.dtype == torch.float32 and x.device == model.device and tuple(x.shape) == (2, 3, 21, 30)
    np.testing.assert_allclose(x.numpy(), ref, rtol=0, atol=1e-5)
    # one image (H,W,3), torch uint8 and (B,3,H,W) float in 0..255 give the same
    torch.testing.assert_close(model.normalize(img[0]), x[:1], atol=0, rtol=0)
    torch.testing.assert_close(model.normalize(torch.from_numpy(img)), x, atol=0, rtol=0)
    chw = torch.from_numpy(img).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(model.normalize(chw), x, atol=1e-6, rtol=0)


def _perturbed(model):
    """A copy whose weights differ from the source's files (so loading is what restores them), with stats."""
    m = copy.deepcopy(model)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    m.stats = {"sml_mean": torch.arange(float(m.num_classes)), "sml_std": torch.ones(m.num_classes)}
    return m


def test_save_checkpoint_then_load_model_restores_outputs(source, tmp_path):
    src, spec, model, folder = source
    tuned = _perturbed(model)
    path = save_checkpoint(tuned, tmp_path / "tuned.pt", metrics={"ap": 0.5})
    away = tmp_path / "away"
    if src.self_contained:   # the checkpoint alone must suffice: the source's files are moved away
        shutil.move(str(folder), away)
    try:
        again = load_model(path, **src.reload_kw)
    finally:
        if src.self_contained:
            shutil.move(str(away), folder)
    x = _x(2, *SIZES[0], seed=2)
    want = _run(tuned, x)
    assert torch.equal(_run(again, x), want)
    assert not torch.allclose(_run(model, x), want), "the perturbation must change the outputs"
    assert not again.training and again.output_kind == model.output_kind
    assert again.class_names == model.class_names and again.mean == model.mean and again.std == model.std
    assert again.train_size == model.train_size
    assert set(again.stats) == set(tuned.stats)
    for k, v in tuned.stats.items():
        assert torch.equal(again.stats[k], v)
    assert again.checkpoint_sha256 and again.checkpoint_meta["metrics"] == {"ap": 0.5}


def test_loading_twice_gives_identical_outputs(source):
    _, spec, model, _ = source
    x = _x(1, *SIZES[1], seed=3)
    assert torch.equal(_run(load_model(spec), x), _run(model, x))


def _close(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    scale = float(b.abs().max()) or 1.0
    err = float((a.float() - b.float()).abs().max())
    assert err <= rel * scale, f"max difference {err:.3g} exceeds {rel} x max |output| {scale:.3g}"


def test_float64_bf16_autocast_and_cpu_moves(source):
    """float64 matches float32 closely; bf16 (weights, or the engine's autocast) stays within 15 % of the
    largest score; ``.to("cpu")`` and ``stats_on`` keep the model and its statistics usable."""
    _, _, model, _ = source
    x = _x(2, *SIZES[0], seed=4)
    want = _run(model, x)
    m64 = copy.deepcopy(model).to(torch.float64)
    out64 = _run(m64, x.double())
    assert tuple(out64.shape) == tuple(want.shape) and out64.is_floating_point()
    _close(out64, want, 1e-4)
    m16 = copy.deepcopy(model).to(torch.bfloat16)   # bf16 weights (supported on CPU by every source here)
    out16 = _run(m16, x.to(torch.bfloat16))
    assert tuple(out16.shape) == tuple(want.shape) and bool(torch.isfinite(out16.float()).all())
    _close(out16, want, 0.15)
    with torch.autocast("cpu", dtype=torch.bfloat16):   # the engine's --dtype bf16 path
        outb = _run(model, x)
    assert tuple(outb.shape) == tuple(want.shape) and bool(torch.isfinite(outb.float()).all())
    _close(outb, want, 0.15)
    assert model.to("cpu") is model and model.device.type == "cpu"
    assert torch.equal(_run(model, x), want)
    kept, model.stats = model.stats, {"sml_mean": torch.arange(3, dtype=torch.float64)}
    try:
        st = model.stats_on("cpu")
        assert st["sml_mean"].dtype == torch.float32 and st["sml_mean"].device.type == "cpu"
    finally:
        model.stats = kept


@pytest.mark.cuda
def test_cuda_move_gives_the_cpu_outputs(source):
    _, _, model, _ = source
    x = _x(2, *SIZES[0], seed=6)
    want = _run(model, x)
    gpu = copy.deepcopy(model).to("cuda")
    assert gpu.device.type == "cuda" and gpu.normalize(np.zeros((4, 4, 3), np.uint8)).device.type == "cuda"
    got = _run(gpu, x.cuda())
    assert got.device.type == "cuda"
    _close(got.cpu(), want, 1e-3)
    assert torch.equal(_run(gpu.to("cpu"), x), want), "a CPU -> CUDA -> CPU move must restore the weights"


@pytest.mark.parametrize("name", ["hf-semantic", "hf-universal"])
def test_hf_scores_are_float32_under_bf16_autocast(name, tmp_path):
    """HFSegmenter.forward promises float32 scores; under the engine's bf16 autocast they stay float32 (the
    universal einsum of class scores and masks ran in bf16 before) and close to the float32 forward."""
    pytest.importorskip("transformers")
    src = next(s for s in SOURCES if s.name == name)
    model = load_model(src.build(tmp_path), map_location="cpu")
    x = _x(1, *SIZES[0], seed=5)
    want = _run(model, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _run(model, x)
    assert got.dtype == torch.float32
    _close(got, want, 0.15)
