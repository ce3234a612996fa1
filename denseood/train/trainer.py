"""Segmenter training and fine-tuning with negatives (NFlowJS when ``negatives="flow"``), single process or DDP.

Phases over one global step counter (so ``--resume`` lands anywhere):

1. ``pretrain_steps``       segmenter only, cross-entropy, no negatives;
2. ``flow_pretrain_steps``  flow only, maximum likelihood on inlier crops (only with ``negatives="flow"``);
3. ``steps``                joint: CE on inliers + lam * JS(softmax || uniform) on negative pixels;
                            the flow gets its NLL on the inlier patches under the paste boxes plus the
                            same JS term through its samples.

Determinism: the data order, the augmentation of every crop and the negatives pasted into it are functions
of (seed, global step, position in the global batch) only. A run resumed from a checkpoint therefore sees
exactly the batches it would have seen, and a DDP run over N ranks sees the same global batch as one
process (each rank takes a contiguous slice). Losses are normalised by the global pixel counts, so the
gradients (and the logged losses) of an N-rank run equal those of one process with the same global batch.

The pieces live beside it: :mod:`.config` (TrainConfig), :mod:`.sampling` (data plan, loader, schedule),
:mod:`.negatives`, :mod:`.losses`, :mod:`.flow_monitor`; ``denseood train`` is :mod:`denseood.commands.train`.
See docs/architecture.md.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .. import dist
from ..config import dump_yaml, to_dict
from ..errors import ConfigError
from ..io import atomic_write_json, check_writable_dir, clean_stale_temp
from .config import IGNORE, TrainConfig
from .flow_monitor import heldout_bpd, heldout_patches, init_flow_actnorm, patch_size, save_flow_samples
from .losses import global_counts, global_segmenter_loss, reduce_terms
from .model_setup import allreduce_grads, build_model, class_logits, freeze_bn
from .negatives import build_negatives, paste_per_image
from .resume import restore_train_state, train_state
from .sampling import (CropDataset, StepBatchSampler, TrainData, seed_of, collate, flow_pretrain_box, global_batch_plan,
                       lr_factor, make_loader, open_train_data, val_spec)
from .validation import validate_segmenter

__all__ = ["Trainer", "TrainConfig", "IGNORE", "global_batch_plan", "StepBatchSampler", "CropDataset", "TrainData",
           "collate", "lr_factor", "make_loader", "open_train_data", "val_spec"]


class Trainer:
    """Builds datasets, model, flow, negatives and optimisers from a TrainConfig and runs the phases."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True, trust_code: bool = False):
        cfg.validate()
        self.cfg, self.resume, self.progress = cfg, resume, progress
        self.trust_code = bool(trust_code)   # --trust-code: a --init checkpoint may import the code it records
        self.distributed = dist.init_from_env()
        self.rank, self.world = dist.rank(), dist.world_size()
        self.device = dist.resolve_device(cfg.device)
        self.out = Path(cfg.out)
        check_writable_dir(self.out, "--out")  # before any data or model is loaded
        clean_stale_temp(self.out)
        self._setup_data()
        torch.manual_seed(cfg.seed)  # initial weights of segmenter and flow
        self._setup_model()
        self._setup_negatives()
        self._setup_optim()
        self.step = 0
        self.best: dict[str, Any] = {}
        self.history: list[dict] = []
        if resume:
            self._load_resume()

    # ---- setup
    def _setup_data(self) -> None:
        data = open_train_data(self.cfg)
        self.train_set, self.crops, self.val_set = data.train_set, data.crops, data.val_set
        self.num_classes, self.frame_size = data.num_classes, data.frame_size

    def _setup_model(self) -> None:
        self.model = build_model(self.cfg, self.num_classes, self.train_set.class_names, self.train_set.class_set,
                                 self.frame_size, self.device, self.distributed, trust_code=self.trust_code)
        self.ddp_model = self.model
        if self.distributed:
            dev_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=dev_ids)

    def _setup_negatives(self) -> None:
        cfg = self.cfg
        self.flow = None
        if cfg.negatives == "flow":
            from ..models.flow import flow_from_config

            self.flow = flow_from_config(to_dict(cfg)).to(self.device)
            lo, hi = cfg.neg_size
            hi = min(hi, cfg.crop)
            self.negatives = build_negatives("flow", flow=self.flow, per_image=cfg.neg_per_image, size_range=(lo, hi),
                                             temperature=cfg.neg_temperature, grad_scale=self.flow_grad_scale)
            # data-dependent ActNorm init on fixed inlier patches: the same on every rank and world size
            init_flow_actnorm(self.flow, self.train_set, cfg.crop, cfg.seed, self.device)
        elif cfg.negatives.startswith("paste:"):
            lo, hi = cfg.neg_size
            self.negatives = build_negatives(cfg.negatives, per_image=cfg.neg_per_image, size_range=(lo, min(hi, cfg.crop)))
        else:
            self.negatives = build_negatives(cfg.negatives)

    def _setup_optim(self) -> None:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            self.opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.flow_opt = torch.optim.Adam(self.flow.parameters(), lr=cfg.flow_lr) if self.flow is not None else None
        self.scaler = None
        if cfg.amp == "fp16":
            if self.device.type != "cuda":
                raise ConfigError("--amp fp16 needs CUDA (GradScaler); use --amp bf16 on CPU")
            self.scaler = torch.amp.GradScaler("cuda")

    @property
    def flow_grad_scale(self) -> float:
        """Factor on the gradient reaching the flow through its samples: ``flow_js_weight / lam`` (1 when unset)."""
        cfg = self.cfg
        if cfg.flow_js_weight is None or cfg.lam == 0:
            return 1.0
        return cfg.flow_js_weight / cfg.lam

    # ---- phases
    def phase_of(self, step: int) -> tuple[str, int, int]:
        """(phase name, phase start step, phase length) of global ``step``."""
        cfg = self.cfg
        pre = cfg.pretrain_steps
        fpre = cfg.flow_pretrain_steps if self.flow is not None else 0
        if step < pre:
            return "pretrain", 0, pre
        if step < pre + fpre:
            return "flow_pretrain", pre, fpre
        return "joint", pre + fpre, cfg.steps

    # ---- one step
    def _autocast(self):
        if self.cfg.amp == "none":
            return torch.autocast(self.device.type, enabled=False)
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def train_step(self, step: int, images_u8: torch.Tensor, labels: torch.Tensor, seeds: list[int]) -> dict[str, float]:
        """One optimisation step on this rank's slice; returns the globally reduced loss terms."""
        cfg = self.cfg
        phase, start, length = self.phase_of(step)
        torch.manual_seed(seed_of(cfg.seed, 41, step, self.rank))
        images = images_u8.to(self.device, non_blocking=True).float().div_(255.0)
        labels = labels.to(self.device, non_blocking=True)
        f = lr_factor(cfg, step, start, length)
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * f
        if self.flow_opt is not None:
            for g in self.flow_opt.param_groups:
                g["lr"] = cfg.flow_lr * f

        if phase == "flow_pretrain":
            return self._flow_pretrain_step(images, seeds)

        self.model.train()
        if cfg.freeze_bn:
            freeze_bn(self.model)
        use_neg = phase == "joint" and cfg.negatives != "none"
        flow_nll = None
        if use_neg:
            images, labels, neg_mask, flow_nll = paste_per_image(self.negatives, images, labels, seeds,
                                                                 inlier_nll=self.flow is not None)
        else:
            neg_mask = torch.zeros_like(labels, dtype=torch.bool)

        x = self.model.normalize(images * 255.0)
        with self._autocast():
            logits = self.ddp_model(x)
        logits = class_logits(logits.float(), self.model)
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)

        n_lab, n_neg, n_img = global_counts(labels, neg_mask, IGNORE)
        loss, terms = global_segmenter_loss(logits, labels, neg_mask, cfg.lam, (n_lab, n_neg, n_img), IGNORE)
        total = loss
        if flow_nll is not None:
            # One joint objective minimised w.r.t. segmenter and flow: the segmenter gets CE + lam*JS, the flow
            # gets its NLL on the inlier patches under the paste boxes + the same lam*JS through its samples
            # (which pushes samples towards inputs where the segmenter is uncertain: the inlier border);
            # with flow_js_weight set, FlowNegatives rescales the samples' gradient so the flow sees that weight.
            total = loss + flow_nll / n_img * self.world
            terms["flow_nll"] = flow_nll.detach()
        step_flow = self.flow_opt is not None and flow_nll is not None
        self._optimise(total, segmenter=True, flow=step_flow, scaler=self.scaler)
        return self._reduce_terms(terms, n_lab, n_neg, n_img)

    def _flow_pretrain_step(self, images: torch.Tensor, seeds: list[int]) -> dict[str, float]:
        """Flow maximum likelihood on random inlier crops (sizes as the pasted negatives will have)."""
        cfg = self.cfg
        ds = self.flow.downsampling
        nll_sum = torch.zeros((), device=self.device)
        for i in range(images.shape[0]):
            y, x, s = flow_pretrain_box(seeds[i], cfg.neg_size, images.shape[-2], images.shape[-1], ds)
            patch = images[i:i + 1, :, y:y + s, x:x + s]
            gq = torch.Generator(device="cpu").manual_seed(seeds[i] ^ 0xDE0)
            nll_sum = nll_sum + self.flow.bits_per_dim(patch, generator=gq).sum()
        cnt = torch.tensor([float(images.shape[0])], dtype=torch.float64)
        dist.all_reduce_sum(cnt)
        loss = nll_sum / float(cnt) * self.world
        self._optimise(loss, segmenter=False, flow=True, scaler=None)
        t = torch.tensor([float(nll_sum.detach())], dtype=torch.float64)
        dist.all_reduce_sum(t)
        return {"flow_bpd": float(t) / float(cnt), "phase": "flow_pretrain"}

    def _optimise(self, total: torch.Tensor, segmenter: bool, flow: bool, scaler: Any = None) -> None:
        """Back-propagate ``total`` (scaled by the fp16 GradScaler when given), average the flow's gradients over
        ranks, clip, and step the segmenter's and/or the flow's optimiser."""
        optimizers = ([self.opt] if segmenter else []) + ([self.flow_opt] if flow else [])
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(total).backward()
            for o in optimizers:
                scaler.unscale_(o)
        else:
            total.backward()
        if flow:
            allreduce_grads(list(self.flow.parameters()))
        if self.cfg.grad_clip:
            if segmenter:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
            if flow:
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), self.cfg.grad_clip)
        for o in optimizers:
            scaler.step(o) if scaler is not None else o.step()
        if scaler is not None:
            scaler.update()

    def _reduce_terms(self, terms: dict[str, torch.Tensor], n_lab: float, n_neg: float, n_img: float) -> dict[str, float]:
        """This rank's loss sums -> the logged, globally normalised terms (:func:`~denseood.train.losses.reduce_terms`)."""
        return reduce_terms(terms, n_lab, n_neg, n_img, self.cfg.lam)

    # ---- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Validation metrics (collective under DDP); see :func:`denseood.train.validation.validate_segmenter`."""
        if self.val_set is None:
            return {}
        out = validate_segmenter(self.model, self.val_set, self.num_classes, self.device, self.cfg.val_limit,
                                 self.rank, self.world)
        self.model.train()
        return out

    # ---- checkpoints
    def save(self, name: str, metrics: dict | None = None, with_state: bool = True) -> Path:
        """Write ``out/name`` (atomic), with the resumable training state unless ``with_state`` is False."""
        from ..models.checkpoint import save_checkpoint

        extra = {"train_state": train_state(self)} if with_state else {}
        return save_checkpoint(self.model, self.out / name, config=to_dict(self.cfg), metrics=metrics or {}, extra=extra)

    def _load_resume(self) -> None:
        restore_train_state(self, self.out / "last.pt")

    # ---- main loop
    def loader(self, start: int, end: int) -> DataLoader:
        """This rank's batches of global steps ``start..end-1`` (see :func:`~denseood.train.sampling.make_loader`)."""
        return make_loader(self.crops, self.cfg, start, end, self.rank, self.world, pin_memory=self.device.type == "cuda")

    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Run from the current step to the end (or ``max_steps`` more steps). Returns a summary dict."""
        from ..progress import progress_bar

        cfg = self.cfg
        total = cfg.total_steps
        end = total if max_steps is None else min(total, self.step + max_steps)
        main = dist.is_main()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, self.out / "config.yaml")
        t0 = time.perf_counter()
        bar = progress_bar(total=end - self.step, desc="train", disable=not (main and self.progress),
                           dynamic_ncols=True)
        last_terms: dict[str, float] = {}
        for images, labels, seeds in self.loader(self.step, end):
            terms = self.train_step(self.step, images, labels, seeds)
            last_terms = terms
            self.step += 1
            phase, start, length = self.phase_of(self.step - 1)
            rec = {"step": self.step, "phase": phase, **{k: v for k, v in terms.items() if k != "phase"}}
            if self.step % cfg.log_every == 0 or self.step == end:
                if self.flow is not None and phase != "pretrain" and main:
                    # the flow's fit to held-out inliers, during its pre-training and while the JS term acts on it
                    rec["flow_heldout_bpd"] = self._heldout_bpd()
                self.history.append(rec)
            if phase == "flow_pretrain" and self.step == start + length and main:
                self.save_flow_samples(self.out / "flow_samples_pretrain.png")   # before the JS term shapes them
            bar.set_description_str("flow pre-training" if phase == "flow_pretrain" else "train", refresh=False)
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in terms.items() if isinstance(v, float)}, refresh=False)
            if cfg.val_every and (self.step % cfg.val_every == 0 or self.step == total) and phase != "flow_pretrain":
                self._validate_and_keep_best()
            if cfg.ckpt_every and (self.step % cfg.ckpt_every == 0 or self.step == end):
                if main:
                    self.save("last.pt")
                dist.barrier()
        bar.close()
        summary = {"steps": self.step, "seconds": time.perf_counter() - t0, "last": last_terms, "best": self.best}
        flow_bpd_log = [(h["step"], h["flow_heldout_bpd"]) for h in self.history if "flow_heldout_bpd" in h]
        if flow_bpd_log and main:
            summary["flow_heldout_bpd"] = flow_bpd_log   # the whole run's, earlier parts of a resumed run included
        if self.step >= total:
            summary.update(self._finish())
        if main:
            atomic_write_json(self.out / "summary.json", {"history": self.history, **summary})
        return summary

    def _heldout_bpd(self) -> float:
        """Bits/dim of the flow on fixed held-out inlier patches (:func:`_heldout_patches`)."""
        if not hasattr(self, "_heldout"):
            self._heldout = self._heldout_patches()
        return heldout_bpd(self.flow, self._heldout, self.cfg.seed)

    def _heldout_patches(self, n: int = 16) -> torch.Tensor:
        """Up to ``n`` inlier patches of 32 px from the validation frames (the training frames without a validation
        set), free of anomaly and void pixels: (N,3,S,S) float in [0,1] on the device."""
        src = self.val_set if self.val_set is not None else self.train_set
        return heldout_patches(src, patch_size(self.flow, self.cfg.crop), self.device, n)

    def _validate_and_keep_best(self) -> None:
        main = dist.is_main()
        res = self.validate()
        if main and res:
            rec = {"step": self.step, **{f"val_{k}": v for k, v in res.items()}}
            self.history.append(rec)
            key = "ap" if "ap" in res else "miou"
            if key in res and res[key] >= self.best.get(key, -1.0):
                self.best = {"step": self.step, **res}
                self.save("best.pt", metrics=res, with_state=False)
            from tqdm.auto import tqdm

            tqdm.write("val step {}: ".format(self.step) + ", ".join(f"{k}={v:.4f}" for k, v in res.items()))
        dist.barrier()

    def _finish(self) -> dict[str, Any]:
        """Fit score statistics, write model.pt (and refresh best.pt), save flow samples."""
        out: dict[str, Any] = {}
        final_metrics = self.validate()          # collective
        if not dist.is_main():
            dist.barrier()
            return out
        if self.cfg.fit_stats:
            self._fit_stats(self.model)
        out["final"] = final_metrics
        self.save("model.pt", metrics=final_metrics, with_state=False)
        best = self.out / "best.pt"
        if best.is_file() and self.cfg.fit_stats:
            from ..models.checkpoint import save_checkpoint
            from ..models.sources import load_checkpoint

            bm = load_checkpoint(best).to(self.device)   # written by save(..., with_state=False): no extra
            self._fit_stats(bm)
            save_checkpoint(bm, best, config=bm.checkpoint_meta["config"], metrics=bm.checkpoint_meta["metrics"])
        if self.flow is not None:
            self.save_flow_samples(self.out / "flow_samples.png")
        dist.barrier()
        return out

    def _fit_stats(self, model: nn.Module) -> None:
        from ..scores import fit_mahalanobis, fit_sml

        def batches():
            g = self.loader(0, min(self.cfg.stats_batches, self.cfg.total_steps))
            for images, labels, _ in g:
                x = model.normalize(images.to(self.device).float())
                yield {"image": x, "semantic": labels.to(self.device)}

        model.eval()
        fit_sml(model, batches(), device=str(self.device))
        try:
            fit_mahalanobis(model, batches(), device=str(self.device))
        except ConfigError as e:  # a model without decoder features (e.g. hf: SegFormer, torchvision:)
            if "exposes no decoder features" not in str(e):
                raise
            print(f"note: Mahalanobis statistics not fitted: {e}", file=sys.stderr)

    def save_flow_samples(self, path: Path, sizes: tuple[int, ...] = (32, 64, 128)) -> Path:
        """A PNG grid of flow samples at 3 sizes (rows), 6 samples each."""
        return save_flow_samples(self.flow, path, self.cfg.seed, self.cfg.neg_temperature, sizes)
