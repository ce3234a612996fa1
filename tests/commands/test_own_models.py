"""Every command on every model source: `denseood eval|segment|train --init|train-prompter` with hf: (SegFormer,
Mask2Former), torchvision: and python: specs on the small synthetic world, offline; AP checked against the models
called directly and the scores computed in NumPy; fine-tuned external models reload from their checkpoint."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score

from denseood.cli import main as cli_main
from denseood.errors import ConfigError
from tests.model_builders import MEAN, STD, rba_pipeline_masks, tiny_lraspp, tiny_mask2former, tiny_segformer, write_factory

transformers = pytest.importorskip("transformers")

REPO = Path(__file__).resolve().parents[2]
H, W = 48, 96
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic root (4 train, 3 val frames of 48x96) and one model of each source, 19 Cityscapes classes."""
    from denseood.data.synthetic import write

    base = tmp_path_factory.mktemp("own_models")
    write(base / "synthetic", n_train=4, n_val=3, seed=0, size=(H, W))
    # classifier weights scaled up: well-spread scores, so the AP comparison is not decided by float32 ties
    nets = {"segformer": tiny_segformer(base / "segformer", num_labels=19, logit_scale=500.0),
            "m2f": tiny_mask2former(base / "m2f", num_labels=19, logit_scale=30.0),
            "lraspp": tiny_lraspp(base / "lraspp.pth", logit_scale=30.0)}
    write_factory(base / "factory.py")
    specs = {"segformer": f"hf:{base / 'segformer'}", "m2f": f"hf:{base / 'm2f'}",
             "lraspp": f"torchvision:lraspp_mobilenet_v3_large:{base / 'lraspp.pth'}",
             "python": f"python:{base / 'factory.py'}:make"}
    return {"root": base / "synthetic", "base": base, "nets": nets, "specs": specs}


def _val_frames(root):
    from denseood.data import open_dataset

    ds = open_dataset("synthetic", root, "val")
    return [ds[i] for i in range(len(ds))]


def _reference_scores(world, key):
    """{score: (N,H,W) float32} from the network called directly (transformers / torchvision / factory API) on
    NumPy-normalised frames, upsampled (bilinear), scores from their formulas in NumPy; and the OOD masks.

    Normalisation and formulas run in float32 and the network in channels_last, as denseood's Inference does: in
    float64, or with other convolution kernels, the maps differ by ~1e-7, which reorders close pixels and moves AP
    by ~1e-6."""
    if key == "python":
        import importlib.util

        spec = importlib.util.spec_from_file_location("own_factory", world["base"] / "factory.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        net = mod.make(num_classes=19).eval()
    else:
        net = world["nets"][key]
    mean, std = (MEAN, STD) if key in ("segformer", "m2f") else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    net = net.to(memory_format=torch.channels_last)
    out, masks = {"msp": [], "rba": []}, []
    for s in _val_frames(world["root"]):
        x = (s.image.astype(np.float32) / np.float32(255.0) - np.array(mean, np.float32)) / np.array(std, np.float32)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)[None])).contiguous(
            memory_format=torch.channels_last)
        with torch.no_grad():
            if key == "m2f":
                cls_t, up = rba_pipeline_masks(net, x)     # the RbA pipeline's padding to a multiple of 32
                cls = cls_t[0].numpy()                                       # (Q, C+1)
                m = up[0].numpy()                                            # (Q, H, W)
                p = np.exp(cls - cls.max(-1, keepdims=True))  # float32 throughout
                p = (p / p.sum(-1, keepdims=True))[:, :-1]
                lg = np.einsum("qc,qhw->chw", p, 1.0 / (1.0 + np.exp(-m)))            # s_k in [0, Q]
                lg = lg.astype(np.float32)
                out["rba"].append(-np.tanh(lg).sum(0))
            else:
                raw = net(pixel_values=x).logits if key == "segformer" else net(x)["out"] if key == "lraspp" else net(x)
                lg = F.interpolate(raw, size=(H, W), mode="bilinear", align_corners=False)[0].numpy()
        lg = lg.astype(np.float32)
        e = np.exp(lg - lg.max(0, keepdims=True))
        out["msp"].append(1.0 - (e / e.sum(0, keepdims=True)).max(0))
        masks.append(s.ood_mask)
    return {k: np.stack(v) for k, v in out.items() if v}, np.stack(masks)


def _ap(score, masks):
    keep = masks != 255
    return average_precision_score((masks[keep] == 1).astype(np.int64), score[keep])


def _eval(world, spec, out, scores="msp", *extra):
    argv = ["eval", "--dataset", "synthetic", "--root", str(world["root"]), "--checkpoint", spec, "--score", scores,
            "--out", str(out), "--device", "cpu", "--workers", "0", "--protocol", "exact", "--no-components", *extra]
    assert cli_main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.mark.parametrize("key", ["segformer", "m2f", "lraspp", "python"])
def test_eval_any_spec_matches_the_model_called_directly(world, key, tmp_path, no_network):
    scores = "msp,rba" if key == "m2f" else "msp"
    res = _eval(world, world["specs"][key], tmp_path / "out", scores)
    ref, masks = _reference_scores(world, key)
    assert (masks == 1).any() and (masks == 0).any()
    for s in scores.split(","):
        assert res["scores"][s]["ap"] == pytest.approx(_ap(ref[s], masks), abs=1e-6), s
    kind = world["specs"][key].split(":")[0]
    assert res["model"]["spec"] == world["specs"][key] and res["model"]["model_source"] == kind
    assert res["model"]["output_kind"] == ("mask_scores" if key == "m2f" else "logits")
    pad = res["model"]["input_padding"]   # results.json says the mask transformer's input was padded (RbA)
    assert (pad["multiple"] == 32) if key == "m2f" else pad is None


def test_segment_with_an_hf_spec(world, tmp_path, no_network):
    out = tmp_path / "seg"
    argv = ["segment", "--images", str(world["root"] / "dataset_AnomalyTrack" / "images"), "--checkpoint", world["specs"]["segformer"],
            "--out", str(out), "--device", "cpu", "--score", "msp", "--prompter", "auto", "--input-size", "full"]
    assert cli_main(argv) == 0
    rows = [json.loads(line) for line in (out / "objects.json").read_text().splitlines() if line.strip()]
    assert len(list((out / "overlays").glob("*.png"))) == 3 and len(rows) == 3


def _train(world, init, out, *extra):
    argv = ["train", "--dataset", "synthetic", "--root", str(world["root"]), "--init", init, "--negatives", "flow",
            "--steps", "4", "--batch-size", "2", "--crop", "48", "--device", "cpu", "--out", str(out),
            "--set", "flow_pretrain_steps=1", "--set", "workers=0", "--set", "val_every=0", "--set", "flow_levels=2",
            "--set", "flow_steps=1", "--set", "flow_hidden=8", "--set", "neg_size=[8, 24]", "--set", "ckpt_every=100",
            "--set", "stats_batches=1", "--set", "log_every=1", *extra]
    assert cli_main(argv) == 0


@pytest.mark.parametrize("key", ["segformer", "m2f"])
def test_train_init_hf_reloads_and_evaluates(world, key, tmp_path, no_network, capsys):
    from denseood.models.sources import load_model
    from denseood.models.sources.hf import HFSegmenter

    run = tmp_path / "run"
    _train(world, world["specs"][key], run)
    hist = json.loads((run / "summary.json").read_text())["history"]
    joint = [h for h in hist if h.get("phase") == "joint"]
    assert joint and all(np.isfinite(h["loss"]) and h["js"] >= 0 for h in joint)
    raw = torch.load(run / "model.pt", weights_only=True)
    assert raw["format_version"] == 2 and raw["meta"]["model_source"] == "hf"
    assert raw["meta"]["external"]["config"]["model_type"] == ("segformer" if key == "segformer" else "mask2former")
    assert raw["meta"]["mean"] == pytest.approx(list(MEAN))
    model = load_model(run / "model.pt")
    assert isinstance(model, HFSegmenter) and model.output_kind == ("mask_scores" if key == "m2f" else "logits")
    orig = world["nets"][key].state_dict()
    tuned = {k[4:]: v for k, v in model.state_dict().items()}
    assert tuned.keys() == orig.keys() and any(not torch.equal(orig[k], tuned[k]) for k in orig)
    # SML always; Mahalanobis only where the model gives features (Mask2Former's pixel decoder)
    assert "sml_mean" in model.stats and ("maha_means" in model.stats) == (key == "m2f")
    if key == "segformer":
        assert "Mahalanobis statistics not fitted" in capsys.readouterr().err
    res = _eval(world, str(run / "model.pt"), tmp_path / "ev", "msp,sml")
    assert res["model"]["model_source"] == "hf" and res["model"]["origin"] == world["specs"][key]
    assert 0.0 <= res["scores"]["msp"]["ap"] <= 1.0


def test_mask_scores_are_trained_as_log_scores():
    """For mask transformers the losses' softmax sees log s_k, i.e. the normalised class scores s_k / sum s."""
    from denseood.train.model_setup import class_logits

    s = torch.rand(2, 5, 3, 4) * 0.9 + 0.05
    m = torch.nn.Module()
    m.output_kind = "mask_scores"
    np.testing.assert_allclose(torch.softmax(class_logits(s, m), 1).numpy(), (s / s.sum(1, keepdim=True)).numpy(),
                               rtol=1e-5)
    m.output_kind = "logits"
    assert torch.equal(class_logits(s, m), s)


def test_train_prompter_external_needs_out_and_its_file_works_in_segment(world, tmp_path, no_network, capsys):
    spec = world["specs"]["python"]
    argv = ["train-prompter", "--checkpoint", spec, "--root", str(world["root"]), "--device", "cpu", "--steps", "2",
            "--batch-size", "2", "--crop", "32", "--pool-size", "2", "--score", "msp", "--score-thresh", "0.0"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "--out FILE" in err and "not a denseood checkpoint" in err
    pfile = tmp_path / "prompter.pt"
    assert cli_main(argv + ["--out", str(pfile)]) == 0 and pfile.is_file()
    out = tmp_path / "seg"
    assert cli_main(["segment", "--images", str(world["root"] / "dataset_AnomalyTrack" / "images"), "--checkpoint", spec,
                     "--out", str(out), "--device", "cpu", "--score", "msp", "--prompter", str(pfile)]) == 0
    assert (out / "objects.json").is_file()


def test_hf_spec_without_transformers_says_how_to_install(world, monkeypatch):
    import builtins

    from denseood.models.sources import load_model

    real = builtins.__import__

    def blocked(name, *a, **k):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(ConfigError, match=r"pip install denseood\[hf\]"):
        load_model(world["specs"]["segformer"])


BLOCKER = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("transformers is blocked in this test")
sys.meta_path.insert(0, Block())
import denseood
from denseood.cli import main
rc = main(sys.argv[1:])
assert "transformers" not in sys.modules, "transformers was imported"
sys.exit(rc)
"""


def test_import_and_non_hf_eval_work_without_transformers(world, tmp_path):
    out = tmp_path / "ev"
    argv = ["eval", "--dataset", "synthetic", "--root", str(world["root"]), "--checkpoint", world["specs"]["python"],
            "--score", "msp", "--out", str(out), "--device", "cpu", "--workers", "0", "--no-components"]
    env = {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", BLOCKER, *argv], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["model"]["model_source"] == "python"
