"""The resumable training state inside ``last.pt`` (``extra["train_state"]``): what is saved, and restoring it.

See docs/architecture.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ConfigError


def train_state(trainer: Any) -> dict:
    """step, optimizer, best, history (+ flow, flow_optimizer with flow negatives; + scaler with fp16)."""
    st: dict[str, Any] = {"step": trainer.step, "optimizer": trainer.opt.state_dict(), "best": dict(trainer.best),
                          "history": list(trainer.history)}
    if trainer.flow is not None:
        st["flow"] = trainer.flow.state_dict()
        st["flow_optimizer"] = trainer.flow_opt.state_dict()
    if trainer.scaler is not None:
        st["scaler"] = trainer.scaler.state_dict()
    return st


def restore_train_state(trainer: Any, path: Path) -> None:
    """Load model weights and the state saved by :func:`train_state` from ``path`` into ``trainer``.

    Raises ConfigError naming the file when it is missing, holds no training state, or lacks the flow state
    that the trainer's config needs."""
    from ..models.checkpoint import read_checkpoint

    if not path.is_file():
        raise ConfigError(f"--resume: no {path} to resume from (run without --resume to start)")
    ck = read_checkpoint(path)
    st = ck.get("extra", {}).get("train_state")
    if st is None:
        raise ConfigError(f"--resume: {path} holds no training state")
    trainer.model.load_state_dict(ck["state_dict"])
    trainer.opt.load_state_dict(st["optimizer"])
    if trainer.flow is not None:
        if "flow" not in st:
            raise ConfigError(f"--resume: {path} has no flow state but the config uses flow negatives")
        trainer.flow.load_state_dict(st["flow"])
        trainer.flow_opt.load_state_dict(st["flow_optimizer"])
    if trainer.scaler is not None and "scaler" in st:
        trainer.scaler.load_state_dict(st["scaler"])
    trainer.step = int(st["step"])
    trainer.best = dict(st.get("best", {}))
    trainer.history = list(st.get("history", []))
