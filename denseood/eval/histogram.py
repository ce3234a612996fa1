"""The streaming protocol's state: two exact integer histograms (inlier / anomaly) on an aligned or fixed grid.

With ``score_range`` the grid is uniform on [lo, hi] plus underflow/overflow slots; without it the grid is
calibrated on the first batch (power-of-two bin width) and re-binned exactly by factors of two when later
scores fall outside, so no count is ever clamped. Reduction over ranks goes through ``denseood.dist``.
See docs/architecture.md.
"""
from __future__ import annotations

import math

import torch

from .. import dist
from ..errors import DenseOODError
from ._inputs import raise_non_finite


class StreamingHistogram:
    """Two integer histograms (row 0 inlier, row 1 anomaly) of ``nb`` bins plus underflow/overflow slots.

    Storage slot 0 = underflow (< lo), 1..nb = regular bins, nb+1 = overflow (> hi). With a fixed range
    (``score_range``) the regular bins are uniform on [lo, hi]; otherwise the grid is aligned: bin width
    2**e, bin k covers [(a+k) 2**e, (a+k+1) 2**e), and the out-of-range slots stay empty.
    """

    def __init__(self, bins: int, score_range: tuple[float, float] | None):
        self.nb = int(bins)
        self.fixed = score_range
        self.e: int | None = None
        self.a: int = 0
        self.vmin = math.inf
        self.vmax = -math.inf
        self.hist: torch.Tensor | None = None

    # -- grid -------------------------------------------------------------------------------------
    def _covers(self, e: int, a: int, m0: float, m1: float) -> bool:
        return math.floor(math.ldexp(m0, -e)) - a >= 0 and math.floor(math.ldexp(m1, -e)) - a <= self.nb - 1

    def _fit(self, e: int, m0: float, m1: float) -> tuple[int, int]:
        """Smallest exponent >= e (and centred origin) whose grid covers [m0, m1]."""
        center = 0.5 * (m0 + m1)
        while True:
            a = math.floor(math.ldexp(center, -e)) - self.nb // 2
            if self._covers(e, a, m0, m1):
                return e, a
            e += 1

    def _rebin(self, hist: torch.Tensor, e: int, a: int, e2: int, a2: int) -> torch.Tensor:
        """Exactly re-bin an aligned histogram from grid (e, a) to the coarser/shifted grid (e2 >= e, a2)."""
        nb = self.nb
        idx = ((torch.arange(nb, dtype=torch.int64, device=hist.device) + a) >> (e2 - e)) - a2
        occupied = hist[:, 1:nb + 1].sum(0) > 0
        if bool(((idx < 0) | (idx >= nb))[occupied].any()):  # pragma: no cover - guarded by _fit
            raise DenseOODError("internal error: streaming histogram re-binning lost counts")
        out = torch.zeros_like(hist)
        out[:, 1:nb + 1].index_add_(1, idx.clamp(0, nb - 1), hist[:, 1:nb + 1])
        return out

    def _ensure_grid(self, bmin: float, bmax: float) -> None:
        m0, m1 = min(self.vmin, bmin), max(self.vmax, bmax)
        if self.e is None:
            span = bmax - bmin
            if not span > 0:
                span = max(abs(bmax), 1.0) * 2.0 ** -10
            e = math.ceil(math.log2(2.0 * span / self.nb))
            self.e, self.a = self._fit(e, m0, m1)
            return
        if self._covers(self.e, self.a, m0, m1):
            return
        e2, a2 = self._fit(self.e, m0, m1)
        self.hist = self._rebin(self.hist, self.e, self.a, e2, a2)
        self.e, self.a = e2, a2

    # -- update -----------------------------------------------------------------------------------
    def add(self, s: torch.Tensor, m: torch.Tensor) -> None:
        """s: (B,H,W) float32/64 finite at valid pixels (checked here), m: (B,H,W) uint8 0/1/255."""
        nb = self.nb
        valid = m != 255
        inf = torch.tensor(math.inf, dtype=s.dtype, device=s.device)
        xs = torch.where(valid, s, inf)
        lo_hi = torch.stack([xs.amin(), torch.where(valid, s, -inf).amax(), valid.sum().to(s.dtype)]).tolist()
        bmin, bmax, nvalid = lo_hi
        if nvalid == 0:
            return
        if not (math.isfinite(bmin) and math.isfinite(bmax)):
            raise_non_finite(s, valid)
        if self.hist is None:
            self.hist = torch.zeros(2, nb + 2, dtype=torch.int64, device=s.device)
        # slot index + (nb + 2) * class, computed in the scores' float type where that is exact:
        # floor(x * 2**-e) is exact in any binary float; the offset subtraction needs |a| + nb < 2**24 in float32.
        if self.fixed is None:
            self._ensure_grid(bmin, bmax)
            x = xs if (s.dtype == torch.float64 or abs(self.a) + nb + 2 < 2 ** 24) else xs.double()
            t = torch.mul(x, math.ldexp(1.0, -self.e)).floor_()
            t.clamp_(self.a - 1, self.a + nb).sub_(self.a - 1)  # void (+inf) -> nb + 1, discarded below
        else:
            lo, hi = self.fixed
            t = torch.sub(xs, lo).mul_(nb / (hi - lo)).floor_().clamp_(0, nb - 1).add_(1)
            t.masked_fill_(xs < lo, 0)
            t.masked_fill_(xs > hi, nb + 1)
        t.add_(m.clamp(max=2), alpha=nb + 2)  # class 0 inlier, 1 anomaly, 2 void (discarded)
        counts = torch.bincount(t.to(torch.int32 if 3 * (nb + 2) < 2 ** 31 else torch.int64).flatten(),
                                minlength=3 * (nb + 2))[: 2 * (nb + 2)]
        self.hist += counts.view(2, nb + 2)
        self.vmin = min(self.vmin, bmin)
        self.vmax = max(self.vmax, bmax)

    # -- reduction and metrics --------------------------------------------------------------------
    def reduced(self, device: torch.device) -> tuple[torch.Tensor, int, int, float, float]:
        """(hist summed over ranks, e, a, vmin, vmax) on a common grid; collective when distributed."""
        nb = self.nb
        hist = self.hist if self.hist is not None else torch.zeros(2, nb + 2, dtype=torch.int64, device=device)
        e, a, vmin, vmax = self.e, self.a, self.vmin, self.vmax
        if dist.is_dist():
            states = dist.gather((self.e, self.a, self.vmin, self.vmax))
            vmin = min(st[2] for st in states)
            vmax = max(st[3] for st in states)
            if self.fixed is None:
                es = [st[0] for st in states if st[0] is not None]
                if es:
                    e, a = self._fit(max(es), vmin, vmax)
                    if self.e is not None:
                        hist = self._rebin(hist, self.e, self.a, e, a)
            hist = dist.all_reduce(hist.to(device))
        return hist, e, a, vmin, vmax

    def thresholds(self, e: int | None, a: int, vmin: float, device: torch.device) -> torch.Tensor:
        """Lower edge of every storage slot (float64): underflow -> vmin, overflow -> hi."""
        nb = self.nb
        k = torch.arange(nb, dtype=torch.float64, device=device)
        if self.fixed is None:
            reg = (k + a) * math.ldexp(1.0, e if e is not None else 0)
            hi = math.inf
        else:
            lo, hi = self.fixed
            reg = lo + k * ((hi - lo) / nb)
        return torch.cat([torch.tensor([vmin], dtype=torch.float64, device=device), reg,
                          torch.tensor([hi], dtype=torch.float64, device=device)])

