"""Query objects (denseood.s2m.queries) and the hf: model's per-query outputs: RbA padding, full-resolution masks,
the rejection rule, the confidence formula, mask NMS, and the one-line refusal for logit models."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from denseood.errors import ConfigError
from denseood.models.sources import load_model
from denseood.s2m.pipeline import mask_iou_matrix
from denseood.s2m.queries import KNOWN_THRESHOLD, build_query_objects, query_objects

from tests.model_builders import MEAN, STD, rba_pipeline_masks, tiny_mask2former, tiny_segformer  # noqa: E402

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def m2f(tmp_path_factory):
    d = tmp_path_factory.mktemp("m2f_queries")
    return tiny_mask2former(d, num_labels=4), d


def _normalised(img):
    x = (img.astype(np.float64) / 255.0 - np.array(MEAN)) / np.array(STD)
    return torch.from_numpy(x.transpose(2, 0, 1)[None].astype(np.float32))


def test_query_outputs_follow_the_rba_pipeline(m2f, no_network):
    """query_logits = the RbA path (pad to 32, upsample to the padded size, crop); query_outputs resizes the logits
    to the requested size before the sigmoid; class_probs sum to 1 over K+1; the per-pixel class scores of
    forward are the einsum of the two."""
    net, d = m2f
    model = load_model(f"hf:{d}")
    img = np.random.default_rng(3).integers(0, 256, (50, 90, 3), dtype=np.uint8)
    x = _normalised(img)
    with torch.no_grad():
        ref_cls, ref_masks = rba_pipeline_masks(net, x)
        cls, masks = model.query_logits(x)
        out = model.query_outputs(x, size=(100, 180))
        scores = model(x)
    torch.testing.assert_close(cls, ref_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masks, ref_masks, atol=1e-5, rtol=1e-5)
    assert out["class_probs"].shape == (1, 6, 5) and out["masks"].shape == (1, 6, 100, 180)
    torch.testing.assert_close(out["class_probs"].sum(-1), torch.ones(1, 6))
    up = F.interpolate(ref_masks, size=(100, 180), mode="bilinear", align_corners=False).sigmoid()
    torch.testing.assert_close(out["masks"], up, atol=1e-5, rtol=1e-5)
    s = torch.einsum("bqc,bqhw->bchw", torch.softmax(cls, -1)[..., :-1], masks.sigmoid())
    torch.testing.assert_close(scores, s, atol=1e-5, rtol=1e-5)


def test_query_objects_rule_confidence_and_nms():
    """Known-class queries and small masks are dropped, a near-duplicate goes to NMS, confidence = 1 - max_k p."""
    h, w = 20, 30
    logits = torch.full((5, h, w), -8.0)
    logits[0, 2:10, 2:12] = 8.0      # rejected by the classes (spread), kept
    logits[1, 2:10, 2:11] = 8.0      # near duplicate of 0 (IoU 0.9), less confident -> NMS
    logits[2, 12:18, 15:28] = 8.0    # a known class (p = 0.9 > 0.8) -> not a candidate
    logits[3, 0:2, 0:3] = 8.0        # 6 px < min_area
    logits[4, 12:19, 2:12] = 8.0     # mostly no-object, kept
    p = torch.tensor([[0.3, 0.3, 0.2, 0.1, 0.1], [0.5, 0.1, 0.1, 0.1, 0.2], [0.9, 0.05, 0.0, 0.0, 0.05],
                      [0.1, 0.1, 0.1, 0.1, 0.6], [0.05, 0.05, 0.05, 0.05, 0.8]])
    o = query_objects(p, logits, (h, w), min_area=10, nms_iou=0.7)
    assert o["query_ids"].tolist() == [4, 0]                        # by confidence: 0.95, 0.7
    assert o["scores"] == pytest.approx([1 - 0.05, 1 - 0.3])
    assert o["masks"].shape == (2, h, w) and o["masks"].dtype == bool
    assert np.array_equal(o["masks"][1], (logits[0] > 0).numpy())
    assert o["quality"] == pytest.approx([torch.sigmoid(torch.tensor(8.0)).item()] * 2, rel=1e-5)
    assert set(np.unique(o["instances"])) == {0, 1, 2}
    # the known-class query is accepted just above the threshold, rejected at it
    p2 = p.clone()
    p2[2] = torch.tensor([KNOWN_THRESHOLD, 0.1, 0.05, 0.0, 0.05])
    assert 2 in query_objects(p2, logits, (h, w), min_area=10)["query_ids"].tolist()


def test_query_objects_end_to_end_full_resolution(m2f, no_network):
    """A tiny HF Mask2Former run at a smaller input size: masks at the frame's size, confidences in [0, 1] equal
    to 1 - max_k p_q(k) of their query, no two objects above IoU 0.7."""
    _, d = m2f
    model = load_model(f"hf:{d}")
    qo = build_query_objects(model, device="cpu", dtype="fp32", score="rba", input_size=(32, 48), min_area=4)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8) for _ in range(3)]
    results = qo(images, names=["a", "b", "c"])
    assert sum(len(r) for r in results) >= 1
    for im, r in zip(images, results):
        assert r.masks.shape[1:] == r.instances.shape == r.anomaly_map.shape == im.shape[:2]
        assert ((r.scores >= 0) & (r.scores <= 1)).all()
        assert list(r.scores) == sorted(r.scores, reverse=True)
        ious = mask_iou_matrix(r.masks)
        assert (ious[~np.eye(len(r), dtype=bool)] <= 0.7).all()
        x = F.interpolate(_normalised(im), size=(32, 48), mode="bilinear", align_corners=False, antialias=True)
        with torch.no_grad():
            probs = model.query_outputs(x)["class_probs"][0]
        ids = r.prompts.meta["query_ids"]
        assert r.scores == pytest.approx((1 - probs[ids, :-1].max(-1).values).numpy(), abs=1e-5)
        assert r.areas.tolist() == [int((r.instances == i + 1).sum()) for i in range(len(r))]


def test_logit_models_are_refused_in_one_line(tmp_path, ckpt, no_network):
    d = tmp_path / "segformer"
    tiny_segformer(d, num_labels=5)
    seg = load_model(f"hf:{d}")
    for model in (seg, str(ckpt)):
        with pytest.raises(ConfigError) as e:
            build_query_objects(model, device="cpu", dtype="fp32")
        msg = str(e.value)
        assert "--objects queries needs a mask-transformer model" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="has no queries"):
        seg.query_logits(torch.zeros(1, 3, 32, 32))


def test_segment_cli_objects_queries(m2f, tmp_path, ckpt, capsys, no_network):
    """`segment --objects queries` writes objects (full-resolution masks, confidences in [0, 1]) and overlays for a
    tiny HF Mask2Former; on an smp checkpoint it is a one-line error."""
    import json

    from denseood.cli import main
    from denseood.io import read_image, read_label, write_image

    _, d = m2f
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(1)
    for name, hw in {"a.png": (60, 90), "b.png": (45, 70)}.items():
        write_image(imgs / name, rng.integers(0, 256, (*hw, 3), dtype=np.uint8))
    out = tmp_path / "out"
    base = ["segment", "--images", str(imgs), "--objects", "queries", "--device", "cpu", "--dtype", "fp32",
            "--score", "rba"]
    assert main(base + ["--checkpoint", f"hf:{d}", "--out", str(out)]) == 0
    recs = [json.loads(x) for x in (out / "objects.json").read_text().splitlines()]
    assert len(recs) == 2 and sum(len(r["ids"]) for r in recs) >= 1
    for r in recs:
        stem = Path(r["image"]).stem
        m = read_label(out / "masks" / f"{stem}.png")
        assert list(m.shape) == r["size"] and int(m.max()) == len(r["ids"])
        assert r["areas"] == [int((m == i).sum()) for i in r["ids"]]
        assert all(0.0 <= s <= 1.0 for s in r["scores"])
        assert read_image(out / "overlays" / f"{stem}.png").shape[:2] == tuple(r["size"])
    capsys.readouterr()
    assert main(base + ["--checkpoint", str(ckpt), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--objects queries needs a mask-transformer model" in err and len(err.splitlines()) == 1


def test_eval_s2m_objects_queries(tmp_path, capsys, no_network):
    """`eval --s2m --objects queries` scores query objects in the S2M rows; --objects without --s2m is refused."""
    import json

    from denseood.cli import main
    from denseood.data.synthetic import write

    write(tmp_path / "synthetic", n_train=1, n_val=2, seed=0, size=(48, 96))
    tiny_mask2former(tmp_path / "m2f19", num_labels=19, logit_scale=30.0)
    argv = ["eval", "--dataset", "synthetic", "--root", str(tmp_path / "synthetic"), "--checkpoint",
            f"hf:{tmp_path / 'm2f19'}", "--score", "rba", "--device", "cpu", "--workers", "0", "--protocol",
            "exact", "--bootstrap", "0", "--objects", "queries"]
    assert main(argv + ["--s2m", "--out", str(tmp_path / "out")]) == 0
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["s2m_score"] == "rba" and res["s2m"]["s2m"]["n_images"] == 2
    assert 0.0 <= res["s2m"]["s2m"]["iou"] <= 1.0
    capsys.readouterr()
    assert main(argv + ["--out", str(tmp_path / "bad")]) == 2
    assert "add --s2m" in capsys.readouterr().err


def test_submit_oodis_objects_queries(m2f, tmp_path, no_network):
    """`submit oodis --objects queries` writes every frame's query masks at the frame's size, confidences in
    [0, 1] in decreasing order (or the 1-pixel dummy at 0)."""
    from PIL import Image

    from denseood.cli import main
    from denseood.data.oodis import read_expected_files

    from tests.commands.oodis_tree import SIZES, subset, write_expected, write_trees

    _, d = m2f
    exp = subset(read_expected_files(), 2)
    laf, smiyc = write_trees(tmp_path, exp)
    out = tmp_path / "out"
    assert main(["submit", "oodis", "--laf", str(laf), "--smiyc", str(smiyc), "--checkpoint", f"hf:{d}", "--out",
                 str(out), "--device", "cpu", "--expected-files", str(write_expected(tmp_path / "exp.txt", exp)),
                 "--objects", "queries", "--score", "rba", "--input-size", "64x128"]) == 0
    txts = sorted((out / "oodis").glob("*/*.txt"))
    assert len(txts) == 6
    for txt in txts:
        lines = txt.read_text().splitlines()
        conf = [float(x.split(" ")[2]) for x in lines]
        assert lines and conf == sorted(conf, reverse=True) and all(0.0 <= c <= 1.0 for c in conf)
        for x in lines:
            with Image.open(txt.parent / x.split(" ")[0]) as im:
                assert (im.height, im.width) == SIZES[txt.parent.name]
