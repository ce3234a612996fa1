"""Batched inference engine: segmenter forward under autocast, channels_last, resize or sliding window,
optional flip averaging and ``torch.compile``; anomaly maps computed on the device in float32.

Maps are produced batch by batch (``Inference.run`` is a generator); nothing is accumulated over a dataset.
In resize mode the logits stay at the network's resolution: each band of output rows is upsampled (bilinear,
the same taps as ``F.interpolate``) and scored on its own, so full-resolution (B,C,H,W) logits never exist
unless ``return_logits`` asks for them. Images over ``max_pixels`` are refused before any work
(:func:`~denseood.infer.util.check_max_pixels`). See docs/architecture.md.
"""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ..config import parse_hw
from ..data.sample import Sample
from ..dist import resolve_device, worker_init
from ..errors import ConfigError, ModelOutputError
from ..scores.names import DEFAULT_SCORE
from .util import (MAX_PIXELS, _linear_taps, _resize_map, check_max_pixels, check_network_sizes, collate_samples,
                   dtype_name, peak_memory_mb, resolve_dtype, window_positions, window_weights)

__all__ = ["Inference"]


class Inference:
    """Anomaly maps of a Segmenter on batches of uint8 images.

    scores: names from ``denseood.scores.SCORES``.
    device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'.  dtype: 'auto' | 'fp32' | 'bf16' | 'fp16' (autocast of the forward).
    input_size: (H, W) the network sees, 'model' = model.train_size (None there keeps the image size),
        None = keep the image size. Logits are upsampled (bilinear) back to the image size.
    sliding_window: (h, w) windows over the full-resolution image (overlap fraction ``overlap``), logits blended
        with ``window_weighting`` ('gaussian' | 'uniform'); ``window_batch`` windows per forward.
    flip: average the network outputs (logits, or a mask transformer's class scores s_k; and features) of the image
    and its horizontal flip, then score once. (Mask2Anomaly averages the two score maps instead; the two agree
    only for scores linear in the outputs, e.g. mask_maxlogit where one class wins in both.)
    max_pixels: images with more than this many pixels raise ConfigError before any work (None: no limit).
    Logit scores in resize mode are computed per band of output rows from the upsampled logits of that band
    (at most ``tile_elements`` logit values per band), so memory is O(H*W), not O(C*H*W).
    Feature scores (e.g. mahalanobis) are computed from the features of each forward (at the network's output
    resolution), then upsampled (bilinear) to the image size; with sliding windows they are blended per window.
    Query scores (eam: a mask transformer's per-query outputs, ``model(x, return_queries=True)``) are computed the
    same way; with ``flip`` the class and mask logits of both passes are averaged (the mask logits flipped back).
    """

    def __init__(self, model: torch.nn.Module, *, scores: Sequence[str] = (DEFAULT_SCORE,), device: str = "auto",
                 dtype: str = "auto", input_size: tuple[int, int] | None | str = "model",
                 sliding_window: tuple[int, int] | None = None, overlap: float = 1 / 3, flip: bool = False,
                 channels_last: bool = True, compile: bool = False, window_weighting: str = "gaussian",
                 window_batch: int = 8, max_pixels: int | float | None = MAX_PIXELS):
        from ..scores import SCORES, parse_scores, score_kwargs

        self.scores = parse_scores(list(scores) if not isinstance(scores, str) else scores)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        if isinstance(input_size, str):
            if input_size != "model":
                raise ConfigError(f"invalid input_size {input_size!r}; expected (H, W), None or 'model'")
            input_size = getattr(model, "train_size", None)
        self.input_size = parse_hw(input_size, "input_size")
        self.sliding_window = parse_hw(sliding_window, "sliding_window")
        check_network_sizes(max_pixels, self.input_size, self.sliding_window)   # the limit the images have
        if not 0.0 <= overlap < 1.0:
            raise ConfigError(f"sliding-window overlap {overlap} must be in [0, 1)")
        self.overlap = float(overlap)
        self.flip = bool(flip)
        self.window_weighting = window_weighting
        window_weights(4, 4, window_weighting)  # validates the name
        self.window_batch = max(1, int(window_batch))
        self.max_pixels = max_pixels
        self.channels_last = bool(channels_last)
        self.compiled = bool(compile)

        self.model = model.eval().to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self._forward_fn = self.model
        if compile:
            try:
                self._forward_fn = torch.compile(self.model)
            except Exception as e:  # noqa: BLE001
                raise ConfigError(f"torch.compile failed ({type(e).__name__}: {e}); run without --compile") from e
        self._compile_checked = not compile

        self.feature_scores = [s for s in self.scores if SCORES[s].features or SCORES[s].queries]
        self._want = {"return_features": any(SCORES[s].features for s in self.scores),
                      "return_queries": any(SCORES[s].queries for s in self.scores)}
        self.logit_scores = [s for s in self.scores if s not in self.feature_scores]
        self.score_kwargs = {s: self._to_device(score_kwargs(s, self.model, self.device)) for s in self.scores}
        self._score_fn = None
        self.reset_stats()

    #: logit values (B*C*rows*W) per upsampled band in resize mode (at least one row per band)
    tile_elements: int = 2 ** 22

    # --------------------------------------------------------------------------------- bookkeeping
    def _to_device(self, obj: Any) -> Any:
        if torch.is_tensor(obj):
            return obj.to(self.device)
        if isinstance(obj, dict):
            return {k: self._to_device(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self._to_device(v) for v in obj)
        return obj

    def reset_stats(self) -> None:
        self._images = 0
        self._seconds = 0.0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @property
    def stats(self) -> dict[str, float]:
        """images, seconds (forward + scores, synchronised), images_per_s, peak_mem_mb."""
        return {
            "images": self._images,
            "seconds": self._seconds,
            "images_per_s": self._images / self._seconds if self._seconds > 0 else 0.0,
            "peak_mem_mb": peak_memory_mb(self.device),
        }

    @property
    def dtype_name(self) -> str:
        return dtype_name(self.dtype)

    # --------------------------------------------------------------------------------- forward pieces
    def _net(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
        """x: normalised (B,3,h,w) float32 -> (logits (B,C,h',w') float32, features (B,D,h'',w'') float32 | None,
        queries (class logits (B,Q,C+1), mask logits (B,Q,h',w')) float32 | None)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        kw = {k: True for k, v in self._want.items() if v}
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not torch.float32):
            try:
                out = self._forward_fn(x, **kw)
            except Exception as e:
                if not self._compile_checked:
                    raise ConfigError(f"torch.compile'd segmenter failed on its first call ({type(e).__name__}: {e}); "
                                      "run without --compile") from e
                raise
        self._compile_checked = True
        parts = list(out) if kw else [out]
        logits = parts.pop(0)
        feats = parts.pop(0).float() if self._want["return_features"] else None
        queries = tuple(q.float() for q in parts.pop(0)) if self._want["return_queries"] else None
        return logits.float(), feats, queries

    def _net_flip(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
        logits, feats, queries = self._net(x)
        if self.flip:
            lf, ff, qf = self._net(x.flip(-1))
            logits = 0.5 * (logits + lf.flip(-1))
            if feats is not None:
                feats = 0.5 * (feats + ff.flip(-1))
            if queries is not None:
                queries = (0.5 * (queries[0] + qf[0]), 0.5 * (queries[1] + qf[1].flip(-1)))
        return logits, feats, queries

    def _feature_score_maps(self, logits: torch.Tensor, feats: torch.Tensor | None,
                            queries: tuple | None) -> dict[str, torch.Tensor]:
        """Feature and query scores at the logits' resolution (the score upsamples its feature-resolution map):
        {name: (B,h,w)}."""
        from ..scores import anomaly_score

        return {s: anomaly_score(s, logits, features=feats, queries=queries, **self.score_kwargs[s]).float()
                for s in self.feature_scores}

    def _whole(self, x: torch.Tensor, out_hw: tuple[int, int],
               upsample: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Resize mode: x (B,3,H,W) normalised -> (logits (B,C,H,W), or (B,C,h,w) at the network's output
        size when not ``upsample``; feature score maps (B,H,W))."""
        if self.input_size is not None and tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        logits, feats, queries = self._net_flip(x)
        del x
        fmaps = self._feature_score_maps(logits, feats, queries) if self.feature_scores else {}
        if upsample and tuple(logits.shape[-2:]) != out_hw:
            logits = F.interpolate(logits, size=out_hw, mode="bilinear", align_corners=False)
        fmaps = {k: _resize_map(v, out_hw) for k, v in fmaps.items()}
        return logits, fmaps

    def _banded_scores(self, logits: torch.Tensor, out_hw: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Logit scores of bilinearly upsampled logits, band of output rows by band.

        logits: (B,C,h,w) float32 -> {score: (B,H,W) float32}; equal (to float rounding) to scoring
        ``F.interpolate(logits, out_hw, bilinear, align_corners=False)``, whose taps are reproduced here."""
        from ..scores import anomaly_score

        b, c, h, w = logits.shape
        H, W = out_hw
        out = {s: torch.empty(b, H, W, device=logits.device) for s in self.logit_scores}
        i0, i1, lam = _linear_taps(h, H, logits.device)
        rows = max(1, int(self.tile_elements) // max(1, b * c * W))
        for r0 in range(0, H, rows):
            r1 = min(H, r0 + rows)
            a, z = int(i0[r0]), int(i1[r1 - 1]) + 1
            band = logits[:, :, a:z]
            if w != W:  # width only: the height of the band is kept, so its rows are exact
                band = F.interpolate(band, size=(z - a, W), mode="bilinear", align_corners=False)
            lr = lam[r0:r1].view(1, 1, -1, 1)
            tile = (1.0 - lr) * band[:, :, i0[r0:r1] - a] + lr * band[:, :, i1[r0:r1] - a]
            for s in self.logit_scores:
                out[s][:, r0:r1] = anomaly_score(s, tile, **self.score_kwargs[s]).float()
        return out

    def _sliding(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sliding-window mode over the full-resolution x (B,3,H,W) -> (logits (B,C,H,W), feature maps (B,H,W))."""
        b, _, h, w = x.shape
        wh, ww = self.sliding_window
        ph, pw = max(0, wh - h), max(0, ww - w)
        if ph or pw:  # image smaller than the window: zero-pad (= the mean colour after normalisation)
            x = F.pad(x, (0, pw, 0, ph))
        H, W = x.shape[-2:]
        wh, ww = min(wh, H), min(ww, W)
        weight = window_weights(wh, ww, self.window_weighting).to(self.device)
        boxes = [(y, xx) for y in window_positions(H, wh, self.overlap) for xx in window_positions(W, ww, self.overlap)]
        jobs = [(i, y, xx) for i in range(b) for (y, xx) in boxes]
        logit_acc = None
        fmap_acc = {s: torch.zeros(b, H, W, device=self.device) for s in self.feature_scores}
        wsum = torch.zeros(H, W, device=self.device)
        for y, xx in boxes:
            wsum[y:y + wh, xx:xx + ww] += weight
        for k in range(0, len(jobs), self.window_batch):
            chunk = jobs[k:k + self.window_batch]
            crops = torch.stack([x[i, :, y:y + wh, xx:xx + ww] for i, y, xx in chunk])
            logits, feats, queries = self._net_flip(crops)
            fmaps = self._feature_score_maps(logits, feats, queries) if self.feature_scores else {}
            if tuple(logits.shape[-2:]) != (wh, ww):
                logits = F.interpolate(logits, size=(wh, ww), mode="bilinear", align_corners=False)
            if logit_acc is None:
                logit_acc = torch.zeros(b, logits.shape[1], H, W, device=self.device)
            for j, (i, y, xx) in enumerate(chunk):
                logit_acc[i, :, y:y + wh, xx:xx + ww] += logits[j] * weight
                for s, m in fmaps.items():
                    fmap_acc[s][i, y:y + wh, xx:xx + ww] += _resize_map(m[j:j + 1], (wh, ww))[0] * weight
        logits = (logit_acc / wsum)[..., :h, :w]
        fmaps = {s: (m / wsum)[..., :h, :w] for s, m in fmap_acc.items()}
        return logits, fmaps

    # --------------------------------------------------------------------------------- public API
    def _normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,H,W,3) on the device -> normalised float32 (B,3,H,W) on the device (in bands of rows, so
        the model's temporaries stay small)."""
        b, h, w, _ = images.shape
        rows = max(1, (1 << 22) // max(1, b * w))
        if rows >= h:
            return self._normalize_rows(images)
        x = torch.empty(b, 3, h, w, device=self.device, dtype=torch.float32)
        for r0 in range(0, h, rows):
            x[:, :, r0:r0 + rows] = self._normalize_rows(images[:, r0:r0 + rows])
        return x

    def _normalize_rows(self, images: torch.Tensor) -> torch.Tensor:
        x = self.model.normalize(images)
        if not torch.is_tensor(x):
            x = torch.as_tensor(x)
        return x.to(self.device, torch.float32)

    @torch.no_grad()
    def predict(self, images: np.ndarray | torch.Tensor, return_logits: bool = False,
                names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """images: uint8 (B,H,W,3) (or one (H,W,3)) numpy/torch, all of one size; names: B frame names (files),
        used only in errors.

        Returns {score name: (B,H,W) float32 on the device, higher = more anomalous} and, with
        ``return_logits``, "logits": (B,C,H,W) float32 at the image size. ModelOutputError naming the model and
        the frames when the network's logits hold NaN or inf.
        """
        from ..scores import anomaly_score

        t = torch.as_tensor(images)
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[-1] != 3 or t.dtype != torch.uint8:
            raise ConfigError(f"images must be uint8 (B,H,W,3) RGB; got dtype {t.dtype} shape {tuple(t.shape)}")
        check_max_pixels(t.shape[1], t.shape[2], self.max_pixels, "image", "max_pixels")
        start = time.perf_counter()
        t = t.to(self.device, non_blocking=True)
        x = self._normalize(t)
        out_hw = tuple(x.shape[-2:])
        banded = self.sliding_window is None and not return_logits
        if self.sliding_window is not None:
            logits, fmaps = self._sliding(x)
        else:
            logits, fmaps = self._whole(x, out_hw, upsample=not banded)
        del x
        self._check_logits(logits, names)
        out: dict[str, torch.Tensor] = self._banded_scores(logits, out_hw) if banded and self.logit_scores else {}
        for s in self.scores:
            if s in out:
                continue
            if s in fmaps:
                out[s] = fmaps[s].float()
            else:
                out[s] = anomaly_score(s, logits, **self.score_kwargs[s]).float()
        if return_logits:
            out["logits"] = logits
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._seconds += time.perf_counter() - start
        self._images += t.shape[0]
        return out

    def _check_logits(self, logits: torch.Tensor, names: Sequence[str] | None) -> None:
        """ModelOutputError naming the model and the frames of logits (B,C,h,w) that hold NaN or inf."""
        ok = torch.isfinite(logits).flatten(1).all(1)
        if bool(ok.all()):
            return
        bad = torch.nonzero(~ok).flatten().tolist()
        frames = [names[i] for i in bad] if names is not None else [f"image {i} of the batch" for i in bad]
        desc = self.model.describe() if hasattr(self.model, "describe") else type(self.model).__name__
        fp32 = ", or run with --dtype fp32" if self.dtype is not torch.float32 else ""
        raise ModelOutputError(
            f"model {desc} returned NaN/inf logits for {len(bad)} of {logits.shape[0]} frame(s) "
            f"({', '.join(map(str, frames[:5]))}{', ...' if len(frames) > 5 else ''}) at {self.dtype_name}; "
            f"check the model's weights and inputs{fp32}")

    def loader(self, dataset: Dataset, batch_size: int = 4, workers: int = 2, limit: int | None = None,
               sampler: Sampler | None = None) -> DataLoader:
        """DataLoader yielding lists of (samples, uint8 (b,H,W,3)) groups (see ``collate_samples``)."""
        if limit is not None:
            if sampler is not None:
                raise ConfigError("pass either limit or sampler to Inference.run (apply the limit to the dataset first)")
            if limit <= 0:
                raise ConfigError(f"limit must be positive, got {limit}")
            dataset = Subset(dataset, range(min(int(limit), len(dataset))))
        if batch_size <= 0:
            raise ConfigError(f"batch size must be positive, got {batch_size}")
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=max(0, workers),
                          collate_fn=collate_samples, pin_memory=self.device.type == "cuda",
                          worker_init_fn=worker_init, persistent_workers=False)

    def run(self, dataset: Dataset, batch_size: int = 4, workers: int = 2, limit: int | None = None,
            sampler: Sampler | None = None, progress: bool = True,
            return_logits: bool = False) -> Iterator[tuple[list[Sample], dict[str, torch.Tensor]]]:
        """Iterate (samples, maps) per batch (maps as in ``predict``); mixed-size batches come as groups of one."""
        from ..progress import progress_bar

        dl = self.loader(dataset, batch_size, workers, limit, sampler)
        n = len(dl.sampler) if dl.sampler is not None else None
        with progress_bar(total=n, desc="inference", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for groups in dl:
                for samples, images in groups:
                    maps = self.predict(images, return_logits=return_logits,
                                        names=[str(s.meta.get("image_path") or s.name) for s in samples])
                    bar.update(len(samples))
                    yield samples, maps
