"""``denseood eval``: anomaly scores (and S2M objects) of a model (any ``load_model`` spec) or of precomputed maps
on a benchmark split -> results.json/.md.

``add_parser``/``run`` here (stdlib and ``scores.names`` only at import time); every value is checked once, by
:class:`~denseood.commands.eval.options.EvalOptions`; the orchestration is in ``runner``
(:func:`~denseood.commands.eval.runner.evaluate`, :func:`~denseood.commands.eval.runner.evaluate_checkpoint`),
the two passes in ``passes``, the per-frame files in ``writers``, ``--maps`` in ``maps``, the results table in
``report``, the S2M rows in ``s2m`` (:class:`~denseood.commands.eval.s2m.S2MEval`).
See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import math

from ...data.names import SAVE_FORMATS, STREETHAZARDS_UNLABELED
from ...eval.protocols import PROTOCOLS
from ...scores.names import score_help
from .._common import (_checked, add_code_options, add_objects, add_config, add_device, add_dtype, add_out, add_verb, fraction,
                       nonnegative_int, positive_float, positive_int)

finite_float = _checked("a finite number", float, math.isfinite)

DATASETS = ("cityscapes", "smiyc-anomaly", "smiyc-obstacle", "smiyc-laf", "fs-laf", "fs-static", "streethazards",
            "synthetic", "folder", "lostandfound")  # lostandfound = smiyc-laf (data.registry.ALIASES)

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


def _add_map_options(p: argparse.ArgumentParser) -> None:
    """--maps DIR and how its files are read."""
    p.add_argument("--maps", default=None,
                   help="folder of precomputed anomaly maps, one <frame id>.{npy,npz,h5,hdf5,png,tif} per frame, "
                        "scored instead of a checkpoint (the score is named after the folder)")
    p.add_argument("--maps-scale", type=positive_float, default=None,
                   help="PNG/TIFF maps: value = pixel / S + --maps-offset (required for image maps)")
    p.add_argument("--maps-offset", type=finite_float, default=0.0, help="PNG/TIFF maps: offset added after the scale")
    p.add_argument("--maps-higher-is-anomalous", default="true", choices=("true", "false"),
                   help="false: lower map values mean more anomalous (the sign is flipped)")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "eval", help="evaluate anomaly scores (and S2M) on a benchmark", description=DESCRIPTION)
    p.add_argument("--dataset", required=True, help=f"benchmark reader: {' | '.join(DATASETS)}")
    p.add_argument("--root", required=True, help="dataset root in its official layout")
    p.add_argument("--split", default=None, help="split name (default: the benchmark's validation split)")
    p.add_argument("--checkpoint", default=None,
                   help="the model: denseood checkpoint .pt | hf:DIR | torchvision:NAME:FILE | python:MODULE:FACTORY (exactly one of --checkpoint / --maps)")
    add_code_options(p)
    _add_map_options(p)
    p.add_argument("--score", default=None,
                   help=score_help("comma-separated score names, not with --maps", default=True))
    add_out(p, "results.json, results.md, curves")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per inference batch (per rank)")
    p.add_argument("--workers", type=nonnegative_int, default=2, help="data-loader worker processes (0: load in this process)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N frames")
    p.add_argument("--protocol", default=None, choices=tuple(PROTOCOLS),
                   help="pixel-metric protocol (default: the benchmark's own, else streaming)")
    p.add_argument("--no-components", action="store_true", help="skip component metrics (sIoU, PPV, mean F1)")
    p.add_argument("--input-size", default="model",
                   help="HxW the model sees; 'model' = the checkpoint's training size, 'full' keeps the image size")
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
    p.add_argument("--streethazards-unlabeled", default=None, choices=STREETHAZARDS_UNLABELED,
                   help="StreetHazards OOD mask: 'unlabeled' pixels count as inlier (official CAOS code; the reader's "
                        "default) or as void (excluded); recorded as results.json dataset_convention")
    p.add_argument("--save-maps", action="store_true",
                   help="write per-image heat-map overlays (maps/) and the score maps (score_maps/<score>/, read "
                        "back by --maps)")
    p.add_argument("--save-maps-format", default="npy", choices=tuple(SAVE_FORMATS),
                   help="score-map files of --save-maps: npy/npz float32, h5 float16 (SMIYC layout), png16 "
                        "(bounded scores; scale in maps_format.json)")
    p.add_argument("--method", default=None,
                   help="SMIYC submission <method> folder (default: the score name; <method>_<score> with several scores)")
    p.add_argument("--s2m", action="store_true", help="also evaluate S2M object masks")
    p.add_argument("--prompter", default="auto", help="learned | peak | auto (learned when the denseood checkpoint "
                   "holds one, else peak) | points[:N[:Q]] (UGainS-style point prompts) | a prompter file")
    p.add_argument("--prompt-model", default="grabcut", help="grabcut | sam:TYPE:PATH")
    add_objects(p)
    p.add_argument("--bootstrap", type=nonnegative_int, default=1000, metavar="B",  # issue 23
                   help="95 %% intervals (ci95) from B frame resamples (fixed seed); 0 turns them off")
    p.add_argument("--threshold-from", default=None, metavar="FILE",  # issue 23
                   help="threshold.json of denseood calibrate: adds at_threshold (fpr, tpr, precision, f1) to its score")
    add_config(p)
    return p


def run(args: argparse.Namespace) -> int:
    from .options import EvalOptions

    opts = EvalOptions.from_args(args)  # every value checked here, once
    if opts.maps is not None:
        from .maps import evaluate_maps

        evaluate_maps(options=opts)
    else:
        from .runner import evaluate_checkpoint

        evaluate_checkpoint(opts)
    return 0
