"""Scores that need statistics fitted on training data: standardized max logit (SML) and Mahalanobis distance.

Statistics live in ``model.stats`` (saved in checkpoints): ``sml_mean`` (C,), ``sml_std`` (C,),
``maha_means`` (C,F), ``maha_precision`` (F,F), ``maha_counts`` (C,) (pixels per class used for the fit;
classes with 0 pixels are left out of the minimum).
"""
from __future__ import annotations

import warnings
from typing import Any, Iterable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..progress import progress_bar
from .logit_scores import check_logits
from .names import SCORES

IGNORE = 255

_FIT_HINT = ("fit them on training images with denseood.scores.{fit}(model, loader) and save the checkpoint "
             "again (denseood.save_checkpoint)")


def _need(stats: Mapping[str, torch.Tensor] | None, score: str, what: str) -> None:
    """ConfigError unless ``stats`` holds every key the record of ``score`` lists."""
    keys, fit = SCORES[score].stats, SCORES[score].fit_name
    if stats is None or any(k not in stats for k in keys):
        have = sorted(stats) if stats else []
        raise ConfigError(f"the checkpoint has no {what} statistics ({', '.join(keys)}; it has {have}); "
                          + _FIT_HINT.format(fit=fit))


def sml(logits: torch.Tensor, stats: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Negative standardized max logit: -(max_c l_c - mean[c*]) / std[c*], c* = argmax.

    logits: (B,C,H,W) any float dtype; stats: ``sml_mean`` (C,), ``sml_std`` (C,). Returns (B,H,W) float32.
    """
    x = check_logits(logits, "sml")
    _need(stats, "sml", "SML")
    mean = stats["sml_mean"].to(x.device, torch.float32).reshape(-1)
    std = stats["sml_std"].to(x.device, torch.float32).reshape(-1)
    if mean.numel() != x.shape[1] or std.numel() != x.shape[1]:
        raise ConfigError(f"SML statistics are for {mean.numel()} classes but the logits have {x.shape[1]}; "
                          f"refit them for this model")
    mx, cls = x.max(dim=1)
    return -(mx - mean[cls]) / std[cls].clamp_min(1e-12)


def mahalanobis(logits: torch.Tensor, features: torch.Tensor | None = None,
                stats: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Min over classes of the Mahalanobis distance of decoder features to class means (tied covariance).

    logits: (B,C,H,W) (only its size is used); features: (B,F,h,w) decoder features; stats: ``maha_means``
    (C,F), ``maha_precision`` (F,F), optional ``maha_counts`` (C,) (classes with 0 count are skipped).
    The distance sqrt((f-mu_c)^T P (f-mu_c)) is computed at (h,w) in float32 and bilinearly upsampled to (H,W).
    Returns (B,H,W) float32.
    """
    x = check_logits(logits, "mahalanobis")
    _need(stats, "mahalanobis", "Mahalanobis")
    if features is None:
        raise ConfigError("score 'mahalanobis' needs the decoder features: call the model with "
                          "return_features=True and pass features=...")
    if features.ndim != 4 or features.shape[0] != x.shape[0]:
        raise ConfigError(f"mahalanobis expects features (B,F,h,w) with B={x.shape[0]}, got {tuple(features.shape)}")
    dev = x.device
    means = stats["maha_means"].to(dev, torch.float32)
    prec = stats["maha_precision"].to(dev, torch.float32)
    b, f, h, w = features.shape
    if means.ndim != 2 or means.shape[1] != f or prec.shape != (f, f):
        raise ConfigError(f"Mahalanobis statistics (means {tuple(means.shape)}, precision {tuple(prec.shape)}) "
                          f"do not fit features with {f} channels; refit them for this model")
    valid = torch.ones(means.shape[0], dtype=torch.bool, device=dev)
    if "maha_counts" in stats:
        valid = stats["maha_counts"].to(dev).reshape(-1) > 0
        if not bool(valid.any()):
            raise ConfigError("Mahalanobis statistics hold no fitted class (all maha_counts are 0); refit them")
    means = means[valid]
    z = features.to(dev, torch.float32).permute(0, 2, 3, 1).reshape(-1, f)
    d2 = mahalanobis_min_d2(z, means, prec)
    dist = d2.clamp_min(0.0).sqrt().reshape(b, 1, h, w)
    if (h, w) != tuple(x.shape[-2:]):
        dist = F.interpolate(dist, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return dist[:, 0]


def mahalanobis_min_d2(z: torch.Tensor, means: torch.Tensor, prec: torch.Tensor) -> torch.Tensor:
    """min_c (z - mu_c)^T P (z - mu_c) per row, accurate to float32 rounding of the *difference*.

    z: (N,F) float32 features; means: (K,F) float32 class means; prec: (F,F) symmetric positive definite.
    Returns (N,) float32 squared distances (>= 0 up to rounding). Two passes: the nearest class is chosen in
    float64 with the linear part of the expanded form around the centroid of the means (z^T P z is the same for
    every class, so it is skipped), then that class's distance is computed in float32 from the residual
    z - mu_c, which float32 subtracts exactly when z is near mu_c. Expanding the quadratic form in float32
    instead loses about eps * |z|^2 * |P| to cancellation, which is large when class means are far from each
    other or from their centroid, and can pick the wrong one of two close means (denseood 0.1's float32
    selection did). The float64 selection errs by at most about F * eps64 * |z - centroid| * |P mu|; a wrong
    pick needs a true gap below that (a near-tie, or two means about one float32 ulp apart far from the
    centroid) and then raises the squared distance by at most that much.
    Cost: one float64 (N,F)x(F,K) and one float32 (N,F)x(F,F) product, in blocks of ``_ROWS`` rows
    (memory O(_ROWS * F)).
    """
    m64, p64 = means.double(), prec.double()
    center = m64.mean(dim=0)
    mu = m64 - center
    a = p64 @ mu.T  # (F,K)
    const = (mu * a.T).sum(dim=1)[None]  # score_c = -2 (z - center)^T P mu_c + mu_c^T P mu_c
    out = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
    for i in range(0, z.shape[0], _ROWS):  # row blocks keep the (rows, F) temporaries in cache
        zb = z[i:i + _ROWS]
        zc = zb.double().sub_(center)
        s = torch.addmm(const, zc, a, alpha=-2.0)
        nearest = s.argmin(dim=1)
        r = means.index_select(0, nearest).sub_(zb)
        out[i:i + _ROWS] = (r @ prec).mul_(r).sum(dim=1)
    return out


_ROWS = 4096


# ------------------------------------------------------------------------------------------------ fitting
def _unpack(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Loader item -> (images (B,3,H,W) float normalised, semantic (B,H,W) long or None)."""
    if isinstance(batch, torch.Tensor):
        return batch, None
    if isinstance(batch, Mapping):
        if "image" not in batch:
            raise ConfigError(f"loader batch dict has no 'image' key (keys: {sorted(batch)})")
        return batch["image"], batch.get("semantic")
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise ConfigError(f"loader must yield image tensors, (image, semantic) tuples or dicts with 'image', "
                      f"got {type(batch).__name__}")


def _check_images(img: torch.Tensor) -> None:
    if not isinstance(img, torch.Tensor) or img.ndim != 4 or not img.is_floating_point():
        shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ConfigError(f"fit expects normalised float images (B,3,H,W), got {shape}; "
                          f"use model.normalize(uint8_images)")


def _batches(loader: Iterable, max_batches: int | None, desc: str):
    total = None
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        pass
    if max_batches is not None:
        if max_batches < 1:
            raise ConfigError(f"max_batches must be >= 1 or None, got {max_batches}")
        total = max_batches if total is None else min(total, max_batches)
    for i, batch in enumerate(progress_bar(loader, total=total, desc=desc, leave=False)):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


def _store(model: nn.Module, stats: dict[str, torch.Tensor]) -> None:
    cur = getattr(model, "stats", None)
    if isinstance(cur, dict):
        cur.update(stats)
    else:
        model.stats = dict(stats)


def fit_sml(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu",
            max_batches: int | None = None) -> dict[str, torch.Tensor]:
    """Per predicted class c: mean and (population) std of the max logit over pixels predicted as c.

    Streaming (Chan's parallel mean/M2 merge in float64), no pixels kept. Classes never predicted get mean 0,
    std 1 (warning). Stores ``sml_mean``/``sml_std`` (C,) float32 into ``model.stats`` and returns them.
    """
    model.to(device).eval()
    n = mean = m2 = None
    with torch.no_grad():
        for batch in _batches(loader, max_batches, "fit SML"):
            img, _ = _unpack(batch)
            _check_images(img)
            logits = model(img.to(device)).float()
            c = logits.shape[1]
            if n is None:
                n = torch.zeros(c, dtype=torch.float64, device=device)
                mean = torch.zeros_like(n)
                m2 = torch.zeros_like(n)
            mx, cls = logits.max(dim=1)
            mx, cls = mx.reshape(-1).double(), cls.reshape(-1)
            nb = torch.bincount(cls, minlength=c).double()
            sb = torch.zeros(c, dtype=torch.float64, device=device).index_add_(0, cls, mx)
            mb = sb / nb.clamp_min(1)
            m2b = torch.zeros_like(sb).index_add_(0, cls, (mx - mb[cls]) ** 2)
            tot = n + nb
            delta = mb - mean
            mean = torch.where(tot > 0, mean + delta * nb / tot.clamp_min(1), mean)
            m2 = m2 + m2b + delta ** 2 * n * nb / tot.clamp_min(1)
            n = tot
    if n is None:
        raise ConfigError("fit_sml: the loader yielded no batches")
    std = (m2 / n.clamp_min(1)).sqrt()
    never = (n == 0).nonzero().flatten().tolist()
    if never:
        warnings.warn(f"fit_sml: classes {never} were never predicted; their SML statistics are set to "
                      f"mean 0, std 1", stacklevel=2)
    mean = torch.where(n > 0, mean, torch.zeros_like(mean))
    std = torch.where(n > 0, std, torch.ones_like(std))
    few = ((n > 0) & (std < 1e-6)).nonzero().flatten().tolist()
    if few:
        warnings.warn(f"fit_sml: classes {few} have (near) zero max-logit spread; std clamped to 1e-6",
                      stacklevel=2)
        std = std.clamp_min(1e-6)
    stats = {"sml_mean": mean.float().cpu(), "sml_std": std.float().cpu()}
    _store(model, stats)
    return stats


def _feature_labels(sem: Any, logits: torch.Tensor, feats: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Class label per pixel of feats (B,F,h,w), flattened (B*h*w,) long: ``sem`` (B,H,W) resized (nearest) to
    (h,w) (255 = ignore; other values outside 0..C-1 raise), else the argmax of the logits (B,C,H',W') resized
    (bilinear) to (h,w)."""
    c, size = logits.shape[1], tuple(feats.shape[-2:])
    if sem is not None:
        sem = torch.as_tensor(sem)
        if sem.ndim != 3 or sem.shape[0] != feats.shape[0]:
            raise ConfigError(f"fit_mahalanobis: 'semantic' must be (B,H,W), got {tuple(sem.shape)}")
        lab = F.interpolate(sem[:, None].float(), size=size, mode="nearest")[:, 0].long().to(device)
        bad = (lab != IGNORE) & ((lab < 0) | (lab >= c))
        if bool(bad.any()):
            vals = torch.unique(lab[bad]).tolist()[:10]
            raise ConfigError(f"fit_mahalanobis: semantic labels {vals} outside 0..{c - 1} (255 = ignore)")
    else:
        small = logits if logits.shape[-2:] == size else F.interpolate(
            logits, size=size, mode="bilinear", align_corners=False)
        lab = small.argmax(dim=1)
    return lab.reshape(-1)


def _budgeted_pixels(lab: torch.Tensor, counts: torch.Tensor, budget_per_class: int,
                     gen: torch.Generator) -> torch.Tensor | None:
    """Indices into ``lab`` (N,) of the pixels to use, at most ``budget_per_class - counts[k]`` of class k (a
    seeded random subset where a class has more); updates ``counts`` (C,) in place. None: no pixel left."""
    keep = []
    for k in torch.unique(lab).tolist():
        if k == IGNORE or k < 0 or k >= counts.numel():
            continue
        budget = budget_per_class - int(counts[k])
        if budget <= 0:
            continue
        idx = (lab == k).nonzero().flatten()
        if idx.numel() > budget:
            idx = idx[torch.randperm(idx.numel(), generator=gen)[:budget].to(idx.device)]
        keep.append(idx)
        counts[k] += idx.numel()
    return torch.cat(keep) if keep else None


def _tied_precision(sums: torch.Tensor, outer: torch.Tensor, counts: torch.Tensor,
                    ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means (C,F) and the symmetric precision (F,F) of the tied covariance + ridge*mean_eig*I, in float64,
    from the per-class feature sums (C,F), the summed outer products (F,F) and the pixel counts (C,)."""
    total = int(counts.sum())
    if total == 0:
        raise ConfigError("fit_mahalanobis: no labelled pixels found (all ignore?)")
    cnt = counts.to(sums.device).double()
    means = sums / cnt.clamp_min(1)[:, None]
    cov = (outer - (means.T * cnt) @ means) / total
    cov = 0.5 * (cov + cov.T)
    f = cov.shape[0]
    scale = float(torch.diagonal(cov).mean().clamp_min(1e-12))
    reg = cov + ridge * scale * torch.eye(f, dtype=cov.dtype, device=cov.device)
    try:
        prec = torch.linalg.inv(reg)
        if not bool(torch.isfinite(prec).all()):
            raise RuntimeError("non-finite inverse")
    except RuntimeError:
        prec = torch.linalg.pinv(reg, hermitian=True)
    return means, 0.5 * (prec + prec.T)


def fit_mahalanobis(model: nn.Module, loader: Iterable, device: str | torch.device = "cpu",
                    max_batches: int | None = None, max_pixels_per_class: int = 20000,
                    ridge: float = 1e-6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Class means and tied covariance of decoder features; precision = inv(cov + ridge*mean_eig*I).

    Labels per feature pixel: ``semantic`` downsampled (nearest) to the feature size when the loader gives it
    (255 ignored), else the predicted class (argmax of the logits resized to the feature size). At most
    ``max_pixels_per_class`` pixels per class are used (a seeded random subset of each batch once a class is
    close to its budget). Streaming float64 sums (no pixels kept). Stores ``maha_means`` (C,F),
    ``maha_precision`` (F,F), ``maha_counts`` (C,) into ``model.stats`` and returns them.
    """
    if max_pixels_per_class < 1:
        raise ConfigError(f"max_pixels_per_class must be >= 1, got {max_pixels_per_class}")
    model.to(device).eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    counts = sums = outer = None
    with torch.no_grad():
        for batch in _batches(loader, max_batches, "fit Mahalanobis"):
            img, sem = _unpack(batch)
            _check_images(img)
            out = model(img.to(device), return_features=True)
            if not (isinstance(out, (tuple, list)) and len(out) == 2):
                raise ConfigError("fit_mahalanobis: model(x, return_features=True) must return (logits, features)")
            logits, feats = out[0].float(), out[1].float()
            c, f = logits.shape[1], feats.shape[1]
            if counts is None:
                counts = torch.zeros(c, dtype=torch.long)
                sums = torch.zeros(c, f, dtype=torch.float64, device=device)
                outer = torch.zeros(f, f, dtype=torch.float64, device=device)
            lab = _feature_labels(sem, logits, feats, device)
            idx = _budgeted_pixels(lab, counts, max_pixels_per_class, gen)
            if idx is None:
                continue
            zk, lk = feats.permute(0, 2, 3, 1).reshape(-1, f)[idx].double(), lab[idx]
            sums.index_add_(0, lk, zk)
            outer += zk.T @ zk
    if counts is None:
        raise ConfigError("fit_mahalanobis: the loader yielded no batches")
    means, prec = _tied_precision(sums, outer, counts, ridge)
    never = (counts == 0).nonzero().flatten().tolist()
    if never:
        warnings.warn(f"fit_mahalanobis: classes {never} have no pixels; they are left out of the minimum "
                      f"(maha_counts = 0)", stacklevel=2)
    stats = {"maha_means": means.float().cpu(), "maha_precision": prec.float().cpu(),
             "maha_counts": counts.cpu()}
    _store(model, stats)
    return stats
