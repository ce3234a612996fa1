"""TrainConfig: every setting a training run depends on, and its validation (recorded as ``RUN/config.yaml``).

A field per option; ``denseood train --config FILE`` reads a YAML of these fields and ``--set KEY=VALUE``
overrides any of them. See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from ..models.names import HEADS
from .names import AMP_MODES

IGNORE = 255  # the void label of training labels (train ids 0..num_classes-1)


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
    init_weights: str | None = None      # weights for init python:MODULE:FACTORY (a checkpoint or state dict)
    head: str | None = None              # abet: AbeT's learned temperature head (smp segmenters; negatives none)
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
        """Raise ConfigError naming the first bad field (dataset, root, negatives, counts, amp, schedule, lam, optimizer,
        head)."""
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
        self._validate_numbers()
        if self.amp not in AMP_MODES:
            raise ConfigError(f"amp {self.amp!r}: expected {' | '.join(AMP_MODES)}")
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
        self._validate_head()

    def _validate_head(self) -> None:
        """``head`` None or "abet"; AbeT learns its temperature from inlier data only, so it needs negatives none."""
        if self.head is None:
            return
        if self.head not in HEADS:
            raise ConfigError(f"--head {self.head!r}: expected {' | '.join(HEADS)} (or no --head)")
        if self.negatives != "none":
            raise ConfigError(f"--head abet trains on inlier data only (AbeT's learned temperature), but --negatives "
                              f"is {self.negatives!r}; pass --negatives none")

    #: numeric fields and their rule: "pos" > 0, "nonneg" >= 0 (0 = off where the field says so)
    _NUMERIC_RULES = {"lr": "pos", "flow_lr": "pos", "neg_temperature": "pos", "weight_decay": "nonneg",
                      "grad_clip": "nonneg", "flow_levels": "pos", "flow_steps": "pos", "flow_hidden": "pos",
                      "neg_per_image": "pos", "stats_batches": "pos", "log_every": "pos", "ckpt_every": "nonneg",
                      "val_every": "nonneg", "workers": "nonneg", "val_limit": "pos"}

    def _validate_numbers(self) -> None:
        """Every numeric field finite and in range (ConfigError naming the key); ``scale``/``neg_size`` (lo, hi) with
        0 < lo <= hi; ``val_limit`` None or > 0."""
        import math

        for name, rule in self._NUMERIC_RULES.items():
            v = getattr(self, name)
            if v is None and name == "val_limit":
                continue
            bad = not math.isfinite(v) or (v <= 0 if rule == "pos" else v < 0)
            if bad:
                need = "a positive number" if rule == "pos" else "a number >= 0"
                raise ConfigError(f"{name} must be {need}, got {v}; fix it in --config or --set {name}=VALUE")
        for name in ("scale", "neg_size"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
                raise ConfigError(f"{name} must be [lo, hi] with 0 < lo <= hi, got {list(getattr(self, name))}; "
                                  f"fix it in --config or --set {name}=[lo,hi]")

    @property
    def total_steps(self) -> int:
        """pretrain_steps + flow_pretrain_steps (flow negatives only) + steps: the global step count of the run."""
        flow_pre = self.flow_pretrain_steps if self.negatives == "flow" else 0
        return self.pretrain_steps + flow_pre + self.steps
