"""NFlowJS losses against NumPy / torch references, and the flow-loss gradient equivalence."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from denseood.errors import ConfigError
from denseood.models.flow import PatchFlow
from denseood.train.losses import jsd_uniform_loss, nflowjs_flow_loss, nflowjs_segmenter_loss
from denseood.train.negatives import FlowNegatives


def _js_numpy(logits: np.ndarray) -> np.ndarray:
    """JS(softmax || uniform) per pixel, nats; logits (B,C,H,W) -> (B,H,W)."""
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    c = logits.shape[1]
    u = np.full_like(p, 1.0 / c)
    m = 0.5 * (p + u)
    return 0.5 * (p * np.log(p / m)).sum(1) + 0.5 * (u * np.log(u / m)).sum(1)


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 6, 7, generator=g, dtype=torch.float64) * 3
    labels = torch.randint(0, 5, (2, 6, 7), generator=g)
    labels[0, 0] = 255
    neg = torch.rand(2, 6, 7, generator=g) < 0.3
    return logits, labels, neg


def test_jsd_uniform_loss_matches_numpy():
    logits, _, neg = _data()
    ref = _js_numpy(logits.numpy())[neg.numpy()].mean()
    out = jsd_uniform_loss(logits, neg)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref, rel=1e-5)
    # uniform logits -> 0, one-hot-like logits -> close to the maximum JS < log 2
    assert jsd_uniform_loss(torch.zeros(1, 4, 2, 2), torch.ones(1, 2, 2, dtype=torch.bool)).item() == pytest.approx(0, abs=1e-7)
    peaked = torch.zeros(1, 4, 2, 2)
    peaked[:, 0] = 50
    v = jsd_uniform_loss(peaked, torch.ones(1, 2, 2, dtype=torch.bool)).item()
    assert _js_numpy(peaked.double().numpy()).mean() == pytest.approx(v, rel=1e-5) and v < np.log(2)


def test_jsd_uniform_loss_no_negatives_keeps_graph_and_low_precision():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    out = jsd_uniform_loss(logits, torch.zeros(2, 4, 4, dtype=torch.bool))
    assert out.item() == 0.0
    out.backward()
    assert logits.grad is not None and (logits.grad == 0).all()
    l64, _, neg = _data(1)
    half = jsd_uniform_loss(l64.to(torch.bfloat16), neg)
    assert half.dtype == torch.float32
    ref = _js_numpy(l64.to(torch.bfloat16).double().numpy())[neg.numpy()].mean()
    assert half.item() == pytest.approx(ref, rel=1e-4)


def test_segmenter_loss_ce_and_total():
    logits, labels, neg = _data(2)
    total, logs = nflowjs_segmenter_loss(logits, labels, neg, lam=0.1)
    ce_ref = F.cross_entropy(logits.float(), labels.masked_fill(neg, 255), ignore_index=255).item()
    js_ref = _js_numpy(logits.numpy())[neg.numpy()].mean()
    assert logs["ce"] == pytest.approx(ce_ref, rel=1e-5)
    assert logs["js"] == pytest.approx(js_ref, rel=1e-5)
    assert isinstance(logs["ce"], float) and isinstance(logs["js"], float)
    assert total.dtype == torch.float32
    assert total.item() == pytest.approx(ce_ref + 0.1 * js_ref, rel=1e-5)
    # labels already 255 at negatives (as the sources return them): same CE as torch with ignore_index
    lab255 = labels.masked_fill(neg, 255)
    _, logs2 = nflowjs_segmenter_loss(logits, lab255, neg)
    assert logs2["ce"] == pytest.approx(F.cross_entropy(logits, lab255, ignore_index=255).item(), rel=1e-5)
    # bf16 logits are computed in float32
    t16, _ = nflowjs_segmenter_loss(logits.to(torch.bfloat16), labels, neg)
    assert t16.dtype == torch.float32
    # everything ignored -> finite zero CE (torch would give nan)
    t0, l0 = nflowjs_segmenter_loss(logits, torch.full_like(labels, 255), neg)
    assert l0["ce"] == 0.0 and torch.isfinite(t0)


def test_segmenter_loss_shape_errors():
    logits, labels, neg = _data()
    with pytest.raises(ConfigError, match="upsample"):
        nflowjs_segmenter_loss(logits[:, :, :3], labels, neg)
    with pytest.raises(ConfigError, match="upsample"):
        nflowjs_segmenter_loss(logits, labels[:, :3], neg)
    with pytest.raises(ConfigError):
        jsd_uniform_loss(logits[0], neg[0])


def _tiny_flow() -> PatchFlow:
    """A small flow with ActNorm initialised and every parameter moved off its (often zero) initial value."""
    torch.manual_seed(0)
    flow = PatchFlow(levels=2, steps=1, hidden=8)
    flow.encode(torch.rand(2, 3, 8, 8))
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return flow


def _backward(neg: FlowNegatives, seg: torch.nn.Module, images, labels, kind: str, lam: float, beta: float):
    """Paste (fixed seed) and backprop either the joint objective CE + lam*JS + NLL ("joint") or the flow's own loss
    NLL + beta*JS ("flow"). Returns the pasted images."""
    out, lab, mask = neg.paste(images, labels, generator=torch.Generator().manual_seed(1))
    logits = seg(out)
    nll = neg.inlier_nll(images, generator=torch.Generator().manual_seed(2))
    if kind == "joint":
        total, _ = nflowjs_segmenter_loss(logits, lab, mask, lam=lam)
        (total + nll).backward()
    else:
        nflowjs_flow_loss(nll, jsd_uniform_loss(logits, mask), beta=beta).backward()
    return out.detach()


def test_flow_loss_gradient_equals_joint_objective():
    """grad_flow(seg_total + nll) == grad_flow(nflowjs_flow_loss(nll, js, lam)) for a 1x1 segmenter; d/d js = beta.

    (With a wider receptive field the joint sum also carries CE gradients of inlier pixels next to a patch.)
    """
    flow = _tiny_flow()
    neg = FlowNegatives(flow, per_image=1, size_range=(8, 16))
    images = torch.rand(2, 3, 24, 32)
    labels = torch.randint(0, 4, (2, 24, 32))
    lam = 0.3

    def grads(kind: str, seg: torch.nn.Module) -> list[torch.Tensor]:
        flow.zero_grad()
        _backward(neg, seg, images, labels, kind, lam=lam, beta=lam)
        return [p.grad.clone() for p in flow.parameters()]

    seg1 = torch.nn.Conv2d(3, 4, 1)  # receptive field 1 px: CE of inlier pixels does not see the patches
    a, b = grads("joint", seg1), grads("flow", seg1)
    assert all(torch.allclose(x, y, rtol=1e-4, atol=1e-7) for x, y in zip(a, b))
    assert any(x.abs().sum() > 0 for x in a)
    seg3 = torch.nn.Conv2d(3, 4, 3, padding=1)
    c, d = grads("joint", seg3), grads("flow", seg3)
    assert not all(torch.allclose(x, y, rtol=1e-4, atol=1e-7) for x, y in zip(c, d))
    js = torch.tensor(0.2, requires_grad=True)
    nll = torch.tensor(3.0, requires_grad=True)
    out = nflowjs_flow_loss(nll, js, beta=0.05)
    out.backward()
    assert out.item() == pytest.approx(3.0 + 0.05 * 0.2)
    assert js.grad.item() == pytest.approx(0.05) and nll.grad.item() == pytest.approx(1.0)


def test_flow_js_weight_rescales_only_the_flow_gradient():
    """FlowNegatives(grad_scale=beta/lam): the joint backward gives the flow grad(NLL + beta*JS) (1x1 segmenter) and
    leaves the segmenter's gradient (CE + lam*JS) and the forward pass unchanged."""
    flow = _tiny_flow()
    seg = torch.nn.Conv2d(3, 4, 1)
    images = torch.rand(2, 3, 24, 32)
    labels = torch.randint(0, 4, (2, 24, 32))
    lam, beta = 0.5, 0.02

    def run(grad_scale: float, kind: str = "joint"):
        flow.zero_grad(), seg.zero_grad()
        neg = FlowNegatives(flow, per_image=1, size_range=(8, 16), grad_scale=grad_scale)
        out = _backward(neg, seg, images, labels, kind, lam=lam, beta=beta)
        return out, [p.grad.clone() for p in flow.parameters()], [p.grad.clone() for p in seg.parameters()]

    out1, flow1, seg1 = run(1.0)
    out2, flow2, seg2 = run(beta / lam)
    _, ref, _ = run(1.0, kind="flow")
    assert torch.equal(out1, out2)
    assert all(torch.equal(a, b) for a, b in zip(seg1, seg2))
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(flow2, ref))
    assert not all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(flow1, ref))
    with pytest.raises(ConfigError, match="grad_scale"):
        FlowNegatives(flow, grad_scale=-1.0)
