"""`denseood eval` (denseood.commands.eval) end to end on the synthetic world with a tiny trained checkpoint (CPU)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from denseood.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
H, W = 64, 128
ALL_SCORES = ["msp", "maxlogit", "energy", "entropy", "jsd", "sml", "mahalanobis"]
SIZES = ["--min-segment-size", "20", "--min-instance-size", "10"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Synthetic root + a tiny FPN/ResNet-18 trained 20 SGD steps, with SML and Mahalanobis stats fitted."""
    from denseood.data import open_dataset
    from denseood.data.synthetic import write
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter
    from denseood.scores import fit_mahalanobis, fit_sml

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("eval_world")
    root = base / "synthetic"
    write(root, n_train=8, n_val=6, seed=0, size=(H, W))
    train = open_dataset("synthetic", root, "train")
    imgs = np.stack([train[i].image for i in range(len(train))])
    sem = torch.from_numpy(np.stack([train[i].semantic for i in range(len(train))]).astype(np.int64))
    torch.manual_seed(0)
    model = create_segmenter("fpn", "resnet18", 19, train_size=(H, W))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    gen = np.random.default_rng(0)
    model.train()
    for _ in range(20):
        idx = gen.choice(len(imgs), 4, replace=False)
        loss = F.cross_entropy(model(model.normalize(imgs[idx])), sem[idx], ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x = model.normalize(imgs)
    with warnings.catch_warnings():  # "class never predicted" warnings are expected after 20 steps
        warnings.simplefilter("ignore")
        fit_sml(model, [x])
        fit_mahalanobis(model, [(x, sem)], max_pixels_per_class=2000)
    ckpt = base / "tiny.pt"
    save_checkpoint(model, ckpt)
    torch.set_num_threads(threads)
    return {"root": root, "ckpt": ckpt, "base": base}


def _eval_args(world, out, *extra, scores="msp,jsd"):
    return ["eval", "--dataset", "synthetic", "--root", str(world["root"]), "--checkpoint", str(world["ckpt"]),
            "--score", scores, "--out", str(out), "--device", "cpu", "--workers", "0", *SIZES, *extra]


def _reference_maps(world):
    """Independent maps: NumPy normalisation, plain forward, -max logit; with the val masks.

    (maxlogit rather than msp: a saturated float32 softmax ties many pixels at exactly 0, and a reference in
    another precision would break those ties differently.)"""
    from denseood.data import open_dataset
    from denseood.models.sources.registry import load_checkpoint

    model = load_checkpoint(world["ckpt"])
    ds = open_dataset("synthetic", world["root"], "val")
    maps, masks = [], []
    for i in range(len(ds)):
        s = ds[i]
        x = (s.image.astype(np.float64) / 255.0 - np.array(model.mean)) / np.array(model.std)
        x = torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))
        with torch.no_grad():
            lg = model(x)[0].numpy()
        maps.append(-lg.max(0))
        masks.append(s.ood_mask)
    return np.stack(maps), np.stack(masks)


def test_eval_end_to_end_all_scores(world, tmp_path, monkeypatch):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    out = tmp_path / "out"
    rc = cli_main(_eval_args(world, out, "--protocol", "exact", "--batch-size", "4", "--save-maps", scores=",".join(ALL_SCORES)))
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_images"] == 6 and res["protocol"] == "exact" and res["world_size"] == 1
    assert res["dtype"] == "fp32" and res["device"] == "cpu" and res["has_labels"] is True
    assert res["checkpoint"]["sha256"] and res["checkpoint"]["path"] == str(world["ckpt"])
    assert res["images_per_s"] > 0 and res["peak_mem_mb"] > 0 and res["seconds"] > 0
    assert set(res["scores"]) == set(ALL_SCORES)
    for s, m in res["scores"].items():
        for k in ("ap", "fpr95", "auroc", "threshold_at_tpr95", "best_f1", "best_f1_threshold", "sIoU", "PPV",
                  "mean_F1", "F1_per_threshold"):
            assert k in m, (s, k)
        for k in ("ap", "fpr95", "auroc", "best_f1"):
            assert 0.0 <= m[k] <= 1.0, (s, k, m[k])
        assert len(m["F1_per_threshold"]) == 11
    # pixel metrics against sklearn on independently computed maps
    maps, masks = _reference_maps(world)
    valid = masks != 255
    y, sc = (masks[valid] == 1).astype(int), maps[valid]
    m = res["scores"]["maxlogit"]
    assert m["ap"] == pytest.approx(average_precision_score(y, sc), abs=1e-4)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, sc), abs=1e-4)
    fpr, tpr, _ = roc_curve(y, sc, drop_intermediate=False)
    assert m["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-3)
    assert m["n_pixels"] == int(valid.sum()) and m["n_anomaly"] == int(y.sum())
    # component metrics were taken at the best-F1 threshold (maps stored as float16 in pass 2)
    from denseood.eval import ComponentMetrics

    cm = ComponentMetrics(threshold=m["best_f1_threshold"], min_segment_size=20, min_instance_size=10)
    cm.update(maps.astype(np.float16).astype(np.float32), masks)
    ref = cm.compute()
    assert m["n_gt"] == ref["n_gt"]
    assert ref["n_gt"] > 0  # the synthetic val frames have anomaly objects, so sIoU and mean F1 are defined
    for k in ("sIoU", "PPV", "mean_F1"):
        if math.isnan(ref[k]):
            # the only NaN a reference may have: PPV, a mean over zero predicted components; results.json has null
            assert k == "PPV" and ref["n_pred"] == 0, (k, ref["n_gt"], ref["n_pred"])
            assert m[k] is None and m["n_pred"] == 0, (k, m[k])
        else:
            assert m[k] == pytest.approx(ref[k], abs=0.02), k
    # outputs
    md = (out / "results.md").read_text()
    for s in ALL_SCORES:
        assert f"| {s} |" in md
    for name in ("pr_curve.png", "roc_curve.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from denseood.data import open_dataset

    names = open_dataset("synthetic", world["root"], "val").names
    for s in ALL_SCORES:
        assert sorted(p.name for p in (out / "maps" / s).iterdir()) == sorted(f"{n}.png" for n in names)
    assert list(tmpdir.iterdir()) == []  # the pass-1 temp maps were deleted


def test_config_file_sets_options_and_the_command_line_wins(world, tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("protocol: exact\nlimit: 2\nno_components: true\nbatch-size: 2\nscore: msp\n")
    out = tmp_path / "out"
    assert cli_main(_eval_args(world, out, "--config", str(cfg), "--limit", "3")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["protocol"] == "exact" and "sIoU" not in res["scores"]["jsd"]  # from the file
    assert res["n_images"] == 3  # the command line overrides the file's limit
    assert set(res["scores"]) == {"msp", "jsd"}  # and its score list


def _required(tmp_path) -> list[str]:
    return ["eval", "--dataset", "synthetic", "--root", str(tmp_path / "root"), "--checkpoint",
            str(tmp_path / "c.pt"), "--out", str(tmp_path / "out")]


def test_config_unknown_key_errors_with_a_close_match(tmp_path, capsys):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text("batch_sise: 2\n")
    with pytest.raises(SystemExit) as e:
        cli_main(_required(tmp_path) + ["--config", str(cfg)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "'batch_sise'" in err and "did you mean batch_size" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opt, value, kind", [
    ("--batch-size", "0", "a positive integer"), ("--workers", "-1", "a non-negative integer"),
    ("--limit", "0", "a positive integer"), ("--overlap", "1", "a fraction in [0, 1)"),
    ("--min-segment-size", "-5", "a non-negative integer"), ("--protocol", "fast", "invalid choice"),
])
def test_options_are_checked_at_parse_time(tmp_path, capsys, opt, value, kind):
    with pytest.raises(SystemExit) as e:
        cli_main(_required(tmp_path) + [opt, value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert opt in err and kind in err


def test_every_eval_option_has_help():
    from denseood.cli import build_parser

    _, verbs = build_parser()
    for action in verbs["eval"]._actions:
        assert action.help and action.help.strip(), action.option_strings


def test_evaluate_checkpoint_from_python(world, tmp_path, capsys):
    from denseood.commands.eval.runner import evaluate_checkpoint

    res = evaluate_checkpoint(dataset="synthetic", root=world["root"], checkpoint=world["ckpt"], out=tmp_path / "o",
                              scores="jsd", limit=2, components=False, device="cpu", workers=0, progress=False,
                              min_segment_size=20, min_instance_size=10)
    assert res["n_images"] == 2 and res["protocol"] == "streaming" and set(res["scores"]) == {"jsd"}
    assert json.loads((tmp_path / "o" / "results.json").read_text())["scores"] == res["scores"]
    assert capsys.readouterr().out == ""  # echo=False prints nothing


def test_limit_overwrite_and_out_protection(world, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli_main(_eval_args(world, out, "--limit", "2", "--no-components")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["n_images"] == 2 and res["protocol"] == "streaming"
    assert "sIoU" not in res["scores"]["jsd"]
    before = (out / "results.json").read_bytes()
    assert cli_main(_eval_args(world, out, "--limit", "3", "--no-components")) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "results.json").read_bytes() == before  # never clobbered
    assert cli_main(_eval_args(world, out, "--limit", "3", "--no-components", "--overwrite")) == 0
    assert json.loads((out / "results.json").read_text())["n_images"] == 3


def test_unknown_score_fails_before_data(world, tmp_path, capsys):
    out = tmp_path / "out"
    args = _eval_args(world, out, scores="jsd,bogus")
    args[args.index("--root") + 1] = str(tmp_path / "does-not-exist")
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "bogus" in err
    for valid in ALL_SCORES:
        assert valid in err
    assert not out.exists()


def test_class_set_mismatch(world, tmp_path, capsys):
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter

    ck = tmp_path / "sh12.pt"
    save_checkpoint(create_segmenter("fpn", "resnet18", 12, class_set="streethazards"), ck)
    args = _eval_args(world, tmp_path / "out")
    args[args.index("--checkpoint") + 1] = str(ck)
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "12" in err and "19" in err and str(ck) in err


def _null_paths(d, path=""):
    """Paths of every null (None) value inside a results.json fragment."""
    if isinstance(d, dict):
        return [p for k, v in d.items() for p in _null_paths(v, f"{path}.{k}")]
    if isinstance(d, list):
        return [p for i, v in enumerate(d) for p in _null_paths(v, f"{path}[{i}]")]
    return [path] if d is None else []


def test_s2m_rows(world, tmp_path):
    out = tmp_path / "out"
    assert cli_main(_eval_args(world, out, "--limit", "2", "--s2m", "--prompter", "peak", "--prompt-model", "grabcut",
                               scores="jsd")) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["s2m"]) == {"s2m", "threshold@bestF1"}
    for row in res["s2m"].values():
        assert 0.0 <= row["iou"] <= 1.0 and row["n_images"] == 2
    iap = res["s2m"]["s2m"]["instance_ap"]  # OoDIS (headline) and COCO, each labelled; no "ap": null beside them
    assert list(iap) == ["oodis", "coco"] and [v["protocol"] for v in iap.values()] == ["oodis", "coco"]
    assert "ap" not in res["s2m"]["s2m"] and "ap" not in res["s2m"]["s2m"]["paper_protocol"]
    assert _null_paths(res["s2m"]) == []  # results.json: no null beside a real number in the object rows
    # the thresholded baseline takes the jsd row's best-F1 threshold and pixel numbers (computed once, not again)
    base, row = res["s2m"]["threshold@bestF1"], res["scores"]["jsd"]
    assert base["threshold"] == row["best_f1_threshold"]
    assert (base["pixel_ap"], base["pixel_fpr95"]) == (row["ap"], row["fpr95"])
    assert "| s2m |" in (out / "results.md").read_text()


@pytest.mark.parametrize("components", [True, False], ids=["components", "no-components"])
def test_s2m_one_pixel_metric_one_cache(world, tmp_path, monkeypatch, components):
    """eval --s2m builds one PixelMetrics per score (+ the S2M refined map's), one frame cache (no S2M cache of its
    own), and a threshold@bestF1 row equal to one rebuilt from the saved float32 maps at the jsd row's threshold."""
    from scipy import ndimage

    from denseood.data import open_dataset
    from denseood.eval.pixel import PixelMetrics

    made, prefixes = [], []
    init, mkdtemp = PixelMetrics.__init__, tempfile.mkdtemp
    monkeypatch.setattr(PixelMetrics, "__init__", lambda self, *a, **k: (made.append(1), init(self, *a, **k))[1])
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: (prefixes.append(k.get("prefix", "")), mkdtemp(*a, **k))[1])
    out = tmp_path / "out"
    extra = () if components else ("--no-components",)
    assert cli_main(_eval_args(world, out, "--limit", "3", "--s2m", "--prompter", "peak", "--prompt-model", "grabcut",
                               "--protocol", "exact", "--save-maps", *extra, scores="msp,jsd")) == 0
    res = json.loads((out / "results.json").read_text())
    assert len(made) == 3  # msp, jsd, the S2M refined map
    assert not any(p.startswith(".denseood-s2m-") for p in prefixes)
    assert sum(p.startswith(".denseood-eval-maps-") for p in prefixes) == 1
    assert not [p.name for p in out.iterdir() if p.name.startswith(".denseood-")]
    assert ("sIoU" in res["scores"]["jsd"]) is components
    base, row = res["s2m"]["threshold@bestF1"], res["scores"]["jsd"]
    thr = row["best_f1_threshold"]
    assert base["threshold"] == thr and base["pixel_ap"] == row["ap"] and base["pixel_auroc"] == row["auroc"]
    ds = open_dataset("synthetic", world["root"], "val")
    inter = union = n_pred = 0
    for i in range(3):
        m = ds[i].ood_mask
        a = np.load(out / "score_maps" / "jsd" / f"{ds[i].name}.npy").astype(np.float16).astype(np.float32)
        lab, n = ndimage.label((a > thr) & (m != 255), structure=np.ones((3, 3)))
        sizes = ndimage.sum(np.ones_like(lab), lab, range(1, n + 1))
        keep = np.isin(lab, 1 + np.flatnonzero(sizes >= 20))
        n_pred += int(np.count_nonzero(sizes >= 20))
        inter += int((keep & (m == 1)).sum())
        union += int(((keep & (m != 255)) | (m == 1)).sum())
    assert base["intersection"] == inter and base["union"] == union and base["n_pred"] == n_pred
    if components:
        for k in ("sIoU", "PPV", "mean_F1"):
            assert base[k] == pytest.approx(row[k], abs=1e-12), k


def test_bf16_autocast_changes_ap_little(world, tmp_path):
    from denseood.data import open_dataset
    from denseood.commands.eval.runner import evaluate
    from denseood.models.sources.registry import load_checkpoint

    ds = open_dataset("synthetic", world["root"], "val")
    model = load_checkpoint(world["ckpt"], num_classes=19, class_set="cityscapes")
    r32 = evaluate(ds, model, scores=["jsd", "msp", "maxlogit"], out=tmp_path / "fp32", protocol="exact",
                   dtype="fp32", device="cpu", workers=0, components=False, progress=False)
    r16 = evaluate(ds, model, scores=["jsd", "msp", "maxlogit"], out=tmp_path / "bf16", protocol="exact",
                   dtype="bf16", device="cpu", workers=0, components=False, progress=False)
    assert r16["dtype"] == "bf16" and r32["dtype"] == "fp32"
    for s in ("jsd", "msp", "maxlogit"):
        assert abs(r32["scores"][s]["ap"] - r16["scores"][s]["ap"]) < 0.005, s


def test_unlabelled_split_writes_submission_maps(world, tmp_path):
    from denseood.data import open_dataset
    from denseood.infer import Inference
    from denseood.io import read_hdf5, write_image
    from denseood.models.sources.registry import load_checkpoint

    val = open_dataset("synthetic", world["root"], "val")
    root = tmp_path / "smiyc"
    fids = ["airplane0000", "bear0000"]  # official AnomalyTrack test ids (the split follows the benchmark's id list)
    for i in range(2):
        write_image(root / "dataset_AnomalyTrack" / "images" / f"{fids[i]}.png", val[i].image)
    out = tmp_path / "out"
    rc = cli_main(["eval", "--dataset", "smiyc-anomaly", "--root", str(root), "--split", "test", "--checkpoint",
                   str(world["ckpt"]), "--score", "jsd,energy", "--out", str(out), "--device", "cpu", "--workers", "0"])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["has_labels"] is False and res["scores"] == {} and res["n_images"] == 2
    assert "submission" in res and "hdf5" in res["submission"]["note"]
    eng = Inference(load_checkpoint(world["ckpt"]), scores=("jsd", "energy"), device="cpu", dtype="fp32")
    for i in range(2):
        ref = eng.predict(val[i].image)
        for s in ("jsd", "energy"):
            arr = read_hdf5(out / "submission" / "anomaly_p" / s / "AnomalyTrack-all" / f"{fids[i]}.hdf5")
            assert arr.dtype == np.float16 and arr.shape == (H, W)
            np.testing.assert_allclose(arr.astype(np.float32), ref[s][0].numpy(), rtol=2e-3, atol=2e-3)


def _torchrun(args, nproc=2) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "denseood", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(world, tmp_path):
    """2 ranks (gloo, CPU) give the same metrics as 1 process: exact and streaming protocols, pixel + component;
    under streaming also the S2M rows (the s2m row and pass 2's threshold@bestF1 row)."""
    scores = "msp,jsd,mahalanobis"
    s2m = {"exact": (), "streaming": ("--s2m", "--prompter", "peak", "--prompt-model", "grabcut")}
    keys = ("ap", "auroc", "fpr95", "threshold_at_tpr95", "best_f1", "best_f1_threshold", "n_pixels", "n_anomaly",
            "sIoU", "PPV", "mean_F1", "F1_per_threshold", "n_gt", "n_pred")
    protos = ("exact", "streaming")
    # both launches run concurrently; one intra-op thread here (autouse fixture) and in every worker
    # (OMP_NUM_THREADS=1), batch size 1 everywhere: the per-frame arithmetic is identical
    procs = {pr: _torchrun(_eval_args(world, tmp_path / f"two_{pr}", "--protocol", pr, "--batch-size", "1",
                                      *s2m[pr], scores=scores)) for pr in protos}
    for pr in protos:
        assert cli_main(_eval_args(world, tmp_path / f"one_{pr}", "--protocol", pr, "--batch-size", "1",
                                   *s2m[pr], scores=scores)) == 0
    for pr, proc in procs.items():
        log, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, log[-4000:]
    for pr in protos:
        r1 = json.loads((tmp_path / f"one_{pr}" / "results.json").read_text())
        r2 = json.loads((tmp_path / f"two_{pr}" / "results.json").read_text())
        assert r2["world_size"] == 2 and r1["world_size"] == 1
        assert r2["n_images"] == r1["n_images"] == 6 and r2["protocol"] == r1["protocol"] == pr
        for s in scores.split(","):
            for k in keys:
                a, b = r1["scores"][s][k], r2["scores"][s][k]
                if isinstance(a, list):
                    np.testing.assert_allclose(np.array(b, float), np.array(a, float), atol=1e-9, err_msg=f"{pr} {s} {k}")
                elif a is None:
                    assert b is None, (pr, s, k)
                else:
                    assert b == pytest.approx(a, abs=1e-9), (pr, s, k)
    r1, r2 = (json.loads((tmp_path / f"{n}_streaming" / "results.json").read_text()) for n in ("one", "two"))
    for row in ("s2m", "threshold@bestF1"):
        for k in ("iou", "sIoU", "PPV", "mean_F1", "n_gt", "n_pred", "intersection", "union", "pixel_ap"):
            assert r2["s2m"][row][k] == pytest.approx(r1["s2m"][row][k], abs=1e-9), (row, k)
    assert r2["s2m"]["threshold@bestF1"]["threshold"] == r1["scores"][r1["s2m_score"]]["best_f1_threshold"]


def test_streethazards_unlabeled_convention_is_recorded_and_changes_ap(tmp_path, capsys):
    """Default: 'unlabeled' counts as inlier (official CAOS code); --streethazards-unlabeled void excludes it."""
    import cv2

    from denseood.commands.eval.runner import evaluate_checkpoint
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter

    rng = np.random.default_rng(0)
    d = tmp_path / "sh" / "test"
    for k in range(2):
        (d / "images" / "test" / "t5").mkdir(parents=True, exist_ok=True)
        (d / "annotations" / "test" / "t5").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / "images" / "test" / "t5" / f"{k}.png"), rng.integers(0, 255, (32, 64, 3), np.uint8))
        lab = rng.integers(1, 15, (32, 64)).astype(np.uint8)
        cv2.imwrite(str(d / "annotations" / "test" / "t5" / f"{k}.png"), lab)
    torch.manual_seed(0)
    ck = tmp_path / "sh12.pt"
    save_checkpoint(create_segmenter("fpn", "resnet18", 12, class_set="streethazards"), ck)
    res = {}
    for conv in (None, "void"):
        res[conv] = evaluate_checkpoint(dataset="streethazards", root=tmp_path / "sh", checkpoint=ck,
                                        out=tmp_path / f"o_{conv}", scores="msp", input_size="full", device="cpu",
                                        workers=0, progress=False, components=False, streethazards_unlabeled=conv)
    assert res[None]["dataset_convention"] == {"unlabeled": "inlier"}
    assert res["void"]["dataset_convention"] == {"unlabeled": "void"}
    assert json.loads((tmp_path / "o_void" / "results.json").read_text())["dataset_convention"] == {"unlabeled": "void"}
    assert res[None]["scores"]["msp"]["ap"] != res["void"]["scores"]["msp"]["ap"]
    args = ["eval", "--dataset", "synthetic", "--root", str(tmp_path), "--checkpoint", str(ck), "--out",
            str(tmp_path / "x"), "--streethazards-unlabeled", "void"]
    assert cli_main(args) == 2 and "--dataset streethazards" in capsys.readouterr().err


def test_max_pixels_refuses_a_large_frame_before_the_model_loads(world, tmp_path, capsys, monkeypatch):
    import denseood.models.sources.registry as reg

    monkeypatch.setattr(reg, "load_checkpoint", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model loaded")))
    rc = cli_main(["eval", "--dataset", "synthetic", "--root", str(world["root"]), "--checkpoint", str(world["ckpt"]),
                   "--out", str(tmp_path / "o"), "--max-pixels", "100", "--device", "cpu", "--workers", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "--max-pixels" in err and "frame " in err


def test_lostandfound_s2m_reports_oodis_ap_and_instance_source(world, tmp_path):
    """`eval --dataset lostandfound --s2m` scores OoDIS AP on LostAndFound's own instance ids where a frame has
    _gtCoarse_instanceIds.png, else on components of each obstacle label; results say which per frame."""
    import cv2

    root, rng = tmp_path / "laf", np.random.default_rng(0)
    fids = ("01_Hanns_Klemm_Str_45_000000_000080", "04_Maurener_Weg_8_000000_000030")
    for fid in fids:
        scene = fid.rsplit("_", 2)[0]
        (root / "leftImg8bit" / "test" / scene).mkdir(parents=True)
        (root / "gtCoarse" / "test" / scene).mkdir(parents=True)
        assert cv2.imwrite(str(root / "leftImg8bit" / "test" / scene / f"{fid}_leftImg8bit.png"),
                           rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        lab = np.zeros((H, W), np.uint8)
        lab[20:, :] = 1
        lab[30:40, 20:40] = 2          # 200 px obstacle
        lab[30:40, 40:50] = 5          # 100 px obstacle touching it (another label id)
        assert cv2.imwrite(str(root / "gtCoarse" / "test" / scene / f"{fid}_gtCoarse_labelIds.png"), lab)
    ids = np.ones((H, W), np.uint16)  # free space and the rest: id 1, no object
    ids[30:40, 20:30], ids[30:40, 30:40], ids[30:40, 40:50] = 2000, 2001, 5000  # three objects by their ids
    scene = fids[0].rsplit("_", 2)[0]
    assert cv2.imwrite(str(root / "gtCoarse" / "test" / scene / f"{fids[0]}_gtCoarse_instanceIds.png"), ids)
    out = tmp_path / "out"
    assert cli_main(["eval", "--dataset", "lostandfound", "--root", str(root), "--split", "test", "--checkpoint",
                     str(world["ckpt"]), "--score", "msp", "--out", str(out), "--device", "cpu", "--workers", "0",
                     "--s2m", "--prompter", "peak", "--prompt-model", "grabcut"]) == 0
    res = json.loads((out / "results.json").read_text())
    row = res["s2m"]["s2m"]
    assert row["instance_source"] == {"instanceIds": 1, "label components": 1}
    assert row["instance_ap"]["oodis"]["n_gt"] == 3 + 2  # instance ids: 3 objects; label components: 2
    assert row["instance_ap"]["oodis"]["protocol"] == "oodis" and row["instance_ap"]["coco"]["n_gt"] == 5
    assert _null_paths(res["s2m"]) == []
    assert "Ground-truth instances (frames): instanceIds 1, label components 1" in (out / "results.md").read_text()
