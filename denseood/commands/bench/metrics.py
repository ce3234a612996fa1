"""``denseood bench metrics``: speed and memory of the pixel and component metrics.

Synthetic frames (random score maps with blob-shaped anomalies, false-positive blobs and void) are scored by
the streaming, exact and smiyc PixelMetrics (and the former smiyc implementation, ``_smiyc_legacy``, as the
before/after reference) and by scikit-learn (``average_precision_score`` + ``roc_auc_score``
on the same pooled valid pixels) in one run; throughput is input megapixels per second (all pixels of all
frames, void included). Component metrics are timed on up to 20 frames, clean and with 2 % salt noise.
Peak memory is the peak resident-set growth of this process during each method (sampled from /proc every
2 ms; falls back to ``resource.getrusage`` high-water marks elsewhere).
"""
from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError

_MB = 1024.0 * 1024.0


class _PeakRSS:
    """Context manager measuring the peak RSS growth (MiB) of this process while inside."""

    def __init__(self) -> None:
        self.peak_mb = 0.0
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._proc = os.path.exists("/proc/self/statm")

    def _rss(self) -> float:
        if self._proc:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page / _MB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            self._stop.wait(0.002)

    def __enter__(self) -> "_PeakRSS":
        self._base = self._rss()
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._max = max(self._max, self._rss())
        self.peak_mb = self._max - self._base


def synthetic_frame(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One benchmark frame: scores (H,W) float32 (higher = anomalous) and ood_mask (H,W) uint8 0/1/255."""
    mask = np.zeros((h, w), np.uint8)
    mask[: int(0.15 * h)] = 255  # region outside the ROI
    small = max(2, min(h, w) // 40)
    for _ in range(int(rng.integers(1, 5))):  # anomalies
        c = (int(rng.integers(0, w)), int(rng.integers(int(0.3 * h), h)))
        ax = (int(rng.integers(small, max(small + 1, w // 10))), int(rng.integers(small, max(small + 1, h // 8))))
        cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        cv2.ellipse(mask, c, ax, float(rng.uniform(0, 180)), 0, 360, 255, max(1, small // 4))  # void rim
    noise = rng.standard_normal((h, w), dtype=np.float32)
    smooth = cv2.GaussianBlur(rng.standard_normal((h, w), dtype=np.float32), (0, 0), max(1.0, small / 2))
    scores = 0.3 + 0.5 * smooth + 0.12 * noise
    scores += 0.25 * (mask == 1)
    fp = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(0, 3))):  # false-positive blobs
        c = (int(rng.integers(0, w)), int(rng.integers(int(0.3 * h), h)))
        cv2.circle(fp, c, int(rng.integers(small, max(small + 1, h // 10))), 1, -1)
    scores += 0.3 * fp
    return scores.astype(np.float32), mask


def _smiyc_legacy(data: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """The former ``PixelMetrics("smiyc")`` per-frame path (float32 finiteness scan, float64 sorts and
    ``np.quantile`` per frame), kept as the timing and equality reference of the current one."""
    import torch

    from ...eval import PixelMetrics, check_finite, prepare_inputs
    from ...eval.smiyc import SMIYC_NUM_BINS

    pm = PixelMetrics("smiyc")
    for scores, mask in data:
        s, m = prepare_inputs(scores, mask)
        check_finite(s, m)
        for b in range(s.shape[0]):
            pm._n_frames += 1
            s16 = s[b].to(torch.float16).cpu().numpy()
            mm = m[b].cpu().numpy()
            roi = mm != 255
            p = s16[roi]
            if p.size == 0:
                pm._n_skipped += 1
                continue
            if not np.isfinite(p).all():
                raise ConfigError("legacy smiyc reference: float16 overflow")
            lab = mm[roi] == 1
            pos = np.sort(p[lab].astype(np.float64))
            neg = np.sort(p[~lab].astype(np.float64))
            vmin, vmax = float(p.min()), float(p.max())
            eps = max((vmax - vmin) * 1e-2, 1e-2)
            parts = [np.array([vmin - eps, vmax + eps])]
            for arr in (pos, neg):
                if arr.size:
                    parts.append(np.quantile(arr, np.linspace(0, 1, min(SMIYC_NUM_BINS // 2, arr.size))))
            edges = np.unique(np.concatenate(parts))
            tp_ge = pos.size - np.searchsorted(pos, edges, side="left")
            fp_ge = neg.size - np.searchsorted(neg, edges, side="left")
            pm._frames.append((edges[:-1].copy(), (tp_ge[:-1] - tp_ge[1:]).astype(np.int64),
                               (fp_ge[:-1] - fp_ge[1:]).astype(np.int64)))
            pm._n_pos += pos.size
            pm._n_neg += neg.size
    return pm.compute()


def _timed(fn) -> tuple[Any, float, float]:
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t0
    return out, dt, mem.peak_mb


_Frames = list[tuple[np.ndarray, np.ndarray]]


def _pixel_figures(data: _Frames, mpx: float) -> dict[str, Any]:
    """Streaming, exact and smiyc PixelMetrics and the former smiyc path: seconds, Mpx/s, MiB, metric values;
    the smiyc speed-up over the former path and whether their values are equal."""
    from ...eval import PixelMetrics

    out: dict[str, Any] = {}

    def run_pixel(mode: str):
        pm = PixelMetrics(mode)
        for s, m in data:
            pm.update(s, m)
        return pm.compute()

    for mode in ("streaming", "exact", "smiyc"):
        res, dt, mem = _timed(lambda: run_pixel(mode))
        out[mode] = dict(seconds=dt, mpx_per_s=mpx / dt, peak_mb=mem, ap=res["ap"], auroc=res["auroc"],
                         fpr95=res["fpr95"], best_f1_threshold=res["best_f1_threshold"])
    res, dt, mem = _timed(lambda: _smiyc_legacy(data))
    out["smiyc_legacy"] = dict(seconds=dt, mpx_per_s=mpx / dt, peak_mb=mem, ap=res["ap"], auroc=res["auroc"],
                               fpr95=res["fpr95"], best_f1_threshold=res["best_f1_threshold"])
    out["speedup_smiyc_vs_legacy"] = dt / out["smiyc"]["seconds"]
    out["smiyc_equals_legacy"] = all(out["smiyc"][k] == out["smiyc_legacy"][k]
                                     for k in ("ap", "auroc", "fpr95", "best_f1_threshold"))
    return out


def _sklearn_figures(data: _Frames, mpx: float, pixel: dict[str, Any]) -> dict[str, Any]:
    """scikit-learn AP + AUROC on the pooled valid pixels (``{"sklearn": None}`` without scikit-learn), its
    time against streaming / exact (``pixel``: :func:`_pixel_figures`) and the differences of the values."""
    try:
        from sklearn.metrics import average_precision_score, roc_auc_score
    except ImportError:  # scikit-learn is a test-only dependency
        return {"sklearn": None}
    y = np.concatenate([(m[m != 255] == 1) for _, m in data])
    x = np.concatenate([s[m != 255] for s, m in data])

    def run_sklearn():
        return average_precision_score(y, x), roc_auc_score(y, x)

    (ap, auroc), dt, mem = _timed(run_sklearn)
    out: dict[str, Any] = {"sklearn": dict(seconds=dt, mpx_per_s=mpx / dt, peak_mb=mem, ap=float(ap), auroc=float(auroc))}
    del x, y
    out["speedup_streaming_vs_sklearn"] = out["sklearn"]["seconds"] / pixel["streaming"]["seconds"]
    out["speedup_exact_vs_sklearn"] = out["sklearn"]["seconds"] / pixel["exact"]["seconds"]
    out["abs_diff_exact_vs_sklearn_ap"] = abs(pixel["exact"]["ap"] - ap)
    out["abs_diff_exact_vs_sklearn_auroc"] = abs(pixel["exact"]["auroc"] - auroc)
    return out


def _component_figures(data: _Frames, rng: np.random.Generator, thr: float) -> dict[str, Any]:
    """ComponentMetrics at threshold ``thr`` on up to 20 frames, clean and with 2 % salt pixels (drawn from
    ``rng``) above every score."""
    from ...eval import ComponentMetrics

    out: dict[str, Any] = {}
    n_comp = min(20, len(data))
    salt_value = float(max(s.max() for s, _ in data[:n_comp])) + 1.0
    for name, salt in (("clean", 0.0), ("salt2pct", 0.02)):
        frames_c = []
        for s, m in data[:n_comp]:
            if salt:
                s = s.copy()
                s[rng.random(s.shape) < salt] = salt_value
            frames_c.append((s, m))

        def run_comp():
            cm = ComponentMetrics(threshold=thr, min_segment_size=500, min_instance_size=100)
            for s, m in frames_c:
                cm.update(s, m)
            return cm.compute()

        res, dt, mem = _timed(run_comp)
        out[f"components_{name}"] = dict(frames=n_comp, seconds=dt, peak_mb=mem, sIoU=res["sIoU"], PPV=res["PPV"],
                                         mean_F1=res["mean_F1"], n_gt=res["n_gt"], n_pred=res["n_pred"])
    return out


def bench_metrics(frames: int = 50, size: tuple[int, int] = (1024, 2048), seed: int = 0) -> dict:
    """Run the metric benchmark and return its figures (seconds, Mpx/s, MiB, metric values, ratios)."""
    h, w = (int(v) for v in size)
    if frames < 1 or h < 8 or w < 8:
        raise ConfigError(f"bench metrics needs frames >= 1 and a size of at least 8x8, got {frames} frames of {h}x{w}")
    rng = np.random.default_rng(seed)
    data = [synthetic_frame(rng, h, w) for _ in range(frames)]
    mpx = frames * h * w / 1e6
    out: dict[str, Any] = dict(frames=frames, size=[h, w], megapixels=mpx,
                               valid_pixels=int(sum(int((m != 255).sum()) for _, m in data)))
    out.update(_pixel_figures(data, mpx))
    out.update(_sklearn_figures(data, mpx, out))
    out["abs_diff_streaming_vs_exact_ap"] = abs(out["streaming"]["ap"] - out["exact"]["ap"])
    out["abs_diff_streaming_vs_exact_auroc"] = abs(out["streaming"]["auroc"] - out["exact"]["auroc"])
    out["abs_diff_streaming_vs_exact_fpr95"] = abs(out["streaming"]["fpr95"] - out["exact"]["fpr95"])
    thr = out["exact"]["best_f1_threshold"]
    out.update(_component_figures(data, rng, thr))
    out["threshold"] = thr
    return out


def format_table(r: dict) -> str:
    """Small plain-text table of a bench_metrics() result."""
    h, w = r["size"]
    lines = [f"metrics benchmark: {r['frames']} frames of {h}x{w} ({r['megapixels']:.1f} Mpx, "
             f"{r['valid_pixels'] / 1e6:.1f} M valid)",
             f"{'method':<28}{'seconds':>9}{'Mpx/s':>9}{'peak MiB':>10}{'AP':>9}{'AUROC':>9}"]
    for key, label in (("streaming", "PixelMetrics streaming"), ("exact", "PixelMetrics exact"),
                       ("smiyc", "PixelMetrics smiyc"), ("smiyc_legacy", "smiyc before (reference)"),
                       ("sklearn", "sklearn AP + AUROC")):
        v = r.get(key)
        if v is None:
            lines.append(f"{label:<28}{'scikit-learn not installed':>30}")
            continue
        lines.append(f"{label:<28}{v['seconds']:>9.2f}{v['mpx_per_s']:>9.1f}{v['peak_mb']:>10.0f}{v['ap']:>9.4f}"
                     f"{v['auroc']:>9.4f}")
    if "speedup_streaming_vs_sklearn" in r:
        lines.append(f"streaming vs sklearn: {r['speedup_streaming_vs_sklearn']:.1f}x faster; exact vs sklearn: "
                     f"{r['speedup_exact_vs_sklearn']:.1f}x; |AP exact - sklearn| = {r['abs_diff_exact_vs_sklearn_ap']:.1e}")
    if "speedup_smiyc_vs_legacy" in r:
        lines.append(f"smiyc protocol: {r['smiyc_legacy']['seconds']:.2f} s before, {r['smiyc']['seconds']:.2f} s now "
                     f"({r['speedup_smiyc_vs_legacy']:.1f}x); numbers identical: {r['smiyc_equals_legacy']}")
    lines.append(f"|streaming - exact|: AP {r['abs_diff_streaming_vs_exact_ap']:.1e}, AUROC "
                 f"{r['abs_diff_streaming_vs_exact_auroc']:.1e}, FPR95 {r['abs_diff_streaming_vs_exact_fpr95']:.1e}")
    for key in ("components_clean", "components_salt2pct"):
        v = r[key]
        lines.append(f"ComponentMetrics {key.split('_')[1]:<9} {v['frames']} frames: {v['seconds']:.2f} s, peak "
                     f"{v['peak_mb']:.0f} MiB (sIoU {v['sIoU']:.3f}, PPV {v['PPV']:.3f}, mean F1 {v['mean_F1']:.3f}, "
                     f"{v['n_pred']} predicted components)")
    return "\n".join(lines)


def run(args) -> int:
    """CLI handler of ``denseood bench metrics`` (args: frames, sizes, json)."""
    from ...config import parse_hw

    results = []
    for size in [parse_hw(t.strip(), "--sizes") for t in args.sizes.split(",") if t.strip()]:
        r = bench_metrics(frames=args.frames, size=size)
        print(format_table(r))
        ok_stream = r.get("speedup_streaming_vs_sklearn")
        if ok_stream is not None:
            print(f"requirement streaming >= 10x sklearn: {'met' if ok_stream >= 10 else 'NOT met'} ({ok_stream:.1f}x)")
        comp = r["components_salt2pct"]["seconds"] + 0.0
        if r["components_clean"]["frames"] == 20:
            print(f"requirement components on 20 frames < 20 s: "
                  f"{'met' if max(comp, r['components_clean']['seconds']) < 20 else 'NOT met'}")
        results.append(r)
    if args.json:
        from ...io import atomic_write_json

        atomic_write_json(args.json, results[0] if len(results) == 1 else results)
    return 0


__all__ = ["bench_metrics", "format_table", "synthetic_frame", "run"]
