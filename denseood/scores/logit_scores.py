"""Anomaly scores computed from logits alone. Each: logits (B,C,H,W) any float dtype -> (B,H,W) float32,
higher = more anomalous; computed in float32 so bf16/fp16 logits neither overflow nor lose the argmax."""
from __future__ import annotations

import torch

from ..errors import ConfigError
from .divergence import js_divergence_to_uniform


def check_logits(logits: torch.Tensor, name: str) -> torch.Tensor:
    """Validate (B,C,H,W) floating logits and return them as float32."""
    if not isinstance(logits, torch.Tensor):
        raise ConfigError(f"score {name!r} expects a torch.Tensor of logits, got {type(logits).__name__}")
    if logits.ndim != 4:
        raise ConfigError(f"score {name!r} expects logits of shape (B,C,H,W), got {tuple(logits.shape)}; "
                          f"add a batch dimension with logits[None]")
    if not logits.is_floating_point():
        raise ConfigError(f"score {name!r} expects floating-point logits, got dtype {logits.dtype}")
    if logits.shape[1] < 2:
        raise ConfigError(f"score {name!r} needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    return logits.float()


def msp(logits: torch.Tensor) -> torch.Tensor:
    """1 - max softmax probability. Range [0, 1 - 1/C]."""
    x = check_logits(logits, "msp")
    return 1.0 - torch.softmax(x, dim=1).amax(dim=1)


def maxlogit(logits: torch.Tensor) -> torch.Tensor:
    """Negative max logit."""
    x = check_logits(logits, "maxlogit")
    return -x.amax(dim=1)


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy -T * logsumexp(logits / T)."""
    if not temperature > 0:
        raise ConfigError(f"energy temperature must be > 0, got {temperature!r}")
    x = check_logits(logits, "energy")
    return -temperature * torch.logsumexp(x / temperature, dim=1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Shannon entropy -sum p log p of the softmax, in nats. Range [0, log C]."""
    x = check_logits(logits, "entropy")
    logp = torch.log_softmax(x, dim=1)
    return (-(logp.exp() * logp).sum(dim=1)).clamp_min(0.0)


def jsd(logits: torch.Tensor) -> torch.Tensor:
    """Negative Jensen-Shannon divergence between softmax and the uniform distribution (NFlowJS score).

    Range (-log 2, 0]; 0 for a uniform prediction.
    """
    x = check_logits(logits, "jsd")
    return -js_divergence_to_uniform(x, dim=1)


def abet(logits: torch.Tensor) -> torch.Tensor:
    """AbeT (ablated learned-temperature energy): 1 - logsumexp_k(f_k(x) / T(x)) / C, (B,H,W) float32, unbounded.

    logits: (B,C,H,W) the temperature-scaled logits f / T(x) that a model trained with ``denseood train --head
    abet`` returns (f: the class head's logits, T(x) > 0: its learned per-pixel temperature, docs/architecture.md).
    Higher = more anomalous. The paper's score (LeVine et al., "Out-of-
    Distribution Detection & Applications With Ablated Learned Temperature Energy") is the energy
    -T(x) logsumexp(f / T(x)) with its forefront T(x) ablated, -logsumexp(f / T(x)); this is the semantic-segmentation
    form of the authors' code, checked against ``abet_score`` in github.com/anonymousoodauthor/abet,
    segmentation/meta-ood-evaluation/src/scoring_fns.py (``-(log(sum(exp(logits))) / num_classes) + 1`` with
    ``logits = numerators / temperature`` from src/model/temperature_networks.py): the same order of pixels,
    rescaled by 1/C and shifted by 1. logsumexp is computed stably (their code exponentiates directly).
    """
    x = check_logits(logits, "abet")
    return 1.0 - torch.logsumexp(x, dim=1) / x.shape[1]
