"""Inference engine: resize back to label size, sliding window, flip, features, dtypes, batching, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from denseood.data.sample import Sample
from denseood.errors import ConfigError
from denseood.infer import Inference, ShardSampler, collate_samples, window_positions
from denseood.models.segmenter import create_segmenter

H, W = 64, 128


pytestmark = pytest.mark.usefixtures("one_thread")


def np_jsd_score(logits: np.ndarray) -> np.ndarray:
    """-JS(softmax || uniform) over axis 1, float64 NumPy reference. logits (B,C,H,W) -> (B,H,W)."""
    x = logits.astype(np.float64)
    x = x - x.max(1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    c = x.shape[1]
    m = 0.5 * (p + 1.0 / c)
    kl_pm = np.sum(np.where(p > 0, p * np.log(np.maximum(p, 1e-300) / m), 0.0), 1)
    kl_um = np.sum((1.0 / c) * np.log((1.0 / c) / m), 1)
    return -(0.5 * kl_pm + 0.5 * kl_um)


def np_normalize(images: np.ndarray, model) -> torch.Tensor:
    x = images.astype(np.float64) / 255.0
    x = (x - np.array(model.mean)) / np.array(model.std)
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_segmenter("fpn", "resnet18", 19, train_size=(32, 64)).eval()


@pytest.fixture
def images(rng):
    return rng.integers(0, 256, (2, H, W, 3), dtype=np.uint8)


class PixelNet(nn.Module):
    """Per-pixel (1x1 conv) stand-in with the Segmenter interface: output at a pixel depends only on that pixel."""

    def __init__(self, c: int = 5):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(3, c, 1)
        self.num_classes, self.train_size, self.stats = c, None, {}
        self.mean, self.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def normalize(self, images):
        t = torch.as_tensor(images).permute(0, 3, 1, 2).float()
        m = torch.tensor(self.mean).view(1, 3, 1, 1)
        s = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((t / 255.0 - m) / s).to(self.conv.weight.device)

    def forward(self, x, return_features=False):
        y = self.conv(x)
        return (y, x) if return_features else y


def test_resize_and_upsample_back_to_label_size(model, images):
    eng = Inference(model, scores=("jsd", "msp"), device="cpu", dtype="fp32", channels_last=False)
    assert eng.input_size == (32, 64)  # "model" = train_size
    out = eng.predict(images, return_logits=True)
    assert out["jsd"].shape == (2, H, W) and out["jsd"].dtype == torch.float32
    assert out["logits"].shape == (2, 19, H, W)
    # independent reference: NumPy normalisation, explicit resize, forward, bilinear upsample, NumPy JSD
    x = np_normalize(images, model)
    x = F.interpolate(x, size=(32, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        ref_logits = F.interpolate(model(x), size=(H, W), mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(out["logits"].numpy(), ref_logits, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out["jsd"].numpy(), np_jsd_score(ref_logits), atol=1e-5)
    e = np.exp(ref_logits - ref_logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["msp"].numpy(), 1 - (e / e.sum(1, keepdims=True)).max(1), atol=1e-5)


def test_full_size_and_channels_last_agree(model, images):
    a = Inference(model, scores=("maxlogit",), device="cpu", dtype="fp32", input_size=None, channels_last=True)
    b = Inference(model, scores=("maxlogit",), device="cpu", dtype="fp32", input_size=None, channels_last=False)
    x = np_normalize(images, model)
    with torch.no_grad():
        ref = -model.to(memory_format=torch.contiguous_format)(x).amax(1).numpy()
    pa, pb = a.predict(images)["maxlogit"].numpy(), b.predict(images)["maxlogit"].numpy()
    np.testing.assert_allclose(pa, ref, atol=1e-4)
    np.testing.assert_allclose(pb, ref, atol=1e-4)


def _constant_logit_model(bias: np.ndarray):
    m = create_segmenter("fpn", "resnet18", len(bias))
    head = m.net.segmentation_head[0]
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.from_numpy(bias))
    return m.eval()


def test_sliding_window_constant_logit_model_equals_whole_image(images, rng):
    bias = rng.normal(0, 2, 19).astype(np.float32)
    m = _constant_logit_model(bias)
    images = images[:1]
    whole = Inference(m, scores=("jsd", "energy"), device="cpu", dtype="fp32", input_size=None).predict(images)
    slide = Inference(m, scores=("jsd", "energy"), device="cpu", dtype="fp32", sliding_window=(32, 48),
                      overlap=1 / 3, window_weighting="uniform", window_batch=5).predict(images)
    ref = np.broadcast_to(np_jsd_score(bias[None, :, None, None].astype(np.float64)), (1, H, W))
    np.testing.assert_allclose(whole["jsd"].numpy(), ref, atol=1e-6)
    np.testing.assert_allclose(slide["jsd"].numpy(), whole["jsd"].numpy(), atol=1e-6)
    np.testing.assert_allclose(slide["energy"].numpy(), whole["energy"].numpy(), atol=1e-5)


@pytest.mark.parametrize("size", [(H, W), (20, 30)])
def test_sliding_window_pixelwise_model_equals_whole_image(rng, size):
    imgs = rng.integers(0, 256, (2, *size, 3), dtype=np.uint8)
    net = PixelNet()
    whole = Inference(net, scores=("entropy",), device="cpu", dtype="fp32", input_size=None, channels_last=False)
    slide = Inference(net, scores=("entropy",), device="cpu", dtype="fp32", sliding_window=(24, 40), overlap=1 / 3,
                      channels_last=False)
    a = whole.predict(imgs, return_logits=True)
    b = slide.predict(imgs, return_logits=True)
    assert b["entropy"].shape == (2, *size)
    np.testing.assert_allclose(b["logits"].numpy(), a["logits"].numpy(), atol=1e-5)
    np.testing.assert_allclose(b["entropy"].numpy(), a["entropy"].numpy(), atol=1e-5)


def test_sliding_window_single_window_equals_whole_image(model, images):
    whole = Inference(model, scores=("jsd",), device="cpu", dtype="fp32", input_size=None).predict(images)
    slide = Inference(model, scores=("jsd",), device="cpu", dtype="fp32", sliding_window=(H, W)).predict(images)
    np.testing.assert_allclose(slide["jsd"].numpy(), whole["jsd"].numpy(), atol=1e-5)


def test_window_positions_cover_with_overlap():
    for length, win, ov in [(2048, 1024, 1 / 3), (100, 30, 0.5), (64, 64, 0.3), (65, 64, 0.0), (10, 32, 0.2)]:
        pos = window_positions(length, win, ov)
        covered = np.zeros(max(length, win), bool)
        for p in pos:
            covered[p:p + win] = True
        assert covered[:length].all()
        assert pos[0] == 0 and pos[-1] == max(0, length - win)
        steps = np.diff(pos)
        assert (steps <= int(win * (1 - ov))).all()


def test_flip_averages_image_and_mirror(model, images):
    eng = Inference(model, scores=("jsd",), device="cpu", dtype="fp32", input_size=None, flip=True)
    out = eng.predict(images, return_logits=True)
    x = np_normalize(images, model)
    with torch.no_grad():
        ref = 0.5 * (model(x) + model(x.flip(-1)).flip(-1))
    np.testing.assert_allclose(out["logits"].numpy(), ref.numpy(), atol=1e-4)
    # flip averaging makes the engine equivariant to horizontal mirroring
    mirrored = eng.predict(np.ascontiguousarray(images[:, :, ::-1]))["jsd"].numpy()
    np.testing.assert_allclose(mirrored[:, :, ::-1], out["jsd"].numpy(), atol=1e-5)
    no_flip = Inference(model, scores=("jsd",), device="cpu", dtype="fp32", input_size=None).predict(images)["jsd"]
    assert not np.allclose(no_flip.numpy(), out["jsd"].numpy(), atol=1e-5)


@pytest.mark.filterwarnings("ignore:fit_mahalanobis")
def test_feature_score_mahalanobis(model, images):
    from denseood.scores import fit_mahalanobis

    x = np_normalize(images, model)
    fit_mahalanobis(model, [x], max_pixels_per_class=500)
    eng = Inference(model, scores=("mahalanobis", "jsd"), device="cpu", dtype="fp32", channels_last=False)
    out = eng.predict(images)
    assert out["mahalanobis"].shape == (2, H, W)
    # NumPy reference: distance at the feature resolution of the resized input, bilinear up to logits, then image
    xs = F.interpolate(x, size=(32, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        logits, feats = model(xs, return_features=True)
    f = feats.numpy().astype(np.float64).transpose(0, 2, 3, 1)
    mu = model.stats["maha_means"].numpy().astype(np.float64)
    P = model.stats["maha_precision"].numpy().astype(np.float64)
    valid = model.stats["maha_counts"].numpy() > 0
    d = f[..., None, :] - mu[valid]
    dist = np.sqrt(np.einsum("bhwcf,fg,bhwcg->bhwc", d, P, d).min(-1))
    t = torch.from_numpy(dist[:, None].astype(np.float32))
    t = F.interpolate(t, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    ref = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)[:, 0].numpy()
    np.testing.assert_allclose(out["mahalanobis"].numpy(), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    model.stats.clear()


def test_dtypes_and_devices(model, images):
    eng = Inference(model, scores=("jsd",), device="auto", dtype="auto", input_size=None)
    if not torch.cuda.is_available():
        assert eng.device.type == "cpu" and eng.dtype is torch.float32
    bf = Inference(model, scores=("jsd",), device="cpu", dtype="bf16", input_size=None)
    a = eng.predict(images)["jsd"].cpu().numpy()
    b = bf.predict(images)["jsd"].numpy()
    assert b.dtype == np.float32
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    with pytest.raises(ConfigError, match="unknown dtype"):
        Inference(model, dtype="int8")
    with pytest.raises(ConfigError, match="device"):
        Inference(model, device="tpu")


def test_unknown_score_lists_valid(model):
    with pytest.raises(ConfigError) as e:
        Inference(model, scores=("jsd", "nope"), device="cpu")
    for valid in ("msp", "maxlogit", "energy", "entropy", "jsd"):
        assert valid in str(e.value)


def test_fitted_score_without_stats_is_clear_error(model):
    with pytest.raises(ConfigError, match="fit"):
        Inference(model, scores=("sml",), device="cpu")


def test_bad_images_rejected(model):
    eng = Inference(model, device="cpu")
    with pytest.raises(ConfigError, match="uint8"):
        eng.predict(np.zeros((1, H, W, 3), np.float32))


def test_compile_failure_is_config_error(model, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(torch, "compile", boom)
    with pytest.raises(ConfigError, match="compile"):
        Inference(model, device="cpu", compile=True)


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, samples):
        self.samples = samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        return self.samples[i]


@pytest.mark.parametrize("workers", [0, 2])
def test_run_batches_mixed_sizes_and_stats(rng, workers):
    sizes = [(16, 24), (16, 24), (20, 30), (16, 24), (20, 30)]
    samples = [Sample(image=rng.integers(0, 256, (*s, 3), dtype=np.uint8), name=f"f{i}") for i, s in enumerate(sizes)]
    net = PixelNet()
    eng = Inference(net, scores=("jsd",), device="cpu", dtype="fp32", input_size=None, channels_last=False)
    seen = []
    for batch, maps in eng.run(ListDataset(samples), batch_size=2, workers=workers, progress=False):
        assert maps["jsd"].shape == (len(batch), *batch[0].image.shape[:2])
        ref = eng.predict(np.stack([s.image for s in batch]))["jsd"]
        np.testing.assert_allclose(maps["jsd"].numpy(), ref.numpy(), atol=1e-6)
        seen += [s.name for s in batch]
    assert seen == [f"f{i}" for i in range(5)]
    assert sum(1 for _ in eng.run(ListDataset(samples), batch_size=2, workers=0, limit=3, progress=False)) >= 2
    eng.reset_stats()
    list(eng.run(ListDataset(samples), batch_size=4, workers=0, progress=False))
    st = eng.stats
    assert st["images"] == 5 and st["seconds"] > 0 and st["images_per_s"] > 0 and st["peak_mem_mb"] > 0


def test_collate_groups():
    a = Sample(image=np.zeros((4, 6, 3), np.uint8), name="a")
    b = Sample(image=np.ones((4, 6, 3), np.uint8), name="b")
    c = Sample(image=np.ones((5, 6, 3), np.uint8), name="c")
    g = collate_samples([a, b])
    assert len(g) == 1 and g[0][1].shape == (2, 4, 6, 3)
    g = collate_samples([a, b, c])
    assert [len(s) for s, _ in g] == [1, 1, 1] and g[2][1].shape == (1, 5, 6, 3)


def test_shard_sampler_splits_exactly():
    for n, world in [(10, 3), (2, 4), (7, 2)]:
        parts = [list(ShardSampler(n, r, world)) for r in range(world)]
        flat = sorted(i for p in parts for i in p)
        assert flat == list(range(n))
        assert [len(ShardSampler(n, r, world)) for r in range(world)] == [len(p) for p in parts]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_matches_fp32(model, images):
    a = Inference(model, scores=("jsd",), device="cuda", dtype="fp32", input_size=None).predict(images)["jsd"]
    b = Inference(model, scores=("jsd",), device="cuda", dtype="auto", input_size=None).predict(images)["jsd"]
    assert b.is_cuda and b.dtype == torch.float32
    assert np.corrcoef(a.cpu().numpy().ravel(), b.cpu().numpy().ravel())[0, 1] > 0.95
    model.cpu()


# ------------------------------------------------------------------------------------------ memory bounds
def test_resize_mode_never_upsamples_all_class_logits_to_full_size(model, monkeypatch):
    """A 19-class model on a 2000x3000 image: no tensor of 19 x H x W values is produced by interpolation or
    handed to a score (the old code upsampled the (1,19,2000,3000) logits in one go)."""
    from denseood import scores as scores_mod

    eng = Inference(model, scores=("jsd", "msp"), device="cpu", dtype="fp32", input_size="model")
    seen: list[int] = []
    real_interp, real_score = F.interpolate, scores_mod.anomaly_score

    def interp(x, *a, **k):
        y = real_interp(x, *a, **k)
        seen.append(y.numel() if y.shape[1] == 19 else 0)
        return y

    def score(name, logits, **k):
        seen.append(logits.numel())
        return real_score(name, logits, **k)

    monkeypatch.setattr(F, "interpolate", interp)
    monkeypatch.setattr(scores_mod, "anomaly_score", score)
    img = np.random.default_rng(0).integers(0, 256, (1, 2000, 3000, 3), dtype=np.uint8)
    out = eng.predict(img)
    assert out["jsd"].shape == (1, 2000, 3000) and torch.isfinite(out["jsd"]).all()
    assert seen and max(seen) <= Inference.tile_elements < 19 * 2000 * 3000


@pytest.mark.parametrize("tile_elements", [2 * 19 * 130 * 7, 2 ** 62], ids=["7-row-bands", "one-band"])
@pytest.mark.parametrize("score", ["msp", "maxlogit", "energy", "entropy", "jsd"])
def test_banded_scores_equal_scores_of_fully_upsampled_logits(model, rng, score, tile_elements, monkeypatch):
    """Many band borders (7-row bands) and one band over all rows (the full-size logits of `bench segment`'s
    baseline) both give the scores of the one-shot upsample."""
    imgs = rng.integers(0, 256, (2, 75, 130, 3), dtype=np.uint8)
    eng = Inference(model, scores=(score,), device="cpu", dtype="fp32", input_size="model")
    ref = eng.predict(imgs, return_logits=True)  # the one-shot path: logits upsampled to 75x130, then scored
    from denseood.scores import anomaly_score
    direct = anomaly_score(score, F.interpolate(ref["logits"], size=(75, 130), mode="bilinear", align_corners=False))
    monkeypatch.setattr(Inference, "tile_elements", tile_elements)
    got = eng.predict(imgs)[score]
    torch.testing.assert_close(got, ref[score], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, direct, rtol=1e-5, atol=1e-5)


def test_max_pixels_refused_before_the_forward(rng):
    from denseood.infer import check_max_pixels

    calls = []
    net = PixelNet()
    net.register_forward_hook(lambda *a: calls.append(1))
    eng = Inference(net, scores=("msp",), device="cpu", dtype="fp32", input_size=None, max_pixels=40 * 40)
    eng.predict(rng.integers(0, 256, (1, 40, 40, 3), dtype=np.uint8))
    assert calls == [1]
    with pytest.raises(ConfigError, match=r"41x40.*max_pixels"):
        eng.predict(rng.integers(0, 256, (1, 41, 40, 3), dtype=np.uint8))
    assert calls == [1]
    with pytest.raises(ConfigError, match=r"frame\.png is 9000x12000 = 108 MP.*--max-pixels"):
        check_max_pixels(9000, 12000, 100e6, "frame.png")
    check_max_pixels(9000, 12000, None, "frame.png")  # no limit
