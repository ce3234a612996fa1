"""Anomaly scores: ``anomaly_score(name, logits, **kw)`` -> (B,H,W) float32, higher = more anomalous.

``SCORES`` maps each name to its :class:`~denseood.scores.names.ScoreRecord` (function, value range, inputs,
model outputs it applies to, help line); the functions here read it. ``score_kwargs(name, model)`` builds the
``stats`` argument and checks that the score applies to the model's ``output_kind``. This module and ``names``
import no torch (CLI help reads them); the score functions (``msp``, ``fit_sml``, ...) load on first access.
See docs/architecture.md.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
from typing import TYPE_CHECKING, Any, Callable

from ..errors import ConfigError
from .names import DEFAULT_SCORE, OUTPUT_KINDS, SCORES, ScoreRecord, score_help

if TYPE_CHECKING:
    import torch

#: inputs an engine may pass to every score; a score that does not take them ignores them
_SHARED_INPUTS = {"stats", "features", "queries"}

#: torch-using names re-exported from the modules that define them (each record's function and fit function,
#: and the divergence the NFlowJS loss shares), imported on first access
_LAZY = {attr: module for module, attr in (ref.split(".") for rec in SCORES.values()
                                           for ref in (rec.function, rec.fit) if ref)}
_LAZY["js_divergence_to_uniform"] = "divergence"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_score(name: Any) -> ScoreRecord:
    """The record of score ``name`` (any case); ConfigError naming close matches and the valid scores."""
    key = name.lower() if isinstance(name, str) else None
    if key not in SCORES:
        close = difflib.get_close_matches(key, list(SCORES), n=3) if key else []
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"unknown score {name!r}; {hint}valid scores: {', '.join(SCORES)}")
    return SCORES[key]


def parse_scores(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'jsd,msp' or ['jsd', 'msp'] -> validated lower-case names (ConfigError lists valid ones)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip().lower() for s in items if s.strip()]
    if not names:
        raise ConfigError(f"no score given; valid scores: {', '.join(SCORES)}")
    for n in names:
        get_score(n)
    return list(dict.fromkeys(names))


def anomaly_score(name: str, logits: torch.Tensor, **kw: Any) -> torch.Tensor:
    """Score ``name`` of logits (B,C,H,W) -> (B,H,W) float32, higher = more anomalous.

    kw: score options (``temperature`` for energy) and the inputs the record ``needs`` (``stats``,
    ``features``, ``queries``). ``stats``/``features``/``queries`` are dropped for scores that do not use them, so an engine may pass
    them to every score; any other unknown keyword raises ConfigError.
    """
    fn: Callable[..., torch.Tensor] = get_score(name).fn
    params = inspect.signature(fn).parameters
    accepted = {k for k in params if k != "logits"}
    unknown = sorted(k for k in kw if k not in accepted and k not in _SHARED_INPUTS)
    if unknown:
        raise ConfigError(f"score {name!r} got unknown option(s) {unknown}; it accepts {sorted(accepted) or 'none'}")
    return fn(logits, **{k: v for k, v in kw.items() if k in accepted})


def _applies(rec: ScoreRecord, model: Any) -> bool:
    return getattr(model, "output_kind", "logits") in rec.output_kinds and (
        rec.head is None or getattr(model, "head", None) == rec.head) and (
        not rec.queries or bool(getattr(model, "returns_queries", False)))


def applicable_scores(model: Any) -> list[str]:
    """Names of the scores that apply to ``model.output_kind`` (default "logits"), its training head (``model.head``,
    default None) and, for query scores, ``model.returns_queries`` (default False)."""
    return [s for s, rec in SCORES.items() if _applies(rec, model)]


def check_applicable(name: str, model: Any) -> None:
    """ConfigError unless score ``name`` applies to the model's ``output_kind`` and head; the message lists those
    that do."""
    rec = get_score(name)
    kind = getattr(model, "output_kind", "logits")
    what = getattr(model, "describe", lambda: type(model).__name__)()
    if kind in rec.output_kinds and rec.queries and not getattr(model, "returns_queries", False):
        raise ConfigError(f"score {rec.name!r} needs a mask transformer's per-query outputs (model(x, "
                          f"return_queries=True), which hf: Mask2Former, MaskFormer and OneFormer models give) but "
                          f"{what} gives only per-pixel class scores; scores which apply: "
                          f"{', '.join(applicable_scores(model))}")
    if kind in rec.output_kinds and not _applies(rec, model):
        raise ConfigError(f"score {rec.name!r} needs a model trained with the {rec.head} head (`denseood train "
                          f"--head {rec.head}`) but {what} has {getattr(model, 'head', None) or 'none'}; scores "
                          f"which apply: {', '.join(applicable_scores(model))}")
    if kind not in rec.output_kinds:
        need = ("a mask transformer (output_kind 'mask_scores': an hf: Mask2Former, MaskFormer or OneFormer)"
                if rec.output_kinds == {"mask_scores"} else
                f"a model with output_kind {'/'.join(sorted(rec.output_kinds))!r}"
                + (f" trained with `denseood train --head {rec.head}`" if rec.head else ""))
        raise ConfigError(f"score {rec.name!r} needs {need} but {what} gives {kind!r}; scores which apply: "
                          f"{', '.join(applicable_scores(model))}")


def score_kwargs(name: str, model: Any, device: torch.device | str | None = None) -> dict[str, Any]:
    """Keyword arguments ``anomaly_score(name, ...)`` needs from ``model`` (``{"stats": ...}`` or ``{}``).

    ``features`` are not included: get them from ``model(x, return_features=True)``.
    Raises ConfigError if the score does not apply to ``model.output_kind`` (``check_applicable``) or the model
    lacks the fitted statistics the score needs.
    """
    check_applicable(name, model)
    rec = get_score(name)
    if not rec.stats:
        return {}
    stats = getattr(model, "stats", None) or {}
    missing = [k for k in rec.stats if k not in stats]
    if missing:
        src = getattr(model, "checkpoint_meta", None)
        where = "the checkpoint" if src is not None else "the model"
        raise ConfigError(f"score {rec.name!r} needs statistics {list(rec.stats)} but {where} lacks {missing}; "
                          f"fit them with denseood.scores.{rec.fit_name}(model, train_loader) and save the "
                          f"checkpoint again")
    if hasattr(model, "stats_on"):
        return {"stats": model.stats_on(device)}
    import torch

    dev = torch.device(device) if device is not None else None
    return {"stats": {k: (v.to(dev) if dev is not None else v) for k, v in stats.items()}}


__all__ = [
    "SCORES", "DEFAULT_SCORE", "OUTPUT_KINDS", "ScoreRecord", "score_help", "get_score", "anomaly_score",
    "score_kwargs", "parse_scores", "applicable_scores", "check_applicable", *_LAZY,
]
