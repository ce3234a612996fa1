"""Jensen-Shannon divergence to the uniform distribution (NFlowJS loss and score share this function)."""
from __future__ import annotations

import math

import torch


def js_divergence_to_uniform(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """JS(softmax(logits) || U) per position, in nats, range [0, log 2).

    logits: (B, C, H, W) any float dtype (computed in float32). Returns (B, H, W) float32.
    JS(p||u) = 1/2 KL(p||m) + 1/2 KL(u||m), m = (p + u) / 2, u = 1/C.
    """
    x = logits.float()
    c = x.shape[dim]
    logp = torch.log_softmax(x, dim=dim)
    p = logp.exp()
    log_u = -math.log(c)
    m = 0.5 * (p + 1.0 / c)
    logm = torch.log(m)
    kl_pm = (p * (logp - logm)).sum(dim)
    kl_um = ((1.0 / c) * (log_u - logm)).sum(dim)
    return (0.5 * (kl_pm + kl_um)).clamp_min(0.0)
