"""Negative (outlier) sources for mixed-content training batches.

Every source implements ``NegativeSource.paste(images, labels, generator) -> (images, labels, neg_mask)``:

- ``images``: (B,3,H,W) float in [0,1] (NOT mean/std normalised; normalise after pasting), ``labels``: (B,H,W) long
  train ids with 255 = ignore.
- Returns new tensors (inputs are never modified): the mixed images, the labels with every negative pixel set to
  255 (so the cross-entropy ignores them; the negative pixels are identified by ``neg_mask`` alone), and
  ``neg_mask`` (B,H,W) bool marking the negative pixels.
- Pasted content enters the output through autograd-tracked copies, so gradients flow back to it (FlowNegatives:
  to the flow parameters). All random choices come from ``generator`` (global RNG when None): the same generator
  state gives the same result.

A new source subclasses ``NegativeSource`` (``paste`` as above; ``flow_parameters`` when it trains a generator)
and gets a spec form in :func:`build_negatives` (its keyword names in ``_KWARGS``). See docs/architecture.md.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DatasetError
from ..io import list_images, read_image_alpha
from ..models.flow import PatchFlow

IGNORE_INDEX = 255
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def _randint(lo: int, hi: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [lo, hi] (inclusive)."""
    dev = generator.device if generator is not None else "cpu"
    return int(torch.randint(lo, hi + 1, (1,), generator=generator, device=dev).item())


def _rand(generator: torch.Generator | None) -> float:
    dev = generator.device if generator is not None else "cpu"
    return float(torch.rand((1,), generator=generator, device=dev).item())


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ConfigError(f"paste() expects images of shape (B,3,H,W) float in [0,1], got {tuple(images.shape)} "
                          f"{images.dtype}")
    if labels.dim() != 3 or labels.shape != (images.shape[0],) + tuple(images.shape[2:]):
        raise ConfigError(f"paste() expects labels of shape (B,H,W) = {(images.shape[0],) + tuple(images.shape[2:])} "
                          f"matching the images, got {tuple(labels.shape)}")


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return g * ctx.scale, None


def scale_grad(x: torch.Tensor, scale: float) -> torch.Tensor:
    """``x`` unchanged in the forward pass; its gradient is multiplied by ``scale`` (1.0: ``x`` itself)."""
    return x if scale == 1.0 else _ScaleGrad.apply(x, float(scale))


def _check_common(per_image: int | tuple[int, int], size_range: tuple[int, int], p: float) -> None:
    lo_n, hi_n = (per_image, per_image) if isinstance(per_image, int) else per_image
    if lo_n < 0 or hi_n < lo_n:
        raise ConfigError(f"per_image={per_image!r}: use an int >= 0 or a (min, max) pair with 0 <= min <= max")
    if len(size_range) != 2 or size_range[0] < 1 or size_range[1] < size_range[0]:
        raise ConfigError(f"size_range={size_range!r}: use (min, max) with 1 <= min <= max, e.g. (16, 216)")
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"p={p}: the probability that an image receives negatives must lie in [0, 1]")


def _count(per_image: int | tuple[int, int], generator: torch.Generator | None) -> int:
    return per_image if isinstance(per_image, int) else _randint(per_image[0], per_image[1], generator)


def _size_choices(lo: int, hi: int, limit: int, step: int, what: str) -> list[int]:
    """Sizes that are multiples of ``step`` in [lo, hi], the range first clipped to ``limit`` (the image side)."""
    top = (limit // step) * step
    if top < step:
        raise ConfigError(f"image {what} {limit} px is smaller than the negative patch granularity {step} px; "
                          "use larger crops or a flow with fewer levels")
    lo_r = min(int(math.ceil(lo / step)) * step, top)
    hi_r = max(min((hi // step) * step, top), lo_r)
    return list(range(lo_r, hi_r + 1, step))


class NegativeSource:
    """Interface: ``paste(images, labels, generator) -> (images, labels, neg_mask)`` (see the module docstring)."""

    #: paste boxes of the last call, per image, as (x0, y0, x1, y1) with exclusive ends
    last_boxes: list[list[Box]]

    def __init__(self) -> None:
        self.last_boxes = []

    def paste(self, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    __call__ = paste

    def flow_parameters(self) -> list[nn.Parameter]:
        """Parameters of a generator trained jointly with the segmenter ([] for sources without one)."""
        return []


def _sample_boxes(b: int, h: int, w: int, size_range: tuple[int, int], multiple: int,
                  per_image: int | tuple[int, int], p: float, generator: torch.Generator | None) -> list[list[Box]]:
    """Random paste boxes (xyxy, exclusive end) per image: sides from ``size_range`` clipped to the image and rounded
    to ``multiple``; each image gets negatives with probability ``p``, ``per_image`` of them."""
    hs = _size_choices(*size_range, h, multiple, "height")
    ws = _size_choices(*size_range, w, multiple, "width")
    boxes: list[list[Box]] = []
    for _ in range(b):
        row: list[Box] = []
        if p >= 1.0 or _rand(generator) < p:
            for _ in range(_count(per_image, generator)):
                ph = hs[_randint(0, len(hs) - 1, generator)]
                pw = ws[_randint(0, len(ws) - 1, generator)]
                y0, x0 = _randint(0, h - ph, generator), _randint(0, w - pw, generator)
                row.append((x0, y0, x0 + pw, y0 + ph))
        boxes.append(row)
    return boxes


class FlowNegatives(NegativeSource):
    """Synthetic negatives sampled from a jointly trained :class:`PatchFlow` (NFlowJS).

    per_image: patches per selected image (int, or (min, max) drawn uniformly); size_range: patch side range in px,
    clipped to the image size and rounded to multiples of ``flow.downsampling`` (height and width drawn
    independently); temperature: latent temperature; p: probability that an image receives negatives;
    grad_scale: factor on the gradient that reaches the flow through the pasted samples (forward unchanged). The
    trainer sets it to ``flow_js_weight / lam`` so the flow sees its own JS weight while the segmenter keeps ``lam``.
    """

    def __init__(self, flow: PatchFlow, per_image: int | tuple[int, int] = 1,
                 size_range: tuple[int, int] = (16, 216), temperature: float = 1.0, p: float = 1.0,
                 grad_scale: float = 1.0) -> None:
        super().__init__()
        _check_common(per_image, size_range, p)
        if not (math.isfinite(grad_scale) and grad_scale >= 0.0):
            raise ConfigError(f"grad_scale={grad_scale}: use a finite factor >= 0 (1.0 = the plain joint gradient)")
        self.flow, self.per_image, self.size_range = flow, per_image, tuple(size_range)
        self.temperature, self.p, self.grad_scale = float(temperature), float(p), float(grad_scale)

    def flow_parameters(self) -> list[nn.Parameter]:
        return list(self.flow.parameters())

    def _boxes(self, b: int, h: int, w: int, generator: torch.Generator | None) -> list[list[Box]]:
        return _sample_boxes(b, h, w, self.size_range, self.flow.downsampling, self.per_image, self.p, generator)

    @staticmethod
    def _by_size(boxes: list[list[Box]]) -> dict[tuple[int, int], list[tuple[int, Box]]]:
        groups: dict[tuple[int, int], list[tuple[int, Box]]] = {}
        for b, row in enumerate(boxes):
            for box in row:
                groups.setdefault((box[3] - box[1], box[2] - box[0]), []).append((b, box))
        return groups

    def paste(self, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Paste flow samples (one ``flow.sample`` call per distinct patch size); later patches overwrite earlier."""
        _check_batch(images, labels)
        b, _, h, w = images.shape
        boxes = self._boxes(b, h, w, generator)
        out = images.clone()
        mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        for (ph, pw), items in self._by_size(boxes).items():
            patches = self.flow.sample(len(items), ph, pw, self.temperature, generator).to(out.device, out.dtype)
            patches = scale_grad(patches, self.grad_scale)
            for j, (i, (x0, y0, x1, y1)) in enumerate(items):
                out[i, :, y0:y1, x0:x1] = patches[j]
                mask[i, y0:y1, x0:x1] = True
        self.last_boxes = boxes
        return out, labels.masked_fill(mask, IGNORE_INDEX), mask

    def inlier_nll(self, clean_images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Scalar: mean over the last paste boxes of the flow's bits/dim of the CLEAN image content there.

        clean_images: (B,3,H,W) in [0,1] (the batch before pasting, values k/255), detached here, so gradients
        reach only the flow. Uniformly dequantized (see PatchFlow.bits_per_dim). This is the flow's
        maximum-likelihood term; with no boxes it is a zero that still depends on the flow parameters.
        """
        x = clean_images.detach()
        bpd = []
        for (ph, pw), items in self._by_size(self.last_boxes).items():
            crops = torch.stack([x[i, :, y0:y1, x0:x1] for i, (x0, y0, x1, y1) in items])
            bpd.append(self.flow.bits_per_dim(crops, dequantize=True, generator=generator))
        if not bpd:
            return sum(p.sum() for p in self.flow.parameters()) * 0.0
        return torch.cat(bpd).mean()


class PasteNegatives(NegativeSource):
    """Crops of real outlier images from ``folder`` (searched recursively), e.g. ADE20K/COCO object cut-outs.

    RGBA images are object cut-outs: the crop is the bounding box of alpha > 127 and only those pixels become
    negatives. Other images give a random crop (patch aspect ratio, 25..100 % of the largest such crop) pasted as a
    rectangle or, with probability ``ellipse_prob``, an inscribed ellipse. Crops are resized with cv2 to the sampled
    size (side in ``size_range``, clipped to the image). A cut-out covering less than ``min_foreground`` of its patch
    is redrawn (up to 10 draws; the last draw is used after that). Images are read lazily, ``cache_size`` kept (LRU).
    """

    def __init__(self, folder: str | Path, per_image: int | tuple[int, int] = 1,
                 size_range: tuple[int, int] = (16, 216), min_foreground: float = 0.05, p: float = 1.0,
                 ellipse_prob: float = 0.5, cache_size: int = 32) -> None:
        super().__init__()
        _check_common(per_image, size_range, p)
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"negatives folder {folder} does not exist; give paste:DIR with a folder of outlier images")
        self.files = list_images(folder, recursive=True)
        if not self.files:
            raise DatasetError(f"negatives folder {folder} holds no images (.png/.jpg/.webp/...); add outlier images "
                               "(RGBA PNG cut-outs or plain photos) or choose another --negatives source")
        self.per_image, self.size_range, self.p = per_image, tuple(size_range), float(p)
        self.min_foreground, self.ellipse_prob, self.cache_size = float(min_foreground), float(ellipse_prob), cache_size
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def _load(self, idx: int) -> tuple[np.ndarray, np.ndarray | None]:
        if idx in self._cache:
            self._cache.move_to_end(idx)
            return self._cache[idx]
        item = read_image_alpha(self.files[idx])
        self._cache[idx] = item
        while len(self._cache) > max(self.cache_size, 1):
            self._cache.popitem(last=False)
        return item

    def _patch(self, ph: int, pw: int, generator: torch.Generator | None) -> tuple[np.ndarray, np.ndarray]:
        """(ph,pw,3) uint8 RGB and (ph,pw) bool negative mask."""
        for _ in range(10):
            idx = _randint(0, len(self.files) - 1, generator)
            rgb, alpha = self._load(idx)
            if alpha is not None:
                fg = alpha > 127
                ys, xs = np.nonzero(fg)
                if ys.size == 0:
                    raise DatasetError(f"{self.files[idx]} has an alpha channel but no pixel with alpha > 127; "
                                       "remove it or save it without alpha to use it as a plain crop")
                sl = np.s_[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                crop = cv2.resize(rgb[sl], (pw, ph), interpolation=cv2.INTER_LINEAR)
                m = cv2.resize(fg[sl].astype(np.uint8), (pw, ph), interpolation=cv2.INTER_NEAREST) > 0
            else:
                sh, sw = rgb.shape[:2]
                scale = 0.25 + 0.75 * _rand(generator)
                ch = max(1, min(sh, int(round(min(sh, sw * ph / pw) * scale))))
                cw = max(1, min(sw, int(round(ch * pw / ph))))
                cy, cx = _randint(0, sh - ch, generator), _randint(0, sw - cw, generator)
                crop = cv2.resize(rgb[cy:cy + ch, cx:cx + cw], (pw, ph), interpolation=cv2.INTER_LINEAR)
                if _rand(generator) < self.ellipse_prob:
                    yy = (np.arange(ph) + 0.5 - ph / 2) / (ph / 2)
                    xx = (np.arange(pw) + 0.5 - pw / 2) / (pw / 2)
                    m = yy[:, None] ** 2 + xx[None, :] ** 2 <= 1.0
                else:
                    m = np.ones((ph, pw), dtype=bool)
            if m.mean() >= self.min_foreground:
                break
        return crop.reshape(ph, pw, 3), m

    def paste(self, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_batch(images, labels)
        b, _, h, w = images.shape
        out = images.clone()
        mask = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        boxes = _sample_boxes(b, h, w, self.size_range, 1, self.per_image, self.p, generator)
        for i, row in enumerate(boxes):
            for x0, y0, x1, y1 in row:
                ph, pw = y1 - y0, x1 - x0
                rgb, m = self._patch(ph, pw, generator)
                patch = torch.from_numpy(rgb).permute(2, 0, 1).to(out.device, out.dtype) / 255.0
                mt = torch.from_numpy(m).to(out.device)
                out[i, :, y0:y1, x0:x1] = torch.where(mt, patch, out[i, :, y0:y1, x0:x1])
                mask[i, y0:y1, x0:x1] |= mt
        self.last_boxes = boxes
        return out, labels.masked_fill(mask, IGNORE_INDEX), mask


class VoidNegatives(NegativeSource):
    """The dataset's void/ignore pixels used as negatives ("background as OOD proxy").

    neg_mask = labels == ignore_index; images and labels are returned unchanged (the very same tensors; they are
    not modified). Use it only with datasets whose void pixels are real scene content (the caller decides).
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = int(ignore_index)

    def paste(self, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_batch(images, labels)
        self.last_boxes = [[] for _ in range(images.shape[0])]
        return images, labels, labels == self.ignore_index


class NoNegatives(NegativeSource):
    """Identity: no negatives (neg_mask all False); images and labels returned unchanged."""

    def paste(self, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        _check_batch(images, labels)
        self.last_boxes = [[] for _ in range(images.shape[0])]
        return images, labels, torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)


_KWARGS = {
    "flow": {"per_image", "size_range", "temperature", "p", "grad_scale"},
    "paste": {"per_image", "size_range", "min_foreground", "p", "ellipse_prob", "cache_size"},
    "void": {"ignore_index"},
    "none": set(),
}
_VALID_FORMS = "'flow', 'void', 'paste:DIR' (a folder of outlier images) or 'none'"


def build_negatives(spec: str, flow: PatchFlow | None = None, **kw) -> NegativeSource:
    """Parse ``spec`` ("flow" | "void" | "paste:DIR" | "none") into a NegativeSource.

    "flow" uses ``flow`` (a new default PatchFlow() when None; reach it through ``.flow`` / ``flow_parameters()``).
    Keyword options that belong to another source (any of per_image, size_range, temperature, p, grad_scale,
    min_foreground, ellipse_prob, cache_size, ignore_index) are accepted and ignored, so one config can serve every source;
    other keywords raise ConfigError.
    """
    known = set().union(*_KWARGS.values())
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ConfigError(f"unknown negative-source option(s) {unknown}; known: {sorted(known)}")
    s = str(spec).strip()
    kind = "paste" if s.startswith("paste:") else s
    if kind not in _KWARGS:
        raise ConfigError(f"unknown negatives {spec!r}; valid forms: {_VALID_FORMS}")
    opts = {k: v for k, v in kw.items() if k in _KWARGS[kind]}
    if kind == "flow":
        return FlowNegatives(flow if flow is not None else PatchFlow(), **opts)
    if kind == "paste":
        folder = s[len("paste:"):]
        if not folder:
            raise ConfigError(f"negatives {spec!r} names no folder; use paste:DIR, e.g. paste:data/ade_objects")
        return PasteNegatives(folder, **opts)
    if kind == "void":
        return VoidNegatives(**opts)
    return NoNegatives()


def paste_per_image(source: NegativeSource, images: torch.Tensor, labels: torch.Tensor, seeds: list[int],
                    inlier_nll: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Paste into every image with a generator keyed by its crop seed (the same on any rank or world size).

    images: (B,3,H,W) float in [0,1]; labels: (B,H,W) long; seeds: B ints. Returns (images, labels, neg_mask) as
    :meth:`NegativeSource.paste` plus, with ``inlier_nll`` (FlowNegatives only), the summed scalar
    ``inlier_nll`` of the clean content under each image's paste boxes (None otherwise).
    """
    parts_img, parts_lab, parts_neg, nlls = [], [], [], []
    for i in range(images.shape[0]):
        g = torch.Generator(device="cpu").manual_seed(seeds[i] ^ 0x5DEECE66D)
        im_i, lab_i, neg_i = source.paste(images[i:i + 1], labels[i:i + 1], generator=g)
        parts_img.append(im_i), parts_lab.append(lab_i), parts_neg.append(neg_i)
        if inlier_nll:
            gq = torch.Generator(device="cpu").manual_seed(seeds[i] ^ 0xDE0)
            nlls.append(source.inlier_nll(images[i:i + 1].detach(), generator=gq))
    flow_nll = torch.stack([n.reshape(()) for n in nlls]).sum() if nlls else None
    return torch.cat(parts_img), torch.cat(parts_lab), torch.cat(parts_neg), flow_nll
