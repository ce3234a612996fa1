"""``denseood segment``: S2M object masks for a folder (or list) of driving images.

Outputs under ``--out``: ``overlays/<stem>.png`` (anomaly heat map blended over the image, coloured object
masks, boxes with object scores), ``masks/<stem>.png`` (uint16 instance ids, 0 = background, ids in
descending score order) and ``objects.json`` (JSON lines, one per image: image path, size [H, W], ids, boxes
xyxy, scores, areas in pixels, mask-model quality, timing in seconds). Unreadable images are named in the
summary and make the exit status 1; the other images' results are kept.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DenseOODError
from ..io import IMAGE_EXTENSIONS, atomic_write_text, list_images, read_image, write_png


def collect_images(items: list[str]) -> list[Path]:
    """Files and folders (their images, sorted, not recursive) -> image paths, in the given order."""
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


def unique_stems(paths: list[Path]) -> list[str]:
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


def overlay(image: np.ndarray, result: Any) -> np.ndarray:
    """(H,W,3) uint8: heat map of the anomaly map blended over the image, object masks, boxes and scores."""
    from ..viz import blend, draw_objects, heatmap

    base = blend(image, heatmap(result.anomaly_map), alpha=0.4)
    return draw_objects(base, result.instances, result.boxes, result.scores)


def record(path: Path, result: Any) -> dict:
    h, w = result.instances.shape
    return {"image": str(path), "size": [int(h), int(w)], "ids": list(range(1, len(result) + 1)),
            "boxes": np.round(result.boxes, 1).tolist(), "scores": [round(float(s), 5) for s in result.scores],
            "areas": [int(a) for a in result.areas], "quality": [round(float(q), 4) for q in result.quality],
            "timing": {k: round(float(v), 4) for k, v in result.timing.items()}}


def main(args: Any) -> int:
    """Handler of ``denseood segment`` (see the module docstring). Returns 0, or 1 when an image failed."""
    from tqdm import tqdm

    from .pipeline import build_s2m

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite or choose another folder")
    paths = collect_images(list(args.images))
    stems = unique_stems(paths)
    input_size: Any = "model"
    if getattr(args, "input_size", None):
        from ..infer import parse_hw

        input_size = None if args.input_size == "full" else parse_hw(args.input_size, "--input-size")
    s2m = build_s2m(args.checkpoint, args.prompter, args.prompt_model, args.device, args.dtype, args.score,
                    input_size=input_size, batch_size=args.batch_size)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    failed: list[tuple[Path, str]] = []
    n_obj = 0
    bs = max(1, int(args.batch_size))
    bar = tqdm(total=len(paths), desc="segment", unit="img", dynamic_ncols=True)
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
            except DenseOODError as e:  # e.g. an image too small for the segmenter: retry one by one
                results = []
                for p, stem, im in good:
                    try:
                        results.append(s2m([im])[0])
                    except DenseOODError as e1:
                        failed.append((p, str(e1)))
                        results.append(None)
                del e
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
    print(f"segmented {len(lines)} of {len(paths)} images, {n_obj} objects -> {out} "
          f"(overlays/, masks/, objects.json)")
    if failed:
        print(f"{len(failed)} image(s) failed:", file=sys.stderr)
        for p, why in failed:
            print(f"  {p}: {why}", file=sys.stderr)
        return 1
    return 0
