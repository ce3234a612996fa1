"""Trainer: loss normalisation of a real step, bit-exact resume, DDP == single process, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from denseood.errors import CheckpointError, ConfigError, DatasetError
from denseood.train.trainer import TrainConfig, Trainer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    from denseood.data import synthetic

    root = tmp_path_factory.mktemp("synth")
    synthetic.write(root, n_train=6, n_val=2, seed=3, size=(64, 128), progress=False)
    return root


def tiny_cfg(root, out, **kw) -> TrainConfig:
    base = dict(dataset="synthetic", root=str(root), out=str(out), arch="fpn", encoder="resnet18", negatives="flow",
                steps=3, flow_pretrain_steps=1, batch_size=2, crop=48, lr=1e-3, workers=0, val_every=0, ckpt_every=2,
                log_every=1, flow_levels=2, flow_steps=1, flow_hidden=8, neg_size=(8, 24), fit_stats=False, val_limit=2)
    base.update(kw)
    return TrainConfig(**base)


def test_loss_normalisation_matches_reference_loss(synth_root, tmp_path):
    """Single process: a real joint Trainer step optimises and logs the plain mean losses of the reference
    ``nflowjs_segmenter_loss`` (CE mean over labelled pixels + lam * JS mean over negative pixels): the logged terms
    equal the reference values on the step's own logits, and the gradient reaching the logits equals the reference
    loss's gradient (a wrong normaliser, e.g. a per-rank count or a missing lam, changes both)."""
    import torch.nn.functional as F

    from denseood.train.losses import nflowjs_segmenter_loss

    lam = 0.5
    t = Trainer(tiny_cfg(synth_root, tmp_path / "n", flow_pretrain_steps=0, lam=lam, grad_clip=0.0), progress=False)
    assert t.phase_of(0)[0] == "joint"
    seen: dict = {}

    def keep_logits(module, inputs, output):
        seen["logits"] = output.detach().clone()
        output.register_hook(lambda g: seen.__setitem__("grad", g.detach().clone()))

    paste = t.negatives.paste

    def keep_paste(images, labels, generator=None):
        out = paste(images, labels, generator=generator)
        seen.setdefault("labels", []).append(out[1].detach().clone())
        seen.setdefault("neg", []).append(out[2].detach().clone())
        return out

    t.negatives.paste = keep_paste
    hook = t.model.register_forward_hook(keep_logits)
    images, labels, seeds = next(iter(t.loader(0, 1)))
    terms = t.train_step(0, images, labels, seeds)
    hook.remove()

    lab, neg = torch.cat(seen["labels"]), torch.cat(seen["neg"])
    assert neg.any() and (lab != 255).any()
    leaf = seen["logits"].float().requires_grad_(True)
    logits = leaf if leaf.shape[-2:] == lab.shape[-2:] else F.interpolate(leaf, size=lab.shape[-2:], mode="bilinear",
                                                                          align_corners=False)
    total, ref = nflowjs_segmenter_loss(logits, lab, neg, lam=lam)
    assert terms["ce"] == pytest.approx(ref["ce"], rel=1e-5)
    assert terms["js"] == pytest.approx(ref["js"], rel=1e-5)
    assert terms["loss"] == pytest.approx(float(total.detach()), rel=1e-5)
    (grad,) = torch.autograd.grad(total, leaf)
    torch.testing.assert_close(seen["grad"].float(), grad, rtol=1e-4, atol=1e-9)


def test_reduce_terms_normalises_each_sum_by_its_own_count(synth_root, tmp_path):
    """_reduce_terms: CE sum / labelled pixels, JS sum / negative pixels, flow NLL / images; loss = ce + lam * js."""
    t = Trainer(tiny_cfg(synth_root, tmp_path / "rt", lam=0.25, negatives="none"), progress=False)
    terms = {"ce": torch.tensor(12.0), "js": torch.tensor(3.0), "flow_nll": torch.tensor(10.0)}
    out = t._reduce_terms(terms, n_lab=6.0, n_neg=4.0, n_img=5.0)
    assert out == pytest.approx({"ce": 2.0, "js": 0.75, "flow_bpd": 2.0, "loss": 2.0 + 0.25 * 0.75})
    # without a JS sum (no negatives) the loss is the CE alone; counts are never swapped
    out = t._reduce_terms({"ce": torch.tensor(9.0)}, n_lab=3.0, n_neg=1.0, n_img=1.0)
    assert out == pytest.approx({"ce": 3.0, "loss": 3.0})


def test_resume_reproduces_next_step_exactly(synth_root, tmp_path):
    """Run A: 3 joint steps straight. Run B: stop after the step-2 checkpoint, resume, run the rest: same losses."""
    cfg_a = tiny_cfg(synth_root, tmp_path / "a")
    ta = Trainer(cfg_a, progress=False)
    ta.fit()
    hist_a = [h for h in ta.history if "loss" in h or "flow_bpd" in h]

    cfg_b = tiny_cfg(synth_root, tmp_path / "b")
    tb = Trainer(cfg_b, progress=False)
    tb.fit(max_steps=2)          # flow pre-train step + 1 joint step, checkpoint at step 2
    assert (tmp_path / "b" / "last.pt").is_file()
    del tb
    tc = Trainer(tiny_cfg(synth_root, tmp_path / "b"), resume=True, progress=False)
    assert tc.step == 2
    tc.fit()
    hist_b = [h for h in tc.history if "loss" in h or "flow_bpd" in h]
    assert len(hist_a) == len(hist_b) == cfg_a.total_steps
    for ha, hb in zip(hist_a, hist_b):
        assert ha["step"] == hb["step"]
        for k in ("loss", "ce", "js", "flow_bpd"):
            if k in ha:
                assert ha[k] == hb[k], (k, ha, hb)       # bit-exact, not approx
    # the flow really was trained jointly (its NLL was logged in the joint phase)
    assert any("flow_bpd" in h and h["phase"] == "joint" for h in hist_a)


def test_checkpoint_is_loadable_by_eval_loader(synth_root, tmp_path):
    from denseood.models.sources.registry import load_checkpoint

    t = Trainer(tiny_cfg(synth_root, tmp_path / "r", steps=2, fit_stats=True, stats_batches=1), progress=False)
    t.fit()
    m = load_checkpoint(tmp_path / "r" / "model.pt", num_classes=19, class_set="cityscapes")
    assert m.num_classes == 19 and "sml_mean" in m.stats and "maha_precision" in m.stats
    # the default inference size is the training frames' size (64x128), not the square crop (48x48)
    assert m.train_size == (64, 128)
    assert (tmp_path / "r" / "flow_samples.png").is_file()
    assert (tmp_path / "r" / "config.yaml").is_file()


def test_crop_larger_than_images(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="crop 200 is larger than the images"):
        Trainer(tiny_cfg(synth_root, tmp_path / "x", crop=200), progress=False)


def test_init_with_other_class_set(synth_root, tmp_path):
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter

    ck = save_checkpoint(create_segmenter("fpn", "resnet18", 12), tmp_path / "sh.pt")
    with pytest.raises(CheckpointError, match="12"):
        Trainer(tiny_cfg(synth_root, tmp_path / "x", init=str(ck)), progress=False)


def test_labels_outside_train_ids(tmp_path):
    """A Cityscapes-layout set whose labelTrainIds hold 40 -> error naming the frame/file and the value."""
    from denseood.io import write_image, write_png

    for i in range(2):
        img = np.full((64, 96, 3), 100, np.uint8)
        lab = np.zeros((64, 96), np.uint8)
        lab[:4, :4] = 40
        d = tmp_path / "cs"
        write_image(d / "leftImg8bit/train/x" / f"x_000000_00000{i}_leftImg8bit.png", img)
        write_png(d / "gtFine/train/x" / f"x_000000_00000{i}_gtFine_labelTrainIds.png", lab)
        lid = np.full((64, 96), 7, np.uint8)
        write_png(d / "gtFine/train/x" / f"x_000000_00000{i}_gtFine_labelIds.png", lid)
    cfg = TrainConfig(dataset="cityscapes", root=str(tmp_path / "cs"), out=str(tmp_path / "o"), negatives="none",
                      steps=1, batch_size=1, crop=32, workers=0, val_every=0, fit_stats=False)
    with pytest.raises(DatasetError, match="40"):
        Trainer(cfg, progress=False).fit()


def test_bad_negatives_spec(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="paste:DIR"):
        Trainer(tiny_cfg(synth_root, tmp_path / "x", negatives="gan"), progress=False)


def test_flow_js_weight_config(synth_root, tmp_path):
    """flow_js_weight reaches FlowNegatives as the gradient factor flow_js_weight / lam; nonsense values are refused."""
    t = Trainer(tiny_cfg(synth_root, tmp_path / "w", lam=0.5, flow_js_weight=0.02), progress=False)
    assert t.negatives.grad_scale == pytest.approx(0.04)
    assert Trainer(tiny_cfg(synth_root, tmp_path / "w2", lam=0.5), progress=False).negatives.grad_scale == 1.0
    with pytest.raises(ConfigError, match="needs lam > 0"):
        tiny_cfg(synth_root, tmp_path / "x", lam=0.0, flow_js_weight=0.1).validate()
    with pytest.raises(ConfigError, match="flow_js_weight must be >= 0"):
        tiny_cfg(synth_root, tmp_path / "x", flow_js_weight=-1.0).validate()
    with pytest.raises(ConfigError, match="lam must be >= 0"):
        tiny_cfg(synth_root, tmp_path / "x", lam=-0.1).validate()


@pytest.mark.slow
def test_ddp_two_processes_match_single_process(synth_root, tmp_path):
    """torchrun --nproc_per_node 2 (gloo, CPU) logs the same losses as one process with the same global batch.

    Unet: a model without dropout (dropout masks are drawn per rank batch and cannot match one process);
    frozen BatchNorm (SyncBatchNorm is CUDA-only).
    """
    common = ["--dataset", "synthetic", "--root", str(synth_root), "--negatives", "flow", "--steps", "2", "--arch", "unet",
              "--batch-size", "2", "--crop", "48", "--device", "cpu",
              "--set", "flow_pretrain_steps=1", "--set", "workers=0", "--set", "val_every=0", "--set", "log_every=1",
              "--set", "freeze_bn=true", "--set", "fit_stats=false", "--set", "flow_levels=2", "--set", "flow_steps=1",
              "--set", "flow_hidden=8", "--set", "neg_size=[8, 24]", "--set", "ckpt_every=100"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "denseood", "train", *common, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, env=env, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
                          "-m", "denseood", "train", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    h1 = json.loads((tmp_path / "one" / "summary.json").read_text())["history"]
    h2 = json.loads((tmp_path / "two" / "summary.json").read_text())["history"]
    assert len(h1) == len(h2) == 3
    for a, b in zip(h1, h2):
        for k in ("loss", "ce", "js", "flow_bpd"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-5, abs=1e-7), (k, a, b)


def test_flow_heldout_log_uses_inlier_patches_only(synth_root, tmp_path):
    """The flow's held-out bits/dim is logged in its pre-training and joint phases, on validation patches free of
    anomaly and void pixels; samples are saved after pre-training and at the end."""
    t = Trainer(tiny_cfg(synth_root, tmp_path / "h", steps=1, flow_pretrain_steps=2, crop=64), progress=False)
    summary = t.fit()
    log = summary["flow_heldout_bpd"]
    assert [s for s, _ in log] == [1, 2, 3] and all(np.isfinite(v) for _, v in log)
    assert [h["flow_heldout_bpd"] for h in t.history if "flow_heldout_bpd" in h] == [v for _, v in log]
    assert (tmp_path / "h" / "flow_samples_pretrain.png").is_file() and (tmp_path / "h" / "flow_samples.png").is_file()
    patches = t._heldout_patches()
    s = patches.shape[-1]
    assert patches.shape[1] == 3 and s == 32
    # every patch is found in a validation frame at a place with ood_mask == 0 and a valid semantic label
    frames = [t.val_set[i] for i in range(len(t.val_set))]
    for p in (patches * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy():
        found = False
        for smp in frames:
            h, w = smp.image.shape[:2]
            for y in range(h - s + 1):
                for x in range(w - s + 1):
                    if np.array_equal(smp.image[y:y + s, x:x + s], p):
                        assert not smp.ood_mask[y:y + s, x:x + s].any()
                        assert not (smp.semantic[y:y + s, x:x + s] == 255).any()
                        found = True
                        break
                if found:
                    break
            if found:
                break
        assert found
