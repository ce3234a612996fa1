"""``denseood bench segment``: peak resident memory of ``denseood segment`` per input size.

One synthetic JPEG per size (a smooth gradient with a few discs, square) and a tiny random FPN/resnet18
segmenter checkpoint (19 classes, a small train size) are written to a temporary folder; every size runs
``segment_images`` (GrabCut backend, peak prompter, CPU fp32) in a fresh Python process that reports its own
peak RSS (``getrusage(RUSAGE_SELF).ru_maxrss``). Variants: "banded" is ``denseood segment`` as shipped (logit
scores band by band, ``Inference.tile_elements`` values per band); "full-logits", the baseline, is the same code
with ``Inference.tile_elements`` set huge in that child process only, so one band holds the full-size (B,C,H,W)
float32 logits (what resize mode did before banding). Everything else (``work_size``, overlays) is the same in
both, so the difference is the banding alone. The baseline runs for sizes up to ``full_logits_max_mp``. Growth
is the ratio (peak RSS difference) / (pixel difference) between the smallest and the largest size of each
variant, in bytes per input pixel. See docs/architecture.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from ...errors import ConfigError
from ...io import atomic_write_json

#: the bench's variants: ours, then the baseline (one band = full-size logits)
VARIANTS: tuple[str, ...] = ("banded", "full-logits")

#: what each child process runs: argv = image, checkpoint, out, full logits (0/1), work size
_CHILD = """
import json, resource, sys, time
import denseood.commands.segment as S
from denseood.infer import Inference
img, ck, out, full, work = sys.argv[1:6]
if full == "1":  # the baseline: one band of B*C*H*W logit values, i.e. the full-size logits at once
    Inference.tile_elements = 2 ** 62
t = time.perf_counter()
s = S.segment_images([img], ck, out, prompter="peak", prompt_model="grabcut", device="cpu", dtype="fp32",
                     batch_size=1, progress=False, max_pixels=None, work_size=int(work))
print("BENCH " + json.dumps({"peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                             "seconds": time.perf_counter() - t, "objects": s["objects"],
                             "failed": [str(f[1]) for f in s["failed"]]}))
"""


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h,w,3) uint8 BGR: a smooth colour gradient with four coloured discs (compresses well as JPEG)."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.uint8)
    img[..., 0] = (np.arange(w, dtype=np.float32) * (200.0 / max(w - 1, 1))).astype(np.uint8)[None]
    img[..., 1] = (np.arange(h, dtype=np.float32) * (200.0 / max(h - 1, 1))).astype(np.uint8)[:, None]
    img[..., 2] = 90
    r = max(2, min(h, w) // 12)
    for k in range(4):
        c = tuple(int(v) for v in rng.integers(0, 256, 3))
        cv2.circle(img, (int((k + 0.5) * w / 4), h // 2), r, c, -1)
    return img


def side_for(mp: float) -> int:
    """Side of a square image with ``mp`` megapixels (at least 16)."""
    return max(16, int(round((mp * 1e6) ** 0.5)))


def _write_checkpoint(path: Path, train_size: tuple[int, int]) -> Path:
    import torch

    from ...models.checkpoint import save_checkpoint
    from ...models.segmenter import create_segmenter

    torch.manual_seed(0)
    model = create_segmenter("fpn", "resnet18", 19, train_size=train_size, encoder_depth=3,
                             decoder_segmentation_channels=32, decoder_pyramid_channels=32)
    return save_checkpoint(model, path, config={"note": "bench segment"})


def _child(image: Path, ck: Path, out: Path, full_logits: bool, work_size: int, timeout: float | None) -> dict:
    cmd = [sys.executable, "-c", _CHILD, str(image), str(ck), str(out), "1" if full_logits else "0", str(work_size)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    line = next((x for x in p.stdout.splitlines() if x.startswith("BENCH ")), None)
    if p.returncode != 0 or line is None:
        tail = (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit status {p.returncode}"]
        return {"error": f"exit status {p.returncode} ({'killed, likely out of memory' if p.returncode < 0 else tail[0]})"}
    return json.loads(line[len("BENCH "):])


def growth(rows: Sequence[dict]) -> float | None:
    """Bytes of peak RSS per extra input pixel between the smallest and largest measured size of rows."""
    ok = sorted((r for r in rows if "peak_rss_mb" in r), key=lambda r: r["pixels"])
    if len(ok) < 2 or ok[-1]["pixels"] == ok[0]["pixels"]:
        return None
    return (ok[-1]["peak_rss_mb"] - ok[0]["peak_rss_mb"]) * 2**20 / (ok[-1]["pixels"] - ok[0]["pixels"])


def bench_segment(sizes_mp: Sequence[float] = (4, 16, 64), full_logits_max_mp: float = 16,
                  train_size: tuple[int, int] = (64, 128), work_size: int = 2048, timeout: float | None = 1800,
                  progress: bool = True) -> dict:
    """Returns {"rows": [...], "growth_bytes_per_pixel": {variant: float | None}}. Each row: variant ("banded" |
    "full-logits"), megapixels, size "HxW", pixels, jpeg_mb, and peak_rss_mb, seconds, objects or error."""
    if not sizes_mp or min(sizes_mp) <= 0:
        raise ConfigError(f"bench segment: sizes must be positive megapixel counts, got {list(sizes_mp)}")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="denseood-bench-segment-") as tmp:
        tmp = Path(tmp)
        ck = _write_checkpoint(tmp / "model.pt", train_size)
        for k, mp in enumerate(sizes_mp):
            side = side_for(mp)
            image = tmp / f"img_{k}.jpg"
            cv2.imwrite(str(image), synthetic_image(side, side, k), [cv2.IMWRITE_JPEG_QUALITY, 90])
            for variant in VARIANTS:
                if variant == "full-logits" and mp > full_logits_max_mp:
                    continue
                res = _child(image, ck, tmp / f"out_{k}_{variant}", variant == "full-logits", work_size, timeout)
                row = {"variant": variant, "megapixels": round(side * side / 1e6, 3), "size": f"{side}x{side}",
                       "pixels": side * side, "jpeg_mb": round(image.stat().st_size / 2**20, 2)}
                if "error" in res:
                    row["error"] = res["error"]
                else:
                    row.update(peak_rss_mb=round(res["peak_rss_kb"] / 1024.0, 1), seconds=round(res["seconds"], 2),
                               objects=int(res["objects"]))
                rows.append(row)
                if progress:
                    print(format_row(row), file=sys.stderr, flush=True)
            image.unlink()
    return {"rows": rows, "growth_bytes_per_pixel": {v: growth([r for r in rows if r["variant"] == v])
                                                     for v in VARIANTS}}


def format_row(r: dict) -> str:
    tail = r["error"] if "error" in r else f"{r['peak_rss_mb']:9.1f} MiB  {r['seconds']:7.2f} s  {r['objects']} objects"
    return f"{r['variant']:<11} {r['megapixels']:>8.3f} MP  {r['size']:>12}  {tail}"


def run(args: Any) -> int:
    from ...config import parse_hw

    sizes = [float(v) for v in str(args.sizes).split(",") if v.strip()]
    res = bench_segment(sizes, full_logits_max_mp=args.full_logits_max_mp, train_size=parse_hw(args.train_size, "--train-size"),
                        work_size=args.work_size)
    print("variant      megapixels          size  peak RSS / time / objects")
    for r in res["rows"]:
        print(format_row(r))
    for v, g in res["growth_bytes_per_pixel"].items():
        print(f"growth ({v}): " + ("n/a (fewer than two sizes measured)" if g is None else f"{g:.1f} bytes per input pixel"))
    if args.json:
        atomic_write_json(args.json, res)
    return 0
