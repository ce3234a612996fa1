"""``denseood submit``: write a benchmark's submission and check it offline.

``add_parser``/``run`` here (stdlib and ``scores.names`` only at import time); the OoDIS writer is in ``oodis``
(:func:`~denseood.commands.submit.oodis.write_oodis`), its check in ``verify``
(:func:`~denseood.commands.submit.verify.verify_oodis`), the objects per frame in ``objects``, the SMIYC tree in
``smiyc``. See docs/architecture.md and docs/metrics.md (OoDIS submission).
"""
from __future__ import annotations

import argparse
import math
import sys

from ...scores.names import DEFAULT_SCORE, score_help
from .names import OBJECTS, TRACKS
from .._common import (_checked, add_code_options, add_device, add_dtype, add_out, add_verb, nonnegative_int,
                       positive_float, positive_int)

finite_float = _checked("a finite number", float, math.isfinite)

DESCRIPTION = """\
Write a benchmark submission, and check it offline, with one verb:

  denseood submit oodis --laf ROOT --smiyc ROOT --checkpoint SPEC --out DIR
      writes DIR/oodis.zip for OoDIS: fishyscapes/ (every LostAndFound train and test frame, 2239), roadanomaly/
      (AnomalyTrack test, 100), roadobstacle/ (every ObstacleTrack frame outside validation, 412) and
      description.txt. Each frame gets one txt listing its instance masks (PNG at the frame's full resolution)
      with confidences. Every frame holds at least one instance: where nothing was found a 1-pixel dummy mask
      (top-left pixel) is written at the lowest confidence, since an empty file fails the verifier and the
      scorer. Killed runs resume: run the same command again (finished frames are kept; the zip is written at the
      end, after the check below passes).
  denseood submit smiyc --track anomaly|obstacle --root ROOT --checkpoint SPEC --out DIR
      writes the SegmentMeIfYouCan tree DIR/submission/anomaly_p/<method>/<dataset>/<frame id>.hdf5 of the
      track's test frames (the tree eval writes for unlabelled splits).
  denseood submit --verify FILE [--laf ROOT --smiyc ROOT]
      checks an OoDIS zip (or its folder) with the official verifier's rules, plus full resolution (sizes from
      the frames when --laf and --smiyc are given) and the one-instance rule; one line per problem."""


def _oodis_parser(sub) -> None:
    p = sub.add_parser("oodis", help="write DIR/oodis.zip (OoDIS instance segmentation)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Write and check an OoDIS submission (see 'denseood submit --help').")
    p.add_argument("--laf", required=True, help="LostAndFound root (leftImg8bit/{train,test}, gtCoarse/{train,test})")
    p.add_argument("--smiyc", required=True, help="SMIYC root (dataset_AnomalyTrack/, dataset_ObstacleTrack/)")
    p.add_argument("--checkpoint", required=True, help="the model: denseood checkpoint .pt | hf:DIR | "
                                                       "torchvision:NAME:FILE | python:MODULE:FACTORY")
    add_code_options(p)
    add_out(p, "oodis.zip, and oodis/ (the unzipped submission)")
    p.add_argument("--objects", default="s2m", choices=OBJECTS,
                   help="s2m: S2M objects with their confidences in [0, 1]; components: connected components of the "
                        "anomaly map above --threshold (a baseline), each scored by its mean anomaly score; queries: "
                        "a mask transformer's own query masks (hf: universal models), confidences in [0, 1]")
    p.add_argument("--threshold", type=finite_float, default=None,
                   help="--objects components: the anomaly-map value above which a pixel is part of an object")
    p.add_argument("--min-size", type=positive_int, default=10,
                   help="--objects components: drop components smaller than this (pixels)")
    p.add_argument("--score", default=DEFAULT_SCORE, help=score_help("anomaly score the objects are taken from"))
    p.add_argument("--prompter", default="auto", help="--objects s2m: learned | peak | auto | points[:N[:Q]] | a prompter file")
    p.add_argument("--prompt-model", default="grabcut", help="--objects s2m: grabcut | sam:TYPE:PATH")
    p.add_argument("--name", default="denseood", help="description.txt name:")
    p.add_argument("--paper-link", default="", help="description.txt paper_link:")
    p.add_argument("--code-link", default="", help="description.txt code_link:")
    p.add_argument("--expected-files", default=None, metavar="FILE",
                   help="the benchmark's frame list (default: the shipped copy of its assets/expected_files.txt)")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=2, help="frames per segmenter forward pass")
    p.add_argument("--input-size", default="model",
                   help="HxW the segmenter sees; 'model' = its training size, 'full' keeps the frame size (maps and "
                        "masks are always written at the frame's full resolution)")
    p.add_argument("--work-size", type=nonnegative_int, default=2048,
                   help="--objects s2m: longest side at which prompts and masks are computed (0 = full resolution)")
    p.add_argument("--max-pixels", type=positive_float, default=100_000_000,
                   help="refuse frames with more pixels than this, before any work")


def _smiyc_parser(sub) -> None:
    p = sub.add_parser("smiyc", help="write the SMIYC hdf5 submission tree of one track",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Write the SegmentMeIfYouCan submission of one track's test frames.")
    p.add_argument("--track", required=True, choices=tuple(TRACKS), help="AnomalyTrack or ObstacleTrack")
    p.add_argument("--root", required=True, help="SMIYC root (dataset_AnomalyTrack/, dataset_ObstacleTrack/)")
    p.add_argument("--checkpoint", required=True, help="the model (any load_model spec)")
    add_code_options(p)
    add_out(p, "submission/anomaly_p/<method>/<dataset>/<frame id>.hdf5, results.json")
    p.add_argument("--score", default=DEFAULT_SCORE, help=score_help("comma-separated anomaly scores (one <method> folder each)"))
    p.add_argument("--method", default=None, help="the <method> folder (default: the score name)")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per inference batch")
    p.add_argument("--input-size", default="model",
                   help="HxW the model sees; 'model' = its training size, 'full' keeps the image size")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "submit", help="write a benchmark submission (OoDIS, SMIYC) and check it offline",
                 description=DESCRIPTION)
    p.add_argument("--verify", default=None, metavar="FILE", help="check an OoDIS submission zip or folder offline")
    p.add_argument("--laf", dest="verify_laf", default=None, metavar="ROOT", help="with --verify: LostAndFound root (frame sizes)")
    p.add_argument("--smiyc", dest="verify_smiyc", default=None, metavar="ROOT", help="with --verify: SMIYC root (frame sizes)")
    p.add_argument("--expected-files", dest="verify_expected", default=None, metavar="FILE",
                   help="with --verify: the benchmark's frame list (default: the shipped copy)")
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    _oodis_parser(sub)
    _smiyc_parser(sub)
    return p


def _verify(args: argparse.Namespace) -> int:
    from denseood.data.oodis import find_frames, read_expected_files
    from denseood.errors import ConfigError

    from .oodis import frame_sizes
    from .verify import verify_oodis

    if (args.verify_laf is None) != (args.verify_smiyc is None):
        raise ConfigError("--verify: give both --laf and --smiyc (for the frame sizes) or neither")
    expected = read_expected_files(args.verify_expected)
    sizes = None
    if args.verify_laf is not None:
        sizes = frame_sizes(find_frames(args.verify_laf, args.verify_smiyc, expected), float("inf"))
    verdict = verify_oodis(args.verify, expected, sizes)
    for line in verdict.problems:
        print(line)
    if verdict.ok:
        checked = "" if sizes is not None else " (mask sizes not checked against the frames: give --laf and --smiyc)"
        print(f"{args.verify}: valid OoDIS submission, {verdict.frames} frames, {verdict.instances} instances{checked}")
        return 0
    print(f"{args.verify}: {len(verdict.problems)} problem(s); not a valid OoDIS submission", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    from denseood.errors import ConfigError

    if args.verify is not None:
        if args.benchmark is not None:
            raise ConfigError("--verify checks an existing submission; do not combine it with a benchmark to write")
        return _verify(args)
    if args.benchmark is None:
        raise ConfigError("name a benchmark (denseood submit oodis ... | denseood submit smiyc ...) or give "
                          "--verify FILE")
    if args.benchmark == "smiyc":
        from .smiyc import write_smiyc

        return write_smiyc(args)
    from pathlib import Path

    from .._common import parse_input_size
    from .oodis import OoDISOptions, write_oodis

    opts = OoDISOptions(
        laf=Path(args.laf), smiyc=Path(args.smiyc), checkpoint=args.checkpoint, out=Path(args.out),
        objects=args.objects, score=args.score, threshold=args.threshold, min_size=args.min_size,
        prompter=args.prompter, prompt_model=args.prompt_model, name=args.name, paper_link=args.paper_link,
        code_link=args.code_link, expected_files=args.expected_files, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, input_size=parse_input_size(args.input_size), work_size=args.work_size,
        max_pixels=args.max_pixels, weights=args.weights, trust_code=args.trust_code,
        overwrite=args.overwrite).check()
    res = write_oodis(opts)
    resumed = f", {res['resumed']} kept from the killed run" if res["resumed"] else ""
    print(f"wrote {res['zip']}: {res['frames']} frames{resumed}, {res['instances']} instances "
          f"({res['dummies']} frame(s) with only the 1-pixel dummy); checked: valid OoDIS submission")
    return 0
