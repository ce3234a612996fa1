"""Compact multi-scale Glow-style normalizing flow for RGB patches (the NFlowJS negative generator).

Data space: x (B,3,H,W) float in [0,1]. Preprocessing y = logit(alpha + (1 - 2 alpha) x) (RealNVP), then ``levels``
times: squeeze (space-to-depth 2x2), ``steps`` x [ActNorm, invertible 1x1 conv (LU), affine coupling], then a split
(all levels but the last) whose factored-out half is standardised by a learned conditional Gaussian prior.
Every block is a bijection with an exact log|det J|; the priors are written as affine bijections too, so every
latent returned by :meth:`PatchFlow.encode` is standard normal and ``log p(x) = sum log N(eps; 0, I) + logdet``.
The model is fully convolutional and its priors are spatially constant, so one model encodes and samples any
size divisible by ``2**levels``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import dist
from ..errors import ConfigError

LOG_2PI = math.log(2 * math.pi)


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    """(B,C,H,W) -> (B,4C,H/2,W/2), space-to-depth; volume preserving (log-det 0)."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze2d(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze2d`: (B,4C,H,W) -> (B,C,2H,2W)."""
    b, c, h, w = x.shape
    x = x.view(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


def _soft_bound(raw: torch.Tensor, bound: float) -> torch.Tensor:
    """Smoothly squash ``raw`` into (-bound, bound); identity slope at 0 (keeps sampling scales bounded)."""
    return bound * torch.tanh(raw / bound)


class ActNorm(nn.Module):
    """y = (x + bias) * exp(logs) per channel; data-dependent init (zero mean, unit variance) on the first batch.

    Under torch.distributed the init statistics are averaged over ranks so every replica starts identical.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._seen = False  # python-side cache of ``initialized`` (avoids a device sync every call)

    @torch.no_grad()
    def _maybe_init(self, x: torch.Tensor) -> None:
        if self._seen:
            return
        if not bool(self.initialized):
            s = torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), x.new_tensor([x[:, 0].numel()])]).double()
            s = dist.all_reduce_sum(s)
            c = x.shape[1]
            n = s[-1]
            mean = s[:c] / n
            std = (s[c:2 * c] / n - mean * mean).clamp_min(0).sqrt()
            self.bias.copy_((-mean).view(1, c, 1, 1).to(self.bias))
            self.logs.copy_((-torch.log(std + 1e-6)).view(1, c, 1, 1).to(self.logs))
            self.initialized.fill_(True)
        self._seen = True

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._maybe_init(x)
        ld = self.logs.sum() * (x.shape[2] * x.shape[3])
        return (x + self.bias) * self.logs.exp(), ld.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.logs) - self.bias


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution, LU-parametrised (Glow): W = P L (U + diag(sign * exp(log_s)))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> torch.Tensor:
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight()
        ld = self.log_s.sum() * (x.shape[2] * x.shape[3])
        return F.conv2d(x, w[:, :, None, None]), ld.expand(x.shape[0])

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.conv2d(y, torch.linalg.inv(self.weight())[:, :, None, None])


class AffineCoupling(nn.Module):
    """x = [xa, xb]; yb = xb * exp(s(xa)) + t(xa), log-scale soft-bounded to (-bound, bound); zero-init = identity."""

    def __init__(self, channels: int, hidden: int, bound: float = 2.0) -> None:
        super().__init__()
        self.ca = channels // 2
        cb = channels - self.ca
        self.bound = bound
        self.net = nn.Sequential(
            nn.Conv2d(self.ca, hidden, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 2 * cb, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def _st(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(xa)
        return h[:, 0::2], _soft_bound(h[:, 1::2], self.bound)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xa, xb = x[:, :self.ca], x[:, self.ca:]
        t, log_s = self._st(xa)
        return torch.cat([xa, xb * log_s.exp() + t], 1), log_s.sum((1, 2, 3))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        ya, yb = y[:, :self.ca], y[:, self.ca:]
        t, log_s = self._st(ya)
        return torch.cat([ya, (yb - t) * torch.exp(-log_s)], 1)


class FlowStep(nn.Module):
    """ActNorm -> InvConv1x1 -> AffineCoupling."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([ActNorm(channels), InvConv1x1(channels), AffineCoupling(channels, hidden)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ld = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, l_ = layer(x)
            ld = ld + l_
        return x, ld

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        for layer in reversed(self.layers):
            y = layer.inverse(y)
        return y


class SplitPrior(nn.Module):
    """Split h = [keep, z]; z ~ N(mean(keep), exp(logs(keep))^2), written as eps = (z - mean) * exp(-logs)."""

    def __init__(self, channels: int, bound: float = 3.0) -> None:
        super().__init__()
        self.keep = channels // 2
        self.bound = bound
        self.conv = nn.Conv2d(self.keep, 2 * (channels - self.keep), 3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def _params(self, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(keep)
        return h[:, 0::2], _soft_bound(h[:, 1::2], self.bound)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        keep, z = h[:, :self.keep], h[:, self.keep:]
        mean, logs = self._params(keep)
        return keep, (z - mean) * torch.exp(-logs), -logs.sum((1, 2, 3))

    def inverse(self, keep: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        mean, logs = self._params(keep)
        return torch.cat([keep, mean + eps * logs.exp()], 1)


class TopPrior(nn.Module):
    """Learned per-channel Gaussian for the last level, spatially constant: eps = (h - mean) * exp(-logs)."""

    def __init__(self, channels: int, bound: float = 3.0) -> None:
        super().__init__()
        self.bound = bound
        self.mean = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logs = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logs = _soft_bound(self.logs, self.bound)
        return (h - self.mean) * torch.exp(-logs), (-logs.sum() * (h.shape[2] * h.shape[3])).expand(h.shape[0])

    def inverse(self, eps: torch.Tensor) -> torch.Tensor:
        return self.mean + eps * _soft_bound(self.logs, self.bound).exp()


class PatchFlow(nn.Module):
    """Multi-scale flow over RGB patches of any size divisible by ``downsampling`` (= 2**levels).

    levels: number of squeeze levels; steps: flow steps per level; hidden: coupling-net width;
    alpha: logit preprocessing margin (x' = alpha + (1 - 2 alpha) x).
    """

    def __init__(self, levels: int = 3, steps: int = 4, hidden: int = 64, alpha: float = 0.05) -> None:
        super().__init__()
        if levels < 1 or steps < 1 or hidden < 1 or not 0.0 <= alpha < 0.5:
            raise ConfigError(f"PatchFlow(levels={levels}, steps={steps}, hidden={hidden}, alpha={alpha}): "
                              "levels, steps, hidden must be >= 1 and 0 <= alpha < 0.5")
        self.levels, self.alpha = levels, float(alpha)
        self.stages = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.z_channels: list[int] = []
        c = 3
        for i in range(levels):
            c *= 4
            self.stages.append(nn.ModuleList([FlowStep(c, hidden) for _ in range(steps)]))
            if i < levels - 1:
                self.priors.append(SplitPrior(c))
                self.z_channels.append(c - c // 2)
                c = c // 2
            else:
                self.priors.append(TopPrior(c))
                self.z_channels.append(c)

    @property
    def downsampling(self) -> int:
        return 2 ** self.levels

    def _check_size(self, h: int, w: int) -> None:
        d = self.downsampling
        if h <= 0 or w <= 0 or h % d or w % d:
            raise ConfigError(f"patch size {h}x{w} (HxW) is not a positive multiple of the flow's downsampling {d} "
                              f"(2**levels); use sizes such as {d}, {2 * d}, {3 * d}, ...")

    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ConfigError(f"PatchFlow expects images of shape (B,3,H,W), got {tuple(x.shape)}")
        self._check_size(x.shape[2], x.shape[3])

    def _pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xp = self.alpha + (1 - 2 * self.alpha) * x
        ld = (math.log(1 - 2 * self.alpha) - torch.log(xp) - torch.log1p(-xp)).sum((1, 2, 3))
        return torch.log(xp) - torch.log1p(-xp), ld

    def _pre_inverse(self, y: torch.Tensor) -> torch.Tensor:
        return (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """x: (B,3,H,W) in [0,1] -> (standard-normal latents per level, log|det dz/dx| (B,) in nats)."""
        self._check_input(x)
        h, ld = self._pre(x)
        zs: list[torch.Tensor] = []
        for i, (stage, prior) in enumerate(zip(self.stages, self.priors)):
            h = squeeze2d(h)
            for step in stage:
                h, l_ = step(h)
                ld = ld + l_
            if i < self.levels - 1:
                h, eps, l_ = prior(h)
            else:
                eps, l_ = prior(h)
            zs.append(eps)
            ld = ld + l_
        return zs, ld

    forward = encode

    def decode(self, zs: list[torch.Tensor]) -> torch.Tensor:
        """Exact inverse of :meth:`encode` (no clamping): latents -> x (B,3,H,W), nominally in [0,1]."""
        h = None
        for i in reversed(range(self.levels)):
            h = self.priors[i].inverse(zs[i]) if i == self.levels - 1 else self.priors[i].inverse(h, zs[i])
            for step in reversed(self.stages[i]):
                h = step.inverse(h)
            h = unsqueeze2d(h)
        return self._pre_inverse(h)

    inverse = decode

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B,3,H,W) continuous data in [0,1] -> (B,) log-density (nats) w.r.t. Lebesgue measure on [0,1]^D.

        Computed in float32 (autocast disabled) whatever the ambient AMP setting.
        """
        with torch.autocast(x.device.type, enabled=False):
            x = x.to(self.stages[0][0].layers[0].logs.dtype)
            zs, ld = self.encode(x)
            lp = sum((-0.5 * (z * z + LOG_2PI)).sum((1, 2, 3)) for z in zs)
        return lp + ld

    def bits_per_dim(self, x: torch.Tensor, dequantize: bool = True,
                     generator: torch.Generator | None = None) -> torch.Tensor:
        """x: (B,3,H,W) uint8 in 0..255 or float in [0,1] (= k/255) -> (B,) bits/dim of the 8-bit data.

        Dequantization x_c = (k + u) / 256, u ~ U(0,1) (u = 1/2 when ``dequantize`` is False); the discrete
        likelihood is p(x_c) * 256**-D, so bits/dim = (-log p(x_c) / D + log 256) / log 2, comparable to the
        literature's bits/dim on 8-bit images.
        """
        k = x.float() if x.dtype == torch.uint8 else x.float() * 255.0
        if dequantize:
            gdev = generator.device if generator is not None else k.device
            u = torch.rand(k.shape, generator=generator, device=gdev).to(k.device)
        else:
            u = torch.full_like(k, 0.5)
        xc = (k + u) / 256.0
        d = xc[0].numel()
        return (-self.log_prob(xc) / d + math.log(256.0)) / math.log(2.0)

    def sample(self, n: int, h: int, w: int, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """(n,3,h,w) float32 patches in [0,1], differentiable w.r.t. the flow parameters.

        eps ~ N(0, temperature^2 I) per level, decoded exactly. The logit preprocessing can place decoded values up
        to alpha/(1-2 alpha) outside [0,1]; those are clipped with a straight-through estimator (forward value
        clipped, gradient passed unchanged), so no pixel has a zero gradient. Raises ConfigError if h or w is not
        divisible by ``downsampling``.
        """
        self._check_size(h, w)
        p = self.stages[0][0].layers[0].logs
        gdev = generator.device if generator is not None else p.device
        zs = []
        for i, c in enumerate(self.z_channels):
            s = 2 ** (i + 1)
            eps = torch.randn((n, c, h // s, w // s), generator=generator, device=gdev, dtype=p.dtype)
            zs.append(eps.to(p.device) * temperature)
        with torch.autocast(p.device.type, enabled=False):
            x = self.decode(zs)
        return x + (x.clamp(0.0, 1.0) - x).detach()


def nll_loss(flow: PatchFlow, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean bits/dim (scalar) of 8-bit images x (uint8, or float k/255 in [0,1]) under ``flow``, dequantized."""
    return flow.bits_per_dim(x, dequantize=True, generator=generator).mean()


def flow_from_config(cfg: dict | None) -> PatchFlow:
    """A PatchFlow shaped by a training config's ``flow_levels`` / ``flow_steps`` / ``flow_hidden`` (ints).

    cfg: a ``TrainConfig`` as a dict (e.g. a checkpoint's ``config``); missing or non-int keys keep PatchFlow's
    defaults. The one place that maps config keys to the flow's shape (trainer and prompter both use it).
    """
    cfg = cfg or {}
    kw = {k: int(cfg[f"flow_{k}"]) for k in ("levels", "steps", "hidden")
          if isinstance(cfg.get(f"flow_{k}"), int) and not isinstance(cfg.get(f"flow_{k}"), bool)}
    return PatchFlow(**kw)
