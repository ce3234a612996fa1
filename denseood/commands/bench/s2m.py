"""``denseood bench s2m``: images/s of the S2M stage (prompts from an anomaly map + promptable mask model).

Rows: the GrabCut backend with the peak prompter (CPU; no weights) and, when a CUDA device is present and
``weights/sam_vit_b_01ec64.pth`` exists, SAM ViT-B in fp32 and bf16 (autocast) at 1024x2048 with the speedup of
bf16 over fp32 from the same run. Inputs are procedural scenes (coloured discs on a texture) with a soft
anomaly map over the discs, so every frame gives the same number of prompts. The segmenter's own throughput
is measured by ``denseood bench infer``; these figures exclude it.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ...errors import ConfigError
from ...io import atomic_write_json

SAM_WEIGHTS = Path("weights") / "sam_vit_b_01ec64.pth"


def make_scene(h: int, w: int, n_objects: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(image (h,w,3) uint8, anomaly map (h,w) float32): n coloured discs on a noisy texture, map = blurred discs."""
    img = np.clip(np.array([90, 110, 80], np.float32) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
    amap = np.zeros((h, w), np.float32)
    r = max(4, min(h, w) // 10)
    for k in range(n_objects):
        cx = int((k + 0.5) * w / n_objects)
        cy = int(h * (0.4 + 0.2 * rng.random()))
        col = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(img, (cx, cy), r, col, -1)
        cv2.circle(amap, (cx, cy), r, 0.5, -1)
    amap = cv2.GaussianBlur(amap, (0, 0), max(1.0, r / 8)) + rng.normal(0, 0.02, (h, w)).astype(np.float32)
    return img, amap


def _time_stage(s2m: Any, scenes: list[tuple[np.ndarray, np.ndarray]], iters: int, warmup: int, cuda: bool) -> dict:
    for i in range(warmup):
        s2m.segment_from_map(*scenes[i % len(scenes)])
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    parts = {"prompts": 0.0, "masks": 0.0}
    n_obj = 0
    for i in range(iters):
        r = s2m.segment_from_map(*scenes[i % len(scenes)])
        parts["prompts"] += r.timing["prompts"]
        parts["masks"] += r.timing["masks"]
        n_obj += len(r)
    if cuda:
        torch.cuda.synchronize()
    sec = time.perf_counter() - t
    return {"images_per_s": iters / sec, "ms_per_image": 1000.0 * sec / iters,
            "ms_prompts": 1000.0 * parts["prompts"] / iters, "ms_masks": 1000.0 * parts["masks"] / iters,
            "objects_per_image": n_obj / iters, "iters": iters}


def bench_s2m(sizes: Sequence[tuple[int, int]] | None = None, sam_sizes: Sequence[tuple[int, int]] | None = None,
              frames: int = 4, iters: int | None = None, objects: int = 3, device: str = "auto",
              sam_weights: str | Path = SAM_WEIGHTS, progress: bool = True) -> dict:
    """Returns {"rows": [...], "skipped": [reasons]}. Each row: backend, device, dtype, size, images_per_s,
    ms_per_image, ms_prompts, ms_masks, objects_per_image, iters (+ speedup_vs_fp32 for SAM bf16)."""
    from ...dist import resolve_device
    from ...s2m.pipeline import S2M
    from ...s2m.promptable import GrabCutBackend, SamBackend
    from ...s2m.prompts import PeakPrompter

    dev = resolve_device(device)
    sizes = list(sizes or [(512, 1024)])
    sam_sizes = list(sam_sizes or [(1024, 2048)])
    if frames < 1 or objects < 1:
        raise ConfigError(f"frames and objects must be >= 1, got {frames}, {objects}")
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    skipped: list[str] = []
    for h, w in sizes:
        scenes = [make_scene(h, w, objects, rng) for _ in range(frames)]
        s2m = S2M(None, PeakPrompter(), GrabCutBackend(), device="cpu", dtype="fp32")
        row = {"backend": "grabcut", "prompter": "peak", "device": "cpu", "dtype": "fp32", "size": [h, w],
               **_time_stage(s2m, scenes, iters or frames, 1, False)}
        rows.append(row)
        if progress:
            print(f"  grabcut   {h}x{w} cpu  fp32 {row['images_per_s']:8.2f} img/s", flush=True)
    sam_path = Path(sam_weights)
    if dev.type != "cuda":
        skipped.append("SAM ViT-B bf16 vs fp32: skipped, no CUDA device (pass --device cuda on a GPU machine)")
    elif not sam_path.is_file():
        skipped.append(f"SAM ViT-B bf16 vs fp32: skipped, {sam_path} not found (download the official "
                       f"sam_vit_b_01ec64.pth into weights/)")
    else:
        for h, w in sam_sizes:
            scenes = [make_scene(h, w, objects, rng) for _ in range(frames)]
            base = None
            for dt in ("fp32", "bf16"):
                if dt == "bf16" and not torch.cuda.is_bf16_supported():
                    skipped.append("SAM bf16: the GPU does not support bfloat16")
                    continue
                backend = SamBackend("vit_b", sam_path, device=str(dev), dtype=dt)
                s2m = S2M(None, PeakPrompter(), backend, device=dev, dtype=dt)
                torch.cuda.reset_peak_memory_stats(dev)
                row = {"backend": "sam_vit_b", "prompter": "peak", "device": torch.cuda.get_device_name(dev),
                       "dtype": dt, "size": [h, w], **_time_stage(s2m, scenes, iters or max(frames, 10), 2, True),
                       "peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2 ** 20}
                if dt == "fp32":
                    base = row["images_per_s"]
                elif base:
                    row["speedup_vs_fp32"] = row["images_per_s"] / base
                rows.append(row)
                if progress:
                    print(f"  sam_vit_b {h}x{w} cuda {dt} {row['images_per_s']:8.2f} img/s", flush=True)
                del backend, s2m
                torch.cuda.empty_cache()
    return {"rows": rows, "skipped": skipped}


def format_table(rows: list[dict]) -> str:
    head = "| backend | size | device | dtype | images/s | ms/image | ms prompts | ms masks | objects/image | vs fp32 |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        sp = f"{r['speedup_vs_fp32']:.2f}x" if "speedup_vs_fp32" in r else ""
        lines.append(f"| {r['backend']} | {r['size'][0]}x{r['size'][1]} | {r['device']} | {r['dtype']} | "
                     f"{r['images_per_s']:.2f} | {r['ms_per_image']:.1f} | {r['ms_prompts']:.1f} | {r['ms_masks']:.1f} | "
                     f"{r['objects_per_image']:.1f} | {sp} |")
    return "\n".join(lines)


def run(args: Any) -> int:
    """Handler of ``denseood bench s2m``: --sizes applies to both backends, --frames scenes, --iters timed frames."""
    from ...config import parse_hw

    sizes = None
    if args.sizes:
        sizes = [parse_hw(s.strip(), "--sizes") for s in str(args.sizes).split(",") if s.strip()]
    res = bench_s2m(sizes=sizes, sam_sizes=sizes, frames=args.frames, iters=args.iters, device=args.device)
    print(format_table(res["rows"]))
    for s in res["skipped"]:
        print(s)
    if args.json:
        atomic_write_json(args.json, {"bench": "s2m", "torch": torch.__version__, **res})
        print(f"wrote {args.json}")
    return 0

__all__ = ["bench_s2m", "format_table", "make_scene", "run"]
