"""``denseood calibrate``: a deployment threshold chosen on inlier-only data, written to ``--out``/threshold.json.

The threshold is the (1 - ``--target-fpr``) quantile of the inlier pixel scores of one ``--score``: a pixel is
anomalous where ``score > threshold``, so at most the target fraction of the calibration inliers is flagged.
``--images FOLDER`` counts every pixel of its images as inlier; ``--dataset NAME --root ROOT --split SPLIT`` uses
the split's labels: its anomaly labels (void excluded; a split with anomaly pixels, label 1, is refused) or, for a
split without anomaly labels (e.g. Cityscapes train), its semantic labels (ignore pixels excluded). Exact for up
to 2e7 inlier pixels, else from a 2**20-bin histogram (``threshold_error`` in the file). ``denseood eval
--threshold-from`` and ``denseood segment --threshold-from`` read the file. Single process (no torchrun).

The library function is :func:`calibrate`; the top level imports only the standard library, ``._common`` and
``scores.names``.
See docs/metrics.md (deployment threshold) and docs/architecture.md.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..scores.names import DEFAULT_SCORE, score_help
from ._common import (_checked, add_code_options, add_config, add_device, add_dtype, add_out, add_verb,
                      nonnegative_int, positive_float, positive_int)

open_fraction = _checked("a number in (0, 1)", float, lambda v: 0 < v < 1)
DESCRIPTION = __doc__.split("\n\nThe library function")[0]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "calibrate", help="choose a deployment threshold on inlier-only data",
                 description=DESCRIPTION)
    p.add_argument("--checkpoint", required=True,
                   help="the model: denseood checkpoint .pt | hf:DIR | torchvision:NAME:FILE | python:MODULE:FACTORY")
    add_code_options(p)
    p.add_argument("--score", default=DEFAULT_SCORE, help=score_help("the one anomaly score to calibrate", default=True))
    p.add_argument("--images", default=None, help="folder of inlier images (every pixel counts as inlier)")
    p.add_argument("--dataset", default=None, help="benchmark reader of an inlier-only split (with --root, --split)")
    p.add_argument("--root", default=None, help="dataset root (with --dataset)")
    p.add_argument("--split", default=None, help="split name (with --dataset; default: the benchmark's own)")
    p.add_argument("--target-fpr", type=open_fraction, default=0.01,
                   help="fraction of inlier pixels allowed above the threshold")
    add_out(p, "threshold.json")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per inference batch")
    p.add_argument("--workers", type=nonnegative_int, default=2, help="data-loader worker processes")
    p.add_argument("--input-size", default=None,
                   help="HxW the model sees (default: the checkpoint's training size); 'full' keeps the image size; "
                        "use the same as for eval / segment")
    p.add_argument("--max-pixels", type=positive_float, default=1e8, help="refuse frames with more pixels than this")
    add_config(p)
    return p


def run(args: argparse.Namespace) -> int:
    doc = calibrate(args.checkpoint, args.score, args.out, images=args.images, dataset=args.dataset,
                    root=args.root, split=args.split, target_fpr=args.target_fpr, device=args.device,
                    dtype=args.dtype, batch_size=args.batch_size, workers=args.workers, input_size=args.input_size,
                    max_pixels=args.max_pixels, overwrite=args.overwrite, weights=args.weights,
                    trust_code=args.trust_code)
    print(f"threshold {doc['threshold']:.6g} for {doc['score']} at target FPR {doc['target_fpr']:g} "
          f"(calibration FPR {doc['calibration_fpr']:.4g}, {doc['n_pixels']} inlier pixels of {doc['n_frames']} "
          f"frames, {doc['source']['chosen_on']}) -> {Path(args.out) / 'threshold.json'}")
    return 0


def _source(images: Any, dataset: str | None, root: Any, split: str | None) -> dict[str, Any]:
    from ..errors import ConfigError

    if (images is None) == (dataset is None):
        raise ConfigError("give exactly one of --images FOLDER (every pixel inlier) or --dataset NAME --root ROOT "
                          "--split SPLIT (the split's labels)" + ("; both were given" if images is not None else ""))
    if images is not None:
        if root is not None or split is not None:
            raise ConfigError("--root / --split apply to --dataset, not to --images; drop them")
        return {"kind": "images", "images": str(images), "chosen_on": f"images {images}"}
    if root is None:
        raise ConfigError(f"--dataset {dataset} needs --root ROOT (the dataset root in its official layout)")
    return {"kind": "dataset", "dataset": dataset, "root": str(root), "split": split}


def inlier_mask(sample: Any, source: dict[str, Any]) -> Any:
    """(H,W) uint8 in the ood_mask convention (0 inlier, 255 void) of one calibration frame; DatasetError naming
    the split and the frame when the frame holds anomaly pixels (label 1) or the split has no labels."""
    import numpy as np

    from ..errors import DatasetError

    if source["kind"] == "images":
        return np.zeros(sample.image.shape[:2], np.uint8)
    where = f"split {source['chosen_on']}"
    if sample.ood_mask is not None:
        if bool((sample.ood_mask == 1).any()):
            raise DatasetError(f"{where} has anomaly pixels (label 1), e.g. in frame {sample.name}: a calibration "
                               "split must hold inliers only; pick an inlier-only split (e.g. a training split) or "
                               "a folder of inlier images (--images)")
        return np.where(sample.ood_mask == 255, 255, 0).astype(np.uint8)
    if sample.semantic is not None:
        return np.where(sample.semantic == 255, 255, 0).astype(np.uint8)
    raise DatasetError(f"{where} has neither anomaly nor semantic labels (frame {sample.name}), so its void pixels "
                       "are unknown; use --images FOLDER to count every pixel as inlier")


def calibrate(checkpoint: Any, score: str, out: str | os.PathLike, *, images: Any = None, dataset: str | None = None,
              root: Any = None, split: str | None = None, target_fpr: float = 0.01, device: Any = "auto",
              dtype: str = "auto", batch_size: int = 4, workers: int = 2, input_size: Any = None,
              max_pixels: float | None = 1e8, overwrite: bool = False, weights: Any = None,
              trust_code: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write ``out``/threshold.json and return its content: {score, threshold, target_fpr, n_frames, n_pixels,
    source {kind, chosen_on, ...}, calibration_fpr, method, threshold_error, rule, checkpoint, input_size, dtype,
    denseood_version, command}. ``checkpoint``: a ``load_model`` spec or a Segmenter; input_size: None (the
    checkpoint's training size), "full" or "HxW"."""
    from .. import dist
    from .._version import __version__
    from ..config import parse_hw
    from ..data import open_dataset
    from ..errors import ConfigError
    from ..eval.threshold import THRESHOLD_FILE, InlierQuantile, check_target_fpr
    from ..infer import Inference
    from ..io import atomic_write_json
    from ..outdir import check_out_dir, command_line, open_output
    from ..scores import parse_scores

    names = parse_scores(score)
    if len(names) != 1:
        raise ConfigError(f"--score {score!r}: calibrate one score at a time (got {len(names)})")
    target = check_target_fpr(target_fpr)
    source = _source(images, dataset, root, split)
    size = "model" if input_size is None else (None if str(input_size).lower() == "full" else
                                              parse_hw(input_size, "--input-size"))
    check_out_dir(out, overwrite)
    with open_output(out, overwrite) as run:
        ds = open_dataset("folder", images) if images is not None else open_dataset(dataset, root, split)
        if source["kind"] == "dataset":
            source.update(split=ds.split, chosen_on=f"{ds.name}/{ds.split}")
        model = checkpoint
        if isinstance(checkpoint, (str, Path)):
            from ..models.sources import load_model

            model = load_model(checkpoint, map_location="cpu", weights=weights, trust_code=trust_code,
                               **({"num_classes": ds.num_classes, "class_set": ds.class_set} if ds.class_set else {}))
        engine = Inference(model, scores=names, device=dist.resolve_device(device), dtype=dtype, input_size=size,
                           max_pixels=max_pixels)
        q, n_frames = InlierQuantile(), 0
        for samples, maps in engine.run(ds, batch_size=batch_size, workers=workers, progress=progress):
            for j, smp in enumerate(samples):
                q.update(maps[names[0]][j], inlier_mask(smp, source))
                n_frames += 1
        r = q.compute(target)
        doc = {"score": names[0], "threshold": r["threshold"], "target_fpr": target, "n_frames": n_frames,
               "n_pixels": r["n_pixels"], "source": source, "calibration_fpr": r["calibration_fpr"],
               "method": r["method"], "threshold_error": r["threshold_error"],
               "rule": "a pixel is anomalous where score > threshold",
               "checkpoint": {"spec": str(checkpoint) if isinstance(checkpoint, (str, Path)) else None,
                              "sha256": getattr(model, "checkpoint_sha256", None)},
               "input_size": list(engine.input_size) if engine.input_size else None, "dtype": engine.dtype_name,
               "denseood_version": __version__, "command": command_line()}
        atomic_write_json(run.dir / THRESHOLD_FILE, doc)
        run.commit({"verb": "calibrate", "command": doc["command"], "checkpoint": doc["checkpoint"],
                    "source": source})
    return doc


def threshold_for(path: str | os.PathLike | None, score: str) -> float | None:
    """The threshold of a threshold.json (or its folder) for ``score`` (None without a path); ConfigError when the
    file was calibrated for another score (``denseood segment --threshold-from``)."""
    if path is None:
        return None
    from ..errors import ConfigError
    from ..eval.threshold import load_threshold

    t = load_threshold(path)
    if t["score"] != score:
        raise ConfigError(f"--threshold-from {t['file']} is a threshold of score {t['score']!r}, not of --score "
                          f"{score!r}; pass --score {t['score']} or calibrate {score}")
    return t["threshold"]
