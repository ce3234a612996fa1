"""Mahalanobis score: time of the 0.1 expanded form vs the residual form (denseood 0.2), same inputs, one run.

Usage: python tools/bench_mahalanobis.py [N_PIXELS] [FEATURES] [CLASSES]   (defaults: 131072 128 19, i.e. the
stride-4 decoder features (256x512) of one 1024x2048 frame, 128 channels, 19 classes)
"""
from __future__ import annotations

import sys
import time

import torch

from denseood.scores.fitted import mahalanobis_min_d2


def expanded(z, means, prec):
    center = means.mean(dim=0)
    mu, zc = means - center, z - center
    zp = zc @ prec
    return ((zp * zc).sum(1, keepdim=True) - 2.0 * (zp @ mu.T) + ((mu @ prec) * mu).sum(1)[None]).amin(1)


def best(fn, *a, reps=7):
    fn(*a)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(*a)
        ts.append(time.perf_counter() - t)
    return min(ts)


if __name__ == "__main__":
    n, f, k = (int(v) for v in (sys.argv[1:] + ["131072", "128", "19"][len(sys.argv) - 1:]))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, f, generator=g)
    means = torch.randn(k, f, generator=g) * 3
    a = torch.randn(f, f, generator=g)
    prec = a @ a.T / f + torch.eye(f)
    t_old, t_new = best(expanded, z, means, prec), best(mahalanobis_min_d2, z, means, prec)
    print(f"N={n} F={f} K={k} threads={torch.get_num_threads()}: expanded {t_old * 1e3:.1f} ms, "
          f"residual {t_new * 1e3:.1f} ms, ratio {t_new / t_old:.2f}x")
