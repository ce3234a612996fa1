"""``denseood bench infer``: images/s and peak memory of segmenter + jsd score per input size and dtype,
all in one run so the ratios against fp32 are comparable. The model is a random smp one (``arch``/``encoder``)
or, with ``checkpoint``, any ``denseood.load_model`` spec (PATH | hf:DIR | torchvision:NAME:FILE |
python:MODULE:FACTORY). See docs/architecture.md."""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from ...errors import ConfigError
from ...io import atomic_write_json
from ...scores.names import DEFAULT_SCORE

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((512, 1024), (1024, 2048))


def default_dtypes(device: torch.device, compile: bool = False) -> list[str]:
    """fp32, bf16 on CPU; fp32, bf16 (when supported), fp16 on CUDA, plus '<dtype>+compile' variants with compile."""
    if device.type != "cuda":
        base = ["fp32", "bf16"]
    else:
        base = ["fp32", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]
    return base + ([f"{d}+compile" for d in base] if compile else [])


def _dtype_variants(dtypes: Sequence[str]) -> list[tuple[str, str, bool]]:
    """'fp32' | 'bf16' | 'fp16', optionally with '+compile' -> [(spec, dtype, compile)]; ConfigError otherwise."""
    out = []
    for spec in dtypes:
        dt, _, extra = spec.partition("+")
        if extra not in ("", "compile"):
            raise ConfigError(f"unknown dtype variant {spec!r}; use fp32|bf16|fp16 optionally with +compile")
        out.append((spec, dt, extra == "compile"))
    return out


def _bench_model(arch: str, encoder: str, num_classes: int, checkpoint: str | None, weights: str | None,
                 trust_code: bool) -> tuple[torch.nn.Module, str, str | None]:
    """(model, arch, encoder) of the rows: the ``checkpoint`` spec's model (arch = its describe(), encoder None)
    or a random smp ``arch``/``encoder`` one."""
    from ...models.segmenter import create_segmenter
    from ...models.sources import load_model

    if checkpoint is not None:
        model = load_model(checkpoint, map_location="cpu", weights=weights, trust_code=trust_code)
        return model, model.describe(), None
    return create_segmenter(arch, encoder, num_classes), arch, encoder


def _time_setting(model: torch.nn.Module, images: torch.Tensor, dev: torch.device, dt: str, compile: bool,
                  warmup: int, iters: int) -> tuple[float, float]:
    """Seconds of ``iters`` timed ``Inference.predict`` calls (jsd, after ``warmup`` untimed ones) and the
    engine's peak memory (MB) for one dtype setting."""
    from ...infer import Inference

    eng = Inference(model, scores=(DEFAULT_SCORE,), device=str(dev), dtype=dt, input_size=None, compile=compile)
    for _ in range(warmup):
        eng.predict(images)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
    eng.reset_stats()
    t = time.perf_counter()
    for _ in range(iters):
        eng.predict(images)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return time.perf_counter() - t, eng.stats["peak_mem_mb"]


def bench_infer(arch: str = "deeplabv3plus", encoder: str = "resnet50",
                sizes: Sequence[tuple[int, int]] = DEFAULT_SIZES, dtypes: Sequence[str] | None = None,
                batch_size: int = 1, iters: int | None = None, device: str = "auto", warmup: int = 2,
                num_classes: int = 19, compile: bool = False, progress: bool = True,
                checkpoint: str | None = None, weights: str | None = None,
                trust_code: bool = False) -> list[dict]:
    """Time ``Inference.predict`` (segmenter forward under autocast + jsd score on the device).

    checkpoint: a ``load_model`` spec to time instead of a random ``arch``/``encoder`` smp model (then the rows'
    ``arch`` is the model's ``describe()`` and ``encoder`` is None); weights / trust_code: as in ``load_model``.

    dtypes: names 'fp32' | 'bf16' | 'fp16', optionally suffixed '+compile'. iters: timed batches per setting
    (default 20 on CUDA, 3 on CPU) after ``warmup`` untimed ones. Returns one dict per (size, dtype): size, dtype,
    compile, batch_size, iters, images_per_s, ms_per_image, peak_mem_mb (CUDA: max allocated during that setting;
    CPU: process peak RSS, monotonic over the run), speedup_vs_fp32 (same size, same run).
    """
    from ...dist import resolve_device

    dev = resolve_device(device)
    variants = _dtype_variants(default_dtypes(dev, compile) if dtypes is None else dtypes)
    if iters is None:
        iters = 20 if dev.type == "cuda" else 3
    if iters < 1 or batch_size < 1:
        raise ConfigError(f"iters and batch size must be >= 1, got {iters}, {batch_size}")
    model, arch, encoder = _bench_model(arch, encoder, num_classes, checkpoint, weights, trust_code)
    rows: list[dict] = []
    gen = np.random.default_rng(0)
    for h, w in sizes:
        images = torch.from_numpy(gen.integers(0, 256, (batch_size, h, w, 3), dtype=np.uint8))
        if dev.type == "cuda":
            images = images.pin_memory()
        for spec, dt, compiled in variants:
            sec, peak = _time_setting(model, images, dev, dt, compiled, warmup, iters)
            row = {"arch": arch, "encoder": encoder, "size": [h, w], "dtype": dt, "compile": compiled,
                   "device": str(dev), "batch_size": batch_size, "iters": iters,
                   "images_per_s": batch_size * iters / sec, "ms_per_image": 1000.0 * sec / (batch_size * iters),
                   "peak_mem_mb": peak}
            rows.append(row)
            if progress:
                print(f"  {h}x{w} {spec:<14} {row['images_per_s']:8.2f} img/s  {row['peak_mem_mb']:8.0f} MB", flush=True)
        base = next((r for r in rows if r["size"] == [h, w] and r["dtype"] == "fp32" and not r["compile"]), None)
        for r in rows:
            if r["size"] == [h, w]:
                r["speedup_vs_fp32"] = r["images_per_s"] / base["images_per_s"] if base else None
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of ``bench_infer`` rows."""
    mem = "peak GPU MB" if rows and rows[0]["device"].startswith("cuda") else "peak RSS MB"
    lines = [f"| size | dtype | compile | images/s | ms/image | {mem} | x fp32 |", "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        sp = r.get("speedup_vs_fp32")
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['dtype']} | {'yes' if r['compile'] else 'no'} | "
                     f"{r['images_per_s']:.2f} | {r['ms_per_image']:.1f} | {r['peak_mem_mb']:.0f} | "
                     f"{'–' if sp is None else f'{sp:.2f}'} |")
    return "\n".join(lines)


def run(args) -> int:
    """Handler of ``denseood bench infer``."""
    from ...config import parse_hw

    sizes = tuple(parse_hw(s.strip(), "--sizes") for s in args.sizes.split(",") if s.strip())
    ckpt = getattr(args, "checkpoint", None)
    rows = bench_infer(args.arch, args.encoder, sizes=sizes, batch_size=args.batch_size, iters=args.iters,
                       device=args.device, compile=args.compile, checkpoint=ckpt,
                       weights=args.weights, trust_code=args.trust_code)
    name = rows[0]["arch"] if ckpt else f"{args.arch}/{args.encoder}"
    print(f"\n{name} segmenter + jsd score, batch {args.batch_size}, {rows[0]['device']}, "
          f"torch {torch.__version__}\n")
    print(format_table(rows))
    if args.json:
        atomic_write_json(args.json, {"bench": "infer", "torch": torch.__version__, "rows": rows})
        print(f"\nwrote {args.json}")
    return 0


__all__ = ["bench_infer", "default_dtypes", "format_table", "run"]
