"""``denseood segment``: S2M object masks for a folder (or list) of driving images.

Outputs under ``--out``: ``overlays/<stem>.png`` (anomaly heat map blended over the image, coloured object
masks, boxes with object confidences in [0, 1]), ``masks/<stem>.png`` (uint16 instance ids, 0 = background,
ids in descending raw-score order) and ``objects.json`` (JSON lines, one per image: image path, size [H, W],
ids, boxes xyxy, scores (object confidences in [0, 1]), raw_scores (mean anomaly score inside each mask, any
sign), ``objects`` (one {id, box, score, raw_score, area} per object), areas in pixels, mask-model quality,
timing in seconds). Unreadable images are named in the
summary and make the exit status 1; the other images' results are kept. An image over ``--max-pixels`` stops
the run before the model is loaded. Prompts and masks are computed at ``--work-size`` (longest side), so
memory grows by a few bytes per input pixel.

The library verb is :func:`segment_images` (no argv); every value is checked once, by :class:`SegmentOptions`.
The top level imports only the standard library, ``._common`` and ``scores.names``. See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..infer.names import MAX_PIXELS
from ..s2m.names import WORK_SIZE
from ..scores.names import DEFAULT_SCORE, score_help
from ._common import (add_code_options, add_config, add_objects, check_objects, add_device, add_dtype, add_out, add_verb, nonnegative_int,
                      parse_input_size, positive_float, positive_int)


DESCRIPTION = __doc__.split("\n\nThe library verb")[0]


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "segment", help="segment OOD objects in driving images (S2M)", description=DESCRIPTION)
    p.add_argument("--images", required=True, nargs="+", help="image folder(s) (their images, not recursive) or file(s)")
    p.add_argument("--checkpoint", required=True, help="the model: denseood checkpoint .pt | hf:DIR | torchvision:NAME:FILE | python:MODULE:FACTORY")
    add_code_options(p)
    add_out(p, "overlays/, masks/, objects.json")
    p.add_argument("--score", default=DEFAULT_SCORE, help=score_help("anomaly score the prompts are taken from"))
    p.add_argument("--prompter", default="auto",
                   help="learned | peak | auto (learned when the checkpoint holds one) | points[:N[:Q]] (UGainS-style "
                        "point prompts) | PATH of a prompter file")
    add_objects(p)
    p.add_argument("--prompt-model", default="grabcut",
                   help="mask backend: grabcut (OpenCV, no weights) | sam:TYPE:PATH (segment-anything checkpoint)")
    add_dtype(p)
    add_device(p)
    p.add_argument("--batch-size", type=positive_int, default=2, help="images per segmenter forward pass")
    p.add_argument("--input-size", default="model",
                   help="HxW the segmenter sees; 'model' = its training size, 'full' keeps the image size")
    p.add_argument("--max-pixels", type=positive_float, default=MAX_PIXELS,
                   help="refuse images with more pixels (H*W) than this, before any work")
    p.add_argument("--work-size", type=nonnegative_int, default=WORK_SIZE,
                   help="longest side (px) at which prompts and masks are computed (0 = full resolution)")
    p.add_argument("--threshold-from", default=None, metavar="FILE",  # issue 23
                   help="threshold.json of denseood calibrate: also write anomaly_masks/<stem>.png (1 = score > it)")
    add_config(p)
    return p


def run(args: argparse.Namespace) -> int:
    summary = segment_images(options=SegmentOptions.from_args(args))
    print(f"segmented {summary['segmented']} of {summary['images']} images, {summary['objects']} objects -> "
          f"{summary['out']} (overlays/, masks/, objects.json)")
    if summary["failed"]:
        print(f"{len(summary['failed'])} image(s) failed:", file=sys.stderr)
        for p, why in summary["failed"]:
            print(f"  {p}: {why}", file=sys.stderr)
        return 1
    return 0


@dataclass
class SegmentOptions:
    """Every setting of one ``denseood segment`` run, checked once, here (nothing below re-validates).

    images: files and folders -> ``paths`` (their images) and ``stems`` (unique output names); an image over
    ``max_pixels`` is refused here, before the model is loaded (None: no limit). checkpoint: a ``load_model``
    spec or a Segmenter (weights / trust_code: as in ``load_model``). score: one score name (default
    :data:`DEFAULT_SCORE`), or candidates (then S2M picks: :func:`denseood.s2m.pipeline.build_s2m`) -> a list.
    device / dtype -> torch.device / torch.dtype. input_size: "model" (the training size, the default), None or
    "full" (the image's own size, no resize), "HxW" / (h, w) -> "model" | None | (h, w). work_size: longest side
    for prompts and masks (0/None: full resolution). out: checked by :func:`denseood.outdir.check_out_dir`.
    threshold_from: a threshold.json of ``denseood calibrate`` for ``score`` -> ``threshold`` (then
    anomaly_masks/<stem>.png, 1 where the score > it), else None.
    """

    images: Sequence[str | Path]
    checkpoint: Any
    out: Path
    score: Any = DEFAULT_SCORE
    prompter: str = "auto"
    prompt_model: str = "grabcut"
    objects: str = "s2m"
    device: Any = "auto"
    dtype: Any = "auto"
    batch_size: int = 2
    input_size: Any = "model"
    overwrite: bool = False
    progress: bool = True
    max_pixels: float | None = MAX_PIXELS
    work_size: int | None = WORK_SIZE
    weights: str | Path | None = None
    trust_code: bool = False
    threshold_from: str | Path | None = None
    threshold: float | None = field(init=False, default=None)
    paths: list[Path] = field(init=False, default_factory=list)
    stems: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        from ..dist import resolve_device
        from ..errors import ConfigError
        from ..infer.util import check_network_sizes, resolve_dtype
        from ..outdir import check_out_dir
        from ..scores import parse_scores

        if isinstance(self.batch_size, bool) or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        check_objects(self.objects)
        self.out = check_out_dir(self.out, self.overwrite)
        names = parse_scores(self.score)  # a bad --score fails before any image is read and before --out is created
        self.score = names[0] if len(names) == 1 else names
        from .calibrate import threshold_for

        self.threshold = threshold_for(self.threshold_from, self.score)  # issue 23
        self.paths = collect_images(list(self.images))
        self.stems = unique_stems(self.paths)
        check_sizes(self.paths, self.max_pixels)
        self.input_size = parse_input_size(self.input_size)
        check_network_sizes(self.max_pixels, self.input_size)  # the network input too, before the model is loaded
        self.device = resolve_device(self.device)
        self.dtype = resolve_dtype(self.dtype, self.device)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SegmentOptions":
        """The options of a parsed ``denseood segment`` command line."""
        same = ("images", "checkpoint", "out", "score", "prompter", "prompt_model", "device", "dtype", "batch_size",
                "input_size", "overwrite", "max_pixels", "work_size", "weights", "trust_code", "threshold_from", "objects")
        return cls(**{k: getattr(args, k) for k in same})


def collect_images(items: Sequence[str | Path]) -> list[Path]:
    """Files and folders (their images, sorted, not recursive) -> image paths, in the given order."""
    from ..errors import ConfigError
    from ..io import IMAGE_EXTENSIONS, broken_link_reason, list_images

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
        elif p.is_symlink():
            raise ConfigError(f"--images: {p} is a broken symlink ({broken_link_reason(p)}); fix or remove it")
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


def check_sizes(paths: Sequence[Path], max_pixels: float | None) -> None:
    """ConfigError naming the first image over ``max_pixels`` (read from the file header, nothing decoded)."""
    if not max_pixels:
        return
    from ..infer import check_max_pixels
    from ..io import image_header_size

    for p in paths:
        hw = image_header_size(p)
        if hw is not None:
            check_max_pixels(hw[0], hw[1], max_pixels, f"--images: {p}")


def overlay(image: Any, result: Any, rows: int = 512) -> Any:
    """image (H,W,3) uint8 + an S2MResult -> (H,W,3) uint8: heat map of the anomaly map blended over the image,
    object masks, boxes and object confidences in [0, 1] (``result.scores``).

    The same pixels as ``draw_objects(blend(image, heatmap(map), 0.4), ...)``, computed in bands of ``rows``
    rows and per object inside its box, so the float temporaries stay small."""
    import numpy as np

    from ..viz import blend, draw_objects, heatmap

    a = result.anomaly_map
    finite = a[np.isfinite(a)]
    vmin, vmax = (float(v) for v in np.percentile(finite, [1, 99])) if finite.size else (0.0, 1.0)
    del finite
    base = np.empty_like(image)
    for r in range(0, image.shape[0], rows):
        base[r:r + rows] = blend(image[r:r + rows], heatmap(a[r:r + rows], vmin, vmax), alpha=0.4)
    inst = result.instances
    masks = getattr(result, "masks", None)
    up = max(inst.shape[0] / masks.shape[1], 1.0) if masks is not None and masks.ndim == 3 and masks.shape[1] else 1.0
    m = 3 + int(np.ceil(up))  # margin: a 2-px contour and nearest-upsampling offsets stay inside the crop
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(result.boxes).reshape(-1, 4), 1):
        ya, xa = max(0, int(y0) - m), max(0, int(x0) - m)
        yb, xb = min(inst.shape[0], int(np.ceil(y1)) + m), min(inst.shape[1], int(np.ceil(x1)) + m)
        crop = np.where(inst[ya:yb, xa:xb] == i, i, 0).astype(np.int32)
        drawn = draw_objects(base[ya:yb, xa:xb], crop, None, None)
        base[ya:yb, xa:xb] = drawn
    return draw_objects(base, np.zeros((1, 1), np.int32), result.boxes, result.scores)


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


def segment_images(images: Sequence[str | Path] | None = None, checkpoint_or_model: Any = None,
                   out: str | Path | None = None, *, options: SegmentOptions | None = None, **keywords: Any) -> dict:
    """Segment OOD objects in ``images`` (files or folders) and write the outputs of the module docstring to ``out``.

    checkpoint_or_model: a ``load_model`` spec or a Segmenter. Keywords are :class:`SegmentOptions` fields (score,
    prompter, prompt_model, device, dtype, batch_size, input_size, overwrite, progress, max_pixels, work_size,
    weights, trust_code); or pass ``options`` instead of all arguments. Raises ConfigError (from the options) for
    a bad ``out`` (a file, or a non-empty folder without ``overwrite``), missing inputs, an image over
    ``max_pixels`` or ``batch_size`` < 1, before the model is loaded. Unreadable images are skipped and listed.
    ``out`` is locked and written through a staging folder that replaces it whole at the end, with
    ``denseood-manifest.json`` (:func:`denseood.outdir.open_output`).
    Returns {"images": int, "segmented": int, "objects": int, "failed": [(Path, reason)], "out": Path}.
    """
    from ..errors import ConfigError
    from ..outdir import open_output

    if options is None:
        options = SegmentOptions(images, checkpoint_or_model, out, **keywords)
    elif keywords or images is not None or checkpoint_or_model is not None or out is not None:
        raise ConfigError("pass either options=SegmentOptions(...) or the images, model, out and keywords, not both")
    opts = options
    spec = opts.checkpoint if isinstance(opts.checkpoint, (str, Path)) else None
    with open_output(opts.out, opts.overwrite) as run:  # lock + staging folder, before the model is loaded
        model = opts.checkpoint
        if spec is not None:
            from ..models.sources import load_model

            model = load_model(spec, map_location="cpu", weights=opts.weights, trust_code=opts.trust_code)
        summary = _segment(run.dir, opts, model, spec)
        run.commit({"verb": "segment", "model": {"spec": str(spec) if spec is not None else type(model).__name__},
                    "images": len(opts.paths)})
    return {**summary, "out": opts.out}


def _run_chunk(s2m: Any, chunk: list[tuple[Path, str]], failed: list[tuple[Path, str]]) -> list[tuple]:
    """Read and segment the (file, stem) pairs of ``chunk``: [(file, stem, image, S2MResult)] of those that worked;
    unreadable or unsegmentable files go to ``failed`` with their message. A model that returns NaN/inf logits
    raises (ModelOutputError naming the model and the files): no other frame would fare better."""
    from tqdm import tqdm

    from ..errors import DenseOODError, ModelOutputError
    from ..io import read_image

    good = []
    for p, stem in chunk:
        try:
            good.append((p, stem, read_image(p)))
        except DenseOODError as e:
            failed.append((p, str(e)))
            tqdm.write(f"cannot read {p}: {e}", file=sys.stderr)
    if not good:
        return []
    try:
        return [(*g, r) for g, r in zip(good, s2m([g[2] for g in good], names=[str(g[0]) for g in good]))]
    except ModelOutputError:
        raise
    except DenseOODError:  # e.g. an image too small for the segmenter: retry one by one
        pass
    done = []
    for p, stem, im in good:
        try:
            done.append((p, stem, im, s2m([im], names=[str(p)])[0]))
        except ModelOutputError:
            raise
        except DenseOODError as e1:
            failed.append((p, str(e1)))
    return done


def _segment(stage: Path, opts: SegmentOptions, model: Any, spec: str | Path | None) -> dict:
    """The work of :func:`segment_images`, writing into the staging folder ``stage``."""
    import numpy as np

    from ..io import atomic_write_text, write_png
    from ..progress import progress_bar as tqdm   # plain lines when stderr is not a terminal
    from ..s2m.pipeline import build_s2m

    if opts.objects == "queries":  # no prompter, no mask model: the mask transformer's own query masks
        from ..s2m.queries import build_query_objects

        s2m = build_query_objects(model, opts.device, opts.dtype, opts.score, input_size=opts.input_size,
                                  batch_size=opts.batch_size, max_pixels=opts.max_pixels)
    else:
        s2m = build_s2m(model, opts.prompter, opts.prompt_model, opts.device, opts.dtype, opts.score,
                        checkpoint=spec, input_size=opts.input_size, batch_size=opts.batch_size,
                        max_pixels=opts.max_pixels, work_size=opts.work_size)
    (stage / "overlays").mkdir(parents=True, exist_ok=True)
    (stage / "masks").mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    failed: list[tuple[Path, str]] = []
    n_obj = 0
    bs, paths, stems = opts.batch_size, opts.paths, opts.stems
    with tqdm(total=len(paths), desc="segment", unit="img", dynamic_ncols=True, disable=not opts.progress) as bar:
        for start in range(0, len(paths), bs):   # (the bar is closed before an error is printed)
            chunk = list(zip(paths[start:start + bs], stems[start:start + bs]))
            for p, stem, im, r in _run_chunk(s2m, chunk, failed):
                write_png(stage / "overlays" / f"{stem}.png", overlay(im, r))
                write_png(stage / "masks" / f"{stem}.png", r.instances.astype(np.uint16))
                if opts.threshold is not None:  # issue 23: binary anomaly mask, 1 where the score > the threshold
                    write_png(stage / "anomaly_masks" / f"{stem}.png", (r.anomaly_map > opts.threshold).astype(np.uint8))
                lines.append(json.dumps(record(p, r)))
                n_obj += len(r)
            bar.update(len(chunk))
            if len(lines) % 50 < len(chunk):
                atomic_write_text(stage / "objects.json", "".join(x + "\n" for x in lines))
    atomic_write_text(stage / "objects.json", "".join(x + "\n" for x in lines))
    return {"images": len(paths), "segmented": len(lines), "objects": n_obj, "failed": failed}
