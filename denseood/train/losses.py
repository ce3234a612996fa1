"""NFlowJS losses: cross-entropy on inlier pixels + lambda * JS(softmax || uniform) on negative pixels, and the flow's loss.

Objective (Grcic, Bevandic, Segvic, NFlowJS), minimised jointly over segmenter theta and flow gamma:

    J = CE_theta(inlier pixels) + lam * JS_theta(negative pixels of flow samples x ~ p_gamma) + NLL_gamma(inlier patches)

The JS term is minimised by BOTH players with the same sign: the segmenter is pushed towards the uniform
distribution on negatives, and the flow receives d(lam * JS)/d gamma through its (differentiable) samples, which
moves them to where the segmenter is already uncertain, i.e. towards the border of the inlier distribution, while
the NLL term keeps them close to inlier patches. Source for the sign: the authors' joint flow/segmenter training
code (github.com/matejgrcic/Open-set-M2F, mask2former/trainers/joint_trainer.py): the segmenter loss (including the
JS-to-uniform term on the pasted flow samples, criterion.py ``loss_jsd``) is back-propagated once into segmenter and
flow alike, and the flow additionally minimises its bits/dim on the clean image content under the paste boxes.

The trainer's DDP-aware forms (:func:`global_segmenter_loss`, :func:`reduce_terms`) normalise by global pixel
counts, so N ranks optimise and log what one process with the same global batch would. See docs/architecture.md.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import dist
from ..errors import ConfigError
from ..scores.divergence import js_divergence_to_uniform


def _check_mask(logits: torch.Tensor, neg_mask: torch.Tensor) -> None:
    if logits.dim() != 4:
        raise ConfigError(f"logits must be (B,C,H,W), got {tuple(logits.shape)}")
    if neg_mask.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ConfigError(f"neg_mask shape {tuple(neg_mask.shape)} does not match logits {tuple(logits.shape)} "
                          "(B,H,W); upsample the logits to the label size before computing the loss")


def jsd_uniform_loss(logits: torch.Tensor, neg_mask: torch.Tensor) -> torch.Tensor:
    """Scalar float32: mean over negative pixels of JS(softmax(logits) || uniform) in nats, range [0, log 2).

    logits: (B,C,H,W) any float dtype (computed in float32); neg_mask: (B,H,W) bool. 0 (still attached to the
    graph, no device sync) when there is no negative pixel.
    """
    _check_mask(logits, neg_mask)
    js = js_divergence_to_uniform(logits, dim=1)
    m = neg_mask.to(js.dtype)
    return (js * m).sum() / m.sum().clamp_min(1.0)


def nflowjs_segmenter_loss(logits: torch.Tensor, labels: torch.Tensor, neg_mask: torch.Tensor, lam: float = 0.03,
                           ignore_index: int = 255) -> tuple[torch.Tensor, dict[str, float]]:
    """(total, {"ce": float, "js": float}) with total = CE + lam * JS (float32 scalar).

    logits: (B,C,H,W) at label resolution (the caller upsamples); labels: (B,H,W) long, ``ignore_index`` = void;
    neg_mask: (B,H,W) bool. CE is the mean over labelled, non-negative pixels (negative pixels are excluded even if
    their label was not set to ``ignore_index``; 0 when no pixel is labelled). JS is :func:`jsd_uniform_loss`.
    """
    _check_mask(logits, neg_mask)
    if labels.shape != neg_mask.shape:
        raise ConfigError(f"labels shape {tuple(labels.shape)} does not match logits {tuple(logits.shape)} (B,H,W); "
                          "upsample the logits to the label size before computing the loss")
    x = logits.float()
    target = labels.long().masked_fill(neg_mask, ignore_index)
    valid = (target != ignore_index).sum()
    ce = F.cross_entropy(x, target, ignore_index=ignore_index, reduction="sum") / valid.clamp_min(1).to(x.dtype)
    js = jsd_uniform_loss(x, neg_mask)
    total = ce + lam * js
    return total, {"ce": float(ce.detach()), "js": float(js.detach())}


def nflowjs_flow_loss(flow_nll: torch.Tensor, js_term: torch.Tensor, beta: float) -> torch.Tensor:
    """The flow's objective: ``flow_nll + beta * js_term`` (both minimised; see the module docstring for the sign).

    flow_nll: scalar NLL of inlier patches (e.g. ``FlowNegatives.inlier_nll``, bits/dim); js_term: the scalar JS loss
    on the segmenter's output at the pasted samples (``jsd_uniform_loss``), NOT detached, so its gradient reaches the
    flow through the samples; beta: its weight, ``lam`` in the paper's formulation. Returns a float32 scalar.

    Two equivalent ways to train (pick one, never both, or the flow gets the JS gradient twice):
    - joint, as the authors' code: ``(seg_total + flow_nll).backward()`` and step both optimisers. The flow then
      gets lam * dJS/dgamma + dNLL/dgamma, plus the CE gradient of inlier pixels whose receptive field overlaps a
      patch (zero for a 1x1 segmenter, where this equals ``nflowjs_flow_loss(flow_nll, js, lam)`` exactly);
    - separate: backprop this loss into the flow only (e.g. ``torch.autograd.grad(..., flow_params)``), since
      ``js_term`` also carries segmenter gradients.
    """
    return flow_nll.float() + beta * js_term.float()


def global_counts(labels: torch.Tensor, neg_mask: torch.Tensor, ignore_index: int = 255) -> tuple[float, float, float]:
    """(labelled pixels, negative pixels, images) summed over DDP ranks, each at least 1 (collective).

    labels: (B,H,W) long with ``ignore_index`` = void (negative pixels already set to it); neg_mask: (B,H,W) bool.
    """
    counts = torch.tensor([(labels != ignore_index).sum().item(), neg_mask.sum().item(), float(labels.shape[0])],
                          dtype=torch.float64)
    dist.all_reduce_sum(counts)
    n_lab, n_neg, n_img = (max(1.0, float(c)) for c in counts)
    return n_lab, n_neg, n_img


def global_segmenter_loss(logits: torch.Tensor, labels: torch.Tensor, neg_mask: torch.Tensor, lam: float,
                          counts: tuple[float, float, float], ignore_index: int = 255
                          ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(loss to back-propagate on this rank, {"ce": CE sum, "js": JS sum} of this rank, detached).

    logits: (B,C,H,W) float32 at label resolution; labels / neg_mask as :func:`global_counts`, whose result is
    ``counts``. The loss is ``world * (CE_sum / n_lab + lam * JS_sum / n_neg)``: DDP averages gradients over ranks,
    so the gradient is that of the global-batch mean losses (:func:`nflowjs_segmenter_loss` in one process).
    """
    world = dist.world_size()
    n_lab, n_neg, _ = counts
    ce_sum = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    js_sum = (js_divergence_to_uniform(logits) * neg_mask).sum()
    loss = ce_sum / n_lab * world + lam * (js_sum / n_neg * world)
    return loss, {"ce": ce_sum.detach(), "js": js_sum.detach()}


def reduce_terms(terms: dict[str, torch.Tensor], n_lab: float, n_neg: float, n_img: float, lam: float) -> dict[str, float]:
    """Logged loss terms of a step: this rank's sums ``terms`` (ce, js, flow_nll; scalars) summed over ranks and
    normalised by the global counts: ``{"ce": sum/n_lab, "js": sum/n_neg, "flow_bpd": flow_nll/n_img,
    "loss": ce + lam * js}`` (keys present as in ``terms``; collective under DDP)."""
    names = list(terms)
    t = torch.tensor([float(terms[k]) for k in names], dtype=torch.float64)
    dist.all_reduce_sum(t)
    out: dict[str, float] = {}
    for k, v in zip(names, t.tolist()):
        if k == "ce":
            out["ce"] = v / n_lab
        elif k == "js":
            out["js"] = v / n_neg if n_neg >= 1 else 0.0
        elif k == "flow_nll":
            out["flow_bpd"] = v / n_img
    out["loss"] = out["ce"] + lam * out.get("js", 0.0)
    return out
