"""``denseood segment``: S2M object masks for a folder (or list) of driving images.

Outputs under ``--out``: ``overlays/<stem>.png`` (anomaly heat map blended over the image, coloured object
masks, boxes with object confidences in [0, 1]), ``masks/<stem>.png`` (uint16 instance ids, 0 = background,
ids in descending raw-score order) and ``objects.json`` (JSON lines, one per image: image path, size [H, W],
ids, boxes xyxy, scores (object confidences in [0, 1]), raw_scores (mean anomaly score inside each mask, any
sign), ``objects`` (one {id, box, score, raw_score, area} per object), areas in pixels, mask-model quality,
timing in seconds). Unreadable images are named in the
summary and make the exit status 1; the other images' results are kept.

The library verb is :func:`segment_images` (no argv). The top level imports only the standard library and
``._common``. See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from ._common import add_config, add_device, add_dtype, add_out, add_verb, positive_int

DESCRIPTION = __doc__.split("\n\nThe library verb")[0]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "segment", help="segment OOD objects in driving images (S2M)", description=DESCRIPTION)
    p.add_argument("--images", required=True, nargs="+", help="image folder(s) (their images, not recursive) or file(s)")
    p.add_argument("--checkpoint", required=True, help="segmenter checkpoint (.pt) written by `denseood train`")
    add_out(p, "overlays/, masks/, objects.json")
    p.add_argument("--score", default="jsd", help="anomaly score the prompts are taken from (e.g. jsd, msp, maxlogit)")
    p.add_argument("--prompter", default="auto",
                   help="learned | peak | auto (learned when the checkpoint holds one) | PATH of a prompter file")
    p.add_argument("--prompt-model", default="grabcut",
                   help="mask backend: grabcut (OpenCV, no weights) | sam:TYPE:PATH (segment-anything checkpoint)")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=2, help="images per segmenter forward pass")
    p.add_argument("--input-size", default="model",
                   help="HxW the segmenter sees; 'model' = its training size, 'full' keeps the image size")
    add_config(p)
    return p


def run(args: argparse.Namespace) -> int:
    summary = segment_images(args.images, args.checkpoint, args.out, score=args.score, prompter=args.prompter,
                             prompt_model=args.prompt_model, device=args.device, dtype=args.dtype,
                             batch_size=args.batch_size, input_size=args.input_size, overwrite=args.overwrite)
    print(f"segmented {summary['segmented']} of {summary['images']} images, {summary['objects']} objects -> "
          f"{summary['out']} (overlays/, masks/, objects.json)")
    if summary["failed"]:
        print(f"{len(summary['failed'])} image(s) failed:", file=sys.stderr)
        for p, why in summary["failed"]:
            print(f"  {p}: {why}", file=sys.stderr)
        return 1
    return 0


def collect_images(items: Sequence[str | Path]) -> list[Path]:
    """Files and folders (their images, sorted, not recursive) -> image paths, in the given order."""
    from ..errors import ConfigError
    from ..io import IMAGE_EXTENSIONS, list_images

    paths: list[Path] = []
    for it in items:
        p = Path(it)
        if p.is_dir():
            found = list_images(p)
            if not found:
                raise ConfigError(f"--images: folder {p} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise ConfigError(f"--images: {p} does not exist")
    return paths


def unique_stems(paths: Sequence[Path]) -> list[str]:
    """Output names: the file stem, made unique with the suffix (and a counter) when stems repeat."""
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = p.stem
        if stem in seen:
            stem = f"{p.stem}_{p.suffix.lstrip('.').lower()}"
            while stem in seen:
                seen[stem] += 1
                stem = f"{stem}_{seen[stem]}"
        seen[stem] = 0
        out.append(stem)
    return out


def overlay(image: Any, result: Any) -> Any:
    """image (H,W,3) uint8 + an S2MResult -> (H,W,3) uint8: heat map of the anomaly map blended over the image,
    object masks, boxes and object confidences in [0, 1] (``result.scores``)."""
    from ..viz import blend, draw_objects, heatmap

    base = blend(image, heatmap(result.anomaly_map), alpha=0.4)
    return draw_objects(base, result.instances, result.boxes, result.scores)


def record(path: Path, result: Any) -> dict:
    """One ``objects.json`` line of an S2MResult: image, size [H, W], ids 1..N, boxes, scores (confidence in
    [0, 1]), raw_scores (mean anomaly score in the mask), objects (per object: id, box, score, raw_score, area),
    areas, quality, timing."""
    import numpy as np

    h, w = result.instances.shape
    ids = list(range(1, len(result) + 1))
    boxes = np.round(result.boxes, 1).tolist()
    scores = [round(float(s), 5) for s in result.scores]
    raw = [round(float(s), 5) for s in result.raw_scores]
    areas = [int(a) for a in result.areas]
    objects = [{"id": i, "box": b, "score": s, "raw_score": r, "area": a}
               for i, b, s, r, a in zip(ids, boxes, scores, raw, areas)]
    return {"image": str(path), "size": [int(h), int(w)], "ids": ids, "boxes": boxes, "scores": scores,
            "raw_scores": raw, "objects": objects, "areas": areas,
            "quality": [round(float(q), 4) for q in result.quality],
            "timing": {k: round(float(v), 4) for k, v in result.timing.items()}}


def _input_size(spec: Any) -> Any:
    """"model" -> "model" (the training size); None / "full" -> None (image size); "HxW" / (h, w) / n -> (h, w)."""
    if spec is None or spec == "full":
        return None
    if spec == "model":
        return "model"
    from ..config import parse_hw

    return parse_hw(spec, "--input-size")


def segment_images(images: Sequence[str | Path], checkpoint_or_model: Any, out: str | Path, *, score: str = "jsd",
                   prompter: str = "auto", prompt_model: str = "grabcut", device: Any = "auto", dtype: Any = "auto",
                   batch_size: int = 2, input_size: Any = "model", overwrite: bool = False,
                   progress: bool = True) -> dict:
    """Segment OOD objects in ``images`` (files or folders) and write the outputs of the module docstring to ``out``.

    checkpoint_or_model: a checkpoint path or a Segmenter. prompter / prompt_model / score / device / dtype: as in
    :func:`denseood.s2m.pipeline.build_s2m`. input_size: "model" (training size), "full" or None (image size),
    or "HxW" / (h, w). Raises ConfigError for a bad ``out`` (a file, or a non-empty folder without
    ``overwrite``), missing inputs or ``batch_size`` < 1. Unreadable images are skipped and listed.
    Returns {"images": int, "segmented": int, "objects": int, "failed": [(Path, reason)], "out": Path}.
    """
    import numpy as np
    from tqdm import tqdm

    from ..errors import ConfigError, DenseOODError
    from ..io import atomic_write_text, check_writable_dir, clean_stale_temp, read_image, write_png
    from ..s2m.pipeline import build_s2m

    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite or choose another folder")
    from ..scores import parse_scores

    parse_scores(score)  # a bad --score fails before any image is read and before --out is created
    paths = collect_images(list(images))
    stems = unique_stems(paths)
    check_writable_dir(out, "--out")  # before the model is loaded
    clean_stale_temp(out)
    s2m = build_s2m(checkpoint_or_model, prompter, prompt_model, device, dtype, score,
                    input_size=_input_size(input_size), batch_size=batch_size)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    failed: list[tuple[Path, str]] = []
    n_obj = 0
    bs = int(batch_size)
    bar = tqdm(total=len(paths), desc="segment", unit="img", dynamic_ncols=True, disable=not progress)
    for start in range(0, len(paths), bs):
        chunk = list(zip(paths[start:start + bs], stems[start:start + bs]))
        good: list[tuple[Path, str, np.ndarray]] = []
        for p, stem in chunk:
            try:
                good.append((p, stem, read_image(p)))
            except DenseOODError as e:
                failed.append((p, str(e)))
                tqdm.write(f"cannot read {p}: {e}", file=sys.stderr)
        results = []
        if good:
            try:
                results = s2m([g[2] for g in good])
            except DenseOODError:  # e.g. an image too small for the segmenter: retry one by one
                results = []
                for p, stem, im in good:
                    try:
                        results.append(s2m([im])[0])
                    except DenseOODError as e1:
                        failed.append((p, str(e1)))
                        results.append(None)
        for (p, stem, im), r in zip(good, results):
            if r is None:
                continue
            write_png(out / "overlays" / f"{stem}.png", overlay(im, r))
            write_png(out / "masks" / f"{stem}.png", r.instances.astype(np.uint16))
            lines.append(json.dumps(record(p, r)))
            n_obj += len(r)
        bar.update(len(chunk))
        if len(lines) % 50 < len(chunk):
            atomic_write_text(out / "objects.json", "".join(x + "\n" for x in lines))
    bar.close()
    atomic_write_text(out / "objects.json", "".join(x + "\n" for x in lines))
    return {"images": len(paths), "segmented": len(lines), "objects": n_obj, "failed": failed, "out": out}
