"""AbeT (issue 21 item 5): the learned temperature head of ``denseood train --head abet`` stays positive, the
``abet`` score equals a direct computation from the head's parts, the head survives save -> load (and checkpoints
without it load as before), ``abet`` is refused for a model without the head, and a short training run with the
head works on the tiny synthetic world."""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import denseood
from denseood.errors import CheckpointError, ConfigError
from denseood.models.checkpoint import read_checkpoint, save_checkpoint
from denseood.models.segmenter import create_segmenter
from denseood.models.sources import load_checkpoint
from denseood.train.config import TrainConfig


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from denseood.data import synthetic

    root = tmp_path_factory.mktemp("synth_abet")
    synthetic.write(root, n_train=4, n_val=2, seed=3, size=(64, 128), progress=False)
    return root


def _model(seed: int = 0, head: str | None = "abet"):
    torch.manual_seed(seed)
    m = create_segmenter("fpn", "resnet18", 4, head=head).eval()
    if head:
        with torch.no_grad():   # a spread-out temperature, so the comparison below is not T ~ const
            m.temperature_head.conv.weight.mul_(20.0)
    return m


def _direct_abet(model, x: torch.Tensor) -> np.ndarray:
    """1 - logsumexp(f / T) / C from the smp parts by hand (float64): f the segmentation head's logits at the
    padded size, T = sigmoid(BN(conv(decoder features))) + 1e-12 upsampled bilinearly."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (0, -w % 32, 0, -h % 32))
    dec = model.net.decoder(model.net.encoder(xp))
    f = F.interpolate(model.net.segmentation_head(dec), size=xp.shape[-2:], mode="bilinear", align_corners=False)
    th = model.temperature_head
    t = torch.sigmoid(F.batch_norm(F.conv2d(dec, th.conv.weight), th.bn.running_mean, th.bn.running_var,
                                   th.bn.weight, th.bn.bias, False, 0.0, th.bn.eps)) + 1e-12
    t = F.interpolate(t, size=xp.shape[-2:], mode="bilinear", align_corners=False)
    z = (f.double() / t.double())[0, :, :h, :w].numpy()
    m = z.max(0)
    return 1.0 - (m + np.log(np.exp(z - m).sum(0))) / z.shape[0]


def test_temperature_stays_positive():
    m = _model()
    x = torch.randn(2, 3, 40, 56) * 50.0
    with torch.no_grad():
        m.temperature_head.conv.weight[:, : m.feature_channels // 2].mul_(-1e3)   # both tails of the sigmoid
        m.temperature_head.bn.bias.fill_(-150.0)   # sigmoid(-150) underflows to 0 in float32 and bf16
        t = m.temperature(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            t16 = m.temperature(x)
            logits16 = m(x)
    assert t.dtype == torch.float32 and t.shape == (2, 1, 40, 56)
    assert float(t.min()) > 0.0 and float(t16.min()) > 0.0 and float(t.max()) <= 1.0 + 1e-6
    assert float((t < 1e-6).float().mean()) > 0.2, "the test must reach the eps floor"
    assert torch.isfinite(logits16.float()).all()


def test_abet_equals_direct_computation():
    m = _model(1)
    img = np.random.default_rng(0).integers(0, 256, (40, 72, 3), dtype=np.uint8)
    x = m.normalize(img).float()
    x = x[None] if x.ndim == 3 else x
    with torch.no_grad():   # BN statistics of this image: T spreads over (0, 1)
        z = m.temperature_head.conv(m.net.decoder(m.net.encoder(F.pad(x, (0, 24, 0, 24)))))
        m.temperature_head.bn.running_mean.fill_(float(z.mean()))
        m.temperature_head.bn.running_var.fill_(float(z.var()) * 0.25)
        ref = _direct_abet(m, x.float())
        t = m.temperature(x.float())
    assert float(t.max() - t.min()) > 0.1, "T must vary over the image"
    eng = denseood.Inference(m, scores=["abet", "energy"], device="cpu", dtype="fp32", input_size=None)
    out = eng.predict(img)
    np.testing.assert_allclose(out["abet"][0].numpy(), ref, rtol=1e-5, atol=1e-4)
    # the logits every score sees are f / T: energy is -logsumexp(f / T), i.e. C * (abet - 1)
    np.testing.assert_allclose(out["energy"][0].numpy(), 4 * (ref - 1.0), rtol=1e-5, atol=1e-3)


def test_save_load_round_trip(tmp_path):
    m = _model(2)
    with torch.no_grad():
        m.temperature_head.bn.running_mean.fill_(0.3)   # a buffer that must travel too
    path = save_checkpoint(m, tmp_path / "abet.pt")
    ck = read_checkpoint(path)
    assert ck["format_version"] == 1 and ck["meta"]["head"] == "abet"
    assert any(k.startswith("temperature_head.") for k in ck["state_dict"])
    back = load_checkpoint(path)
    assert back.head == "abet"
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(back(x), m(x))
        torch.testing.assert_close(back.temperature(x), m.temperature(x))
    # a checkpoint without the head is written and read as before: no meta key, no head
    plain = save_checkpoint(_model(3, head=None), tmp_path / "plain.pt")
    assert "head" not in read_checkpoint(plain)["meta"]
    assert load_checkpoint(plain).head is None
    ck["meta"]["head"] = "nope"
    torch.save(ck, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="head 'nope' is unknown"):
        load_checkpoint(tmp_path / "bad.pt")


def test_abet_refused_without_the_head():
    m = _model(4, head=None)
    with pytest.raises(ConfigError) as e:
        denseood.Inference(m, scores=["abet"], device="cpu")
    msg = str(e.value)
    assert "\n" not in msg and "train --head abet" in msg and "scores which apply: msp" in msg
    with pytest.raises(ConfigError, match="train --head abet"):
        m.temperature(torch.zeros(1, 3, 32, 32))


def test_head_config_and_cli():
    from denseood.commands import train as train_cmd

    with pytest.raises(ConfigError, match="inlier data only.*--negatives none"):
        TrainConfig(root="r", head="abet", negatives="flow").validate()
    with pytest.raises(ConfigError, match="expected abet"):
        TrainConfig(root="r", head="godin", negatives="none").validate()
    parser = argparse.ArgumentParser()
    train_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--root", "r", "--head", "abet", "--negatives", "none"])
    assert train_cmd.config_from_args(args).head == "abet"
    assert train_cmd.config_from_args(parser.parse_args(["train", "--root", "r"])).head is None


def test_short_training_run_with_the_head(synth_root, tmp_path):
    from denseood.train.trainer import Trainer

    cfg = TrainConfig(dataset="synthetic", root=str(synth_root), out=str(tmp_path / "run"), arch="fpn",
                      encoder="resnet18", negatives="none", head="abet", steps=3, batch_size=2, crop=48, workers=0,
                      val_every=0, ckpt_every=2, log_every=1, fit_stats=False, val_limit=2)
    t = Trainer(cfg, progress=False)
    assert t.model.head == "abet"
    assert any(p is t.model.temperature_head.conv.weight for g in t.opt.param_groups for p in g["params"])
    w0 = t.model.temperature_head.conv.weight.detach().clone()
    t.fit()
    assert not torch.equal(w0, t.model.temperature_head.conv.weight.detach()), "the head must be trained"
    m = load_checkpoint(tmp_path / "run" / "model.pt")
    assert m.head == "abet"
    x = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        assert float(m.eval().temperature(x).min()) > 0.0
    with pytest.raises(ConfigError, match="needs an smp segmenter"):
        from denseood.train.model_setup import add_head

        add_head(torch.nn.Linear(2, 2), "abet")
