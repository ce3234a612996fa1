"""Negative sources: label alignment, out-of-place pasting, determinism, gradients to the flow, folders of outliers."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from denseood.errors import ConfigError, DatasetError
from denseood.models.flow import PatchFlow
from denseood.train.losses import jsd_uniform_loss
from denseood.train.negatives import (FlowNegatives, NegativeSource, NoNegatives, PasteNegatives, VoidNegatives,
                                      build_negatives)


def _flow(seed: int = 0) -> PatchFlow:
    torch.manual_seed(seed)
    f = PatchFlow(levels=2, steps=2, hidden=16)
    f.encode(torch.rand(4, 3, 16, 16))  # ActNorm init
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # move zero-initialised layers off zero so every parameter is on the sample path
        for p in f.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return f


def _batch(b: int = 3, h: int = 64, w: int = 128, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (b, 3, h, w), generator=g).float() / 255
    labels = torch.randint(0, 19, (b, h, w), generator=g)
    labels[:, :4] = 255
    return images, labels


def _box_mask(boxes, shape) -> torch.Tensor:
    m = torch.zeros(shape, dtype=torch.bool)
    for i, row in enumerate(boxes):
        for x0, y0, x1, y1 in row:
            m[i, y0:y1, x0:x1] = True
    return m


def test_flow_negatives_keep_labels_aligned_and_inputs_untouched():
    neg = FlowNegatives(_flow(), per_image=(1, 3), size_range=(8, 32))
    images, labels = _batch()
    img0, lab0 = images.clone(), labels.clone()
    out, lab, mask = neg.paste(images, labels, generator=torch.Generator().manual_seed(1))
    assert torch.equal(images, img0) and torch.equal(labels, lab0)  # out of place
    assert out.shape == images.shape and lab.shape == labels.shape and mask.dtype == torch.bool
    assert len(neg.last_boxes) == 3 and all(1 <= len(r) <= 3 for r in neg.last_boxes)
    for row in neg.last_boxes:
        for x0, y0, x1, y1 in row:
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 64
            assert (x1 - x0) % 4 == 0 and (y1 - y0) % 4 == 0
            assert 8 <= x1 - x0 <= 32 and 8 <= y1 - y0 <= 32
    assert torch.equal(mask, _box_mask(neg.last_boxes, mask.shape))
    changed = (out != images).any(1)
    assert not (changed & ~mask).any()  # pixels outside the boxes are unchanged
    assert changed[mask].float().mean() > 0.99  # pasted content differs from the original (continuous samples)
    assert (lab[mask] == 255).all()
    assert torch.equal(lab[~mask], labels[~mask])
    assert out.min() >= 0 and out.max() <= 1


def test_flow_negatives_deterministic_with_generator():
    neg = FlowNegatives(_flow(), per_image=(0, 2), size_range=(8, 24), p=0.7)
    images, labels = _batch()
    a = neg.paste(images, labels, generator=torch.Generator().manual_seed(7))
    boxes_a = neg.last_boxes
    b = neg.paste(images, labels, generator=torch.Generator().manual_seed(7))
    assert neg.last_boxes == boxes_a
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = neg.paste(images, labels, generator=torch.Generator().manual_seed(8))
    assert neg.last_boxes != boxes_a or not torch.equal(a[0], c[0])


def test_flow_negatives_sizes_clipped_to_image_and_errors():
    neg = FlowNegatives(_flow(), per_image=4, size_range=(16, 216))
    images, labels = _batch(2, 24, 40)
    neg.paste(images, labels)
    for row in neg.last_boxes:
        for x0, y0, x1, y1 in row:
            assert y1 - y0 <= 24 and x1 - x0 <= 40 and (y1 - y0) % 4 == 0 and (x1 - x0) % 4 == 0
    with pytest.raises(ConfigError, match="smaller"):
        neg.paste(*_batch(1, 2, 40))
    with pytest.raises(ConfigError):
        neg.paste(images, labels[:, :10])
    with pytest.raises(ConfigError):
        FlowNegatives(_flow(), size_range=(32, 16))
    with pytest.raises(ConfigError):
        FlowNegatives(_flow(), p=1.5)


def test_js_gradient_through_pasted_samples_reaches_every_flow_parameter():
    flow = _flow(1)
    neg = FlowNegatives(flow, per_image=2, size_range=(8, 32))
    seg = torch.nn.Conv2d(3, 5, 3, padding=1)
    images, labels = _batch(2)
    out, _, mask = neg.paste(images, labels, generator=torch.Generator().manual_seed(0))
    loss = jsd_uniform_loss(seg(out), mask)
    loss.backward()
    params = dict(flow.named_parameters())
    assert len(neg.flow_parameters()) == len(params)
    missing = [n for n, p in params.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_inlier_nll_uses_clean_content_at_last_boxes():
    flow = _flow(2)
    neg = FlowNegatives(flow, per_image=1, size_range=(16, 16))
    images, labels = _batch(3)
    images.requires_grad_(True)
    neg.paste(images.detach(), labels)
    nll = neg.inlier_nll(images, generator=torch.Generator().manual_seed(4))
    crops = torch.stack([images.detach()[i, :, y0:y1, x0:x1] for i, [(x0, y0, x1, y1)] in enumerate(neg.last_boxes)])
    ref = flow.bits_per_dim(crops, generator=torch.Generator().manual_seed(4)).mean()
    assert nll.item() == pytest.approx(ref.item(), rel=1e-6)
    nll.backward()
    assert images.grad is None  # gradients go to the flow only
    assert all(p.grad is not None for p in flow.parameters())
    # no boxes: a zero that still backpropagates
    none = FlowNegatives(flow, p=0.0)
    out, lab, mask = none.paste(images.detach(), labels)
    assert not mask.any() and torch.equal(out, images.detach()) and torch.equal(lab, labels)
    z = none.inlier_nll(images)
    assert z.item() == 0.0
    z.backward()


def _write_rgba_disc(path, h: int = 30, w: int = 40, color=(255, 0, 0)) -> np.ndarray:
    bgra = np.zeros((h, w, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2] = color[2], color[1], color[0]
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((yy - 14.5) / 10) ** 2 + ((xx - 19.5) / 14) ** 2 <= 1
    bgra[..., 3] = np.where(disc, 255, 0)
    assert cv2.imwrite(str(path), bgra)
    return disc


def test_paste_negatives_rgba_cutouts(tmp_path):
    disc = _write_rgba_disc(tmp_path / "obj.png")
    neg = PasteNegatives(tmp_path, per_image=1, size_range=(20, 20))
    images = torch.zeros(2, 3, 64, 128)
    labels = torch.ones(2, 64, 128, dtype=torch.long)
    out, lab, mask = neg.paste(images, labels, generator=torch.Generator().manual_seed(0))
    # the object is pure red on black: negative pixels are exactly the red ones
    assert torch.equal(out[:, 0] > 0.5, mask)
    assert (out[:, 1:] == 0).all()
    assert (lab[mask] == 255).all() and (lab[~mask] == 1).all()
    ys, xs = np.nonzero(disc)
    ref = cv2.resize(disc[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.uint8), (20, 20),
                     interpolation=cv2.INTER_NEAREST) > 0
    for i, [(x0, y0, x1, y1)] in enumerate(neg.last_boxes):
        assert (x1 - x0, y1 - y0) == (20, 20)
        got = mask[i, y0:y1, x0:x1].numpy()
        assert np.array_equal(got, ref)
        assert 0.5 < got.mean() < 0.95  # a cut-out, not the whole rectangle
        assert mask[i].sum() == got.sum()


def test_paste_negatives_plain_images_and_determinism(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(3):
        rgb = rng.integers(0, 256, (50 + 10 * k, 70, 3), dtype=np.uint8)
        assert cv2.imwrite(str(tmp_path / f"o{k}.jpg"), rgb[..., ::-1])
    (tmp_path / "notes.txt").write_text("not an image")
    neg = PasteNegatives(tmp_path, per_image=(1, 2), size_range=(10, 30), ellipse_prob=0.5, cache_size=2)
    assert len(neg.files) == 3
    images, labels = _batch(4, 48, 64)
    a = neg.paste(images, labels, generator=torch.Generator().manual_seed(3))
    boxes = neg.last_boxes
    b = neg.paste(images, labels, generator=torch.Generator().manual_seed(3))
    assert neg.last_boxes == boxes and all(torch.equal(x, y) for x, y in zip(a, b))
    out, lab, mask = a
    assert not (mask & ~_box_mask(boxes, mask.shape)).any()
    assert not ((out != images).any(1) & ~mask).any()
    assert (lab[mask] == 255).all() and torch.equal(lab[~mask], labels[~mask])
    assert len(neg._cache) <= 2
    for i, row in enumerate(boxes):
        for x0, y0, x1, y1 in row:
            frac = mask[i, y0:y1, x0:x1].float().mean().item()
            assert frac > 0.6  # rectangle (1.0) or inscribed ellipse (~0.785)


def test_paste_negatives_folder_errors(tmp_path):
    with pytest.raises(DatasetError, match="no images"):
        PasteNegatives(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        PasteNegatives(tmp_path / "missing")
    bgra = np.zeros((10, 10, 4), np.uint8)
    cv2.imwrite(str(tmp_path / "empty_alpha.png"), bgra)
    neg = PasteNegatives(tmp_path, size_range=(8, 8))
    with pytest.raises(DatasetError, match="alpha"):
        neg.paste(*_batch(1, 16, 16))


def test_void_and_no_negatives():
    images, labels = _batch(2, 16, 24)
    out, lab, mask = VoidNegatives().paste(images, labels)
    assert torch.equal(mask, labels == 255) and mask.any()
    assert torch.equal(out, images) and torch.equal(lab, labels)
    out, lab, mask = VoidNegatives(ignore_index=3).paste(images, labels)
    assert torch.equal(mask, labels == 3)
    out, lab, mask = NoNegatives().paste(images, labels)
    assert not mask.any() and mask.shape == labels.shape
    assert torch.equal(out, images) and torch.equal(lab, labels)
    assert NoNegatives().flow_parameters() == []


def test_build_negatives(tmp_path):
    _write_rgba_disc(tmp_path / "o.png")
    flow = _flow()
    f = build_negatives("flow", flow=flow, per_image=2, size_range=(8, 16), ignore_index=255)
    assert isinstance(f, FlowNegatives) and f.flow is flow and f.per_image == 2
    assert isinstance(build_negatives("flow"), FlowNegatives)
    assert isinstance(build_negatives("void", ignore_index=7), VoidNegatives)
    assert isinstance(build_negatives("none", per_image=3), NoNegatives)
    p = build_negatives(f"paste:{tmp_path}", size_range=(8, 8), temperature=0.5)
    assert isinstance(p, PasteNegatives) and isinstance(p, NegativeSource)
    with pytest.raises(ConfigError, match="paste:DIR"):
        build_negatives("gan")
    with pytest.raises(ConfigError, match="paste:DIR"):
        build_negatives("paste:")
    with pytest.raises(ConfigError, match="bogus"):
        build_negatives("flow", bogus=1)
    with pytest.raises(DatasetError):
        build_negatives(f"paste:{tmp_path / 'nope'}")
