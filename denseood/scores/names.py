"""The score registry: one :class:`ScoreRecord` per anomaly score, and the default score.

Torch-free (the CLI's help text reads it without importing torch): a record names its function as
``"module.function"`` inside ``denseood.scores`` and :attr:`ScoreRecord.fn` imports it on first use.
Everything else that differs between scores lives here too: value range, orientation, inputs (decoder
features, fitted statistics and the function that fits them), the model outputs it applies to, help line.
Adding a score touches its function's module and this file. See docs/architecture.md.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass
from typing import Any, Callable

#: values of ``model.output_kind``: class logits, or a mask transformer's per-pixel class scores s_k
OUTPUT_KINDS = ("logits", "mask_scores")


@dataclass(frozen=True)
class ScoreRecord:
    """What denseood knows about one anomaly score.

    name: lower-case score name (the key in :data:`SCORES`). function: ``"module.function"`` in
    ``denseood.scores``, a pure ``(logits (B,C,H,W), **inputs) -> (B,H,W) float32``. help: one line for CLI help
    and docs. value_range: (lo, hi) bounds every value lies in for any model, or None where the values are
    unbounded or the bounds depend on the model (png16 maps hold only scores with a range). higher_is_anomalous:
    orientation of the values (every score is written so that this holds). features: needs the decoder
    features ``model(x, return_features=True)``. stats: keys of ``model.stats`` it reads; fit: the function
    that fits them, ``"module.function"`` like ``function``. output_kinds: the ``model.output_kind`` values it
    applies to. queries: needs a mask transformer's per-query outputs ``model(x, return_queries=True)`` (class
    logits (B,Q,K+1) and mask logits (B,Q,H,W)). head: the training head the model must carry (``model.head``,
    e.g. "abet" from ``denseood train --head abet``), or None.
    """

    name: str
    function: str
    help: str
    value_range: tuple[float, float] | None = None
    higher_is_anomalous: bool = True
    features: bool = False
    stats: tuple[str, ...] = ()
    fit: str | None = None
    output_kinds: frozenset[str] = frozenset(OUTPUT_KINDS)
    queries: bool = False
    head: str | None = None

    def __post_init__(self) -> None:
        if self.name != self.name.lower() or "," in self.name or not self.name.strip():
            raise ValueError(f"score name {self.name!r} must be lower case without commas")
        for ref in (self.function, self.fit or "module.function"):
            if ref.count(".") != 1:
                raise ValueError(f"score {self.name!r}: {ref!r} must read 'module.function'")
        if bool(self.stats) != bool(self.fit):
            raise ValueError(f"score {self.name!r}: give both stats keys and the fit function, or neither")
        if not self.output_kinds or not self.output_kinds <= set(OUTPUT_KINDS):
            raise ValueError(f"score {self.name!r}: output_kinds {sorted(self.output_kinds)} not within {OUTPUT_KINDS}")
        if self.queries and self.output_kinds != {"mask_scores"}:
            raise ValueError(f"score {self.name!r}: query outputs exist only for output_kinds {{'mask_scores'}}")
        if self.value_range is not None:
            lo, hi = self.value_range
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"score {self.name!r}: value_range {self.value_range} must be finite with lo < hi")

    @property
    def fn(self) -> Callable[..., Any]:
        """The score function (imports its module, and so torch, on first use)."""
        module, attr = self.function.split(".")
        return getattr(importlib.import_module(f"{__package__}.{module}"), attr)

    @property
    def fit_name(self) -> str | None:
        """Name of the fit function in ``denseood.scores`` (e.g. "fit_sml"), None for scores without stats."""
        return self.fit.split(".")[1] if self.fit else None

    @property
    def needs(self) -> frozenset[str]:
        """Extra inputs besides the logits: a subset of {"stats", "features", "queries"}."""
        return (frozenset({"stats"} if self.stats else ()) | frozenset({"features"} if self.features else ())
                | frozenset({"queries"} if self.queries else ()))


_MASK_ONLY = frozenset({"mask_scores"})
_RECORDS = (
    ScoreRecord("msp", "logit_scores.msp", "1 - max softmax probability, in [0, 1 - 1/C]", value_range=(0.0, 1.0)),
    ScoreRecord("maxlogit", "logit_scores.maxlogit", "negative max logit"),
    ScoreRecord("sml", "fitted.sml", "negative standardized max logit (per-class statistics from fit_sml)",
                stats=("sml_mean", "sml_std"), fit="fitted.fit_sml"),
    ScoreRecord("energy", "logit_scores.energy", "free energy -T logsumexp(logits / T)"),
    # log C <= 8 holds for up to 2980 classes
    ScoreRecord("entropy", "logit_scores.entropy", "softmax entropy in nats, in [0, log C]", value_range=(0.0, 8.0)),
    ScoreRecord("jsd", "logit_scores.jsd", "negative Jensen-Shannon divergence of the softmax to uniform "
                "(NFlowJS), in (-log 2, 0]", value_range=(-math.log(2.0), 0.0)),
    ScoreRecord("mahalanobis", "fitted.mahalanobis", "min Mahalanobis distance of decoder features to the class "
                "means (statistics from fit_mahalanobis)", features=True, stats=("maha_means", "maha_precision"),
                fit="fitted.fit_mahalanobis"),
    ScoreRecord("rba", "mask_scores.rba", "RbA, -sum_k tanh(s_k) of a mask transformer's class scores",
                output_kinds=_MASK_ONLY),
    ScoreRecord("mask_msp", "mask_scores.mask_msp", "1 - max_k s_k of a mask transformer's class scores",
                output_kinds=_MASK_ONLY),
    ScoreRecord("mask_maxlogit", "mask_scores.mask_maxlogit", "-max_k s_k of a mask transformer's class scores",
                output_kinds=_MASK_ONLY),
    ScoreRecord("eam", "mask_scores.eam", "EAM, 1 - sum_q sigmoid(mask_q) max_k softmax(class_q)[k] over a mask "
                "transformer's queries", output_kinds=_MASK_ONLY, queries=True),
    ScoreRecord("abet", "logit_scores.abet", "AbeT, 1 - logsumexp(f / T(x)) / C with the learned temperature "
                "T(x) of `denseood train --head abet`", output_kinds=frozenset({"logits"}), head="abet"),
)

#: every score, by name, in the order error messages and docs list them
SCORES: dict[str, ScoreRecord] = {r.name: r for r in _RECORDS}

#: the score every verb and library function uses when none is given
DEFAULT_SCORE = "jsd"


def score_help(what: str, default: bool = False) -> str:
    """Help line of a ``--score`` option: ``what``, then the valid names (and the default when ``default``)."""
    tail = f"; default {DEFAULT_SCORE}" if default else ""
    return f"{what} (one of {', '.join(SCORES)}{tail})"


__all__ = ["ScoreRecord", "SCORES", "DEFAULT_SCORE", "OUTPUT_KINDS", "score_help"]
