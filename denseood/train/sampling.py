"""The training data side: datasets of a TrainConfig, the deterministic global batch plan, the per-rank batch
sampler, augmented crops, the loader and the learning-rate schedule.

Determinism: the data order, the augmentation of every crop and the negatives pasted into it are functions of
(seed, global step, position in the global batch) only, so a resumed run sees exactly the batches it would have
seen and N ranks (each taking a contiguous slice) see the global batch of one process. See docs/architecture.md.
"""
from __future__ import annotations

import hashlib
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .. import dist
from ..errors import ConfigError, DatasetError
from .config import IGNORE, TrainConfig


def seed_of(*parts: int) -> int:
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
            perms[epoch] = np.random.default_rng(seed_of(seed, 17, epoch)).permutation(n_items)
        out.append((int(perms[epoch][off]), seed_of(seed, 29, step, pos)))
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

    def __init__(self, base: Any, crop: int, scale: tuple[float, float], num_classes: int):
        from ..data.transforms import train_transform

        self.base, self.crop, self.scale, self.num_classes = base, crop, scale, num_classes
        self.transform = train_transform(crop, scale=scale)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(image (3,crop,crop) uint8, label (crop,crop) long with 255 = ignore, seed)."""
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


def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(images (B,3,H,W) uint8, labels (B,H,W) long, seeds) from CropDataset items."""
    imgs = torch.stack([b[0] for b in batch])
    labs = torch.stack([b[1] for b in batch])
    seeds = [b[2] for b in batch]
    return imgs, labs, seeds


def lr_factor(cfg: TrainConfig, step: int, phase_start: int, phase_len: int) -> float:
    """Learning-rate multiplier in (0, 1] of global ``step`` inside its phase: linear warm-up, then poly / cosine / constant."""
    t = step - phase_start
    if cfg.warmup_steps and t < cfg.warmup_steps:
        return (t + 1) / cfg.warmup_steps
    frac = min(1.0, t / max(1, phase_len))
    if cfg.schedule == "poly":
        return (1 - frac) ** 0.9
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    return 1.0


def flow_pretrain_box(seed: int, neg_size: tuple[int, int], h: int, w: int, ds: int) -> tuple[int, int, int]:
    """(y, x, side) of the inlier crop a flow pre-training step takes from an (h, w) image with key ``seed``.

    The side is drawn from ``neg_size`` (as the pasted negatives will have) as a multiple of the flow's
    downsampling ``ds``, at most the image's smaller side.
    """
    rng = np.random.default_rng(seed ^ 0xF10)
    lo, hi = neg_size
    hi = min(hi, w, h)
    s = int(rng.integers(max(ds, lo // ds), max(ds, hi // ds) + 1)) * ds if hi >= ds else ds
    s = max(ds, min(s, (min(h, w) // ds) * ds))
    y = int(rng.integers(0, h - s + 1))
    x = int(rng.integers(0, w - s + 1))
    return y, x, s


@dataclass
class TrainData:
    """The datasets of a run: training reader, its crops, the validation reader (None: validation disabled)."""

    train_set: Any
    crops: CropDataset
    val_set: Any | None
    num_classes: int
    frame_size: tuple[int, int]   # (h, w) of the training frames, the model's default inference size


def val_spec(cfg: TrainConfig) -> tuple[str | None, str | None]:
    """(dataset, split) used for validation: ``val_dataset``/``val_split``, else the training dataset's own default."""
    if cfg.val_dataset:
        return cfg.val_dataset, cfg.val_split
    defaults = {"synthetic": ("synthetic", "val"), "streethazards": ("streethazards", "test"), "cityscapes": ("cityscapes", "val")}
    name, split = defaults[cfg.dataset]
    return name, cfg.val_split or split


def open_train_data(cfg: TrainConfig) -> TrainData:
    """Open the training and validation readers of ``cfg``; DatasetError / ConfigError for unusable data."""
    from ..data import open_dataset

    train_set = open_dataset(cfg.dataset, cfg.root, cfg.split)
    if not train_set.has_semantic or not train_set.num_classes:
        raise DatasetError(f"{cfg.dataset} split {cfg.split} under {cfg.root} has no semantic labels to train on")
    num_classes = int(train_set.num_classes)
    first = train_set[0]
    h, w = first.image.shape[:2]
    if cfg.crop > min(h, w):
        raise ConfigError(f"--crop {cfg.crop} is larger than the images of {cfg.dataset} ({w}x{h}, frame {first.name}); "
                          f"choose --crop <= {min(h, w)}")
    crops = CropDataset(train_set, cfg.crop, tuple(cfg.scale), num_classes)
    vname, vsplit = val_spec(cfg)
    val_set = None
    if vname is not None:
        try:
            val_set = open_dataset(vname, cfg.val_root or cfg.root, vsplit)
        except DatasetError as e:
            if dist.is_main():
                print(f"note: no validation set ({e}); validation disabled", file=sys.stderr)
    return TrainData(train_set, crops, val_set, num_classes, (int(h), int(w)))


def make_loader(crops: CropDataset, cfg: TrainConfig, start: int, end: int, rank: int = 0, world: int = 1,
                pin_memory: bool = False) -> DataLoader:
    """DataLoader over steps ``start..end-1`` yielding this rank's (images, labels, seeds) of each global batch."""
    sampler = StepBatchSampler(len(crops), cfg.batch_size, start, end, cfg.seed, rank, world)
    workers = cfg.workers
    return DataLoader(crops, batch_sampler=sampler, num_workers=workers, collate_fn=collate, pin_memory=pin_memory,
                      worker_init_fn=dist.worker_init, persistent_workers=False, prefetch_factor=2 if workers else None)
