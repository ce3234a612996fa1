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
    check_train_state(st, path)
    try:
        trainer.model.load_state_dict(ck["state_dict"])
        trainer.opt.load_state_dict(st["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ConfigError(f"--resume: {path} does not fit this run's model or optimizer ({line[:200]}); resume "
                          f"with the run's own config, or start a new --out") from e
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


def check_train_state(st: Any, path: Path) -> None:
    """ConfigError naming ``path`` and the field when ``extra["train_state"]`` is not what :func:`train_state`
    writes (``step`` a non-negative int, ``optimizer`` a dict, ``best`` a dict, ``history`` a list)."""
    if not isinstance(st, dict):
        raise ConfigError(f"--resume: {path}: train_state must be a dict, got {type(st).__name__} (corrupt file)")
    step = st.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ConfigError(f"--resume: {path}: train_state.step must be a non-negative integer, got {step!r} "
                          f"(corrupt or edited file); resume from another checkpoint or start a new --out")
    for key, typ in (("optimizer", dict), ("best", dict), ("history", list)):
        if key in st and not isinstance(st[key], typ):
            raise ConfigError(f"--resume: {path}: train_state.{key} must be a {typ.__name__}, got "
                              f"{type(st[key]).__name__} (corrupt or edited file)")
    if "optimizer" not in st:
        raise ConfigError(f"--resume: {path}: train_state lacks the optimizer state (corrupt file)")
