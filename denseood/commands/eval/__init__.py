"""``denseood eval``: anomaly scores (and S2M objects) of a model (any ``load_model`` spec) or of precomputed maps
on a benchmark split -> results.json/.md.

``add_parser``/``run`` here (stdlib and ``scores.names`` only at import time); the orchestration is in ``runner``
(:func:`~denseood.commands.eval.runner.evaluate`, :func:`~denseood.commands.eval.runner.evaluate_checkpoint`),
the results table in ``report``, the S2M rows in ``s2m`` (:class:`~denseood.commands.eval.s2m.S2MEval`).
See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import math
import sys

from ...scores.names import DEFAULT_SCORE, score_help
from .._common import (_checked, add_code_options, add_config, add_device, add_dtype, add_out, add_verb, fraction, nonnegative_int,
                       positive_float, positive_int)

finite_float = _checked("a finite number", float, math.isfinite)
MAP_FORMATS = ("npy", "npz", "h5", "png16")  # = denseood.data.maps.SAVE_FORMATS (checked by a test)
#: options that only apply to a checkpoint (refused with --maps when given)
CHECKPOINT_ONLY = ("score", "input_size", "sliding_window", "flip", "compile", "s2m", "weights", "trust_code")

DATASETS = ("cityscapes", "smiyc-anomaly", "smiyc-obstacle", "smiyc-laf", "fs-laf", "fs-static", "streethazards",
            "synthetic", "folder", "lostandfound")  # lostandfound = smiyc-laf (data.registry.ALIASES)
PROTOCOLS = ("streaming", "exact", "smiyc", "caos")  # = runner.PROTOCOLS (checked by a test)

DESCRIPTION = """\
Evaluate anomaly scores of a segmenter checkpoint (--checkpoint), or precomputed anomaly maps (--maps DIR: one
file <frame id>.npy|.npz|.h5|.hdf5|.png|.tif per frame, scored as one score named after the folder), on a
benchmark split.

Writes results.json (every number, the settings, the command), results.md (one row per score: AP, FPR95,
AUROC, sIoU, PPV, mean F1) and PR/ROC curve plots into --out. Pixel metrics follow --protocol: streaming
(histogram, any dataset size), exact (sort-based, = sklearn / Fishyscapes), smiyc (the SegmentMeIfYouCan
evaluator), caos (StreetHazards, per-image average); without --protocol each benchmark uses its own.
A split without anomaly labels (e.g. SMIYC test) yields the official SMIYC submission instead:
submission/anomaly_p/<method>/<dataset>/<frame id>.hdf5 (float16, dataset 'value').
Run under torchrun for a multi-GPU evaluation (each rank scores its share; the metrics are reduced)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "eval", help="evaluate anomaly scores (and S2M) on a benchmark", description=DESCRIPTION)
    p.add_argument("--dataset", required=True, help=f"benchmark reader: {' | '.join(DATASETS)}")
    p.add_argument("--root", required=True, help="dataset root in its official layout")
    p.add_argument("--split", default=None, help="split name (default: the benchmark's validation split)")
    p.add_argument("--checkpoint", default=None,
                   help="the model: denseood checkpoint .pt | hf:DIR | torchvision:NAME:FILE | python:MODULE:FACTORY (exactly one of --checkpoint / --maps)")
    add_code_options(p)
    p.add_argument("--maps", default=None,
                   help="folder of precomputed anomaly maps, one <frame id>.{npy,npz,h5,hdf5,png,tif} per frame, "
                        "scored instead of a checkpoint (the score is named after the folder)")
    p.add_argument("--maps-scale", type=positive_float, default=None,
                   help="PNG/TIFF maps: value = pixel / S + --maps-offset (required for image maps)")
    p.add_argument("--maps-offset", type=finite_float, default=0.0, help="PNG/TIFF maps: offset added after the scale")
    p.add_argument("--maps-higher-is-anomalous", default="true", choices=("true", "false"),
                   help="false: lower map values mean more anomalous (the sign is flipped)")
    p.add_argument("--score", default=None,
                   help=score_help("comma-separated score names, not with --maps", default=True))
    add_out(p, "results.json, results.md, curves")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per inference batch (per rank)")
    p.add_argument("--workers", type=nonnegative_int, default=2, help="data-loader worker processes (0: load in this process)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N frames")
    p.add_argument("--protocol", default=None, choices=PROTOCOLS,
                   help="pixel-metric protocol (default: the benchmark's own, else streaming)")
    p.add_argument("--exact", action="store_true",
                   help="deprecated alias of --protocol exact (prints a warning; removed in the next release)")
    p.add_argument("--no-components", action="store_true", help="skip component metrics (sIoU, PPV, mean F1)")
    p.add_argument("--input-size", default=None,
                   help="HxW the model sees (default: the checkpoint's training size); 'full' keeps the image size")
    p.add_argument("--sliding-window", default=None, help="HxW window for full-resolution sliding-window inference")
    p.add_argument("--overlap", type=fraction, default=1 / 3, help="sliding-window overlap fraction in [0, 1)")
    p.add_argument("--flip", action="store_true", help="test-time horizontal flip: the network outputs (logits, or a mask transformer's class "
                        "scores s_k, and features) of the image and its mirror are averaged, then scored once "
                        "(Mask2Anomaly averages the two score maps instead: equal only for scores linear in them)")
    p.add_argument("--compile", action="store_true", help="torch.compile the segmenter")
    p.add_argument("--max-pixels", type=positive_float, default=1e8,
                   help="refuse frames with more pixels than this, before any work (read from the file headers)")
    p.add_argument("--min-segment-size", type=nonnegative_int, default=None,
                   help="component metrics: drop predicted components smaller than this (default: the benchmark's)")
    p.add_argument("--min-instance-size", type=nonnegative_int, default=None,
                   help="component metrics: ground-truth components smaller than this become void (default: the benchmark's)")
    p.add_argument("--streethazards-unlabeled", default=None, choices=("inlier", "void"),
                   help="StreetHazards OOD mask: 'unlabeled' pixels count as inlier (official CAOS code; the reader's "
                        "default) or as void (excluded); recorded as results.json dataset_convention")
    p.add_argument("--save-maps", action="store_true",
                   help="write per-image heat-map overlays (maps/) and the score maps (score_maps/<score>/, read "
                        "back by --maps)")
    p.add_argument("--save-maps-format", default="npy", choices=MAP_FORMATS,
                   help="score-map files of --save-maps: npy/npz float32, h5 float16 (SMIYC layout), png16 "
                        "(bounded scores; scale in maps_format.json)")
    p.add_argument("--method", default=None,
                   help="SMIYC submission <method> folder (default: the score name; <method>_<score> with several scores)")
    p.add_argument("--s2m", action="store_true", help="also evaluate S2M object masks")
    p.add_argument("--prompter", default="auto", help="learned | peak | auto (learned when the denseood checkpoint holds one, else peak) | a prompter file")
    p.add_argument("--prompt-model", default="grabcut", help="grabcut | sam:TYPE:PATH")
    p.add_argument("--objects", choices=("s2m", "queries"), default="s2m",  # issue 21
                   help="--s2m objects: s2m (prompter + mask model) | queries (a mask transformer's own query masks)")
    p.add_argument("--bootstrap", type=nonnegative_int, default=1000, metavar="B",  # issue 23
                   help="95 %% intervals (ci95) from B frame resamples (fixed seed); 0 turns them off")
    p.add_argument("--threshold-from", default=None, metavar="FILE",  # issue 23
                   help="threshold.json of denseood calibrate: adds at_threshold (fpr, tpr, precision, f1) to its score")
    add_config(p)
    return p


def _check_source(args: argparse.Namespace) -> None:
    from denseood.errors import ConfigError

    if (args.checkpoint is None) == (args.maps is None):
        raise ConfigError("give exactly one of --checkpoint FILE (score a segmenter) or --maps DIR (score "
                          "precomputed anomaly maps)" + ("; both were given" if args.maps is not None else ""))
    if args.maps is not None:
        given = [f"--{k.replace('_', '-')}" for k in CHECKPOINT_ONLY if getattr(args, k) not in (None, False)]
        if given:
            raise ConfigError(f"{', '.join(given)} apply to --checkpoint, not to --maps (the maps are one score, "
                              f"named after the folder); drop them")
    elif args.maps_scale is not None or args.maps_offset != 0.0 or args.maps_higher_is_anomalous != "true":
        raise ConfigError("--maps-scale / --maps-offset / --maps-higher-is-anomalous apply to --maps only")


def run(args: argparse.Namespace) -> int:
    from .runner import evaluate_checkpoint, resolve_protocol

    _check_source(args)
    protocol = args.protocol
    if args.exact:
        print("denseood eval: warning: --exact is deprecated; use --protocol exact", file=sys.stderr)
        protocol = resolve_protocol(args.protocol, exact=True)
    common = dict(out=args.out, overwrite=args.overwrite, protocol=protocol, batch_size=args.batch_size,
                  workers=args.workers, limit=args.limit, components=not args.no_components,
                  min_segment_size=args.min_segment_size, min_instance_size=args.min_instance_size,
                  save_maps=args.save_maps, save_maps_format=args.save_maps_format, method=args.method,
                  streethazards_unlabeled=args.streethazards_unlabeled, echo=True,
                  bootstrap=args.bootstrap, threshold_from=args.threshold_from)  # issue 23
    if args.maps is not None:
        from .maps import evaluate_maps

        evaluate_maps((args.dataset, args.root, args.split), args.maps, scale=args.maps_scale,
                      offset=args.maps_offset, higher_is_anomalous=args.maps_higher_is_anomalous == "true", **common)
        return 0
    evaluate_checkpoint(
        dataset=args.dataset, root=args.root, split=args.split, checkpoint=args.checkpoint,
        weights=args.weights, trust_code=args.trust_code,
        scores=args.score or DEFAULT_SCORE, dtype=args.dtype, device=args.device, input_size=args.input_size,
        sliding_window=args.sliding_window, overlap=args.overlap, flip=args.flip, compile=args.compile,
        max_pixels=args.max_pixels, s2m=args.s2m, prompter=args.prompter, prompt_model=args.prompt_model,
        objects=args.objects, **common)  # issue 21
    return 0
