"""PatchFlow: invertibility, log-det vs brute-force Jacobian, log-density, sampling, maximum-likelihood training."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import norm

from denseood.errors import ConfigError
from denseood.models.flow import (ActNorm, AffineCoupling, InvConv1x1, PatchFlow, SplitPrior, TopPrior, nll_loss,
                                  squeeze2d, unsqueeze2d)


def _perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Move every parameter away from its (often zero / identity) init so every path is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _tiny_flow(dtype=torch.float32, seed: int = 0) -> PatchFlow:
    torch.manual_seed(seed)
    f = PatchFlow(levels=2, steps=2, hidden=16).to(dtype)
    f.encode(torch.rand(4, 3, 8, 8, dtype=dtype))  # data-dependent ActNorm init
    _perturb(f, 0.05, seed)
    return f


def _brute_logabsdet(fn, x: torch.Tensor) -> float:
    """log|det d fn(x) / dx| by a dense autograd Jacobian (x: one sample, fn returns a flat vector)."""
    jac = torch.autograd.functional.jacobian(fn, x)
    d = x.numel()
    j = jac.reshape(-1, d)
    assert j.shape == (d, d)
    return float(torch.linalg.slogdet(j)[1])


def test_flow_invertibility_and_shapes():
    f = _tiny_flow()
    x = torch.rand(2, 3, 16, 24)
    zs, ld = f.encode(x)
    assert [tuple(z.shape) for z in zs] == [(2, 6, 8, 12), (2, 24, 4, 6)]
    assert ld.shape == (2,)
    xr = f.decode(zs)
    assert (xr - x).abs().max().item() < 1e-4
    # forward/inverse aliases
    zs2, ld2 = f(x)
    assert torch.equal(ld, ld2)
    assert (f.inverse(zs2) - x).abs().max().item() < 1e-4
    # latents -> x -> latents
    zs3 = [torch.randn_like(z) * 0.5 for z in zs]
    back, _ = f.encode(f.decode(zs3))  # exact decode may leave [0,1] by < alpha, still invertible
    assert max((a - b).abs().max().item() for a, b in zip(back, zs3)) < 1e-3


def test_squeeze_roundtrip_is_permutation():
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float64).reshape(2, 3, 4, 6)
    y = squeeze2d(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(unsqueeze2d(y), x)
    assert torch.equal(torch.sort(y.flatten()).values, x.flatten())  # a pure permutation: |det| = 1
    # pixel (c, 2i+a, 2j+b) lands in channel c*4 + a*2 + b at (i, j)
    assert y[1, 2 * 4 + 1 * 2 + 0, 1, 2] == x[1, 2, 3, 4]


@pytest.mark.parametrize("block", ["actnorm", "invconv", "coupling", "split", "top"])
def test_block_logdet_matches_bruteforce_jacobian(block):
    torch.manual_seed(1)
    c = 4
    x = torch.randn(1, c, 3, 4, dtype=torch.float64)
    if block == "actnorm":
        m = ActNorm(c).double()
        m(torch.randn(8, c, 3, 4, dtype=torch.float64) * 3 + 1)  # init on another batch
    elif block == "invconv":
        m = InvConv1x1(c).double()
    elif block == "coupling":
        m = AffineCoupling(c, 8).double()
    elif block == "split":
        m = SplitPrior(c).double()
    else:
        m = TopPrior(c).double()
    _perturb(m, 0.3, seed=3)

    def fn(inp):
        out = m(inp)
        if block == "split":
            keep, eps, _ = out
            return torch.cat([keep, eps], 1).flatten()
        return out[0].flatten()

    out = m(x)
    ld = out[-1]
    assert ld.shape == (1,)
    assert ld.item() == pytest.approx(_brute_logabsdet(fn, x), abs=1e-8)
    # inverse
    if block == "split":
        keep, eps, _ = out
        assert torch.allclose(m.inverse(keep, eps), x, atol=1e-10)
    else:
        assert torch.allclose(m.inverse(out[0]), x, atol=1e-10)


def test_whole_flow_logdet_and_log_prob_match_change_of_variables():
    f = _tiny_flow(torch.float64, seed=2)
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64) * 0.9 + 0.05

    def fn(inp):
        zs, _ = f.encode(inp)
        return torch.cat([z.flatten() for z in zs])

    zs, ld = f.encode(x)
    brute = _brute_logabsdet(fn, x)
    assert ld.item() == pytest.approx(brute, abs=1e-7)
    eps = fn(x).detach().numpy()
    expected = norm.logpdf(eps).sum() + brute
    assert f.log_prob(x).item() == pytest.approx(expected, abs=1e-7)


def test_bits_per_dim_constant_and_dequantization():
    f = _tiny_flow(torch.float64, seed=4)
    k = torch.randint(0, 256, (1, 3, 4, 4), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    xc = (k.double() + 0.5) / 256.0

    def fn(inp):
        return torch.cat([z.flatten() for z in f.encode(inp)[0]])

    logp = norm.logpdf(fn(xc).detach().numpy()).sum() + _brute_logabsdet(fn, xc)
    d = 48
    expected = -logp / (d * math.log(2)) + 8.0  # discrete p(k) = p(x_c) * 256**-D
    assert f.bits_per_dim(k, dequantize=False).item() == pytest.approx(expected, abs=1e-6)
    # float input k/255 means the same 8-bit image
    assert f.bits_per_dim(k.double() / 255.0, dequantize=False).item() == pytest.approx(expected, abs=1e-6)
    # dequantized: random, reproducible with a generator, and close to the midpoint value for a smooth model
    a = f.bits_per_dim(k, generator=torch.Generator().manual_seed(5))
    b = f.bits_per_dim(k, generator=torch.Generator().manual_seed(5))
    c = f.bits_per_dim(k, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(a.item() - expected) < 0.5


def test_sample_shapes_range_determinism_and_errors():
    f = _tiny_flow()
    assert f.downsampling == 4
    for n, h, w in [(2, 8, 8), (1, 16, 32), (3, 24, 4)]:
        s = f.sample(n, h, w)
        assert s.shape == (n, 3, h, w)
        assert s.dtype == torch.float32
        assert torch.isfinite(s).all() and s.min() >= 0 and s.max() <= 1
    s1 = f.sample(2, 8, 12, temperature=0.7, generator=torch.Generator().manual_seed(3))
    s2 = f.sample(2, 8, 12, temperature=0.7, generator=torch.Generator().manual_seed(3))
    s3 = f.sample(2, 8, 12, temperature=0.7, generator=torch.Generator().manual_seed(4))
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    hot = f.sample(2, 32, 32, temperature=5.0)  # bounded scales: no overflow even far in the tails
    assert torch.isfinite(hot).all()
    with pytest.raises(ConfigError, match="multiple"):
        f.sample(1, 10, 8)
    with pytest.raises(ConfigError):
        f.sample(1, 8, 0)
    with pytest.raises(ConfigError):
        f.log_prob(torch.rand(1, 3, 8, 6))
    with pytest.raises(ConfigError):
        f.log_prob(torch.rand(1, 1, 8, 8))
    assert PatchFlow().downsampling == 8


def test_sample_is_differentiable_and_default_flow_constructs():
    f = _tiny_flow()
    s = f.sample(2, 8, 8)
    (s * torch.randn_like(s)).sum().backward()
    grads = [p.grad for p in f.parameters()]
    assert all(g is not None for g in grads)
    assert all(g.abs().sum() > 0 for g in grads)


def test_actnorm_data_dependent_init():
    m = ActNorm(3)
    x = torch.randn(16, 3, 5, 5) * torch.tensor([2.0, 0.5, 3.0]).view(1, 3, 1, 1) + torch.tensor([1.0, -2.0, 0.0]).view(1, 3, 1, 1)
    y, _ = m(x)
    assert bool(m.initialized)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.var((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    y2, _ = m(x * 10)  # no re-init on later batches
    assert torch.allclose(y2.mean((0, 2, 3)), (x * 10 + m.bias).mean((0, 2, 3)) * m.logs.exp().flatten(), atol=1e-4)
    # the init survives a state_dict round trip
    m2 = ActNorm(3)
    m2.load_state_dict(m.state_dict())
    assert torch.allclose(m2(x)[0], y)


def test_log_prob_float32_under_autocast():
    f = _tiny_flow()
    x = torch.rand(2, 3, 8, 8)
    ref = f.log_prob(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lp = f.log_prob(x)
    assert lp.dtype == torch.float32
    assert torch.allclose(lp, ref)


def _smooth_patches(n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    """Smooth 8-bit RGB patches (random colour gradients), as float k/255."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, 3, size, size))
    for i in range(n):
        base = rng.uniform(0.2, 0.8, 3)
        gy, gx = rng.uniform(-0.2, 0.2, (2, 3))
        out[i] = base[:, None, None] + gy[:, None, None] * yy + gx[:, None, None] * xx
    return torch.from_numpy(np.round(np.clip(out, 0, 1) * 255) / 255).float()


def test_maximum_likelihood_training_lowers_heldout_bits_per_dim():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    f = PatchFlow(levels=2, steps=2, hidden=16)
    train, held = _smooth_patches(256, 16, rng), _smooth_patches(32, 16, rng)
    noise = torch.randint(0, 256, (32, 3, 16, 16), generator=torch.Generator().manual_seed(1)).float() / 255
    f.encode(train[:64])  # ActNorm init
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        before = f.bits_per_dim(held, generator=torch.Generator().manual_seed(9)).mean().item()
    opt = torch.optim.Adam(f.parameters(), lr=2e-3)
    for step in range(50):
        idx = torch.randint(0, 256, (32,), generator=g)
        loss = nll_loss(f, train[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = f.bits_per_dim(held, generator=torch.Generator().manual_seed(9)).mean().item()
        noise_bpd = f.bits_per_dim(noise, generator=torch.Generator().manual_seed(9)).mean().item()
    assert after < before - 0.5, (before, after)
    assert noise_bpd > 8.0 > after  # i.i.d. uniform bytes cannot be coded below 8 bits/dim


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sample_and_log_prob_with_cpu_generator():
    f = _tiny_flow().cuda()
    s = f.sample(2, 16, 8, generator=torch.Generator().manual_seed(0))
    assert s.is_cuda and s.shape == (2, 3, 16, 8)
    ref = _tiny_flow().sample(2, 16, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(s.cpu(), ref, atol=1e-4)
    with torch.autocast("cuda", dtype=torch.float16):
        bpd = f.bits_per_dim(s.detach(), generator=torch.Generator().manual_seed(1))
    assert bpd.dtype == torch.float32 and torch.isfinite(bpd).all()
