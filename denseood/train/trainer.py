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
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from .. import dist
from ..config import dump_yaml, from_dict, load_yaml, to_dict
from ..errors import ConfigError, DatasetError
from ..io import atomic_write_json
from ..scores.jsd import js_divergence_to_uniform

IGNORE = 255


@dataclass
class TrainConfig:
    """Everything a training run depends on (recorded as ``RUN/config.yaml``)."""

    dataset: str = "synthetic"           # cityscapes | streethazards | synthetic
    root: str = ""
    split: str = "train"
    val_dataset: str | None = None       # default: synthetic -> synthetic/val, streethazards -> streethazards/test, cityscapes -> cityscapes/val
    val_root: str | None = None          # default: root
    val_split: str | None = None
    val_limit: int | None = 50           # frames used for validation
    arch: str = "fpn"
    encoder: str = "resnet18"
    encoder_weights: str | None = None   # local file only
    init: str | None = None              # checkpoint to fine-tune
    negatives: str = "flow"              # flow | void | paste:DIR | none
    steps: int = 1000                    # joint (or plain, without negatives) steps
    pretrain_steps: int = 0              # segmenter-only steps before negatives are used
    flow_pretrain_steps: int = 200       # flow MLE steps on inlier crops (flow negatives only)
    batch_size: int = 8                  # global batch, split evenly over DDP ranks
    crop: int = 256
    scale: tuple[float, float] = (0.5, 1.5)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"             # adamw | adam | sgd
    schedule: str = "poly"               # poly | cosine | constant
    warmup_steps: int = 0
    lam: float = 0.03                    # weight of the JS loss on negative pixels
    flow_js_weight: float | None = None  # the JS weight the flow sees through its samples (None: lam, one joint objective)
    flow_lr: float = 1e-3
    flow_levels: int = 3
    flow_steps: int = 4
    flow_hidden: int = 64
    neg_per_image: int = 1
    neg_size: tuple[int, int] = (16, 128)
    neg_temperature: float = 1.0
    amp: str = "none"                    # none | bf16 | fp16 (fp16 uses GradScaler, CUDA only)
    grad_clip: float = 5.0
    ckpt_every: int = 200
    val_every: int = 200
    log_every: int = 10
    workers: int = 2
    seed: int = 0
    device: str = "auto"
    sync_bn: bool = False                # CUDA + DDP only
    freeze_bn: bool = False              # BatchNorm layers in eval mode (fine-tuning with small batches)
    fit_stats: bool = True               # fit SML and Mahalanobis statistics into the final checkpoint
    stats_batches: int = 20
    out: str = "runs/train"

    def validate(self) -> None:
        if self.dataset not in ("cityscapes", "streethazards", "synthetic"):
            raise ConfigError(f"--dataset {self.dataset!r}: training supports cityscapes, streethazards, synthetic")
        if not self.root:
            raise ConfigError("--root is required: the dataset root in its official layout")
        if not (self.negatives in ("flow", "void", "none") or self.negatives.startswith("paste:")):
            raise ConfigError(f"--negatives {self.negatives!r}: expected flow | void | paste:DIR | none")
        for name in ("steps", "batch_size", "crop"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("pretrain_steps", "flow_pretrain_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.amp not in ("none", "bf16", "fp16"):
            raise ConfigError(f"amp {self.amp!r}: expected none | bf16 | fp16")
        if self.schedule not in ("poly", "cosine", "constant"):
            raise ConfigError(f"schedule {self.schedule!r}: expected poly | cosine | constant")
        if self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam}")
        if self.flow_js_weight is not None:
            if self.flow_js_weight < 0:
                raise ConfigError(f"flow_js_weight must be >= 0 (or null for lam), got {self.flow_js_weight}")
            if self.lam == 0 and self.flow_js_weight > 0:
                raise ConfigError("flow_js_weight > 0 needs lam > 0: the flow's JS gradient is the segmenter's JS "
                                  "gradient rescaled by flow_js_weight / lam")
        if self.optimizer not in ("adamw", "adam", "sgd"):
            raise ConfigError(f"optimizer {self.optimizer!r}: expected adamw | adam | sgd")

    @property
    def total_steps(self) -> int:
        flow_pre = self.flow_pretrain_steps if self.negatives == "flow" else 0
        return self.pretrain_steps + flow_pre + self.steps


# --------------------------------------------------------------------------- data


def _seed_of(*parts: int) -> int:
    """A 63-bit seed from integers (stable across processes and Python runs)."""
    h = hashlib.blake2b(np.asarray(parts, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def global_batch_plan(n_items: int, global_batch: int, step: int, seed: int) -> list[tuple[int, int]]:
    """(dataset index, augmentation seed) for every position of the global batch of ``step``.

    Epoch-wise permutations from (seed, epoch): consecutive steps walk through the permutation.
    """
    out = []
    perms: dict[int, np.ndarray] = {}   # a step spans at most a few epochs: one permutation each
    for pos in range(global_batch):
        k = step * global_batch + pos
        epoch, off = divmod(k, n_items)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng(_seed_of(seed, 17, epoch)).permutation(n_items)
        out.append((int(perms[epoch][off]), _seed_of(seed, 29, step, pos)))
    return out


class StepBatchSampler:
    """Yields, for steps ``start..end-1``, this rank's slice of the global batch as (index, seed) keys."""

    def __init__(self, n_items: int, global_batch: int, start: int, end: int, seed: int, rank: int = 0, world: int = 1):
        if global_batch % world:
            raise ConfigError(f"global batch size {global_batch} is not divisible by the number of processes {world}")
        self.n, self.gb, self.start, self.end, self.seed = n_items, global_batch, start, end, seed
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per = self.gb // self.world
        for step in range(self.start, self.end):
            plan = global_batch_plan(self.n, self.gb, step, self.seed)
            yield plan[self.rank * per:(self.rank + 1) * per]


class CropDataset(Dataset):
    """Wraps a training reader; key (index, seed) -> augmented crop, deterministic in the seed."""

    def __init__(self, base, crop: int, scale: tuple[float, float], num_classes: int):
        from ..data.transforms import train_transform

        self.base, self.crop, self.scale, self.num_classes = base, crop, scale, num_classes
        self.transform = train_transform(crop, scale=scale)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        idx, seed = key
        s = self.base[idx]
        if s.semantic is None:
            raise DatasetError(f"{self.base.name}: frame {s.name} has no semantic labels; training needs them")
        bad = np.unique(s.semantic[(s.semantic != IGNORE) & (s.semantic >= self.num_classes)])
        if bad.size:
            raise DatasetError(f"{self.base.name}: frame {s.name} holds label values {bad.tolist()} outside the train ids "
                               f"0..{self.num_classes - 1} (255 = ignore); check the labels or the dataset choice")
        image, label = self.transform(s.image, s.semantic, seed=seed)
        return (torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1),
                torch.from_numpy(np.ascontiguousarray(label)).long(), seed)


def _collate(batch):
    imgs = torch.stack([b[0] for b in batch])
    labs = torch.stack([b[1] for b in batch])
    seeds = [b[2] for b in batch]
    return imgs, labs, seeds


# --------------------------------------------------------------------------- schedule / helpers


def lr_factor(cfg: TrainConfig, step: int, phase_start: int, phase_len: int) -> float:
    t = step - phase_start
    if cfg.warmup_steps and t < cfg.warmup_steps:
        return (t + 1) / cfg.warmup_steps
    frac = min(1.0, t / max(1, phase_len))
    if cfg.schedule == "poly":
        return (1 - frac) ** 0.9
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0


def resolve_device(spec: str) -> torch.device:
    """infer.resolve_device, except that "auto" under DDP on CUDA picks this rank's GPU (LOCAL_RANK)."""
    from ..infer import resolve_device as _resolve

    if spec in (None, "auto") and dist.is_dist() and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return _resolve(spec)


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _allreduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over ranks (the flow is sampled, not called through forward(), so it is not DDP-wrapped)."""
    if not dist.is_dist():
        return
    w = dist.world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce_sum(p.grad)
            p.grad.div_(w)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Builds datasets, model, flow, negatives and optimisers from a TrainConfig and runs the phases."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, progress: bool = True):
        cfg.validate()
        self.cfg, self.resume, self.progress = cfg, resume, progress
        self.distributed = dist.init_from_env()
        self.rank, self.world = dist.rank(), dist.world_size()
        self.device = resolve_device(cfg.device)
        self.out = Path(cfg.out)
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
        from ..data import open_dataset

        cfg = self.cfg
        self.train_set = open_dataset(cfg.dataset, cfg.root, cfg.split)
        if not self.train_set.has_semantic or not self.train_set.num_classes:
            raise DatasetError(f"{cfg.dataset} split {cfg.split} under {cfg.root} has no semantic labels to train on")
        self.num_classes = int(self.train_set.num_classes)
        first = self.train_set[0]
        h, w = first.image.shape[:2]
        self.frame_size = (int(h), int(w))
        if cfg.crop > min(h, w):
            raise ConfigError(f"--crop {cfg.crop} is larger than the images of {cfg.dataset} ({w}x{h}, frame {first.name}); "
                              f"choose --crop <= {min(h, w)}")
        self.crops = CropDataset(self.train_set, cfg.crop, tuple(cfg.scale), self.num_classes)
        vname, vsplit = self._val_spec()
        self.val_set = None
        if vname is not None:
            try:
                self.val_set = open_dataset(vname, cfg.val_root or cfg.root, vsplit)
            except DatasetError as e:
                if dist.is_main():
                    print(f"note: no validation set ({e}); validation disabled", file=sys.stderr)

    def _val_spec(self) -> tuple[str | None, str | None]:
        cfg = self.cfg
        if cfg.val_dataset:
            return cfg.val_dataset, cfg.val_split
        defaults = {"synthetic": ("synthetic", "val"), "streethazards": ("streethazards", "test"), "cityscapes": ("cityscapes", "val")}
        name, split = defaults[cfg.dataset]
        return name, cfg.val_split or split

    def _setup_model(self) -> None:
        from ..models.segmenter import create_segmenter, load_checkpoint

        cfg = self.cfg
        if cfg.init:
            model = load_checkpoint(cfg.init, num_classes=self.num_classes, class_set=self.train_set.class_set)
        else:
            model = create_segmenter(cfg.arch, cfg.encoder, self.num_classes, encoder_weights=cfg.encoder_weights,
                                     class_names=self.train_set.class_names, class_set=self.train_set.class_set,
                                     train_size=self.frame_size)
        # the frame size the crops were cut from (at scale 1): inference resizes to it by default
        # (input_size "model"); the crop size is no inference size (a square crop of a 1:2 frame)
        model.train_size = self.frame_size
        model.to(self.device)
        if cfg.sync_bn:
            if not self.distributed:
                raise ConfigError("--sync-bn needs a DDP run (torchrun --nproc_per_node N)")
            if self.device.type != "cuda":
                raise ConfigError("--sync-bn needs CUDA devices (SyncBatchNorm does not run on CPU); use --set freeze_bn=true on CPU")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        self.ddp_model = model
        if self.distributed:
            dev_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=dev_ids)

    def _setup_negatives(self) -> None:
        from ..train.negatives import build_negatives

        cfg = self.cfg
        self.flow = None
        if cfg.negatives == "flow":
            from ..models.flow import PatchFlow

            self.flow = PatchFlow(levels=cfg.flow_levels, steps=cfg.flow_steps, hidden=cfg.flow_hidden).to(self.device)
            lo, hi = cfg.neg_size
            hi = min(hi, cfg.crop)
            self.negatives = build_negatives("flow", flow=self.flow, per_image=cfg.neg_per_image, size_range=(lo, hi),
                                             temperature=cfg.neg_temperature, grad_scale=self.flow_grad_scale)
            self._init_flow()
        elif cfg.negatives.startswith("paste:"):
            lo, hi = cfg.neg_size
            self.negatives = build_negatives(cfg.negatives, per_image=cfg.neg_per_image, size_range=(lo, min(hi, cfg.crop)))
        else:
            self.negatives = build_negatives(cfg.negatives)

    @torch.no_grad()
    def _init_flow(self) -> None:
        """Data-dependent ActNorm init on a fixed batch of inlier patches (the same on every rank and world size).

        Without this the first training batch would initialise ActNorm, and that batch differs between one process
        and N ranks. A resumed run overwrites the result with the checkpoint's flow state.
        """
        ds = self.flow.downsampling
        s = max(ds, (min(32, self.cfg.crop) // ds) * ds)
        patches = []
        for i in range(min(8, len(self.train_set))):
            img = self.train_set[i].image
            h, w = img.shape[:2]
            y, x = max(0, h // 2 - s // 2), max(0, w // 2 - s // 2)
            patches.append(torch.from_numpy(img[y:y + s, x:x + s].copy()).permute(2, 0, 1))
        batch = torch.stack(patches).float().div(255.0).to(self.device)
        self.flow.bits_per_dim(batch, generator=torch.Generator(device="cpu").manual_seed(self.cfg.seed))

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
        torch.manual_seed(_seed_of(cfg.seed, 41, step, self.rank))
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
            _freeze_bn(self.model)
        use_neg = phase == "joint" and cfg.negatives != "none"
        flow_nll = None
        if use_neg:
            clean = images
            parts_img, parts_lab, parts_neg, nlls = [], [], [], []
            for i in range(images.shape[0]):
                g = torch.Generator(device="cpu").manual_seed(seeds[i] ^ 0x5DEECE66D)
                im_i, lab_i, neg_i = self.negatives.paste(clean[i:i + 1], labels[i:i + 1], generator=g)
                parts_img.append(im_i), parts_lab.append(lab_i), parts_neg.append(neg_i)
                if self.flow is not None:
                    gq = torch.Generator(device="cpu").manual_seed(seeds[i] ^ 0xDE0)
                    nlls.append(self.negatives.inlier_nll(clean[i:i + 1].detach(), generator=gq))
            images = torch.cat(parts_img)
            labels = torch.cat(parts_lab)
            neg_mask = torch.cat(parts_neg)
            if nlls:
                flow_nll = torch.stack([n.reshape(()) for n in nlls]).sum()
        else:
            neg_mask = torch.zeros_like(labels, dtype=torch.bool)

        x = self.model.normalize(images * 255.0)
        with self._autocast():
            logits = self.ddp_model(x)
        logits = logits.float()
        if logits.shape[-2:] != labels.shape[-2:]:
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)

        ce_sum = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum")
        js = js_divergence_to_uniform(logits)
        js_sum = (js * neg_mask).sum()
        counts = torch.tensor([(labels != IGNORE).sum().item(), neg_mask.sum().item(), float(images.shape[0])],
                              dtype=torch.float64)
        dist.all_reduce_sum(counts)
        n_lab, n_neg, n_img = (max(1.0, float(c)) for c in counts)
        # DDP averages gradients over ranks: scale by world so that sum/global_count is what is optimised.
        ce = ce_sum / n_lab * self.world
        js_term = js_sum / n_neg * self.world
        loss = ce + cfg.lam * js_term
        terms = {"ce": ce_sum.detach(), "js": js_sum.detach()}
        total = loss
        if flow_nll is not None:
            # One joint objective minimised w.r.t. segmenter and flow: the segmenter gets CE + lam*JS, the flow
            # gets its NLL on the inlier patches under the paste boxes + the same lam*JS through its samples
            # (which pushes samples towards inputs where the segmenter is uncertain: the inlier border);
            # with flow_js_weight set, FlowNegatives rescales the samples' gradient so the flow sees that weight.
            total = loss + flow_nll / n_img * self.world
            terms["flow_nll"] = flow_nll.detach()
        step_flow = self.flow_opt is not None and flow_nll is not None
        optimizers = [self.opt] + ([self.flow_opt] if step_flow else [])
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            for o in optimizers:
                self.scaler.unscale_(o)
        else:
            total.backward()
        if step_flow:
            _allreduce_grads(list(self.flow.parameters()))
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            if step_flow:
                torch.nn.utils.clip_grad_norm_(self.flow.parameters(), cfg.grad_clip)
        for o in optimizers:
            if self.scaler is not None:
                self.scaler.step(o)
            else:
                o.step()
        if self.scaler is not None:
            self.scaler.update()
        return self._reduce_terms(terms, n_lab, n_neg, n_img)

    def _flow_pretrain_step(self, images: torch.Tensor, seeds: list[int]) -> dict[str, float]:
        """Flow maximum likelihood on random inlier crops (sizes as the pasted negatives will have)."""
        cfg = self.cfg
        ds = self.flow.downsampling
        nll_sum = torch.zeros((), device=self.device)
        for i in range(images.shape[0]):
            rng = np.random.default_rng(seeds[i] ^ 0xF10)
            lo, hi = cfg.neg_size
            hi = min(hi, images.shape[-1], images.shape[-2])
            s = int(rng.integers(max(ds, lo // ds), max(ds, hi // ds) + 1)) * ds if hi >= ds else ds
            s = max(ds, min(s, (min(images.shape[-2:]) // ds) * ds))
            y = int(rng.integers(0, images.shape[-2] - s + 1))
            x = int(rng.integers(0, images.shape[-1] - s + 1))
            patch = images[i:i + 1, :, y:y + s, x:x + s]
            gq = torch.Generator(device="cpu").manual_seed(seeds[i] ^ 0xDE0)
            nll_sum = nll_sum + self.flow.bits_per_dim(patch, generator=gq).sum()
        cnt = torch.tensor([float(images.shape[0])], dtype=torch.float64)
        dist.all_reduce_sum(cnt)
        loss = nll_sum / float(cnt) * self.world
        self.flow_opt.zero_grad(set_to_none=True)
        loss.backward()
        _allreduce_grads(list(self.flow.parameters()))
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.flow.parameters(), cfg.grad_clip)
        self.flow_opt.step()
        t = torch.tensor([float(nll_sum.detach())], dtype=torch.float64)
        dist.all_reduce_sum(t)
        return {"flow_bpd": float(t) / float(cnt), "phase": "flow_pretrain"}

    def _reduce_terms(self, terms: dict[str, torch.Tensor], n_lab: float, n_neg: float, n_img: float) -> dict[str, float]:
        names = list(terms)
        t = torch.tensor([float(terms[k]) for k in names], dtype=torch.float64)
        dist.all_reduce_sum(t)
        out: dict[str, Any] = {}
        for k, v in zip(names, t.tolist()):
            if k == "ce":
                out["ce"] = v / n_lab
            elif k == "js":
                out["js"] = v / n_neg if n_neg >= 1 else 0.0
            elif k == "flow_nll":
                out["flow_bpd"] = v / n_img
        out["loss"] = out["ce"] + self.cfg.lam * out.get("js", 0.0)
        return out

    # ---- validation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """mIoU on inlier pixels and pixel AP / FPR95 / AUROC of the ``jsd`` score (exact) on the validation set.

        Collective under DDP: every rank evaluates its shard of the frames, and the confusion matrix and the
        pixel-metric state are reduced, so all ranks return the single-process numbers.
        """
        from torch.utils.data import Subset

        from ..eval import PixelMetrics
        from ..infer import Inference, ShardSampler

        if self.val_set is None:
            return {}
        cfg = self.cfg
        self.model.eval()
        inf = Inference(self.model, scores=("jsd",), device=str(self.device), dtype="fp32", input_size=None,
                        channels_last=False)
        c = self.num_classes
        conf = torch.zeros(c * c, dtype=torch.float64)
        pix = PixelMetrics(mode="exact")
        n_anom = torch.zeros(2, dtype=torch.float64)  # frames seen, anomaly pixels seen
        limit = min(cfg.val_limit or len(self.val_set), len(self.val_set))
        subset = Subset(self.val_set, range(limit))
        sampler = ShardSampler(limit, self.rank, self.world)
        for samples, maps in inf.run(subset, batch_size=2, workers=0, sampler=sampler, progress=False, return_logits=True):
            pred = maps["logits"].argmax(1).cpu().numpy()
            for i, s in enumerate(samples):
                if s.semantic is not None:
                    gt = s.semantic
                    valid = gt != IGNORE
                    conf += torch.from_numpy(np.bincount(gt[valid].astype(np.int64) * c + pred[i][valid],
                                                         minlength=c * c).astype(np.float64))
                if s.ood_mask is not None:
                    n_anom[1] += float((s.ood_mask == 1).sum())
                    pix.update(maps["jsd"][i].cpu(), s.ood_mask)
                n_anom[0] += 1
        dist.all_reduce_sum(conf)
        dist.all_reduce_sum(n_anom)
        out: dict[str, float] = {"val_images": float(n_anom[0])}
        cm = conf.view(c, c).numpy()
        if cm.sum():
            inter = np.diag(cm)
            union = cm.sum(0) + cm.sum(1) - inter
            present = cm.sum(1) > 0
            out["miou"] = float(np.mean(inter[present] / np.maximum(union[present], 1)))
        if n_anom[1] > 0:
            r = pix.compute()
            out.update(ap=r["ap"], fpr95=r["fpr95"], auroc=r["auroc"])
        self.model.train()
        return out

    # ---- checkpoints
    def _train_state(self) -> dict:
        st: dict[str, Any] = {"step": self.step, "optimizer": self.opt.state_dict(), "best": dict(self.best),
                              "history": list(self.history)}
        if self.flow is not None:
            st["flow"] = self.flow.state_dict()
            st["flow_optimizer"] = self.flow_opt.state_dict()
        if self.scaler is not None:
            st["scaler"] = self.scaler.state_dict()
        return st

    def save(self, name: str, metrics: dict | None = None, with_state: bool = True) -> Path:
        from ..models.segmenter import save_checkpoint

        extra = {"train_state": self._train_state()} if with_state else {}
        return save_checkpoint(self.model, self.out / name, config=to_dict(self.cfg), metrics=metrics or {}, extra=extra)

    def _load_resume(self) -> None:
        from ..models.segmenter import read_checkpoint

        path = self.out / "last.pt"
        if not path.is_file():
            raise ConfigError(f"--resume: no {path} to resume from (run without --resume to start)")
        ck = read_checkpoint(path)
        st = ck.get("extra", {}).get("train_state")
        if st is None:
            raise ConfigError(f"--resume: {path} holds no training state")
        self.model.load_state_dict(ck["state_dict"])
        self.opt.load_state_dict(st["optimizer"])
        if self.flow is not None:
            if "flow" not in st:
                raise ConfigError(f"--resume: {path} has no flow state but the config uses flow negatives")
            self.flow.load_state_dict(st["flow"])
            self.flow_opt.load_state_dict(st["flow_optimizer"])
        if self.scaler is not None and "scaler" in st:
            self.scaler.load_state_dict(st["scaler"])
        self.step = int(st["step"])
        self.best = dict(st.get("best", {}))
        self.history = list(st.get("history", []))

    # ---- main loop
    def loader(self, start: int, end: int) -> DataLoader:
        sampler = StepBatchSampler(len(self.crops), self.cfg.batch_size, start, end, self.cfg.seed, self.rank, self.world)
        workers = self.cfg.workers
        return DataLoader(self.crops, batch_sampler=sampler, num_workers=workers, collate_fn=_collate,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          prefetch_factor=2 if workers else None)

    def fit(self, max_steps: int | None = None) -> dict[str, Any]:
        """Run from the current step to the end (or ``max_steps`` more steps). Returns a summary dict."""
        from tqdm.auto import tqdm

        cfg = self.cfg
        total = cfg.total_steps
        end = total if max_steps is None else min(total, self.step + max_steps)
        main = dist.is_main()
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            dump_yaml(cfg, self.out / "config.yaml")
        t0 = time.perf_counter()
        bar = tqdm(total=end - self.step, desc="train", disable=not (main and self.progress), dynamic_ncols=True)
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
        """Bits/dim of the flow on fixed held-out inlier patches (up to 16 patches of 32 px from the validation frames,
        or the last training frames without a validation set), each free of anomaly and void pixels."""
        if not hasattr(self, "_heldout"):
            self._heldout = self._heldout_patches()
        with torch.no_grad():
            self.flow.eval()
            g = torch.Generator(device="cpu").manual_seed(self.cfg.seed)  # same dequantisation noise every time
            v = float(self.flow.bits_per_dim(self._heldout, generator=g).mean())
            self.flow.train()
        return v

    def _heldout_patches(self, n: int = 16) -> torch.Tensor:
        src = self.val_set if self.val_set is not None else self.train_set
        ds = self.flow.downsampling
        s = max(ds, (min(32, self.cfg.crop) // ds) * ds)
        patches: list[torch.Tensor] = []
        for i in range(len(src)):
            smp = src[len(src) - 1 - i]
            img = smp.image
            h, w = img.shape[:2]
            if h < s or w < s:
                continue
            bad = np.zeros((h, w), bool)
            if smp.ood_mask is not None:
                bad |= smp.ood_mask != 0
            if smp.semantic is not None:
                bad |= smp.semantic == IGNORE
            taken = 0
            for yy in np.linspace(h // 3, h - s, 3).astype(int):  # below the horizon, where anomalies are pasted
                for xx in np.linspace(0, w - s, 5).astype(int):
                    if taken < 2 and not bad[yy:yy + s, xx:xx + s].any():
                        patches.append(torch.from_numpy(img[yy:yy + s, xx:xx + s].copy()).permute(2, 0, 1))
                        taken += 1
            if len(patches) >= n:
                break
        if not patches:
            raise DatasetError(f"no {s}x{s} inlier patch without anomaly/void pixels found in the held-out frames "
                               "for the flow's bits/dim log")
        return torch.stack(patches[:n]).float().div(255.0).to(self.device)

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
            from ..models.segmenter import load_checkpoint, save_checkpoint

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
        fit_mahalanobis(model, batches(), device=str(self.device))

    @torch.no_grad()
    def save_flow_samples(self, path: Path, sizes: tuple[int, ...] = (32, 64, 128)) -> Path:
        """A PNG grid of flow samples at 3 sizes (rows), 6 samples each."""
        from ..io import write_png

        ds = self.flow.downsampling
        sizes = tuple(max(ds, (s // ds) * ds) for s in sizes)
        big = max(sizes)
        rows = []
        g = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        self.flow.eval()
        for s in sizes:
            smp = self.flow.sample(6, s, s, temperature=self.cfg.neg_temperature, generator=g).clamp(0, 1)
            tiles = []
            for k in range(6):
                tile = np.full((big, big, 3), 255, np.uint8)
                tile[:s, :s] = (smp[k].permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
                tiles.append(np.pad(tile, ((2, 2), (2, 2), (0, 0)), constant_values=255))
            rows.append(np.concatenate(tiles, 1))
        self.flow.train()
        return write_png(path, np.concatenate(rows, 0))


# --------------------------------------------------------------------------- CLI


#: TrainConfig fields that have their own command-line option (same name, dashes for underscores)
_CLI_KEYS = ("dataset", "root", "val_root", "arch", "encoder", "encoder_weights", "negatives", "steps", "batch_size",
             "crop", "lr", "out", "init", "amp", "device", "seed", "sync_bn")


def config_from_args(args) -> TrainConfig:
    """TrainConfig from ``--config`` YAML, then explicit CLI options, then ``--set key=value`` overrides."""
    import yaml

    cfg = load_yaml(TrainConfig, args.config) if getattr(args, "config", None) else TrainConfig()
    data = to_dict(cfg)
    for k in _CLI_KEYS:
        v = getattr(args, k, None)
        if v is not None:
            data[k] = v
    for item in getattr(args, "set", []) or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        data[k.strip()] = yaml.safe_load(v)
    return from_dict(TrainConfig, data, "train options")


def main(args) -> int:
    cfg = config_from_args(args)
    out = Path(cfg.out)
    if not args.resume and out.exists() and (out / "last.pt").exists():
        raise ConfigError(f"--out {out} already holds a run (last.pt); pass --resume to continue it or choose another --out")
    try:
        trainer = Trainer(cfg, resume=bool(args.resume))
        summary = trainer.fit()
        if dist.is_main():
            print(f"trained {summary['steps']} steps in {summary['seconds']:.1f}s; checkpoints in {out}")
            if summary.get("final"):
                print("final validation: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["final"].items()))
    finally:
        dist.cleanup()
    return 0
