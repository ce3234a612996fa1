"""``denseood eval``: anomaly scores of a segmenter checkpoint on a benchmark split -> metrics, tables, curves.

Pass 1 runs inference once over the data and feeds the pixel metrics of every score; each score's maps are
kept on disk (float16 ``.npy`` in a temporary folder under --out, never in memory) for pass 2, which computes
the component metrics (sIoU, PPV, mean F1) at each score's best-F1 threshold, and with --s2m the thresholded
``threshold@bestF1`` object row (:mod:`.passes`), and deletes the folder; :func:`report` turns the run into
results.json. Under ``torchrun`` every
rank evaluates its own exact share of the frames (no duplicated frames), metric states are reduced over ranks
and only rank 0 writes the summary files (per-frame maps are written by the rank that scored the frame).
A split without anomaly labels (e.g. SMIYC test) yields score maps for submission instead of metrics.

Every function takes one :class:`~.options.EvalOptions` (validated once, when it is built).
:func:`evaluate` takes a dataset and a model; :func:`evaluate_checkpoint` opens both from names and paths
(the function behind the ``denseood eval`` verb). See docs/architecture.md.
"""
from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from denseood import dist
from denseood._version import __version__
from denseood.errors import ConfigError
from denseood.io import atomic_write_json, atomic_write_text
from denseood.outdir import open_output

from ..report.layout import REPORT_NAME
from ..report.page import write_report
from .frames import FrameRecords
from .intervals import PixelExtras
from .options import EvalOptions
from .passes import EvalRun, MapCache, inference_pass, metrics_pass
from .report import SUBMISSION_NOTE, results_markdown, thin_curve
from .writers import submission_method


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


# ----------------------------------------------------------------------------------------------- evaluation
def evaluate(dataset: Dataset, model: torch.nn.Module | None, options: EvalOptions | None = None, *,
             source: Any = None, s2m: Any = None, **keywords: Any) -> dict:
    """Evaluate ``options.scores`` of ``model`` on ``dataset`` (a denseood BaseDataset) into ``options.out``.

    options: an :class:`~.options.EvalOptions`, or its fields as keywords (e.g. ``evaluate(ds, model,
    out=DIR, scores="jsd,msp", protocol="exact")``). source: a :class:`~.maps.MapSource` scored instead of
    ``model`` (None); s2m: an S2M pipeline whose objects are evaluated beside the scores (None).
    Returns the results dict (the content of results.json; identical on every rank). Per score: ap, fpr95, auroc,
    threshold_at_tpr95, best_f1, best_f1_threshold (+ n_pixels, n_anomaly) and, with ``components``, sIoU, PPV,
    mean_F1, F1_per_threshold; all fractions in [0, 1]. ``out`` is locked for the run and written through a
    staging folder that replaces it whole at the end, with ``denseood-manifest.json``
    (:func:`denseood.outdir.open_output`). Call under torchrun after ``dist.init_from_env()`` for a
    multi-process evaluation (every rank must call it).
    """
    opts = EvalOptions.build(options, keywords)
    t0 = time.perf_counter()
    # the lock and the staging folder (denseood.outdir): every file goes under run.dir (= stage), moved into --out
    # whole by out_run.commit at the end; rank 0 owns the folder, and every rank gets the staging folder from it
    with open_output(opts.out, opts.overwrite) as out_run:
        run = start_run(dataset, model, opts, out_run.dir, source=source, s2m=s2m)
        try:
            inference_pass(run)
            metrics_pass(run)
        finally:
            if run.cache is not None:
                run.cache.close()
        run.records.write()  # collective: frames/frames.json on rank 0
        results = report(run, model, t0)
        if dist.rank() == 0:
            write_summary(out_run.dir, results, run.curves)
            write_report([out_run.dir], out_run.dir / REPORT_NAME, [opts.out.name])
            keys = ("command", "model", "checkpoint", "dataset", "split")
            out_run.commit({"verb": "eval", **{k: results[k] for k in keys}})
        dist.barrier()
        return results


def start_run(dataset: Dataset, model: Any, opts: EvalOptions, stage: Path, *, source: Any = None,
              s2m: Any = None) -> EvalRun:
    """The engine, this rank's frames and the metric states of one evaluation (nothing has run yet)."""
    from denseood.eval import PixelMetrics
    from denseood.infer import Inference, ShardSampler

    has_labels = bool(getattr(dataset, "has_ood_labels", True))
    if s2m is not None and not has_labels:
        raise ConfigError("S2M evaluation needs anomaly labels; this split has none (drop --s2m)")
    engine = source if source is not None else Inference(
        model, scores=opts.scores, device=opts.device, dtype=opts.dtype, input_size=opts.input_size,
        sliding_window=opts.sliding_window, overlap=opts.overlap, flip=opts.flip, compile=opts.compile,
        max_pixels=opts.max_pixels)
    data: Dataset = dataset if opts.limit is None else Subset(dataset, range(min(opts.limit, len(dataset))))
    rank, world = dist.rank(), dist.world_size()
    run = EvalRun(opts, dataset, data, engine, stage, opts.protocol_for(dataset), has_labels,
                  getattr(dataset, "component_sizes", (500, 100)), s2m=s2m, from_maps=source is not None,
                  sampler=ShardSampler(len(data), rank, world) if world > 1 else None)
    if rank == 0:
        of = f" of {len(dataset)} (--limit)" if len(data) != len(dataset) else ""
        print(f"evaluating {len(data)}{of} frames of {getattr(dataset, 'name', type(dataset).__name__)}/"
              f"{getattr(dataset, 'split', None)}", file=sys.stderr, flush=True)
    if has_labels:
        run.pixel = {s: PixelMetrics(mode=run.protocol) for s in opts.scores}
        run.extras = PixelExtras(opts.scores, run.protocol, opts.bootstrap, opts.threshold_from)  # issue 23
    run.records = FrameRecords(stage, opts.scores, enabled=has_labels)  # report.html's per-frame data (.frames)
    if s2m is not None:
        from .s2m import S2MEval

        run.s2m_eval = S2MEval(s2m, min_instance_size=run.component_sizes[1],
                               pixel_mode=run.protocol if run.protocol in ("streaming", "exact") else "streaming")
    # pass 2's frame cache under --out (never the system /tmp), removed when the evaluation ends
    cached = list(opts.scores) if opts.components else ([s2m.score] if s2m is not None else [])
    if has_labels and cached:
        run.cache = MapCache(opts.out, rank, cached)
    return run


def report(run: EvalRun, model: Any, t0: float) -> dict[str, Any]:
    """results.json of a finished run: the settings, the timings over ranks and every number."""
    opts, engine, dataset, has_labels = run.opts, run.engine, run.dataset, run.has_labels
    n_total = int(sum(dist.gather(run.n_local)))
    st = dist.gather(engine.stats)
    inf_seconds = max(x["seconds"] for x in st)
    seconds = max(dist.gather(time.perf_counter() - t0))
    min_seg, min_inst = run.component_sizes
    results = {
        "denseood_version": __version__,
        "command": opts.command if opts.command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "root": str(getattr(dataset, "root", "")) or None,
        "n_images": n_total,
        "frames": {str(getattr(dataset, "split", None)): n_total},
        "has_labels": has_labels,
        "protocol": run.protocol if has_labels else None,
        "component_sizes": [int(min_seg), int(min_inst)] if (has_labels and opts.components) else None,
        "checkpoint": {"path": str(opts.checkpoint) if opts.checkpoint is not None else None,
                       "sha256": getattr(model, "checkpoint_sha256", None)},
        "model": model_provenance(model, opts.checkpoint),
        **engine_settings(engine),
        "world_size": dist.world_size(),
        "images_per_s": n_total / inf_seconds if inf_seconds > 0 else 0.0,
        "peak_mem_mb": max(x["peak_mem_mb"] for x in st),
        "peak_mem_kind": "cuda_max_allocated" if engine.device.type == "cuda" else "cpu_max_rss",
        "inference_seconds": inf_seconds,
        "seconds": seconds,
        "scores": run.per_score if has_labels else {},
    }
    results.update(run.extra_top)  # issue 23: bootstrap / threshold_from blocks
    results.update(_extras(run))
    return results


def engine_settings(engine: Any) -> dict[str, Any]:
    """results.json's device, dtype, input_size, sliding_window, overlap, flip, compile: as the engine ran."""
    return {"device": str(engine.device), "dtype": engine.dtype_name,
            "input_size": list(engine.input_size) if engine.input_size else None,
            "sliding_window": list(engine.sliding_window) if engine.sliding_window else None,
            "overlap": engine.overlap if engine.sliding_window else None,
            "flip": engine.flip, "compile": engine.compiled}


def _extras(run: EvalRun) -> dict[str, Any]:
    """The results.json entries a run has only sometimes (convention, submission, s2m, maps, maps_input)."""
    opts, out, scores, extra = run.opts, run.opts.out, run.opts.scores, {}
    convention = getattr(run.dataset, "convention", None)
    if convention is not None:
        extra["dataset_convention"] = dict(convention)
    if not run.has_labels:
        extra["submission"] = {"path": str(out / "submission"), "scores": list(scores), "note": SUBMISSION_NOTE,
                               "metrics": "none: this split has no anomaly labels", "methods": {
                                   s: submission_method(s, scores, opts.method) for s in scores}}
    if run.s2m_results is not None:
        extra["s2m"] = run.s2m_results
        extra["s2m_score"] = run.s2m.score
    if opts.save_maps:
        extra["maps"] = str(out / "maps")
        extra["score_maps"] = {"path": str(out / "score_maps"), "format": opts.save_maps_format}
    if run.from_maps:
        extra["maps_input"] = run.engine.describe()
    return extra


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
def evaluate_checkpoint(options: EvalOptions | None = None, **keywords: Any) -> dict:
    """``denseood eval`` without argv: open ``dataset`` (a benchmark name) under ``root``, load ``checkpoint``,
    evaluate ``scores`` and write results.json / results.md / curves to ``out``.

    options: an :class:`~.options.EvalOptions`, or its fields as keywords (``dataset``, ``root``, ``checkpoint``
    and ``out`` required; e.g. ``evaluate_checkpoint(dataset="synthetic", root=R, checkpoint=C, out=O,
    scores="jsd,msp", input_size="full")``; see EvalOptions for every field and its meaning, e.g. input_size
    None = the image's own size). With ``s2m`` also S2M object masks (``prompter``: learned|peak|auto,
    ``prompt_model``: grabcut | sam:TYPE:PATH). ``echo``: print the results.md table on rank 0. Initialises
    torch.distributed when started by torchrun (and tears it down again). Returns the results dict.
    """
    from denseood.data import open_dataset
    from denseood.models.sources import load_model

    opts = EvalOptions.build(options, keywords)
    if opts.dataset is None or opts.root is None or opts.checkpoint is None:
        raise ConfigError("evaluate_checkpoint needs dataset=, root= and checkpoint= (a load_model spec); for a "
                          "dataset or model object call evaluate(dataset, model, ...)")
    started = dist.init_from_env()
    out_run = open_output(opts.out, opts.overwrite)  # lock + staging, after the options, before any model or data
    try:
        ds = open_dataset(opts.dataset, opts.root, opts.split, **opts.reader_options())
        check_frame_sizes(ds, opts.max_pixels)
        model = load_model(opts.checkpoint, map_location="cpu", num_classes=ds.num_classes, class_set=ds.class_set,
                           weights=opts.weights, trust_code=opts.trust_code)
        pipeline = None
        if opts.s2m and opts.objects == "queries":
            from denseood.s2m.queries import build_query_objects

            pipeline = build_query_objects(model, opts.device, opts.dtype, opts.scores, input_size=opts.input_size)
        elif opts.s2m:
            from denseood.s2m.pipeline import build_s2m

            pipeline = build_s2m(model, opts.prompter, opts.prompt_model, opts.device, opts.dtype, opts.scores,
                                 checkpoint=opts.checkpoint, input_size=opts.input_size)
        res = evaluate(ds, model, opts, s2m=pipeline)
        if opts.echo and dist.is_main():
            print(results_markdown(res))
            print(f"results written to {Path(opts.out) / 'results.json'}")
    finally:
        out_run.close()
        if started:
            dist.cleanup()
    return res
