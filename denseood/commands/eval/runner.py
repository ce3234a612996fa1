"""``denseood eval``: anomaly scores of a segmenter checkpoint on a benchmark split -> metrics, tables, curves.

Pass 1 runs inference once over the data and feeds the pixel metrics of every score; each score's maps are
kept on disk (float16 ``.npy`` in a temporary folder under --out, never in memory) for pass 2, which computes
the component metrics (sIoU, PPV, mean F1) at each score's best-F1 threshold, and with --s2m the thresholded
``threshold@bestF1`` object row (:mod:`.passes`), and deletes the folder. Under ``torchrun`` every
rank evaluates its own exact share of the frames (no duplicated frames), metric states are reduced over ranks
and only rank 0 writes the summary files (per-frame maps are written by the rank that scored the frame).
A split without anomaly labels (e.g. SMIYC test) yields score maps for submission instead of metrics.

:func:`evaluate` takes a dataset and a model; :func:`evaluate_checkpoint` opens both from names and paths
(the function behind the ``denseood eval`` verb). See docs/architecture.md.
"""
from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from denseood import dist
from denseood._version import __version__
from denseood.config import parse_hw
from denseood.errors import ConfigError, DatasetError
from denseood.io import atomic_write_json, atomic_write_text, write_png
from denseood.outdir import check_out_dir, open_output
from denseood.scores.names import DEFAULT_SCORE

from ..report.page import write_report
from ..report.layout import REPORT_NAME
from .frames import FrameRecords
from .intervals import PixelExtras
from .passes import MapCache, threshold_pass
from .report import SUBMISSION_NOTE, plain_json, results_markdown, thin_curve

PROTOCOLS = ("streaming", "exact", "smiyc", "caos")


# ----------------------------------------------------------------------------------------------- checks
def check_frame_sizes(dataset: Any, max_pixels: float | None) -> None:
    """ConfigError naming the first frame whose image has more than ``max_pixels`` pixels, read from the file
    headers of ``dataset.frames`` before any model is loaded (datasets without frame paths are checked per image
    by the engine)."""
    from denseood.infer import check_max_pixels
    from denseood.io import image_header_size

    if not max_pixels:
        return
    for fr in getattr(dataset, "frames", None) or []:
        hw = image_header_size(fr.image)
        if hw is not None:
            check_max_pixels(hw[0], hw[1], max_pixels, f"frame {fr.name} ({fr.image})")


def resolve_protocol(protocol: str | None, exact: bool = False, dataset_default: str | None = None) -> str:
    """--protocol, else 'exact' with --exact, else the dataset's default protocol, else 'streaming'."""
    if protocol is not None and protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; valid: {', '.join(PROTOCOLS)}")
    if exact and protocol not in (None, "exact"):
        raise ConfigError(f"--exact contradicts --protocol {protocol}; pass only one of them")
    if protocol is not None:
        return protocol
    if exact:
        return "exact"
    return dataset_default if dataset_default in PROTOCOLS else "streaming"


def parse_input_size(text: str | tuple[int, int] | None) -> tuple[int, int] | None | str:
    """--input-size: None -> "model" (the checkpoint's training size), "full" -> None, "HxW" / (h, w) -> (h, w)."""
    if text is None:
        return "model"
    if str(text).lower() == "full":
        return None
    return parse_hw(text, "--input-size")


def _safe_rel(name: str) -> Path:
    """Frame id -> relative output path (subfolders allowed; absolute paths and '..' refused)."""
    p = Path(str(name).replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise DatasetError(f"frame id {name!r} cannot be used as an output file name (absolute or contains '..')")
    return p


def _with_suffix(rel: Path, suffix: str) -> Path:
    return rel.parent / (rel.name + suffix)  # keep dots of the frame id


# ----------------------------------------------------------------------------------------------- evaluation
def evaluate(dataset: Dataset, model: torch.nn.Module, scores: Sequence[str] | str, out: str | os.PathLike, *,
             protocol: str | None = None, batch_size: int = 4, workers: int = 2, limit: int | None = None,
             device: str | torch.device = "auto", dtype: str = "auto", input_size: tuple[int, int] | None | str = "model",
             sliding_window: tuple[int, int] | None = None, overlap: float = 1 / 3, flip: bool = False,
             compile: bool = False, components: bool = True, save_maps: bool = False, s2m: Any = None,
             overwrite: bool = False, progress: bool = True, checkpoint: str | os.PathLike | None = None,
             command: str | None = None, source: Any = None, save_maps_format: str = "npy",
             method: str | None = None, max_pixels: float | None = 1e8,
             bootstrap: int = 1000, threshold_from: str | None = None) -> dict:  # issue 23: ci95, at_threshold
    """Evaluate ``scores`` of ``model`` on ``dataset`` (a denseood BaseDataset) and write the results to ``out``.

    Returns the results dict (the content of results.json; identical on every rank). Per score: ap, fpr95, auroc,
    threshold_at_tpr95, best_f1, best_f1_threshold (+ n_pixels, n_anomaly) and, with ``components``, sIoU, PPV,
    mean_F1, F1_per_threshold; all fractions in [0, 1]. ``source``: a :class:`~.maps.MapSource` scored instead of
    ``model`` (None); ``save_maps`` also writes score_maps/<score>/<fid> in ``save_maps_format`` (npy | npz | h5 |
    png16); ``method``: the <method> folder of the SMIYC submission (default: the score; one plain folder name).
    ``out`` is locked for the run and written through a staging folder that replaces it whole at the end, with
    ``denseood-manifest.json`` (:func:`denseood.outdir.open_output`). Call under torchrun
    after ``dist.init_from_env()`` for a multi-process evaluation (every rank must call it).
    """
    from denseood.eval import PixelMetrics
    from denseood.infer import Inference, ShardSampler
    from denseood.scores import parse_scores

    t0 = time.perf_counter()
    from .maps import check_method, check_save_format, save_score_map, submission_method, write_submission

    scores = parse_scores(scores) if source is None else list(scores)
    if save_maps:
        check_save_format(save_maps_format, scores)
    check_method(method)
    out = Path(out)
    # the lock and the staging folder (denseood.outdir): every file goes under run.dir (= stage), moved into --out
    # whole by run.commit at the end; rank 0 owns the folder, and every rank gets the staging folder from it
    with open_output(out, overwrite) as run:
        stage = run.dir
        protocol = resolve_protocol(protocol, False, getattr(dataset, "default_protocol", None))
        has_labels = bool(getattr(dataset, "has_ood_labels", True))
        min_seg, min_inst = getattr(dataset, "component_sizes", (500, 100))
        rank, world = dist.rank(), dist.world_size()

        engine = source if source is not None else Inference(
            model, scores=scores, device=dist.resolve_device(device), dtype=dtype, input_size=input_size,
            sliding_window=sliding_window, overlap=overlap, flip=flip, compile=compile, max_pixels=max_pixels)
        data: Dataset = dataset
        if limit is not None:
            if limit <= 0:
                raise ConfigError(f"--limit must be positive, got {limit}")
            data = Subset(dataset, range(min(int(limit), len(dataset))))
        sampler = ShardSampler(len(data), rank, world) if world > 1 else None
        ds_name, split = getattr(dataset, "name", type(dataset).__name__), getattr(dataset, "split", None)
        if rank == 0:
            of = f" of {len(dataset)} (--limit)" if len(data) != len(dataset) else ""
            print(f"evaluating {len(data)}{of} frames of {ds_name}/{split}", file=sys.stderr, flush=True)

        pixel = None
        if has_labels:
            pixel = {s: PixelMetrics(mode=protocol) for s in scores}
        extras = PixelExtras(scores, protocol, bootstrap, threshold_from) if has_labels else None  # issue 23
        s2m_eval = None
        if s2m is not None:
            if not has_labels:
                raise ConfigError("S2M evaluation needs anomaly labels; this split has none (drop --s2m)")
            from .s2m import S2MEval

            s2m_eval = S2MEval(s2m, min_instance_size=min_inst,
                               pixel_mode=protocol if protocol in ("streaming", "exact") else "streaming")
        # pass 2's frame cache under --out (never the system /tmp), removed when the evaluation ends
        cached = list(scores) if components else ([s2m.score] if s2m is not None else [])
        cache = MapCache(out, rank, cached) if (has_labels and cached) else None
        records = FrameRecords(stage, scores, enabled=has_labels)  # report.html's per-frame data (.frames)
        n_local = 0
        results: dict[str, Any] = {}
        s2m_results = None
        try:
            # ---------------------------------------------------------------- pass 1: inference + pixel metrics
            for samples, maps in engine.run(data, batch_size=batch_size, workers=workers, sampler=sampler,
                                            progress=progress and rank == 0):
                if has_labels:
                    missing = [s.name for s in samples if s.ood_mask is None]
                    if missing:
                        raise DatasetError(f"frames {missing[:5]} of a labelled split have no anomaly label")
                    masks_np = np.stack([s.ood_mask for s in samples])
                    masks = torch.from_numpy(masks_np).to(engine.device)
                    for s in scores:
                        pixel[s].update(maps[s], masks)
                    extras.update(maps, masks, [smp.name for smp in samples])  # issue 23
                maps_np = {s: maps[s].cpu().numpy() for s in scores}
                for j, smp in enumerate(samples):
                    rel = _safe_rel(smp.name)
                    if cache is not None:
                        cache.add({s: maps_np[s][j] for s in cache.scores}, masks_np[j])
                    if not has_labels:
                        for s in scores:
                            write_submission(stage, dataset, s, scores, method, rel, maps_np[s][j])
                    if save_maps:
                        from denseood.viz import blend, heatmap

                        for s in scores:
                            write_png(stage / "maps" / s / _with_suffix(rel, ".png"),
                                      blend(smp.image, heatmap(maps_np[s][j]), alpha=0.6))
                            save_score_map(stage, s, rel, maps_np[s][j], save_maps_format)
                    objects = None if s2m_eval is None else s2m_eval.update(
                        smp.image, maps_np[s2m.score][j].astype(np.float32), smp.ood_mask, smp.instances,
                        smp.meta.get("instance_source"))
                    records.update(smp, {s: maps_np[s][j] for s in scores}, objects)
                n_local += len(samples)

            n_total = int(sum(dist.gather(n_local)))
            per_score: dict[str, dict[str, Any]] = {s: {} for s in scores}
            curves: dict[str, dict[str, np.ndarray]] = {}
            if has_labels:
                for s in scores:
                    m = pixel[s].compute()  # collective under DDP
                    per_score[s].update({k: plain_json(m[k]) for k in m})
                    curves[s] = {k: np.asarray(v) for k, v in pixel[s].curves().items()}
                    pixel[s] = None  # free the metric state before pass 2
                extra_top = extras.finish(per_score)  # issue 23: ci95 / at_threshold rows, bootstrap block
                # ------------------------------------------------------------ pass 2: thresholded metrics
                baseline = None
                if cache is not None:
                    baseline = threshold_pass(cache, per_score, scores if components else [], min_segment_size=min_seg,
                                              min_instance_size=min_inst,
                                              baseline_score=s2m.score if s2m is not None else None,
                                              progress=progress and rank == 0)
                if s2m_eval is not None:
                    s2m_results = plain_json({"s2m": s2m_eval.compute(), "threshold@bestF1": baseline})
        finally:
            if cache is not None:
                cache.close()

        records.write()  # collective: frames/frames.json on rank 0
        # ------------------------------------------------------------------------ timings over ranks
        st = dist.gather(engine.stats)
        inf_seconds = max(x["seconds"] for x in st)
        seconds = max(dist.gather(time.perf_counter() - t0))
        ckpt_path = checkpoint if checkpoint is not None else None
        results = {
            "denseood_version": __version__,
            "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
            "dataset": getattr(dataset, "name", type(dataset).__name__),
            "split": getattr(dataset, "split", None),
            "root": str(getattr(dataset, "root", "")) or None,
            "n_images": n_total,
            "frames": {str(split): n_total},
            "has_labels": has_labels,
            "protocol": protocol if has_labels else None,
            "component_sizes": [int(min_seg), int(min_inst)] if (has_labels and components) else None,
            "checkpoint": {"path": str(ckpt_path) if ckpt_path is not None else None,
                           "sha256": getattr(model, "checkpoint_sha256", None)},
            "model": model_provenance(model, checkpoint),
            "device": str(engine.device),
            "dtype": engine.dtype_name,
            "input_size": list(engine.input_size) if engine.input_size else None,
            "sliding_window": list(engine.sliding_window) if engine.sliding_window else None,
            "overlap": engine.overlap if engine.sliding_window else None,
            "flip": engine.flip,
            "compile": engine.compiled,
            "world_size": world,
            "images_per_s": n_total / inf_seconds if inf_seconds > 0 else 0.0,
            "peak_mem_mb": max(x["peak_mem_mb"] for x in st),
            "peak_mem_kind": "cuda_max_allocated" if engine.device.type == "cuda" else "cpu_max_rss",
            "inference_seconds": inf_seconds,
            "seconds": seconds,
            "scores": per_score if has_labels else {},
        }
        results.update(extra_top if has_labels else {})  # issue 23
        convention = getattr(dataset, "convention", None)
        if convention is not None:
            results["dataset_convention"] = dict(convention)
        if not has_labels:
            results["submission"] = {"path": str(out / "submission"), "scores": list(scores), "note": SUBMISSION_NOTE,
                                     "metrics": "none: this split has no anomaly labels", "methods": {
                                         s: submission_method(s, scores, method) for s in scores}}
        if s2m_results is not None:
            results["s2m"] = s2m_results
            results["s2m_score"] = s2m.score
        if save_maps:
            results["maps"] = str(out / "maps")
            results["score_maps"] = {"path": str(out / "score_maps"), "format": save_maps_format}
        if source is not None:
            results["maps_input"] = source.describe()

        if rank == 0:
            write_summary(stage, results, curves)
            write_report([stage], stage / REPORT_NAME, [out.name])
            keys = ("command", "model", "checkpoint", "dataset", "split")
            run.commit({"verb": "eval", **{k: results[k] for k in keys}})
        dist.barrier()
        return results


def write_summary(stage: Path, results: dict, curves: dict[str, dict[str, np.ndarray]]) -> None:
    """Rank 0's summary files in the staging folder ``stage``: results.json, results.md, pr/roc_curve.png (when
    there are curves). To add an output file, write it under ``stage`` here; the commit moves it into --out and
    lists it in the manifest."""
    atomic_write_json(stage / "results.json", results)
    atomic_write_text(stage / "results.md", results_markdown(results))
    if curves:
        from denseood.viz import plot_curves

        thin = {s: thin_curve(c) for s, c in curves.items()}
        plot_curves(thin, stage / "pr_curve.png", kind="pr")
        plot_curves(thin, stage / "roc_curve.png", kind="roc")


def model_provenance(model: Any, spec: Any) -> dict[str, Any]:
    """results.json ``model``: ``spec`` (as given), ``source`` (``model.source``), ``model_source`` ("smp" | "hf" |
    "torchvision" | "python"; a denseood checkpoint's from its meta), ``origin`` (the external spec a fine-tuned
    checkpoint was made from, else None) and ``output_kind``; both of these from ``model.origin``."""
    origin = getattr(model, "origin", None)
    return {"spec": None if spec is None else str(spec), "source": getattr(model, "source", None),
            "model_source": origin and origin.model_source, "origin": origin and origin.made_from,
            "output_kind": getattr(model, "output_kind", "logits"),
            "input_padding": getattr(model, "input_padding", None)}


# ----------------------------------------------------------------------------------------------- from names and paths
def evaluate_checkpoint(*, dataset: str, root: str | os.PathLike, checkpoint: str | os.PathLike,
                        out: str | os.PathLike, scores: Sequence[str] | str = DEFAULT_SCORE, split: str | None = None,
                        protocol: str | None = None, input_size: str | tuple[int, int] | None = None,
                        sliding_window: str | tuple[int, int] | None = None,
                        min_segment_size: int | None = None, min_instance_size: int | None = None,
                        s2m: bool = False, prompter: str = "auto", prompt_model: str = "grabcut", objects: str = "s2m",
                        device: str | torch.device = "auto", dtype: str = "auto", overwrite: bool = False,
                        echo: bool = False, streethazards_unlabeled: str | None = None,
                        weights: str | os.PathLike | None = None, trust_code: bool = False, **kwargs: Any) -> dict:
    """``denseood eval`` without argv: open ``dataset`` (a benchmark name) under ``root``, load ``checkpoint``,
    evaluate ``scores`` and write results.json / results.md / curves to ``out``.

    input_size: None = the checkpoint's training size, "full" = the image size, "HxW" or (h, w);
    sliding_window: "HxW" / (h, w) window for full-resolution sliding-window inference (excludes input_size).
    min_segment_size / min_instance_size: component-metric sizes (None = the benchmark's). s2m: also evaluate
    S2M object masks (prompter: learned|peak|auto|points[:N[:Q]], prompt_model: grabcut | sam:TYPE:PATH; objects
    "queries": a mask transformer's own query masks instead, :mod:`denseood.s2m.queries`).
    streethazards_unlabeled: "inlier" (official, the reader's default) or "void": how the StreetHazards OOD mask
    treats "unlabeled" pixels (only for dataset "streethazards"; see docs/metrics.md). weights / trust_code: as in
    ``load_model`` (a checkpoint never imports code without ``trust_code``). echo: print the
    results.md table on rank 0. Other keyword arguments go to :func:`evaluate` (batch_size, workers, limit, flip,
    compile, components, save_maps, overlap, progress, command). Initialises torch.distributed when started by
    torchrun (and tears it down again). Returns the results dict.
    """
    from denseood.data import open_dataset
    from denseood.models.sources import load_model
    from denseood.scores import parse_scores

    from .maps import check_method

    scores = parse_scores(scores)  # before touching data
    check_out_dir(out, overwrite)
    check_method(kwargs.get("method"))
    if kwargs.get("save_maps"):
        from .maps import check_save_format

        check_save_format(kwargs.get("save_maps_format", "npy"), scores)
    if protocol is not None:
        protocol = resolve_protocol(protocol)
    size = parse_input_size(input_size)
    sliding = parse_hw(sliding_window, "--sliding-window")
    if sliding is not None and input_size is not None:
        raise ConfigError("--sliding-window runs on the full-resolution image; do not combine it with --input-size")
    if sliding is not None:
        size = None
    from denseood.infer.util import MAX_PIXELS, check_network_sizes

    check_network_sizes(kwargs.get("max_pixels", MAX_PIXELS), size, sliding)   # before any data or model is loaded
    if objects != "s2m" and not s2m:  # issue 21
        raise ConfigError(f"--objects {objects} chooses the objects of --s2m; add --s2m")
    if streethazards_unlabeled is not None and dataset != "streethazards":
        raise ConfigError(f"--streethazards-unlabeled applies to --dataset streethazards, not {dataset!r}")
    started = dist.init_from_env()
    run = open_output(out, overwrite)  # lock + staging, after the arguments, before any model or data is loaded
    try:
        sizes = {k: v for k, v in (("min_segment_size", min_segment_size), ("min_instance_size", min_instance_size),
                                   ("unlabeled", streethazards_unlabeled)) if v is not None}
        ds = open_dataset(dataset, root, split, **sizes)
        check_frame_sizes(ds, kwargs.get("max_pixels", 1e8))
        model = load_model(checkpoint, map_location="cpu", num_classes=ds.num_classes, class_set=ds.class_set,
                           weights=weights, trust_code=trust_code)
        pipeline = None
        if s2m and objects == "queries":  # issue 21
            from denseood.s2m.queries import build_query_objects

            pipeline = build_query_objects(model, dist.resolve_device(device), dtype, scores, input_size=size)
        elif s2m:
            from denseood.s2m.pipeline import build_s2m

            pipeline = build_s2m(model, prompter, prompt_model, dist.resolve_device(device), dtype, scores,
                                 checkpoint=checkpoint, input_size=size)
        res = evaluate(ds, model, scores, out, protocol=protocol, device=device, dtype=dtype, input_size=size,
                       sliding_window=sliding, s2m=pipeline, overwrite=overwrite, checkpoint=checkpoint, **kwargs)
        if echo and dist.is_main():
            print(results_markdown(res))
            print(f"results written to {Path(out) / 'results.json'}")
    finally:
        run.close()
        if started:
            dist.cleanup()
    return res
