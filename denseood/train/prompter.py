"""Training of the S2M learned prompter on inlier images with pasted negatives, and its calibration.

:func:`train_prompter` needs no OOD data: negatives (flow samples or pasted objects, ``denseood.train.negatives``)
are pasted into inlier training images, the connected components of the pasted mask are exact target boxes and
the segmenter's own score maps of those images are the detector input. :func:`calibrate_score_thresh` sets the
prompter's confidence cut for box F1 on held-out pasted images; :func:`store_prompter_in_checkpoint` writes the
trained prompter into a segmenter checkpoint's ``extra["prompter"]`` (where ``denseood.s2m.pipeline`` finds it).
See docs/architecture.md.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DenseOODError
from ..s2m.boxes import box_iou_np, boxes_from_mask
from ..s2m.learned import LearnedPrompter, quantile_levels
from ..scores.names import DEFAULT_SCORE

__all__ = ["train_prompter", "calibrate_score_thresh", "store_prompter_in_checkpoint", "load_flow", "MIN_HELDOUT_F1",
           "heldout_f1", "weak_prompter_note", "fallback_prompter_path"]

#: held-out box F1 (IoU 0.5, :func:`calibrate_score_thresh`) below which a trained prompter is called useless:
#: ``denseood train-prompter`` then warns and keeps it out of an existing checkpoint unless ``--force``
MIN_HELDOUT_F1 = 0.1


def load_flow(raw: dict) -> Any:
    """PatchFlow of a checkpoint (``extra["train_state"]["flow"]`` of a resumable NFlowJS checkpoint, shaped by
    :func:`denseood.models.flow.flow_from_config` from its config), else an untrained PatchFlow of that shape
    (noise-like samples, as NFlowJS starts). raw: the checkpoint dict (``read_checkpoint``)."""
    from ..models.flow import flow_from_config

    cfg = raw.get("config") or {}
    st = ((raw.get("extra") or {}).get("train_state") or {}).get("flow")
    if isinstance(st, dict):
        try:
            flow = flow_from_config(cfg)
            flow.load_state_dict(st)
            print("note: using the checkpoint's trained flow for negatives")
            return flow
        except Exception as e:  # noqa: BLE001
            print(f"note: the checkpoint's flow could not be restored ({e}); using an untrained flow")
    return flow_from_config(cfg)


def train_prompter(model_ckpt: str | Path | nn.Module, dataset_root: str | Path, *, dataset: str = "synthetic",
                   negatives: str = "flow", score: str = DEFAULT_SCORE, steps: int = 300, batch_size: int = 4, crop: int = 256,
                   lr: float = 1e-3, device: str = "auto", seed: int = 0, backbone: str = "tiny",
                   input: str = "score", pool_size: int = 128, score_thresh: float | str = "auto", min_box_area: int = 16,
                   progress: bool = True, weights: str | Path | None = None,
                   trust_code: bool = False) -> LearnedPrompter:
    """Train a :class:`LearnedPrompter` for a segmenter.

    Data: ``pool_size`` inlier training images of ``dataset`` at ``dataset_root`` get negatives pasted by the
    negative source ``negatives`` ("flow": samples of the checkpoint's flow, or an untrained flow when the
    checkpoint has none; "paste:DIR": objects cut from images in DIR), 1 to 3 per image with sides in the
    checkpoint config's ``neg_size`` (default 16..128 px); the segmenter scores each full image
    exactly as at test time (Inference). Targets are the exact boxes of the 8-connected components of the
    pasted mask (>= ``min_box_area`` px). Each step takes ``batch_size`` random ``crop`` x ``crop`` crops
    (70 % centred on a pasted object) with random horizontal flips and, half of the time, the contrast of the
    pasted objects against the background shrunk by a random factor in [0.3, 1] (real anomalies excite the
    segmenter less than its own training negatives). Calibration: the quantiles of the pool's pixel scores
    (:func:`quantile_levels`). score_thresh "auto": a fifth of the pool (when it has >= 5
    images) is held out of training and the confidence cut is set to the detector score that maximises box F1
    at IoU 0.5 on it (:func:`calibrate_score_thresh`); a number fixes the cut. weights / trust_code: as in
    ``load_model`` (the user names the code on the command line). Returns the trained prompter (on CPU, eval mode).
    """
    from ..models.checkpoint import read_checkpoint
    from ..models.sources import load_model
    from .negatives import build_negatives

    _check_options(steps, batch_size, crop, score_thresh)
    from ..dist import resolve_device
    from ..infer import Inference

    dev = resolve_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    raw: dict = {}
    if isinstance(model_ckpt, nn.Module):
        segmenter = model_ckpt
    else:
        segmenter = load_model(model_ckpt, map_location="cpu", weights=weights, trust_code=trust_code)  # any spec: .pt | hf: | torchvision: | python:
        raw = read_checkpoint(segmenter.origin.path) if segmenter.origin.kind == "checkpoint" else {}
    segmenter.eval()
    engine = Inference(segmenter, scores=(score,), device=str(dev), dtype="fp32")
    neg_name, neg_options = _negative_options(negatives, raw)
    source = build_negatives(neg_name, **neg_options)
    ds = _training_split(dataset, dataset_root)
    order = _pool_order(rng, len(ds), min(pool_size, max(len(ds), 1) * 4, steps * batch_size))
    pool = _score_pool(engine, score, ds, order, source, gen, input == "score+image", progress)
    prompter = LearnedPrompter.build(backbone, input=input, quantiles=_pool_quantiles(pool.maps, rng),
                                     ref_height=int(np.median([m.shape[0] for m in pool.maps])),
                                     score_thresh=0.3 if score_thresh == "auto" else float(score_thresh),
                                     score_name=score, device=dev)
    # a fifth of the pool is held out to calibrate the confidence cut (score_thresh="auto", >= 5 images)
    n_train = len(pool.maps) - (len(pool.maps) // 5 if (score_thresh == "auto" and len(pool.maps) >= 5) else 0)
    t0 = time.time()
    losses = _fit_detector(prompter, _CropSampler(pool, prompter, crop, min_box_area, rng), n_train, steps=steps,
                           batch_size=batch_size, lr=lr, dev=dev, rng=rng, progress=progress)
    cal = _calibrate_on_pool(prompter, pool, n_train, min_box_area) if score_thresh == "auto" else {}
    prompter.train_info = {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed,
                           "negatives": str(negatives), "dataset": dataset, "pool": len(pool.maps), "calibration": cal,
                           "final_loss": float(np.mean(losses[-20:])), "seconds": round(time.time() - t0, 1)}
    return prompter.to("cpu")


def _check_options(steps: int, batch_size: int, crop: int, score_thresh: float | str) -> None:
    """ConfigError unless steps >= 1, batch_size >= 1, crop >= 32 and score_thresh is "auto" or in [0, 1]."""
    if steps < 1 or batch_size < 1 or crop < 32:
        raise ConfigError(f"train-prompter: need steps >= 1, batch_size >= 1, crop >= 32 (got {steps}, {batch_size}, {crop})")
    if score_thresh != "auto" and not (isinstance(score_thresh, (int, float)) and 0 <= score_thresh <= 1):
        raise ConfigError(f"train-prompter --score-thresh must be 'auto' or a number in [0,1], got {score_thresh!r}")


def _negative_options(negatives: str, raw: dict) -> tuple[str, dict]:
    """(name, keywords) of ``build_negatives`` for ``--negatives`` ("flow": the checkpoint's flow,
    :func:`load_flow`; "paste:DIR"): 1 to 3 per image, sides in the checkpoint config's ``neg_size``
    (default 16..128 px). raw: the checkpoint dict ({} for a model that is not a denseood checkpoint)."""
    neg_spec = str(negatives)
    size = (raw.get("config") or {}).get("neg_size") or (16, 128)
    opts = {"per_image": (1, 3), "size_range": (int(size[0]), int(size[1]))}
    if neg_spec == "flow":
        return "flow", {"flow": load_flow(raw), **opts}
    if neg_spec.startswith("paste:"):
        return neg_spec, opts
    raise ConfigError(f"train-prompter --negatives must be 'flow' or 'paste:DIR', got {negatives!r}")


def _training_split(dataset: str, dataset_root: str | Path) -> Any:
    """The training split of ``dataset`` at ``dataset_root``; ConfigError when it has no images."""
    from ..data import open_dataset

    ds = open_dataset(dataset, dataset_root, "train")
    if len(ds) == 0:
        raise ConfigError(f"dataset {dataset!r} at {dataset_root} has no training images")
    return ds


def _pool_order(rng: np.random.Generator, n_images: int, n_pool: int) -> np.ndarray:
    """``n_pool`` image indices: a random permutation of the ``n_images``, repeated when it is shorter."""
    perm = rng.permutation(n_images)
    return perm[:n_pool] if n_images >= n_pool else np.resize(perm, n_pool)


@dataclass
class _Pool:
    """The prompter's training pool at native resolution: per image the segmenter's score map ((H,W) float16),
    the pasted mask ((H,W) bool) and, for the "score+image" input, the pasted image ((H,W,3) uint8; else empty)."""

    maps: list[np.ndarray]
    masks: list[np.ndarray]
    imgs: list[np.ndarray]


def _score_pool(engine: Any, score: str, ds: Any, order: np.ndarray, source: Any, gen: torch.Generator,
                keep_images: bool, progress: bool) -> _Pool:
    """Paste negatives (``source``, drawing from ``gen``) into the images ``order`` of ``ds`` and score each
    pasted image with ``engine`` (an ``Inference``) exactly as at test time."""
    from ..progress import progress_bar

    pool = _Pool([], [], [])
    it = progress_bar(order, desc="scoring pasted images", disable=not progress, leave=False)
    for idx in it:
        s = ds[int(idx)]
        img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1)[None].float() / 255.0
        lab = s.semantic if getattr(s, "semantic", None) is not None else np.zeros(s.image.shape[:2], np.uint8)
        lab_t = torch.from_numpy(np.asarray(lab, np.int64))[None]
        with torch.no_grad():
            pasted, _, neg = source.paste(img, lab_t, gen)
        u8 = (pasted[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
        amap = engine.predict(u8[None].numpy())[score][0].float().cpu().numpy()
        pool.maps.append(amap.astype(np.float16))
        pool.masks.append(neg[0].cpu().numpy().astype(bool))
        if keep_images:
            pool.imgs.append(u8.numpy())
    return pool


def _pool_quantiles(maps: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Quantiles (:func:`quantile_levels`) of the pool's pixel scores, from about 4e6 random pixels at most."""
    n_px = sum(m.size for m in maps)
    sel = rng.random(n_px) < min(1.0, 4e6 / max(1, n_px))
    allv = np.concatenate([m.reshape(-1).astype(np.float32) for m in maps])[sel]
    return np.quantile(allv.astype(np.float64), quantile_levels())


class _CropSampler:
    """Random training crops of the pool: ``crop`` x ``crop`` (70 % centred on a pasted object), random
    horizontal flips and, half of the time, the pasted objects' contrast shrunk by a factor in [0.3, 1]; each
    as the prompter's input with its target boxes."""

    def __init__(self, pool: _Pool, prompter: LearnedPrompter, crop: int, min_box_area: int,
                 rng: np.random.Generator):
        self.pool, self.prompter, self.crop, self.min_box_area, self.rng = pool, prompter, crop, min_box_area, rng

    def __call__(self, j: int) -> tuple[torch.Tensor, dict]:
        """Crop of pool image ``j`` -> (input (C,h,w) float32, {"boxes": (K,4) float xyxy, "labels": (K,) 0})."""
        rng, crop, prompter, imgs = self.rng, self.crop, self.prompter, self.pool.imgs
        amap, m = self.pool.maps[j].astype(np.float32), self.pool.masks[j]
        h, w = amap.shape
        ch, cw = min(crop, h), min(crop, w)
        ys, xs = np.nonzero(m)
        if len(ys) and rng.random() < 0.7:
            k = rng.integers(len(ys))
            y0 = int(np.clip(ys[k] - ch // 2 + rng.integers(-ch // 4, ch // 4 + 1), 0, h - ch))
            x0 = int(np.clip(xs[k] - cw // 2 + rng.integers(-cw // 4, cw // 4 + 1), 0, w - cw))
        else:
            y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        a = amap[y0:y0 + ch, x0:x0 + cw]
        mm = m[y0:y0 + ch, x0:x0 + cw]
        im = imgs[j][y0:y0 + ch, x0:x0 + cw] if imgs else None
        if rng.random() < 0.5:
            a, mm = a[:, ::-1], mm[:, ::-1]
            im = im[:, ::-1] if im is not None else None
        n = prompter.calibrate(a)
        if mm.any() and rng.random() < 0.5:
            # weaker responses than the segmenter gives its own training negatives: shrink the contrast of the
            # pasted objects against the crop's background level by a random factor
            bg = float(np.median(n[~mm])) if (~mm).any() else 0.0
            f = float(rng.uniform(0.3, 1.0))
            n = np.where(mm & (n > bg), bg + (n - bg) * f, n).astype(np.float32)
        # the pool is stored at native scale: the prompter's rescale to ref_height is applied by make_input
        s = prompter.scale_for(h)
        x = prompter.make_input(np.ascontiguousarray(n), None if im is None else np.ascontiguousarray(im), scale=s,
                                calibrated=True)
        b = self._boxes(mm, s, tuple(x.shape[-2:]))
        return x, {"boxes": torch.from_numpy(b), "labels": torch.zeros(len(b), dtype=torch.int64)}

    def _boxes(self, mm: np.ndarray, s: float, shape: tuple[int, int]) -> np.ndarray:
        """(K,4) xyxy boxes of the components of crop mask ``mm`` (>= min_box_area px), scaled by ``s`` and
        clipped to the input ``shape`` (h, w); boxes thinner than 1 px dropped."""
        sh, sw = shape
        b = boxes_from_mask(np.ascontiguousarray(mm), self.min_box_area) * s
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, sw)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, sh)
        return b[(b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)]


def _fit_detector(prompter: LearnedPrompter, sampler: _CropSampler, n_train: int, *, steps: int, batch_size: int,
                  lr: float, dev: torch.device, rng: np.random.Generator, progress: bool) -> list[float]:
    """Train the prompter's detector on crops of the first ``n_train`` pool images (AdamW, linear warm-up over
    a twentieth of the steps, then cosine decay; gradients clipped at 10). Returns the loss of every step;
    DenseOODError when it is not finite."""
    from ..progress import progress_bar

    det = prompter.model
    det.train()
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))
    losses: list[float] = []
    bar = progress_bar(range(steps), desc="train prompter", disable=not progress)
    for step in bar:
        batch = [sampler(int(rng.integers(n_train))) for _ in range(batch_size)]
        xs_ = [b[0].to(dev) for b in batch]
        tg = [{k: v.to(dev) for k, v in b[1].items()} for b in batch]
        loss_d = det(xs_, tg)
        loss = sum(loss_d.values())
        if not torch.isfinite(loss):
            raise DenseOODError(f"prompter training diverged at step {step} (loss {float(loss)}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(det.parameters(), 10.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    det.eval()
    return losses


def _calibrate_on_pool(prompter: LearnedPrompter, pool: _Pool, n_train: int, min_box_area: int) -> dict:
    """Set ``prompter.score_thresh`` for box F1 on the held-out pool images (from ``n_train`` on; the whole pool
    when none is held out) and return the calibration figures (:func:`calibrate_score_thresh`)."""
    idx = range(n_train, len(pool.maps)) if n_train < len(pool.maps) else range(len(pool.maps))
    prompter.score_thresh, cal = calibrate_score_thresh(
        prompter, [pool.maps[j].astype(np.float32) for j in idx],
        [boxes_from_mask(pool.masks[j], min_box_area) for j in idx], [pool.imgs[j] for j in idx] if pool.imgs else None)
    return cal


def calibrate_score_thresh(prompter: LearnedPrompter, maps: list[np.ndarray], gt_boxes: list[np.ndarray],
                           images: list[np.ndarray] | None = None, iou: float = 0.5) -> tuple[float, dict]:
    """The confidence cut that maximises box F1 (a detection is a true positive when it matches a still
    unmatched ground-truth box with IoU >= ``iou``, greedily by score) on held-out pasted images.

    Returns (threshold, {"f1", "precision", "recall", "n_gt", "images"}). With no ground-truth boxes or no
    detections the prompter's current cut is kept.
    """
    keep_thr = prompter.score_thresh
    prompter.score_thresh = 0.0
    try:
        dets = [prompter.detect(m, None if images is None else images[i]) for i, m in enumerate(maps)]
    finally:
        prompter.score_thresh = keep_thr
    n_gt = int(sum(len(g) for g in gt_boxes))
    scores, tp = [], []
    for (b, sc), g in zip(dets, gt_boxes):
        ious = box_iou_np(b, g) if len(g) else np.zeros((len(b), 0))
        used = np.zeros(len(g), bool)
        for i in np.argsort(-sc, kind="stable"):
            j = int(np.argmax(np.where(used, -1.0, ious[i]))) if len(g) else -1
            hit = j >= 0 and not used[j] and ious[i, j] >= iou
            if hit:
                used[j] = True
            scores.append(float(sc[i]))
            tp.append(hit)
    if n_gt == 0 or not scores:
        return keep_thr, {"n_gt": n_gt, "images": len(maps), "kept": True}
    order = np.argsort(-np.asarray(scores), kind="stable")
    s_sorted = np.asarray(scores)[order]
    ctp = np.cumsum(np.asarray(tp)[order])
    k = np.arange(1, len(order) + 1)
    f1 = 2 * ctp / (k + n_gt)
    # only cut between distinct scores; the threshold is the score of the last kept detection
    last = np.r_[s_sorted[1:] < s_sorted[:-1], True]
    best = int(np.argmax(np.where(last, f1, -1.0)))
    thr = float(s_sorted[best])
    return thr, {"f1": float(f1[best]), "precision": float(ctp[best] / (best + 1)), "recall": float(ctp[best] / n_gt),
                 "n_gt": n_gt, "images": len(maps)}


def require_checkpoint_for_storage(spec: str | Path) -> None:
    """ConfigError unless ``spec`` is a denseood checkpoint, which can hold the prompter in ``extra``."""
    from ..models.sources import parse_spec

    kind = parse_spec(spec)[0]   # before the model loads: refused before any training
    if kind != "checkpoint":
        raise ConfigError(f"train-prompter: --checkpoint {spec} is a {kind}: model, not a denseood checkpoint, so the "
                          f"prompter cannot be stored inside it; pass --out FILE (then use it with --prompter FILE)")


def store_prompter_in_checkpoint(prompter: LearnedPrompter, checkpoint: str | Path) -> Path:
    """Rewrite the segmenter checkpoint atomically with ``extra["prompter"] = prompter.state()`` (other extra
    entries, config and metrics kept). ``checkpoint`` must be a denseood checkpoint: for an ``hf:`` /
    ``torchvision:`` / ``python:`` spec (a model file denseood does not own) a ConfigError asks for ``--out FILE``."""
    from ..models.checkpoint import read_checkpoint, save_checkpoint
    from ..models.sources import load_checkpoint

    require_checkpoint_for_storage(checkpoint)

    raw = read_checkpoint(checkpoint)
    extra = dict(raw.get("extra") or {})
    extra["prompter"] = prompter.state()
    model = load_checkpoint(checkpoint, map_location="cpu")
    save_checkpoint(model, checkpoint, config=raw.get("config"), metrics=raw.get("metrics"), extra=extra)
    return Path(checkpoint)


def heldout_f1(prompter: LearnedPrompter) -> float | None:
    """The held-out box F1 in [0, 1] of a prompter trained with ``score_thresh="auto"``: 0.0 when the held-out
    images had target boxes but the detector found nothing; None when it was not calibrated (a fixed cut) or
    the held-out images had no target boxes."""
    cal = (getattr(prompter, "train_info", None) or {}).get("calibration") or {}
    if "f1" in cal:
        return float(cal["f1"])
    return 0.0 if int(cal.get("n_gt", 0)) > 0 else None


def weak_prompter_note(prompter: LearnedPrompter) -> str | None:
    """One line saying that the prompter's held-out box F1 is below :data:`MIN_HELDOUT_F1`, else None (also when
    the F1 is unknown, :func:`heldout_f1`)."""
    f1 = heldout_f1(prompter)
    if f1 is None or f1 >= MIN_HELDOUT_F1:
        return None
    steps = (prompter.train_info or {}).get("steps")
    return (f"the prompter's held-out box F1 is {f1:.3f}, below the floor {MIN_HELDOUT_F1} (after {steps} steps): "
            f"its boxes are likely useless; train longer (--steps)")


def fallback_prompter_path(checkpoint: str | Path) -> Path:
    """Where a prompter below the F1 floor goes instead of into ``checkpoint``: ``NAME.prompter.pt`` beside it
    (``model.pt`` -> ``model.prompter.pt``); ``--prompter auto`` does not look there."""
    p = Path(checkpoint)
    return p.with_name(f"{p.stem}.prompter.pt")
