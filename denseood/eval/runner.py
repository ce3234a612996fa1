"""``denseood eval``: anomaly scores of a segmenter checkpoint on a benchmark split -> metrics, tables, curves.

Pass 1 runs inference once over the data and feeds the pixel metrics of every score; each score's maps are
kept on disk (float16 ``.npy`` in a temporary folder, never in memory) for pass 2, which computes the component
metrics (sIoU, PPV, mean F1) at each score's best-F1 threshold and deletes the folder. Under ``torchrun`` every
rank evaluates its own exact share of the frames (no duplicated frames), metric states are reduced over ranks
and only rank 0 writes the summary files (per-frame maps are written by the rank that scored the frame).
A split without anomaly labels (e.g. SMIYC test) yields score maps for submission instead of metrics.
"""
from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .. import dist
from .._version import __version__
from ..errors import ConfigError, DatasetError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, write_png

PROTOCOLS = ("streaming", "exact", "smiyc", "caos")

#: keys of each score's entry in results.json
PIXEL_KEYS = ("ap", "fpr95", "auroc", "threshold_at_tpr95", "best_f1", "best_f1_threshold", "n_pixels", "n_anomaly")
COMPONENT_KEYS = ("sIoU", "PPV", "mean_F1", "F1_per_threshold")

SUBMISSION_NOTE = (
    "One float16 (H,W) anomaly map per frame at the image's resolution, higher = more anomalous: "
    "submission/<score>/<frame id>.npy. The official road-anomaly-benchmark stores the same array (float16) as "
    "HDF5 file anomaly_p/<method>/<dataset>/<frame id>.hdf5 with dataset name 'value' (gzip level 9); convert with "
    "h5py: h5py.File(dst, 'w').create_dataset('value', data=np.load(src), compression=9).")


# ----------------------------------------------------------------------------------------------- checks
def check_out_dir(out: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to write into an existing non-empty ``out`` unless ``overwrite`` (ConfigError). Returns the Path."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is a file, not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} already exists and is not empty; pass --overwrite to write into it "
                          f"or choose another folder")
    return out


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


def _parse_input_size(text: str | None) -> tuple[int, int] | None | str:
    from ..infer import parse_hw

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


def _thin(curve: dict[str, np.ndarray], n: int = 2000) -> dict[str, np.ndarray]:
    """At most ``n`` points of each curve array (same indices for all keys), for plotting."""
    arrays = {k: np.asarray(v) for k, v in curve.items()}
    length = min((a.shape[0] for a in arrays.values() if a.ndim == 1), default=0)
    if length <= n:
        return arrays
    idx = np.unique(np.linspace(0, length - 1, n).round().astype(int))
    return {k: (a[idx] if a.ndim == 1 and a.shape[0] == length else a) for k, a in arrays.items()}


def _float(v: Any) -> Any:
    """Plain JSON types (numpy/torch -> python, NaN/inf -> None so results.json stays strict JSON)."""
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return _float(v.tolist())
    if isinstance(v, np.generic):
        return _float(v.item())
    if isinstance(v, dict):
        return {str(k): _float(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_float(x) for x in v]
    if isinstance(v, float) and not np.isfinite(v):
        return None
    return v


# ----------------------------------------------------------------------------------------------- evaluation
def evaluate(dataset: Dataset, model: torch.nn.Module, scores: Sequence[str] | str, out: str | os.PathLike, *,
             protocol: str | None = None, batch_size: int = 4, workers: int = 2, limit: int | None = None,
             device: str = "auto", dtype: str = "auto", input_size: tuple[int, int] | None | str = "model",
             sliding_window: tuple[int, int] | None = None, overlap: float = 1 / 3, flip: bool = False,
             compile: bool = False, components: bool = True, save_maps: bool = False, s2m: Any = None,
             overwrite: bool = False, progress: bool = True, checkpoint: str | os.PathLike | None = None,
             command: str | None = None) -> dict:
    """Evaluate ``scores`` of ``model`` on ``dataset`` (a denseood BaseDataset) and write the results to ``out``.

    Returns the results dict (the content of results.json; identical on every rank). Per score: ap, fpr95, auroc,
    threshold_at_tpr95, best_f1, best_f1_threshold (+ n_pixels, n_anomaly) and, with ``components``, sIoU, PPV,
    mean_F1, F1_per_threshold; all fractions in [0, 1]. Call under torchrun after ``dist.init_from_env()`` for a
    multi-process evaluation (every rank must call it).
    """
    from ..infer import Inference, ShardSampler
    from ..scores import parse_scores

    t0 = time.perf_counter()
    scores = parse_scores(scores)
    out = check_out_dir(out, overwrite)
    protocol = resolve_protocol(protocol, False, getattr(dataset, "default_protocol", None))
    has_labels = bool(getattr(dataset, "has_ood_labels", True))
    min_seg, min_inst = getattr(dataset, "component_sizes", (500, 100))
    rank, world = dist.rank(), dist.world_size()
    dist.barrier()  # every rank has checked --out before any rank writes a per-frame file into it

    if device in (None, "auto") and world > 1 and torch.cuda.is_available():
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    engine = Inference(model, scores=scores, device=device, dtype=dtype, input_size=input_size,
                       sliding_window=sliding_window, overlap=overlap, flip=flip, compile=compile)
    data: Dataset = dataset
    if limit is not None:
        if limit <= 0:
            raise ConfigError(f"--limit must be positive, got {limit}")
        data = Subset(dataset, range(min(int(limit), len(dataset))))
    sampler = ShardSampler(len(data), rank, world) if world > 1 else None

    pixel = None
    if has_labels:
        from . import PixelMetrics

        pixel = {s: PixelMetrics(mode=protocol) for s in scores}
    s2m_eval = None
    if s2m is not None:
        if not has_labels:
            raise ConfigError("S2M evaluation needs anomaly labels; this split has none (drop --s2m)")
        from ..s2m.evaluate import S2MEval

        s2m_eval = S2MEval(s2m, min_segment_size=min_seg, min_instance_size=min_inst,
                           pixel_mode=protocol if protocol in ("streaming", "exact") else "streaming")

    tmp = Path(tempfile.mkdtemp(prefix=f"denseood-eval-r{rank}-")) if (has_labels and components) else None
    n_local = 0
    results: dict[str, Any] = {}
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
            maps_np = {s: maps[s].cpu().numpy() for s in scores}
            for j, smp in enumerate(samples):
                rel = _safe_rel(smp.name)
                if tmp is not None:
                    for s in scores:
                        np.save(tmp / f"{s}_{n_local + j}.npy", _to_f16(maps_np[s][j]))
                    np.save(tmp / f"mask_{n_local + j}.npy", masks_np[j])
                if not has_labels:
                    for s in scores:
                        buf = _npy_bytes(_to_f16(maps_np[s][j]))
                        atomic_write_bytes(out / "submission" / s / _with_suffix(rel, ".npy"), buf)
                if save_maps:
                    from ..viz import blend, heatmap

                    for s in scores:
                        write_png(out / "maps" / s / _with_suffix(rel, ".png"),
                                  blend(smp.image, heatmap(maps_np[s][j]), alpha=0.6))
                if s2m_eval is not None:
                    s2m_eval.update(smp.image, maps_np[s2m.score][j].astype(np.float32), smp.ood_mask)
            n_local += len(samples)

        n_total = int(sum(dist.all_gather_object(n_local)))
        per_score: dict[str, dict[str, Any]] = {s: {} for s in scores}
        curves: dict[str, dict[str, np.ndarray]] = {}
        if has_labels:
            for s in scores:
                m = pixel[s].compute()  # collective under DDP
                per_score[s].update({k: _float(m[k]) for k in m})
                curves[s] = {k: np.asarray(v) for k, v in pixel[s].curves().items()}
                pixel[s] = None  # free the metric state before pass 2
            # ------------------------------------------------------------ pass 2: component metrics
            if components:
                from . import ComponentMetrics

                from tqdm import tqdm

                for s in scores:
                    thr = per_score[s]["best_f1_threshold"]
                    cm = ComponentMetrics(threshold=float(thr), min_segment_size=min_seg, min_instance_size=min_inst)
                    for i in tqdm(range(n_local), desc=f"components {s}", unit="img", leave=False,
                                  disable=not (progress and rank == 0)):
                        amap = np.load(tmp / f"{s}_{i}.npy").astype(np.float32)[None]
                        mask = np.load(tmp / f"mask_{i}.npy")[None]
                        cm.update(amap, mask)
                    c = cm.compute()  # collective under DDP
                    per_score[s].update({k: _float(c[k]) for k in c})
        s2m_results = _float(s2m_eval.compute()) if s2m_eval is not None else None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if s2m_eval is not None:
            s2m_eval.close()

    # ------------------------------------------------------------------------ timings over ranks
    st = dist.all_gather_object(engine.stats)
    inf_seconds = max(x["seconds"] for x in st)
    seconds = max(dist.all_gather_object(time.perf_counter() - t0))
    ckpt_path = checkpoint if checkpoint is not None else None
    results = {
        "denseood_version": __version__,
        "command": command if command is not None else " ".join(shlex.quote(a) for a in sys.argv),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", None),
        "root": str(getattr(dataset, "root", "")) or None,
        "n_images": n_total,
        "has_labels": has_labels,
        "protocol": protocol if has_labels else None,
        "component_sizes": [int(min_seg), int(min_inst)] if (has_labels and components) else None,
        "checkpoint": {"path": str(ckpt_path) if ckpt_path is not None else None,
                       "sha256": getattr(model, "checkpoint_sha256", None)},
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
    if not has_labels:
        results["submission"] = {"path": str(out / "submission"), "scores": list(scores), "note": SUBMISSION_NOTE,
                                 "metrics": "none: this split has no anomaly labels"}
    if s2m_results is not None:
        results["s2m"] = s2m_results
        results["s2m_score"] = s2m.score
    if save_maps:
        results["maps"] = str(out / "maps")

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "results.json", results)
        atomic_write_text(out / "results.md", results_markdown(results))
        if curves:
            from ..viz import plot_curves

            thin = {s: _thin(c) for s, c in curves.items()}
            plot_curves(thin, out / "pr_curve.png", kind="pr")
            plot_curves(thin, out / "roc_curve.png", kind="roc")
    dist.barrier()
    return results


def _to_f16(a: np.ndarray) -> np.ndarray:
    """float16 copy of a score map, clipped to the float16 range (scores beyond +-65504 would become inf)."""
    return np.clip(a, -65504.0, 65504.0).astype(np.float16)


def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100.0 * float(v):.2f}"


def results_markdown(results: dict) -> str:
    """Markdown summary: one row per score (AP, FPR95, AUROC, sIoU, PPV, mean F1 in %, images/s, peak memory)."""
    head = (f"# denseood eval: {results['dataset']} ({results['split']}), {results['n_images']} images\n\n"
            f"checkpoint `{results['checkpoint']['path']}` (sha256 {results['checkpoint']['sha256']}), "
            f"device {results['device']}, dtype {results['dtype']}, world size {results['world_size']}, "
            f"protocol {results['protocol']}, denseood {results['denseood_version']}\n\n")
    if not results["has_labels"]:
        return head + ("No anomaly labels in this split: no metrics. Score maps for submission are in "
                       f"`{results['submission']['path']}`.\n\n{SUBMISSION_NOTE}\n")
    rows = ["| score | AP % | FPR95 % | AUROC % | sIoU % | PPV % | mean F1 % | images/s | peak mem MB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, m in results["scores"].items():
        rows.append(f"| {s} | {_pct(m.get('ap'))} | {_pct(m.get('fpr95'))} | {_pct(m.get('auroc'))} | "
                    f"{_pct(m.get('sIoU'))} | {_pct(m.get('PPV'))} | {_pct(m.get('mean_F1'))} | "
                    f"{results['images_per_s']:.2f} | {results['peak_mem_mb']:.0f} |")
    mem = "peak GPU memory allocated" if results.get("peak_mem_kind") == "cuda_max_allocated" else "peak process RSS"
    text = head + "\n".join(rows) + f"\n\nimages/s over all ranks (inference only); peak memory = {mem}.\n"
    if results.get("s2m"):
        used = results.get("s2m_score") or next(iter(results["scores"]), "")
        text += (f"\n## S2M objects (on the {used} map)\n\n| method | IoU % | sIoU % | PPV % | mean F1 % | pixel AP % |\n"
                 "|---|---:|---:|---:|---:|---:|\n")
        for name, m in results["s2m"].items():
            if isinstance(m, dict):
                text += (f"| {name} | {_pct(m.get('iou'))} | {_pct(m.get('sIoU'))} | {_pct(m.get('PPV'))} | "
                         f"{_pct(m.get('mean_F1'))} | {_pct(m.get('pixel_ap'))} |\n")
    return text


# ----------------------------------------------------------------------------------------------- CLI
def main(args) -> int:
    """Handler of ``denseood eval`` (argparse namespace from ``denseood.cli``)."""
    from ..data import open_dataset
    from ..infer import parse_hw
    from ..models.segmenter import load_checkpoint
    from ..scores import parse_scores

    scores = parse_scores(args.score)  # before touching data
    check_out_dir(args.out, args.overwrite)
    protocol = resolve_protocol(args.protocol, args.exact, None) if (args.protocol or args.exact) else None
    input_size = _parse_input_size(args.input_size)
    sliding = parse_hw(args.sliding_window, "--sliding-window")
    if sliding is not None and args.input_size is not None:
        raise ConfigError("--sliding-window runs on the full-resolution image; do not combine it with --input-size")
    if sliding is not None:
        input_size = None
    if args.limit is not None and args.limit <= 0:
        raise ConfigError(f"--limit must be positive, got {args.limit}")
    if args.batch_size <= 0:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    started = dist.init_from_env()
    try:
        sizes = {k: v for k, v in (("min_segment_size", getattr(args, "min_segment_size", None)),
                                   ("min_instance_size", getattr(args, "min_instance_size", None))) if v is not None}
        dataset = open_dataset(args.dataset, args.root, args.split, **sizes)
        model = load_checkpoint(args.checkpoint, map_location="cpu", num_classes=dataset.num_classes,
                                class_set=dataset.class_set)
        s2m = _build_s2m(args, model, scores, input_size) if args.s2m else None
        res = evaluate(dataset, model, scores, args.out, protocol=protocol, batch_size=args.batch_size,
                       workers=args.workers, limit=args.limit, device=args.device, dtype=args.dtype,
                       input_size=input_size, sliding_window=sliding, overlap=getattr(args, "overlap", 1 / 3),
                       flip=args.flip, compile=args.compile,
                       components=not args.no_components, save_maps=args.save_maps, s2m=s2m,
                       overwrite=args.overwrite, checkpoint=args.checkpoint)
        if dist.is_main():
            print(results_markdown(res))
            print(f"results written to {Path(args.out) / 'results.json'}")
    finally:
        if started:
            dist.cleanup()
    return 0


def _build_s2m(args, model, scores: list[str], input_size: Any):
    """S2M pipeline for ``--s2m`` (prompter and prompt model from the command line; ConfigError when unavailable)."""
    import importlib.util

    if importlib.util.find_spec("denseood.s2m.pipeline") is None or importlib.util.find_spec("denseood.s2m.evaluate") is None:
        raise ConfigError("--s2m is not available in this build (denseood.s2m.pipeline / denseood.s2m.evaluate "
                          "missing); run without --s2m")
    from ..s2m.pipeline import build_s2m

    device = args.device
    if device in (None, "auto") and dist.world_size() > 1 and torch.cuda.is_available():
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return build_s2m(model, args.prompter, args.prompt_model, device, args.dtype, scores,
                     checkpoint=args.checkpoint, input_size=input_size)
