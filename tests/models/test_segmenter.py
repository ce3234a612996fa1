"""Segmenter wrapper (smp), normalisation, encoder weight files and checkpoint I/O."""
import hashlib

import numpy as np
import pytest
import torch
import torchvision

from denseood.data.classes import CITYSCAPES_CLASSES, STREETHAZARDS_CLASSES
from denseood.errors import CheckpointError, ConfigError
from denseood.models.checkpoint import read_checkpoint, save_checkpoint
from denseood.models.segmenter import ARCHS, Segmenter, create_segmenter
from denseood.models.sources.registry import load_checkpoint


class Obj:
    """An arbitrary pickled object (weights_only loading refuses it)."""


@pytest.fixture(scope="module")
def fpn():
    torch.manual_seed(0)
    return create_segmenter("fpn", "resnet18", 19, train_size=(64, 96)).eval()


@pytest.mark.parametrize("arch", ["fpn", "deeplabv3plus", "unet"])
def test_forward_shapes_not_divisible(arch):
    torch.manual_seed(0)
    m = create_segmenter(arch, "resnet18", num_classes=5).eval()
    assert isinstance(m, Segmenter) and m.arch == arch and m.encoder_name == "resnet18"
    x = torch.randn(2, 3, 70, 100)  # neither divisible by 32
    with torch.no_grad():
        logits = m(x)
        logits2, feats = m(x, return_features=True)
    assert logits.shape == (2, 5, 70, 100)
    assert torch.equal(logits, logits2)
    assert feats.ndim == 4 and feats.shape[:2] == (2, m.feature_channels)
    # features cover the input: their size times the decoder scale reaches the input size
    scale = {"fpn": 4, "deeplabv3plus": 4, "unet": 1}[arch]
    assert feats.shape[-2:] == (-(-70 // scale), -(-100 // scale))


@pytest.mark.parametrize("arch", ["fpn", "unet"])
def test_forward_equals_smp_on_divisible_input(arch):
    torch.manual_seed(0)
    m = create_segmenter(arch, "resnet18", num_classes=3).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ours, feats = m(x, return_features=True)
        ref = m.net(x)  # smp's own forward
        ref_feats = m.net.decoder(m.net.encoder(x))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(feats, ref_feats)


@pytest.mark.parametrize("arch", ["fpn", "unet"])
@pytest.mark.parametrize("hw, padded", [((50, 70), (64, 96)), ((64, 70), (64, 96)), ((33, 64), (64, 64))])
def test_pads_bottom_right_to_stride_multiple_and_crops_back(arch, hw, padded):
    """The Segmenter's padding guarantee: an input whose size is not a multiple of ``pad_multiple`` (32 for
    resnet18) is zero-padded at the bottom/right to the NEXT multiple only, run through the smp model, and logits
    and features are cropped back to the part covering the input. (Padding is not local: a larger pad changes
    the outputs, so the amount and the side of the padding matter and are checked here.)"""
    torch.manual_seed(0)
    m = create_segmenter(arch, "resnet18", num_classes=4).eval()
    assert m.pad_multiple == 32
    (h, w), (hp, wp) = hw, padded
    x = torch.randn(2, 3, h, w)
    xp = torch.zeros(2, 3, hp, wp)
    xp[..., :h, :w] = x
    scale = {"fpn": 4, "unet": 1}[arch]
    fh, fw = -(-h // scale), -(-w // scale)
    with torch.no_grad():
        logits, feats = m(x, return_features=True)
        ref = m.net(xp)  # smp's own forward on the explicitly padded input
        ref_feats = m.net.decoder(m.net.encoder(xp))
    assert logits.shape == (2, 4, h, w)
    assert feats.shape == (2, m.feature_channels, fh, fw)
    torch.testing.assert_close(logits, ref[..., :h, :w])
    torch.testing.assert_close(feats, ref_feats[..., :fh, :fw])


def test_all_archs_build():
    assert {"fpn", "deeplabv3plus", "unet"} <= set(ARCHS)
    for arch in ARCHS:
        m = create_segmenter(arch.upper(), "resnet18", 3).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 40, 56)).shape == (1, 3, 40, 56)


def test_class_defaults_and_config_errors():
    m = create_segmenter("fpn", "resnet18", 19)
    assert m.class_names == CITYSCAPES_CLASSES and m.class_set == "cityscapes"
    m = create_segmenter("fpn", "resnet18", 12)
    assert m.class_names == STREETHAZARDS_CLASSES and m.class_set == "streethazards"
    m = create_segmenter("fpn", "resnet18", 4)
    assert m.class_names == ("class0", "class1", "class2", "class3") and m.class_set is None
    m = create_segmenter("fpn", "resnet18", 2, class_names=["road", "other"])
    assert m.class_names == ("road", "other")
    with pytest.raises(ConfigError, match="num_classes=12"):
        create_segmenter("fpn", "resnet18", 19, class_set="streethazards")
    with pytest.raises(ConfigError, match="deeplabv3plus"):
        create_segmenter("segnet", "resnet18", 19)
    with pytest.raises(ConfigError, match="resnet18"):
        create_segmenter("fpn", "resnet81", 19)
    with pytest.raises(ConfigError, match="local"):
        create_segmenter("fpn", "resnet18", 19, encoder_weights="imagenet")
    with pytest.raises(ConfigError, match="not found"):
        create_segmenter("fpn", "resnet18", 19, encoder_weights="/nonexistent/enc.pth")


def test_normalize(fpn, rng):
    imgs = rng.integers(0, 256, size=(2, 9, 11, 3), dtype=np.uint8)
    mean, std = np.array(fpn.mean), np.array(fpn.std)
    ref = ((imgs / 255.0 - mean) / std).transpose(0, 3, 1, 2)
    out = fpn.normalize(imgs)
    assert out.shape == (2, 3, 9, 11) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fpn.normalize(torch.from_numpy(imgs)).numpy(), ref, rtol=1e-5, atol=1e-5)
    chw = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    np.testing.assert_allclose(fpn.normalize(chw.float()).numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fpn.normalize(imgs[0]).numpy(), ref[:1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError):
        fpn.normalize(np.zeros((2, 9, 11), np.uint8))


def test_checkpoint_round_trip(fpn, tmp_path):
    fpn.stats = {"sml_mean": torch.arange(19.0), "sml_std": torch.ones(19) * 2}
    prompter = {"meta": {"kind": "mlp", "hidden": [16, 8]}, "state_dict": {"w": torch.randn(3, 4)}}
    path = save_checkpoint(fpn, tmp_path / "ck" / "model.pt", config={"lr": 0.01, "steps": (1, 2)},
                           metrics={"ap": np.float32(0.5), "fpr95": np.float64(0.25), "v": torch.__version__}, extra={"prompter": prompter})
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "denseood-segmenter" and raw["format_version"] == 1
    meta = raw["meta"]
    assert meta["arch"] == "fpn" and meta["encoder"] == "resnet18" and meta["num_classes"] == 19
    assert meta["class_names"] == list(CITYSCAPES_CLASSES) and meta["train_size"] == [64, 96]
    for k in ("mean", "std", "class_set", "denseood_version", "torch_version", "created"):
        assert k in meta
    assert torch.equal(raw["extra"]["prompter"]["state_dict"]["w"], prompter["state_dict"]["w"])
    assert read_checkpoint(path)["config"] == {"lr": 0.01, "steps": [1, 2]}

    loaded = load_checkpoint(path, num_classes=19, class_set="cityscapes")
    assert not loaded.training
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    assert loaded.checkpoint_meta["metrics"]["ap"] == pytest.approx(0.5)
    assert type(loaded.checkpoint_meta["metrics"]["fpr95"]) is float
    assert loaded.checkpoint_meta["config"]["lr"] == 0.01
    assert loaded.train_size == (64, 96) and loaded.class_names == fpn.class_names
    for k, v in fpn.stats.items():
        assert torch.equal(loaded.stats[k], v)
    x = torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        a, fa = fpn(x, return_features=True)
        b, fb = loaded(x, return_features=True)
    assert torch.equal(a, b) and torch.equal(fa, fb)


def test_checkpoint_errors(fpn, tmp_path):
    good = save_checkpoint(fpn, tmp_path / "good.pt")

    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="not found") as e:
        load_checkpoint(missing)
    assert str(missing) in str(e.value)

    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, foreign)
    with pytest.raises(CheckpointError, match=r"not a denseood checkpoint \(keys: .*epoch") as e:
        load_checkpoint(foreign)
    assert str(foreign) in str(e.value)

    trunc = tmp_path / "trunc.pt"
    data = good.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(truncated or corrupt\?\)") as e:
        load_checkpoint(trunc)
    assert str(trunc) in str(e.value)

    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="truncated or corrupt") as e:
        read_checkpoint(text)
    assert str(text) in str(e.value)

    pickled = tmp_path / "pickled.pt"
    torch.save({"format": "denseood-segmenter", "x": Obj()}, pickled)
    with pytest.raises(CheckpointError, match="not a denseood checkpoint") as e:
        read_checkpoint(pickled)
    assert str(pickled) in str(e.value)

    newer = tmp_path / "newer.pt"
    raw = torch.load(good, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, newer)
    with pytest.raises(CheckpointError, match="newer") as e:
        read_checkpoint(newer)
    assert str(newer) in str(e.value)

    with pytest.raises(CheckpointError, match=r"19 classes \(cityscapes\).*12 classes \(streethazards\)") as e:
        load_checkpoint(good, num_classes=12, class_set="streethazards")
    assert str(good) in str(e.value)
    with pytest.raises(CheckpointError, match="12 classes"):
        load_checkpoint(good, class_set="streethazards")
    with pytest.raises(CheckpointError, match="7 classes"):
        load_checkpoint(good, num_classes=7)

    bad_sd = tmp_path / "badsd.pt"
    raw = torch.load(good, weights_only=True)
    k = next(iter(raw["state_dict"]))
    raw["state_dict"][k] = torch.zeros(1)
    torch.save(raw, bad_sd)
    with pytest.raises(CheckpointError, match="shape mismatches") as e:
        load_checkpoint(bad_sd)
    assert str(bad_sd) in str(e.value) and k in str(e.value)

    with pytest.raises(ConfigError, match="config.obj"):
        save_checkpoint(fpn, tmp_path / "x.pt", config={"obj": object()})


def test_encoder_weights_from_local_file(tmp_path):
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    tv_file = tmp_path / "resnet18_tv.pth"
    torch.save(tv.state_dict(), tv_file)  # torchvision style, with fc.* classifier keys
    m = create_segmenter("fpn", "resnet18", 3, encoder_weights=tv_file)
    enc = m.encoder.state_dict()
    for k, v in tv.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(enc[k], v), k

    # an smp encoder state dict (own keys) wrapped in {"state_dict": ...} and a full-model file both load
    own = tmp_path / "enc.pt"
    torch.save({"state_dict": m.encoder.state_dict()}, own)
    m2 = create_segmenter("unet", "resnet18", 3, encoder_weights=str(own))
    full = tmp_path / "full.pt"
    torch.save(m.net.state_dict(), full)
    m3 = create_segmenter("fpn", "resnet18", 3, encoder_weights=full)
    for mm in (m2, m3):
        for k, v in enc.items():
            assert torch.equal(mm.encoder.state_dict()[k], v), k

    wrong = tmp_path / "wrong.pth"
    sd = tv.state_dict()
    sd["layer9.conv.weight"] = torch.zeros(1)
    del sd["layer1.0.conv1.weight"]
    torch.save(sd, wrong)
    with pytest.raises(ConfigError, match="missing keys") as e:
        create_segmenter("fpn", "resnet18", 3, encoder_weights=wrong)
    msg = str(e.value)
    assert str(wrong) in msg and "layer1.0.conv1.weight" in msg and "layer9.conv.weight" in msg

    other = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), other)
    with pytest.raises(ConfigError) as e:
        create_segmenter("fpn", "resnet18", 3, encoder_weights=other)
    assert str(other) in str(e.value)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_forward_and_load(fpn, tmp_path):
    path = save_checkpoint(fpn, tmp_path / "m.pt")
    m = load_checkpoint(path, map_location="cuda")
    assert m.device.type == "cuda"
    assert all(v.device.type == "cuda" for v in m.stats_on().values())
    x = m.normalize(np.zeros((1, 50, 70, 3), np.uint8))
    assert x.device.type == "cuda"
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits, feats = m(x, return_features=True)
    assert logits.shape == (1, 19, 50, 70) and feats.shape[1] == m.feature_channels
