"""Fine-tuning (``denseood train --init SPEC``): its defaults, and the comparison with the initial model at the end.

:func:`apply_finetune_defaults` gives a fine-tuning run the learning rate, warm-up and BatchNorm handling measured
in BENCHMARKS.md ("Fine-tuning") where the user set none of them (a from-scratch learning rate ruins a trained
model in a few steps). :func:`snapshot_initial` validates the model before fine-tuning; :func:`finish_finetune`
compares the final validation with it, on the same frames, and when fine-tuning made AP or mIoU worse returns one
warning line and makes ``best.pt`` the best of the two. See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import dist
from ..io import atomic_write_json

__all__ = ["FINETUNE_LR", "FINETUNE_WARMUP_FRACTION", "FINETUNE_FREEZE_BN", "apply_finetune_defaults",
           "steps_line", "InitialModel", "snapshot_initial", "worse_metrics", "finish_finetune"]

#: peak learning rate of a fine-tune when neither --lr, --config nor --set gives one (BENCHMARKS.md "Fine-tuning")
FINETUNE_LR = 3e-4
#: linear warm-up of a fine-tune, as a fraction of --steps (at least one step), unless warmup_steps is given
FINETUNE_WARMUP_FRACTION = 0.05
#: BatchNorm layers of a fine-tune keep training mode (running statistics updated) unless freeze_bn is given
FINETUNE_FREEZE_BN = False


def apply_finetune_defaults(data: dict[str, Any], given: set[str]) -> list[str]:
    """Set the fine-tuning defaults into the TrainConfig fields ``data`` when ``data["init"]`` is set, for each of
    ``lr``, ``warmup_steps``, ``freeze_bn`` not in ``given`` (the fields the user set anywhere). Returns
    "field=value" of each default applied ([] for a run from scratch)."""
    if not data.get("init"):
        return []
    defaults = {"lr": FINETUNE_LR, "warmup_steps": max(1, round(FINETUNE_WARMUP_FRACTION * int(data["steps"]))),
                "freeze_bn": FINETUNE_FREEZE_BN}
    applied = []
    for k, v in defaults.items():
        if k not in given:
            data[k] = v
            applied.append(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}")
    return applied


def steps_line(cfg: Any) -> str:
    """One line of what a run of TrainConfig ``cfg`` will do: its total steps, split into its phases."""
    parts = []
    if cfg.pretrain_steps:
        parts.append(f"{cfg.pretrain_steps} segmenter pre-training")
    if cfg.negatives == "flow" and cfg.flow_pretrain_steps:
        parts.append(f"{cfg.flow_pretrain_steps} flow pre-training (--set flow_pretrain_steps=N)")
    parts.append(f"{cfg.steps} {'joint' if cfg.negatives != 'none' else 'segmenter'} (--steps)")
    return f"training {cfg.total_steps} steps: " + " + ".join(parts)


@dataclass
class InitialModel:
    """The model before fine-tuning: its validation metrics (``validate_segmenter``'s keys) and weights (CPU)."""

    metrics: dict[str, float]
    state: dict[str, torch.Tensor]


def snapshot_initial(trainer: Any) -> InitialModel | None:
    """Validate ``trainer``'s model before a fine-tune (collective under DDP) and keep a CPU copy of its weights.
    None for a run from scratch, a resumed run or a run without validation frames."""
    if not trainer.cfg.init or trainer.resume or trainer.step or not trainer.cfg.val_every:
        return None
    metrics = trainer.validate()
    if not metrics:
        return None
    state = {k: v.detach().to("cpu", copy=True) for k, v in trainer.model.state_dict().items()}
    return InitialModel(metrics, state)


def worse_metrics(initial: dict[str, float], final: dict[str, float]) -> list[str]:
    """The keys of "ap" (jsd pixel AP) and "miou" in both dicts whose final value is below the initial one."""
    return [k for k in ("ap", "miou") if k in initial and k in final and final[k] < initial[k]]


def finish_finetune(trainer: Any, initial: InitialModel | None, summary: dict[str, Any]) -> str | None:
    """After ``trainer.fit()``: when the final validation (``summary["final"]``) is worse than ``initial`` in AP or
    mIoU, the warning line (without "warning: "), and ``best.pt`` becomes the initial model unless the run's own
    best validation (chosen by AP, else mIoU) is at least as good as the initial one in both AP and mIoU;
    ``summary.json`` records ``initial``. None when fine-tuning made neither worse (or there was nothing to
    compare)."""
    final = summary.get("final") or {}
    if initial is None or not final:
        return None
    worse = worse_metrics(initial.metrics, final)
    # the run's best.pt counts only when it is at least as good as the initial model in both AP and mIoU
    initial_is_best = bool(worse) and bool(worse_metrics(initial.metrics, summary.get("best") or {}) or
                                           not summary.get("best"))
    if dist.is_main():
        if initial_is_best:
            _save_initial_as_best(trainer, initial)
            summary["best"] = dict(trainer.best)
        _record(trainer.out / "summary.json", initial.metrics, summary.get("best"))
    if not worse:
        return None
    best_kept = "best.pt is the initial model" if initial_is_best else "best.pt is the best validation of the run"
    name = {"ap": "jsd AP", "miou": "mIoU"}
    what = " and ".join(f"{name[k]} {100 * initial.metrics[k]:.1f} -> {100 * final[k]:.1f} %" for k in worse)
    n = int(initial.metrics.get("val_images", 0))
    return (f"fine-tuning made the model worse than the initial one on the same {n} validation frames ({what}); "
            f"{best_kept}; try a lower --lr (fine-tuning default {FINETUNE_LR:g}) or fewer --steps")


def _save_initial_as_best(trainer: Any, initial: InitialModel) -> Path:
    """Write the initial weights (with fitted score statistics when the run fits them) as ``best.pt``."""
    trainer.model.load_state_dict(initial.state)
    if trainer.cfg.fit_stats:
        trainer._fit_stats(trainer.model)
    trainer.best = {"step": 0, **initial.metrics}
    return trainer.save("best.pt", metrics=initial.metrics, with_state=False)


def _record(summary_file: Path, initial: dict[str, float], best: dict | None) -> None:
    """Add ``initial`` (the validation before fine-tuning) and the final ``best`` to the run's ``summary.json``."""
    import json

    data = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    data["initial"] = initial
    if best is not None:
        data["best"] = best
    atomic_write_json(summary_file, data)
