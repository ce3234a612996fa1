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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DenseOODError
from ..s2m.boxes import box_iou_np, boxes_from_mask
from ..s2m.learned import LearnedPrompter, quantile_levels

__all__ = ["train_prompter", "calibrate_score_thresh", "store_prompter_in_checkpoint", "load_flow"]


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
                   negatives: str = "flow", score: str = "jsd", steps: int = 300, batch_size: int = 4, crop: int = 256,
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
    from tqdm import tqdm

    from ..models.checkpoint import read_checkpoint
    from ..models.sources import load_model
    from .negatives import build_negatives

    if steps < 1 or batch_size < 1 or crop < 32:
        raise ConfigError(f"train-prompter: need steps >= 1, batch_size >= 1, crop >= 32 (got {steps}, {batch_size}, {crop})")
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

    neg_spec = str(negatives)
    size = (raw.get("config") or {}).get("neg_size") or (16, 128)
    opts = {"per_image": (1, 3), "size_range": (int(size[0]), int(size[1]))}
    if neg_spec == "flow":
        source = build_negatives("flow", flow=load_flow(raw), **opts)
    elif neg_spec.startswith("paste:"):
        source = build_negatives(neg_spec, **opts)
    else:
        raise ConfigError(f"train-prompter --negatives must be 'flow' or 'paste:DIR', got {negatives!r}")

    from ..data import open_dataset

    ds = open_dataset(dataset, dataset_root, "train")
    if len(ds) == 0:
        raise ConfigError(f"dataset {dataset!r} at {dataset_root} has no training images")

    # 1) pool of (score map, pasted mask[, image]) at native resolution
    n_pool = min(pool_size, max(len(ds), 1) * 4, steps * batch_size)
    perm = rng.permutation(len(ds))
    order = perm[:n_pool] if len(ds) >= n_pool else np.resize(perm, n_pool)
    maps: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    imgs: list[np.ndarray] = []
    it = tqdm(order, desc="scoring pasted images", disable=not progress, leave=False)
    for idx in it:
        s = ds[int(idx)]
        img = torch.from_numpy(np.ascontiguousarray(s.image)).permute(2, 0, 1)[None].float() / 255.0
        lab = s.semantic if getattr(s, "semantic", None) is not None else np.zeros(s.image.shape[:2], np.uint8)
        lab_t = torch.from_numpy(np.asarray(lab, np.int64))[None]
        with torch.no_grad():
            pasted, _, neg = source.paste(img, lab_t, gen)
        u8 = (pasted[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()
        amap = engine.predict(u8[None].numpy())[score][0].float().cpu().numpy()
        maps.append(amap.astype(np.float16))
        masks.append(neg[0].cpu().numpy().astype(bool))
        if input == "score+image":
            imgs.append(u8.numpy())
    ref_height = int(np.median([m.shape[0] for m in maps]))

    n_px = sum(m.size for m in maps)
    sel = rng.random(n_px) < min(1.0, 4e6 / max(1, n_px))
    allv = np.concatenate([m.reshape(-1).astype(np.float32) for m in maps])[sel]
    quantiles = np.quantile(allv.astype(np.float64), quantile_levels())

    if score_thresh != "auto" and not (isinstance(score_thresh, (int, float)) and 0 <= score_thresh <= 1):
        raise ConfigError(f"train-prompter --score-thresh must be 'auto' or a number in [0,1], got {score_thresh!r}")
    prompter = LearnedPrompter.build(backbone, input=input, quantiles=quantiles, ref_height=ref_height,
                                     score_thresh=0.3 if score_thresh == "auto" else float(score_thresh),
                                     score_name=score, device=dev)
    det = prompter.model
    det.train()
    opt = torch.optim.AdamW(det.parameters(), lr=lr, weight_decay=1e-4)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps)))

    def sample_crop(j: int) -> tuple[torch.Tensor, dict]:
        amap, m = maps[j].astype(np.float32), masks[j]
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
        sh, sw = x.shape[-2:]
        b = boxes_from_mask(np.ascontiguousarray(mm), min_box_area) * s
        b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, sw)
        b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, sh)
        b = b[(b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)]
        return x, {"boxes": torch.from_numpy(b), "labels": torch.zeros(len(b), dtype=torch.int64)}

    # hold out a part of the pool to calibrate the confidence cut (score_thresh="auto")
    n_cal = len(maps) // 5 if (score_thresh == "auto" and len(maps) >= 5) else 0
    n_train = len(maps) - n_cal
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(steps), desc="train prompter", disable=not progress)
    for step in bar:
        batch = [sample_crop(int(rng.integers(n_train))) for _ in range(batch_size)]
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
    cal: dict = {}
    if score_thresh == "auto":
        idx = range(n_train, len(maps)) if n_cal else range(len(maps))
        prompter.score_thresh, cal = calibrate_score_thresh(
            prompter, [maps[j].astype(np.float32) for j in idx], [boxes_from_mask(masks[j], min_box_area) for j in idx],
            [imgs[j] for j in idx] if imgs else None)
    prompter.train_info = {"steps": steps, "batch_size": batch_size, "crop": crop, "lr": lr, "seed": seed,
                           "negatives": neg_spec, "dataset": dataset, "pool": len(maps), "calibration": cal,
                           "final_loss": float(np.mean(losses[-20:])), "seconds": round(time.time() - t0, 1)}
    return prompter.to("cpu")


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
