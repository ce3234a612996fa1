"""The options of ``denseood eval``: one :class:`EvalOptions`, validated once, in its constructor.

Built from argparse (:meth:`EvalOptions.from_args`) or from Python keywords (``evaluate_checkpoint(**kw)``,
``evaluate_maps(**kw)``, ``evaluate(dataset, model, **kw)``). After the constructor every value is in its final
form: the score names parsed (:func:`denseood.scores.parse_scores`), the protocol name checked (resolved per
dataset by :meth:`EvalOptions.protocol_for`), ``device`` / ``dtype`` as ``torch.device`` / ``torch.dtype``,
``input_size`` / ``sliding_window`` as (h, w) tuples, ``out`` checked (:func:`denseood.outdir.check_out_dir`).
Nothing below re-validates them. See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from denseood import dist
from denseood.config import parse_hw
from denseood.data.names import STREETHAZARDS_UNLABELED
from denseood.errors import ConfigError
from denseood.eval.protocols import PROTOCOLS
from denseood.infer.util import MAX_PIXELS, check_network_sizes, resolve_dtype
from denseood.outdir import check_out_dir
from denseood.scores import parse_scores

from denseood.scores.names import DEFAULT_SCORE

from .._common import check_objects, parse_input_size
from .writers import check_method, check_save_format

#: options that only apply to a checkpoint, with their unset values (refused with --maps when set)
CHECKPOINT_ONLY = {"scores": None, "input_size": "model", "sliding_window": None, "flip": False, "compile": False,
                   "s2m": False, "weights": None, "trust_code": False}
_FLAGS = {"scores": "--score"}  # option name of a field where it is not --<field>


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


@dataclass
class EvalOptions:
    """Every setting of one evaluation (the options of ``denseood eval --help``, by field name).

    Source: ``checkpoint`` (any ``load_model`` spec; ``weights`` / ``trust_code`` as there) or ``maps`` (a folder of
    precomputed maps, read with ``maps_scale`` / ``maps_offset`` / ``maps_higher_is_anomalous``, scored as one score
    named ``maps_name``, default the folder's name); with a ``dataset`` name exactly one of them is required.
    scores: "msp,jsd" or a sequence -> the list of validated names (default :data:`DEFAULT_SCORE`; with ``maps``:
    the one map score). protocol: None = each dataset's own (:meth:`protocol_for`). input_size: "model" (the
    checkpoint's training size, the default), None or "full" (the image's own size, no resize), "HxW" / (h, w)
    -> "model" | None | (h, w); sliding_window: "HxW" / (h, w) window on the full image (then input_size is None).
    min_segment_size / min_instance_size / streethazards_unlabeled: reader options (None = the benchmark's).
    bootstrap / threshold_from: ci95 from B frame resamples (0: none) and at_threshold of a threshold.json (checked
    by :class:`~.intervals.PixelExtras`; issue 23).
    device / dtype: "auto" | "cpu" | "cuda[:N]" and "auto" | "fp32" | "bf16" | "fp16" -> torch objects.
    out: the results folder (a file, or a non-empty folder without ``overwrite``, is refused here).
    """

    out: Path
    dataset: str | None = None
    root: Path | None = None
    split: str | None = None
    checkpoint: str | os.PathLike | None = None
    weights: str | os.PathLike | None = None
    trust_code: bool = False
    scores: Any = None
    maps: Path | None = None
    maps_scale: float | None = None
    maps_offset: float = 0.0
    maps_higher_is_anomalous: bool = True
    maps_name: str | None = None
    overwrite: bool = False
    protocol: str | None = None
    batch_size: int = 4
    workers: int = 2
    limit: int | None = None
    components: bool = True
    input_size: Any = "model"
    sliding_window: Any = None
    overlap: float = 1 / 3
    flip: bool = False
    compile: bool = False
    max_pixels: float | None = MAX_PIXELS
    min_segment_size: int | None = None
    min_instance_size: int | None = None
    streethazards_unlabeled: str | None = None
    save_maps: bool = False
    save_maps_format: str = "npy"
    method: str | None = None
    s2m: bool = False
    prompter: str = "auto"
    prompt_model: str = "grabcut"
    objects: str = "s2m"
    device: Any = "auto"
    dtype: Any = "auto"
    echo: bool = False
    progress: bool = True
    command: str | None = None
    bootstrap: int = 1000
    threshold_from: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        self._check_source()
        self.scores = self._score_names()  # before touching data or --out
        self.out = check_out_dir(self.out, self.overwrite)
        check_method(self.method)
        if self.save_maps:
            check_save_format(self.save_maps_format, self.scores)
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ConfigError(f"unknown protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        self._parse_sizes()
        if self.streethazards_unlabeled not in (None, *STREETHAZARDS_UNLABELED):
            raise ConfigError(f"streethazards_unlabeled {self.streethazards_unlabeled!r}: use one of "
                              f"{', '.join(STREETHAZARDS_UNLABELED)}")
        if self.streethazards_unlabeled is not None and self.dataset not in (None, "streethazards"):
            raise ConfigError(f"--streethazards-unlabeled applies to --dataset streethazards, not {self.dataset!r}")
        self._check_numbers()
        check_objects(self.objects, self.s2m)
        self.device = dist.resolve_device(self.device)
        self.dtype = resolve_dtype(self.dtype, self.device)

    def _check_source(self) -> None:
        if self.dataset is not None and (self.checkpoint is None) == (self.maps is None):
            raise ConfigError("give exactly one of --checkpoint FILE (score a segmenter) or --maps DIR (score "
                              "precomputed anomaly maps)" + ("; both were given" if self.maps is not None else ""))
        if self.checkpoint is not None and self.maps is not None:
            raise ConfigError("give only one of --checkpoint and --maps; both were given")
        if self.maps is not None:
            given = [_flag(k) for k, unset in CHECKPOINT_ONLY.items() if getattr(self, k) != unset]
            if given:
                raise ConfigError(f"{', '.join(given)} apply to --checkpoint, not to --maps (the maps are one score, "
                                  f"named after the folder); drop them")
            self.maps = Path(self.maps).expanduser()
        elif self.maps_scale is not None or self.maps_offset != 0.0 or not self.maps_higher_is_anomalous:
            raise ConfigError("--maps-scale / --maps-offset / --maps-higher-is-anomalous apply to --maps only")

    def _score_names(self) -> list[str]:
        if self.maps is not None:
            return [self.maps_name or self.maps.resolve().name or "maps"]
        return parse_scores(self.scores if self.scores is not None else DEFAULT_SCORE)

    def _check_numbers(self) -> None:
        for name, low in (("batch_size", 1), ("workers", 0), ("limit", 1)):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or int(v) != v or v < low):
                raise ConfigError(f"{_flag(name)} must be an integer >= {low}, got {v!r}")
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ConfigError(f"--overlap {self.overlap} must be a fraction in [0, 1)")

    def _parse_sizes(self) -> None:
        explicit = self.input_size != "model"
        self.input_size = parse_input_size(self.input_size)
        self.sliding_window = parse_hw(self.sliding_window, "--sliding-window")
        if self.sliding_window is not None:
            if explicit:
                raise ConfigError("--sliding-window runs on the full-resolution image; do not combine it with "
                                  "--input-size")
            self.input_size = None
        check_network_sizes(self.max_pixels, self.input_size, self.sliding_window)  # before any data or model

    # ---------------------------------------------------------------------------------------- derived values
    def protocol_for(self, dataset: Any) -> str:
        """The pixel protocol on ``dataset``: ``protocol``, else the dataset's ``default_protocol``, else streaming."""
        if self.protocol is not None:
            return self.protocol
        own = getattr(dataset, "default_protocol", None)
        return own if own in PROTOCOLS else "streaming"

    def reader_options(self) -> dict[str, Any]:
        """Keywords of ``open_dataset`` set by these options (component sizes, the StreetHazards convention)."""
        pairs = (("min_segment_size", self.min_segment_size), ("min_instance_size", self.min_instance_size),
                 ("unlabeled", self.streethazards_unlabeled))
        return {k: v for k, v in pairs if v is not None}

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "EvalOptions":
        """The options of a parsed ``denseood eval`` command line (the command line checks no value itself)."""
        same = ("out", "dataset", "root", "split", "checkpoint", "weights", "trust_code", "maps", "maps_scale",
                "maps_offset", "overwrite", "protocol", "batch_size", "workers", "limit", "input_size",
                "sliding_window", "overlap", "flip", "compile", "max_pixels", "min_segment_size",
                "min_instance_size", "streethazards_unlabeled", "save_maps", "save_maps_format", "method", "s2m",
                "prompter", "prompt_model", "objects", "device", "dtype", "bootstrap", "threshold_from")
        return cls(**{k: getattr(args, k) for k in same}, scores=args.score, components=not args.no_components,
                   maps_higher_is_anomalous=args.maps_higher_is_anomalous == "true", echo=True)

    @classmethod
    def build(cls, options: "EvalOptions | None", keywords: dict[str, Any]) -> "EvalOptions":
        """``options`` as given, or new options from ``keywords`` (not both)."""
        if options is None:
            return cls(**keywords)
        if keywords:
            raise ConfigError(f"pass either an EvalOptions or keyword options, not both (got {', '.join(keywords)})")
        return options

