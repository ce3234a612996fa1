"""Local encoder weight files for :func:`denseood.models.segmenter.create_segmenter` (nothing is downloaded).

``load_encoder_weights`` loads a state dict file (smp encoder, torchvision/timm classifier model, full smp model;
``.pth``/``.pt``/``.safetensors``) into an smp encoder strictly, adapting the common key styles; any mismatch is a
ConfigError naming the file and the keys. Imports only torch, safetensors (lazily) and ``denseood.errors``.
See docs/architecture.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..io import safe_torch_load


def _weight_file(encoder_weights: str | os.PathLike | None) -> Path | None:
    """The existing local file named by ``encoder_weights`` (None for None); ConfigError for a missing file or a
    download name such as "imagenet"."""
    if encoder_weights is None:
        return None
    p = Path(encoder_weights)
    if p.is_file():
        return p
    s = str(encoder_weights)
    looks_like_path = os.sep in s or "/" in s or p.suffix.lower() in (".pth", ".pt", ".bin", ".safetensors", ".ckpt")
    if looks_like_path:
        raise ConfigError(f"encoder weight file not found: {p}; pass an existing local file or None")
    raise ConfigError(f"encoder_weights={s!r} would download pretrained weights, which is impossible here (no "
                      f"internet); pass the path of a local encoder weight file (.pth/.pt/.safetensors) or None")


def _read_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or a weights_only torch file (unwrapping ``state_dict``/``model``/
    ``model_state_dict``/``module``); ConfigError if it is unreadable or not a non-empty dict of tensors."""
    if path.suffix.lower() == ".safetensors":
        try:
            from safetensors.torch import load_file

            return dict(load_file(str(path), device="cpu"))
        except Exception as e:  # noqa: BLE001
            raise ConfigError(f"cannot read encoder weight file {path} as safetensors: {e}") from e
    obj = safe_torch_load(path, path=path, what="encoder weight file", error=ConfigError)
    for wrap in ("state_dict", "model", "model_state_dict", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrap), dict):
            obj = obj[wrap]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"encoder weight file {path} does not hold a state dict of tensors")
    return dict(obj)


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike) -> None:
    """Load a local state dict file into ``encoder`` strictly.

    Accepted key styles: the encoder's own keys; torchvision/timm classifier models (classifier keys such as
    ``fc.*``, ``classifier.*``, ``head.*``, ``last_linear.*``, ``_fc.*`` are dropped); a full smp model
    (``encoder.*`` keys are used); ``module.`` prefixes (DDP); timm weights for ``tu-`` encoders (``model.``
    prefix added). Mismatch -> ConfigError naming the file and the missing/unexpected/mis-shaped keys.
    """
    path = Path(path)
    sd = _read_state_dict_file(path)
    target = encoder.state_dict()
    tkeys = set(target)

    def variants(d: dict[str, torch.Tensor]):
        yield d
        if all(k.startswith("module.") for k in d):
            d = {k[len("module."):]: v for k, v in d.items()}
            yield d
        if any(k.startswith("encoder.") for k in d):
            yield {k[len("encoder."):]: v for k, v in d.items() if k.startswith("encoder.")}
        yield {"model." + k: v for k, v in d.items()}

    best = max(variants(sd), key=lambda d: len(tkeys & set(d)))
    head_prefixes = ("fc.", "classifier.", "head.", "last_linear.", "_fc.", "model.fc.", "model.classifier.",
                     "model.head.", "model.last_linear.")
    best = {k: v for k, v in best.items() if k in tkeys or not k.startswith(head_prefixes)}
    missing = sorted(tkeys - set(best))
    unexpected = sorted(set(best) - tkeys)
    shapes = [f"{k}: file {tuple(best[k].shape)} vs model {tuple(target[k].shape)}"
              for k in sorted(tkeys & set(best)) if best[k].shape != target[k].shape]
    if missing or unexpected or shapes:
        raise ConfigError(
            f"encoder weight file {path} does not match encoder {type(encoder).__name__}: "
            f"{len(missing)} missing keys {missing[:8]}, {len(unexpected)} unexpected keys {unexpected[:8]}, "
            f"{len(shapes)} shape mismatches {shapes[:5]}; pass weights saved from the same encoder architecture")
    nn.Module.load_state_dict(encoder, best, strict=True)

