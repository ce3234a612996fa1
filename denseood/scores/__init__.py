"""Anomaly scores: ``anomaly_score(name, logits, **kw)`` -> (B,H,W) float32, higher = more anomalous.

``SCORES`` maps names to pure tensor functions; ``SCORE_REQUIREMENTS`` says which extra inputs a score needs
(``stats``: fitted statistics from ``model.stats``; ``features``: decoder features from
``model(x, return_features=True)``); ``score_kwargs(name, model)`` builds the ``stats`` argument and checks the
score applies to the model's ``output_kind`` (``SCORE_OUTPUT_KINDS``: the mask scores ``rba``, ``mask_msp``,
``mask_maxlogit`` need a mask transformer's per-pixel class scores; every other score works on both kinds).
See docs/architecture.md.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from ..errors import ConfigError
from .fitted import fit_mahalanobis, fit_sml, mahalanobis, sml
from .jsd import js_divergence_to_uniform
from .logit_scores import energy, entropy, jsd, maxlogit, msp
from .mask_scores import mask_maxlogit, mask_msp, rba

SCORES: dict[str, Callable[..., torch.Tensor]] = {
    "msp": msp,
    "maxlogit": maxlogit,
    "sml": sml,
    "energy": energy,
    "entropy": entropy,
    "jsd": jsd,
    "mahalanobis": mahalanobis,
    "rba": rba,
    "mask_msp": mask_msp,
    "mask_maxlogit": mask_maxlogit,
}

#: extra inputs each score needs besides the logits
SCORE_REQUIREMENTS: dict[str, set[str]] = {name: set() for name in SCORES}
SCORE_REQUIREMENTS.update({"sml": {"stats"}, "mahalanobis": {"stats", "features"}})

#: keys of model.stats each fitted score reads
STATS_REQUIRED: dict[str, tuple[str, ...]] = {
    "sml": ("sml_mean", "sml_std"),
    "mahalanobis": ("maha_means", "maha_precision"),
}
_FIT_FN = {"sml": "fit_sml", "mahalanobis": "fit_mahalanobis"}

#: model output kinds (``model.output_kind``) each score applies to
SCORE_OUTPUT_KINDS: dict[str, frozenset[str]] = {name: frozenset({"logits", "mask_scores"}) for name in SCORES}
SCORE_OUTPUT_KINDS.update({name: frozenset({"mask_scores"}) for name in ("rba", "mask_msp", "mask_maxlogit")})

#: inputs an engine may pass to every score; a score that does not take them ignores them
_SHARED_INPUTS = {"stats", "features"}


def _get(name: str) -> Callable[..., torch.Tensor]:
    if not isinstance(name, str) or name.lower() not in SCORES:
        raise ConfigError(f"unknown score {name!r}; valid scores: {', '.join(SCORES)}")
    return SCORES[name.lower()]


def parse_scores(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'jsd,msp' or ['jsd', 'msp'] -> validated lower-case names (ConfigError lists valid ones)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip().lower() for s in items if s.strip()]
    if not names:
        raise ConfigError(f"no score given; valid scores: {', '.join(SCORES)}")
    for n in names:
        _get(n)
    return list(dict.fromkeys(names))


def anomaly_score(name: str, logits: torch.Tensor, **kw: Any) -> torch.Tensor:
    """Score ``name`` of logits (B,C,H,W) -> (B,H,W) float32, higher = more anomalous.

    kw: score options (``temperature`` for energy) and inputs from ``SCORE_REQUIREMENTS`` (``stats``,
    ``features``). ``stats``/``features`` are dropped for scores that do not use them, so an engine may pass
    them to every score; any other unknown keyword raises ConfigError.
    """
    fn = _get(name)
    params = inspect.signature(fn).parameters
    accepted = {k for k in params if k != "logits"}
    unknown = sorted(k for k in kw if k not in accepted and k not in _SHARED_INPUTS)
    if unknown:
        raise ConfigError(f"score {name!r} got unknown option(s) {unknown}; it accepts {sorted(accepted) or 'none'}")
    return fn(logits, **{k: v for k, v in kw.items() if k in accepted})


def applicable_scores(model: Any) -> list[str]:
    """Names of the scores that apply to ``model.output_kind`` (default "logits")."""
    kind = getattr(model, "output_kind", "logits")
    return [s for s in SCORES if kind in SCORE_OUTPUT_KINDS[s]]


def check_applicable(name: str, model: Any) -> None:
    """ConfigError unless score ``name`` applies to the model's ``output_kind``; the message lists those that do."""
    _get(name)
    key = name.lower()
    kind = getattr(model, "output_kind", "logits")
    if kind not in SCORE_OUTPUT_KINDS[key]:
        what = getattr(model, "describe", lambda: type(model).__name__)()
        raise ConfigError(f"score {key!r} needs a mask transformer (output_kind 'mask_scores': an hf: Mask2Former, "
                          f"MaskFormer or OneFormer) but {what} gives {kind!r}; scores which apply: "
                          f"{', '.join(applicable_scores(model))}")


def score_kwargs(name: str, model: Any, device: torch.device | str | None = None) -> dict[str, Any]:
    """Keyword arguments ``anomaly_score(name, ...)`` needs from ``model`` (``{"stats": ...}`` or ``{}``).

    ``features`` are not included: get them from ``model(x, return_features=True)``.
    Raises ConfigError if the score does not apply to ``model.output_kind`` (``check_applicable``) or the model
    lacks the fitted statistics the score needs.
    """
    check_applicable(name, model)
    key = name.lower()
    if "stats" not in SCORE_REQUIREMENTS[key]:
        return {}
    stats = getattr(model, "stats", None) or {}
    missing = [k for k in STATS_REQUIRED[key] if k not in stats]
    if missing:
        src = getattr(model, "checkpoint_meta", None)
        where = "the checkpoint" if src is not None else "the model"
        raise ConfigError(f"score {key!r} needs statistics {list(STATS_REQUIRED[key])} but {where} lacks {missing}; "
                          f"fit them with denseood.scores.{_FIT_FN[key]}(model, train_loader) and save the "
                          f"checkpoint again")
    if hasattr(model, "stats_on"):
        return {"stats": model.stats_on(device)}
    dev = torch.device(device) if device is not None else None
    return {"stats": {k: (v.to(dev) if dev is not None else v) for k, v in stats.items()}}


__all__ = [
    "SCORES", "SCORE_REQUIREMENTS", "STATS_REQUIRED", "SCORE_OUTPUT_KINDS", "anomaly_score", "score_kwargs",
    "parse_scores", "applicable_scores", "check_applicable",
    "msp", "maxlogit", "energy", "entropy", "jsd", "sml", "mahalanobis", "fit_sml", "fit_mahalanobis",
    "rba", "mask_msp", "mask_maxlogit",
    "js_divergence_to_uniform",
]
