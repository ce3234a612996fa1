"""``hf:DIR``: a transformers segmentation model from a local folder, loaded strictly offline.

DIR is a folder written by ``save_pretrained`` (``config.json`` + weights), a hub snapshot folder, or a hub cache
folder ``models--ORG--NAME`` (its ``refs/main`` snapshot). ``local_files_only=True`` always: no network call.
Semantic models (``AutoModelForSemanticSegmentation``: SegFormer, UperNet, DPT, BEiT, ...) give logits, upsampled
(bilinear) to the input size. Universal models (``AutoModelForUniversalSegmentation``: Mask2Former, MaskFormer,
OneFormer) give per-query class logits (B,Q,C+1) and mask logits (B,Q,h,w); the per-pixel class scores are
``einsum("bqc,bqhw->bchw", softmax(class logits)[..., :-1], sigmoid(upsampled mask logits))`` in [0, Q]
(Q queries: s_k can exceed 1)
(``output_kind = "mask_scores"``), the masks upsampled to the input size before the sigmoid. Class names come from
``config.id2label``; mean/std from ``preprocessor_config.json`` (``image_mean``/``image_std`` on images rescaled by
``rescale_factor``, converted to denseood's 0..1 convention; default ImageNet). denseood picks the input size
itself (``train_size`` None = the image size; HF processors would resize, e.g. Mask2Former to 384x384).

A fine-tuned model is saved as a denseood checkpoint (``HFSegmenter.checkpoint_record``: model type, universal
flag, ``config.to_dict()``, OneFormer task tokens, the original spec) and rebuilt by :func:`rebuild_hf` with
``AutoModelFor...Segmentation.from_config`` (no folder, no network), then the state dict is loaded strictly.
See docs/architecture.md.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import CheckpointError, ConfigError
from ..base import IMAGENET_MEAN, IMAGENET_STD, SegmenterBase, check_finite, match_classes
from ..origin import ModelOrigin, Source, origin_of

#: model types whose outputs are per-query masks (AutoModelForUniversalSegmentation)
UNIVERSAL_TYPES = ("mask2former", "maskformer", "oneformer")
#: universal models see their normalised input zero-padded (bottom/right) to a multiple of this, as detectron2's
#: ``ImageList`` pads it for Mask2Former and RbA; the mask logits are upsampled to the padded size, then cropped
PAD_MULTIPLE = 32


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ConfigError(f"an hf: model needs the transformers package ({e}); install it with "
                          f"`pip install denseood[hf]`") from e
    return transformers


def resolve_dir(path: str | Path) -> Path:
    """The folder holding ``config.json``: DIR itself, or the ``refs/main`` (or only) snapshot of a hub cache folder."""
    d = Path(path).expanduser()
    if not d.is_dir():
        raise CheckpointError(f"hf: model folder not found: {d}; give a folder written by save_pretrained")
    if (d / "config.json").is_file():
        return d
    snaps = d / "snapshots"
    if snaps.is_dir():
        ref = d / "refs" / "main"
        if ref.is_file() and (snaps / ref.read_text().strip() / "config.json").is_file():
            return snaps / ref.read_text().strip()
        found = sorted(p for p in snaps.iterdir() if (p / "config.json").is_file())
        if len(found) == 1:
            return found[0]
    raise CheckpointError(f"{d} has no config.json; give a folder written by save_pretrained or a hub snapshot")


def processor_mean_std(d: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std for denseood's ``(uint8/255 - mean) / std`` from ``preprocessor_config.json`` (ImageNet if absent).

    HF computes ``(x * rescale_factor - image_mean) / image_std`` on 0..255 x (without rescaling when
    ``do_rescale`` is false, identity when ``do_normalize`` is false); that equals denseood's formula with
    mean = image_mean / (255 rescale_factor) and std = image_std / (255 rescale_factor).
    """
    f = d / "preprocessor_config.json"
    if not f.is_file():
        return IMAGENET_MEAN, IMAGENET_STD
    try:
        cfg = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {f}: {e}; fix or delete the file") from e
    rf = float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0
    if cfg.get("do_normalize", True):
        mean, std = cfg.get("image_mean", IMAGENET_MEAN), cfg.get("image_std", IMAGENET_STD)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean = [float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)]
    std = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)]
    if len(mean) != 3 or len(std) != 3 or rf <= 0:
        raise CheckpointError(f"{f}: image_mean/image_std must have 3 values and rescale_factor be > 0")
    s = 255.0 * rf
    return tuple(m / s for m in mean), tuple(v / s for v in std)


class HFSegmenter(SegmenterBase):
    """A transformers semantic or universal segmentation model behind the :class:`SegmenterBase` protocol."""

    def __init__(self, net: nn.Module, *, universal: bool, class_names: tuple[str, ...], class_set: str | None,
                 mean: tuple[float, ...], std: tuple[float, ...], source: str,
                 task_inputs: torch.Tensor | None = None) -> None:
        super().__init__()
        self.net = net
        self.universal = bool(universal)
        self.returns_queries = self.universal   # forward(x, return_queries=True) works (scores.eam reads it)
        self._set_meta(class_names=class_names, class_set=class_set, mean=mean, std=std, train_size=None,
                       source=source, output_kind="mask_scores" if universal else "logits")
        self.register_buffer("task_inputs", task_inputs, persistent=False)
        self.spec = source  # the original hf: spec (``source`` becomes the .pt path once saved and reloaded)

    def checkpoint_record(self) -> dict[str, Any]:
        """What rebuilds this model without its folder (checkpoint ``meta["external"]``; plain types)."""
        cfg = self.net.config
        return {"model_type": str(getattr(cfg, "model_type", "")), "universal": self.universal,
                "config": cfg.to_dict(), "spec": self.spec,
                "task_inputs": None if self.task_inputs is None else [int(v) for v in self.task_inputs[0].tolist()]}

    def forward(self, x: torch.Tensor, return_features: bool = False, return_queries: bool = False):
        """x: (B,3,H,W) normalised -> class scores (B,C,H,W) float32 (logits, or s_k in [0, Q] for universal
        models, whose input is zero-padded to a multiple of PAD_MULTIPLE and whose masks are cropped back), or ``(scores, features (B,F,h,w))`` (the pixel decoder's last hidden state; universal only).
        ``return_queries`` (universal only) appends ``(class_logits (B,Q,C+1), mask_logits (B,Q,H,W))`` float32, the
        mask logits upsampled and cropped as for the scores: ``(scores, [features,] queries)``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"{self.describe()} expects (B,3,H,W) normalised images, got {tuple(x.shape)}")
        if return_features and not self.universal:
            raise self.no_features("transformers semantic models do not return their decode head's features")
        if return_queries and not self.universal:
            raise ConfigError(f"{self.describe()} is a semantic model: it has no query outputs (only Mask2Former, "
                              f"MaskFormer and OneFormer do)")
        hw = tuple(x.shape[-2:])
        if not self.universal:
            logits = self.net(pixel_values=x).logits.float()
            with torch.autocast(x.device.type, enabled=False):   # float32 scores also under the engine's autocast
                return F.interpolate(logits, size=hw, mode="bilinear", align_corners=False)
        out, masks, padded = self._universal(x)
        with torch.autocast(x.device.type, enabled=False):   # float32 scores also under the engine's autocast
            cls = torch.softmax(out.class_queries_logits.float(), dim=-1)[..., :-1]
            scores = torch.einsum("bqc,bqhw->bchw", cls, masks.float().sigmoid())
        queries = (out.class_queries_logits.float(), masks)
        if not return_features:
            return (scores, queries) if return_queries else scores
        feats = getattr(out, "pixel_decoder_last_hidden_state", None)
        if feats is None:
            raise self.no_features("this universal model returns no pixel_decoder_last_hidden_state")
        fh, fw = feats.shape[-2:]   # crop the padding's share of the feature map too
        feats = feats[..., :-(-hw[0] * fh // padded[0]), :-(-hw[1] * fw // padded[1])].float()
        return (scores, feats, queries) if return_queries else (scores, feats)

    @property
    def input_padding(self) -> dict[str, Any] | None:
        """Universal models: how the input is zero-padded to a multiple of :data:`PAD_MULTIPLE`, as the RbA /
        Mask2Former pipeline does (plain types, for results.json); None for semantic models."""
        if not self.universal:
            return None
        return {"multiple": PAD_MULTIPLE, "value": 0.0, "where": "bottom/right, after normalisation",
                "masks": "upsampled to the padded size, then cropped"}

    # -- per-query outputs (issue 21: query objects, denseood.s2m.queries)
    def query_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Universal models only. x: (B,3,H,W) normalised -> (class logits (B,Q,K+1) float32, the last column
        no-object; mask logits (B,Q,H,W) float32), with the RbA padding of :meth:`forward`: the input zero-padded
        bottom/right to a multiple of :data:`PAD_MULTIPLE`, the mask logits upsampled (bilinear) to the padded
        size and cropped back to (H, W). ConfigError for a semantic model."""
        if not self.universal:
            raise ConfigError(f"{self.describe()} is a semantic (per-pixel logit) model and has no queries; query "
                              f"outputs need a universal model ({', '.join(UNIVERSAL_TYPES)})")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ConfigError(f"{self.describe()} expects (B,3,H,W) normalised images, got {tuple(x.shape)}")
        out, masks, _ = self._universal(x)
        return out.class_queries_logits.float(), masks

    def _universal(self, x: torch.Tensor) -> tuple[Any, torch.Tensor, tuple[int, int]]:
        """The universal net on x (B,3,H,W) zero-padded bottom/right (after normalisation) to a multiple of
        PAD_MULTIPLE -> (its output, mask logits (B,Q,H,W) float32 upsampled to the padded size and cropped back,
        the padded (H', W'))."""
        hw = tuple(x.shape[-2:])
        kw: dict[str, Any] = {}
        if self.task_inputs is not None:
            kw["task_inputs"] = self.task_inputs.expand(x.shape[0], -1)
        ph, pw = -hw[0] % PAD_MULTIPLE, -hw[1] % PAD_MULTIPLE
        xp = F.pad(x, (0, pw, 0, ph)) if ph or pw else x
        out = self.net(pixel_values=xp, **kw)
        padded = tuple(xp.shape[-2:])
        with torch.autocast(x.device.type, enabled=False):
            masks = F.interpolate(out.masks_queries_logits.float(), size=padded, mode="bilinear",
                                  align_corners=False)[..., :hw[0], :hw[1]]
        return out, masks, padded

    def query_outputs(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> dict[str, torch.Tensor]:
        """Universal models only. x: (B,3,H,W) normalised -> {"class_probs": (B,Q,K+1) float32 softmax over the
        K known classes + no-object (last), "masks": (B,Q,h,w) float32 sigmoid masks in [0,1]} at ``size``
        (h,w) (default (H,W)); see :meth:`query_logits` and :func:`query_masks`."""
        cls, masks = self.query_logits(x)
        return {"class_probs": torch.softmax(cls, dim=-1), "masks": query_masks(masks, size)}

    def meta(self) -> dict[str, Any]:
        """:meth:`SegmenterBase.meta` plus ``input_padding``."""
        return {**super().meta(), "input_padding": self.input_padding}


def query_masks(mask_logits: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """(B,Q,H,W) mask logits (from :meth:`HFSegmenter.query_logits`) -> (B,Q,h,w) float32 sigmoid masks at
    ``size`` (default (H,W)): the logits resized bilinearly before the sigmoid, as detectron2's
    ``sem_seg_postprocess`` resizes Mask2Former's (and RbA's) cropped mask logits to the frame's size."""
    m = mask_logits.float()
    if size is not None and tuple(size) != tuple(m.shape[-2:]):
        m = F.interpolate(m, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)
    return m.sigmoid()


def _oneformer_task_inputs(tf: Any, d: Path, config: Any) -> torch.Tensor:
    """Token ids of "the task is semantic" (OneFormer's task input) from the folder's tokenizer."""
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d}: OneFormer needs its tokenizer files in the folder (save the processor with "
                              f"save_pretrained too): {e}") from e
    n = int(getattr(config, "task_seq_len", 77))
    ids = tok("the task is semantic", padding="max_length", max_length=n, truncation=True)["input_ids"]
    return torch.tensor([ids], dtype=torch.long)


def _first_line(e: BaseException) -> str:
    """``Type: first line`` of an exception from transformers / safetensors (never their retry advice)."""
    line = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {line[:240]}" if line else type(e).__name__


def refuse_remote_code(config: Any, where: str) -> None:
    """CheckpointError when a transformers config (object or dict, nested configs too) asks for remote code
    (``auto_map``): denseood builds only transformers' own classes and never sets ``trust_remote_code``."""
    todo = [config.to_dict() if hasattr(config, "to_dict") else config]
    while todo:
        d = todo.pop()
        if isinstance(d, dict):
            if d.get("auto_map"):
                raise CheckpointError(f"{where} asks for remote code (auto_map {list(d['auto_map'])[:3]}); denseood "
                                      f"never runs code that a model file names: use a built-in transformers model "
                                      f"type, or wrap your code as python:MODULE:FACTORY")
            todo.extend(v for v in d.values() if isinstance(v, (dict, list)))
        elif isinstance(d, list):
            todo.extend(v for v in d if isinstance(v, (dict, list)))


def weight_files(d: Path) -> list[Path]:
    """The weight files ``from_pretrained`` reads in ``d``: model.safetensors (or its shards), else
    pytorch_model.bin (or its shards). CheckpointError naming the folder when there is none."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (d / single).is_file():
            return [d / single]
        if (d / index).is_file():
            try:
                names = sorted(set(json.loads((d / index).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise CheckpointError(f"{d / index} is not a readable shard index ({e}); re-save the model with "
                                      f"save_pretrained") from e
            return [d / n for n in names]
    raise CheckpointError(f"{d} has no model.safetensors or pytorch_model.bin; save the model with save_pretrained")


def stored_numel(files: list[Path]) -> int:
    """Number of values in the tensors of ``files`` (safetensors headers only; .bin files read with
    ``safe_torch_load``, so a pickle holding Python objects is refused as unsafe). CheckpointError naming the
    file for a missing, truncated or corrupt one."""
    from ...io import safe_torch_load

    total = 0
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"weight file {f} is missing; re-save the model with save_pretrained")
        if f.suffix == ".safetensors":
            from safetensors import safe_open

            try:
                with safe_open(str(f), framework="pt") as h:
                    for k in h.keys():
                        total += math.prod(h.get_slice(k).get_shape())
            except Exception as e:  # noqa: BLE001 - SafetensorError and OSError
                raise CheckpointError(f"{f} is not a readable safetensors file (truncated or corrupt?): "
                                      f"{_first_line(e)}; re-save the model with save_pretrained") from e
            continue
        obj = safe_torch_load(f, path=f, what="weight file", kind="a safe transformers weight file")
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{f} is not a state dict (a dict of tensors); re-save the model with "
                                  f"save_pretrained")
        total += sum(v.numel() for v in obj.values())
    return total


def meta_numel(auto: Any, config: Any, where: str) -> int:
    """Parameters + buffers of the model ``config`` describes, built on the meta device (nothing allocated);
    CheckpointError naming ``where`` when transformers cannot build it."""
    try:
        with torch.device("meta"):
            net = auto.from_config(config, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - transformers raises many types for bad configs
        raise CheckpointError(f"cannot build a model from {where}: {_first_line(e)}; fix the config") from e
    return sum(t.numel() for t in net.state_dict().values())


def check_size(model_numel: int, file_numel: int, where: str, weights: str) -> None:
    """CheckpointError when the config describes far more values than the weights hold (a config that does not
    belong to its weights would otherwise allocate the difference, e.g. 40 GB for hidden_sizes=[100000]*4)."""
    if model_numel > 4 * file_numel + 10_000_000:
        raise CheckpointError(f"{where} describes a model of {model_numel:,} values but {weights} hold "
                              f"{file_numel:,}; the config does not belong to these weights (re-save the model "
                              f"with save_pretrained)")


def _read_config(tf: Any, d: Path) -> Any:
    """The folder's transformers config, refusing remote code; CheckpointError naming config.json."""
    try:
        config = tf.AutoConfig.from_pretrained(str(d), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, huggingface_hub's strict validation errors
        raise CheckpointError(f"cannot read the transformers config {d / 'config.json'}: {_first_line(e)}; fix "
                              f"the field or re-save the model with save_pretrained") from e
    refuse_remote_code(config, f"{d / 'config.json'}")
    return config


def _from_pretrained(tf: Any, auto: Any, d: Path, mtype: str, universal: bool) -> nn.Module:
    """``from_pretrained`` offline with transformers' own report silenced; CheckpointError naming mismatched or
    missing tensors (they would otherwise be re-initialised at random)."""
    from transformers.utils import logging as tf_logging

    level, bar = tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()
    tf_logging.set_verbosity_error()
    tf_logging.disable_progress_bar()   # transformers' "Loading weights" bar is not denseood's output
    try:
        net, info = auto.from_pretrained(str(d), local_files_only=True, trust_remote_code=False,
                                         ignore_mismatched_sizes=True, output_loading_info=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot load {d} as a transformers {'universal' if universal else 'semantic'} "
                              f"segmentation model (model_type {mtype!r}): {_first_line(e)}; semantic types are "
                              f"SegFormer, UperNet, DPT, BEiT, ...; universal: {', '.join(UNIVERSAL_TYPES)}") from e
    finally:
        tf_logging.set_verbosity(level)
        if bar:
            tf_logging.enable_progress_bar()
    bad = [f"{k}: file {tuple(a)} vs config {tuple(b)}" for k, a, b in sorted(info.get("mismatched_keys") or [])]
    missing = sorted(info.get("missing_keys") or [])
    if bad or missing:
        raise CheckpointError(f"{d}: the weights do not match config.json: {len(bad)} shape mismatches {bad[:3]}, "
                              f"{len(missing)} missing {missing[:3]}; re-save the model with save_pretrained")
    return net


def load_hf(path: str, *, map_location: Any = "cpu", num_classes: int | None = None,
            class_set: str | None = None) -> HFSegmenter:
    """Load ``hf:DIR`` (see the module docstring) in eval mode on ``map_location``. The config is checked (no
    remote code) and its model's size compared with the weight files' before anything is allocated."""
    tf = _transformers()
    d = resolve_dir(path)
    config = _read_config(tf, d)
    mtype = str(getattr(config, "model_type", ""))
    universal = mtype in UNIVERSAL_TYPES
    auto = tf.AutoModelForUniversalSegmentation if universal else tf.AutoModelForSemanticSegmentation
    files = weight_files(d)
    check_size(meta_numel(auto, config, f"{d / 'config.json'}"), stored_numel(files), f"{d / 'config.json'}",
               ", ".join(f.name for f in files))
    net = _from_pretrained(tf, auto, d, mtype, universal)
    check_finite(net.state_dict(), ", ".join(str(f) for f in files))
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    n = len(id2label) or int(getattr(config, "num_labels", 0))
    names = [id2label.get(i, f"class{i}") for i in range(n)] if id2label else None
    names, cset = match_classes(names, n, num_classes=num_classes, class_set=class_set, where=f"hf model {d}")
    mean, std = processor_mean_std(d)
    task = _oneformer_task_inputs(tf, d, config) if mtype == "oneformer" else None
    model = HFSegmenter(net, universal=universal, class_names=names, class_set=cset, mean=mean, std=std,
                        source=f"hf:{d}", task_inputs=task)
    return model.to(map_location).eval()


def rebuild_hf(record: dict[str, Any], *, class_names: tuple[str, ...], class_set: str | None,
               mean: tuple[float, ...], std: tuple[float, ...], source: str) -> HFSegmenter:
    """The (randomly initialised) model of a checkpoint record (see :meth:`HFSegmenter.checkpoint_record`), built
    from its config alone (``AutoModelFor...Segmentation.from_config``); the caller loads the weights strictly."""
    tf = _transformers()
    mtype = str(record.get("model_type", ""))
    if mtype not in tf.CONFIG_MAPPING:
        raise CheckpointError(f"model type {mtype!r} is unknown to transformers {tf.__version__}; upgrade "
                              f"transformers (`pip install -U denseood[hf]`)")
    stored = dict(record.get("config") or {})
    refuse_remote_code(stored, f"{source}: the stored transformers config")
    if stored.get("use_pretrained_backbone"):
        stored["use_pretrained_backbone"] = False   # the weights come from the checkpoint: nothing to fetch
    try:
        config = tf.CONFIG_MAPPING[mtype].from_dict(stored)
    except Exception as e:  # noqa: BLE001 - huggingface_hub's strict validation errors, TypeError, ValueError
        raise CheckpointError(f"{source}: the stored transformers config is invalid: {_first_line(e)}") from e
    universal = bool(record.get("universal", mtype in UNIVERSAL_TYPES))
    auto = tf.AutoModelForUniversalSegmentation if universal else tf.AutoModelForSemanticSegmentation
    try:
        net = auto.from_config(config, trust_remote_code=False)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"cannot build a transformers {mtype!r} model from the stored config of {source}: "
                              f"{_first_line(e)}") from e
    ti = record.get("task_inputs")
    task = torch.tensor([list(ti)], dtype=torch.long) if ti is not None else None
    model = HFSegmenter(net, universal=universal, class_names=class_names, class_set=class_set, mean=mean, std=std,
                        source=source, task_inputs=task)
    model.spec = str(record.get("spec") or source)
    return model


# ------------------------------------------------------------------------------------------ the registry's row
def _parse(spec: str, rest: str) -> tuple[str, ...]:
    if not rest:
        raise ConfigError(f"model spec {spec!r} lacks the folder: use hf:DIR")
    return (rest,)


def _load(parts: tuple[str, ...], *, map_location: Any, num_classes: int | None, class_set: str | None,
          **_: Any) -> HFSegmenter:
    return load_hf(parts[0], map_location=map_location, num_classes=num_classes, class_set=class_set)


def _rebuild(meta: dict[str, Any], *, class_set: str | None, source: str, **_: Any) -> HFSegmenter:
    return rebuild_hf(meta["external"], class_names=tuple(meta["class_names"]), class_set=class_set,
                      mean=tuple(meta.get("mean", IMAGENET_MEAN)), std=tuple(meta.get("std", IMAGENET_STD)),
                      source=source)


def _describe(spec: str, parts: tuple[str, ...], model: HFSegmenter) -> ModelOrigin:
    return origin_of("hf", spec, model, str(Path(parts[0]).expanduser()))


SOURCE = Source("hf", "hf:DIR (a transformers model folder written by save_pretrained, loaded offline)",
                _parse, _load, _rebuild, _describe)
