"""``denseood bench official``: denseood's SMIYC pixel and component metrics against the official
road-anomaly-benchmark code, timed in one run on the same synthetic frames, with the agreement of the numbers.

It needs a local checkout of SegmentMeIfYouCan/road-anomaly-benchmark (``--official DIR`` or the environment
variable ``DENSEOOD_SMIYC_OFFICIAL``); nothing is ever downloaded. The checkout's ``road_anomaly_benchmark``
package is imported from DIR for this run only (sys.path and sys.modules are restored afterwards) and its
registered metrics are used as its evaluator uses them: ``PixBinaryClass`` (``process_frame`` per frame, then
``aggregate``) and ``SegEval-AnomalyTrack`` with ``thresh_p`` set to the best-F1 pixel threshold.

Compatibility with this environment (the official metric code itself is not changed):

* packages the metric path does not use and that are not installed (pandas, IPython: tables and notebook
  display) are replaced by empty stand-in modules while importing;
* ``easydict`` (not installed here) is on the metric path: the stand-in is a dict whose keys are also
  attributes, which is all the metric code asks of it;
* Matplotlib >= 3.9 has no ``matplotlib.cm.get_cmap``, which the official image-display module calls at import
  time for its colour maps; while importing it is given one built on ``matplotlib.colormaps``;
* NumPy >= 2.4 has no ``np.trapz``; while the official code runs it is given ``np.trapezoid`` (the same
  function under its new name).

Every stand-in used is listed in the result (``stand_ins``). Both sides get the same float16 score maps (the
official evaluator stores and reads its maps as float16) and the same uint8 labels (0 inlier, 1 anomaly,
255 void). Seconds cover the per-frame work and the final aggregation. See docs/metrics.md and BENCHMARKS.md.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...errors import ConfigError
from .metrics import _timed, synthetic_frame

OFFICIAL_ENV = "DENSEOOD_SMIYC_OFFICIAL"
PACKAGE = "road_anomaly_benchmark"
PIXEL_CONFIG, SEGMENT_CONFIG = "PixBinaryClass", "SegEval-AnomalyTrack"
#: importable names replaced by empty modules when missing (not used by the metric computations)
OFF_PATH_MODULES = ("pandas", "IPython", "IPython.display")
#: (denseood key, official key) of the compared numbers
PIXEL_KEYS = (("ap", "area_PRC"), ("auroc", "area_ROC"), ("fpr95", "tpr95_fpr"),
              ("best_f1_threshold", "best_f1_threshold"))
COMPONENT_KEYS = (("sIoU", "sIoU_gt"), ("PPV", "prec_pred"), ("mean_F1", "f1_mean"))


class _AttrDict(dict):
    """Stand-in for ``easydict.EasyDict``: a dict whose keys are also attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


@dataclass
class OfficialCode:
    """The official metric objects (from its ``MetricRegistry``) and the stand-ins used to import them."""

    pixel: Any
    segment: Any
    stand_ins: list[str]
    root: str


def resolve_official(path: str | None) -> Path:
    """The checkout folder from ``--official`` or $DENSEOOD_SMIYC_OFFICIAL; ConfigError when absent or wrong."""
    raw = path or os.environ.get(OFFICIAL_ENV)
    if not raw:
        raise ConfigError(f"bench official needs a local checkout of SegmentMeIfYouCan/road-anomaly-benchmark: pass "
                          f"--official DIR or set {OFFICIAL_ENV} (from a git mirror: git --git-dir=MIRROR archive HEAD "
                          f"| tar -x -C DIR); nothing is downloaded")
    root = Path(raw).expanduser()
    if not (root / PACKAGE / "metrics" / "__init__.py").is_file():
        raise ConfigError(f"bench official: {root} has no {PACKAGE}/metrics/__init__.py; point --official (or "
                          f"{OFFICIAL_ENV}) at the top folder of a road-anomaly-benchmark checkout")
    return root


def _stub(name: str) -> types.ModuleType:
    """An empty module whose every public attribute is a do-nothing callable."""
    mod = types.ModuleType(name)

    def attr(key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        return lambda *a, **k: None

    mod.__getattr__ = attr  # type: ignore[attr-defined]
    return mod


@contextlib.contextmanager
def _isolated_import(root: Path) -> Iterator[list[str]]:
    """Make ``root`` importable and missing modules stand-ins; restore sys.path and sys.modules on exit."""
    saved_path, before = list(sys.path), set(sys.modules)
    stand_ins: list[str] = []
    sys.path.insert(0, str(root))
    try:
        for name in OFF_PATH_MODULES:
            top = name.split(".")[0]
            if name not in sys.modules and (top in stand_ins or importlib.util.find_spec(top) is None):
                sys.modules[name] = _stub(name)
                stand_ins.append(name)
        if importlib.util.find_spec("easydict") is None:
            ed = types.ModuleType("easydict")
            ed.EasyDict = _AttrDict  # type: ignore[attr-defined]
            sys.modules["easydict"] = ed
            stand_ins.append("easydict")
        with _matplotlib_compat(stand_ins):
            yield stand_ins
    finally:
        sys.path[:] = saved_path
        for name in set(sys.modules) - before:
            if name == PACKAGE or name.startswith(PACKAGE + ".") or name in stand_ins:
                del sys.modules[name]


@contextlib.contextmanager
def _stand_in_attribute(owner: Any, name: str, value: Any, label: str, stand_ins: list[str]) -> Iterator[None]:
    """``owner.name = value`` while inside, when ``owner`` lacks it (recorded once in ``stand_ins`` as ``label``);
    removed again on exit."""
    added = not hasattr(owner, name)
    if added:
        setattr(owner, name, value)
        if label not in stand_ins:
            stand_ins.append(label)
    try:
        yield
    finally:
        if added:
            delattr(owner, name)


@contextlib.contextmanager
def _matplotlib_compat(stand_ins: list[str]) -> Iterator[None]:
    """``matplotlib.cm.get_cmap`` (removed in Matplotlib 3.9) while importing: the official module of image
    display builds colour maps at import time (visualisation only, not on the metric path)."""
    try:
        import matplotlib
        from matplotlib import cm
    except ImportError:
        yield
        return

    def get_cmap(name: str = "viridis", lut: int | None = None) -> Any:
        c = matplotlib.colormaps[name]
        return c.resampled(lut) if lut else c

    with _stand_in_attribute(cm, "get_cmap", get_cmap, "matplotlib.cm.get_cmap", stand_ins):
        yield


def _numpy_compat(stand_ins: list[str]) -> contextlib.AbstractContextManager:
    """``np.trapz`` as ``np.trapezoid`` while the official code runs (NumPy >= 2.4 removed the old name)."""
    return _stand_in_attribute(np, "trapz", np.trapezoid, "numpy.trapz", stand_ins)


def load_official(root: Path) -> OfficialCode:
    """Import the checkout's metric registry and build its pixel and AnomalyTrack segment metrics."""
    with _isolated_import(root) as stand_ins:
        try:
            metrics = importlib.import_module(f"{PACKAGE}.metrics")
            pixel = metrics.MetricRegistry.get(PIXEL_CONFIG)
            segment = metrics.MetricRegistry.get(SEGMENT_CONFIG)
        except ImportError as e:
            raise ConfigError(f"bench official: importing {PACKAGE} from {root} needs the module {e.name!r}, which "
                              f"is not installed; install it (or check the checkout)") from None
        except (AttributeError, KeyError, ValueError) as e:
            raise ConfigError(f"bench official: {root}/{PACKAGE}/metrics has no registered {PIXEL_CONFIG!r} / "
                              f"{SEGMENT_CONFIG!r} metric ({e}); is it a road-anomaly-benchmark checkout?") from None
    return OfficialCode(pixel=pixel, segment=segment, stand_ins=stand_ins, root=str(root))


def _official_run(metric: Any, data: list[tuple[np.ndarray, np.ndarray]], stand_ins: list[str]) -> Any:
    """The official evaluator's loop: process_frame per frame, then aggregate (its prints are swallowed)."""
    with _numpy_compat(stand_ins), contextlib.redirect_stdout(io.StringIO()):
        results = [metric.process_frame(label_pixel_gt=m, anomaly_p=s, visualize=False) for s, m in data]
        return metric.aggregate(results, method_name="denseood-bench", dataset_name="synthetic")


def _pick(obj: Any, key: str) -> float:
    return float(obj[key] if isinstance(obj, dict) else getattr(obj, key))


def make_frames(frames: int, size: tuple[int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``frames`` synthetic (scores (H,W) float16, ood_mask (H,W) uint8 0/1/255) pairs (bench metrics' frames)."""
    h, w = (int(v) for v in size)
    if frames < 1 or h < 8 or w < 8:
        raise ConfigError(f"bench official needs frames >= 1 and a size of at least 8x8, got {frames} frames of {h}x{w}")
    rng = np.random.default_rng(seed)
    return [(s.astype(np.float16), m) for s, m in (synthetic_frame(rng, h, w) for _ in range(frames))]


def _side(ours: dict, ours_s: float, theirs: Any, theirs_s: float, keys: tuple) -> dict:
    values = {k: (float(ours[k]), _pick(theirs, o)) for k, o in keys}
    return dict(denseood_seconds=ours_s, official_seconds=theirs_s, speedup=theirs_s / ours_s,
                denseood={k: v[0] for k, v in values.items()}, official={k: v[1] for k, v in values.items()},
                max_abs_diff=max(abs(a - b) for a, b in values.values()))


def bench_official(official: OfficialCode, frames: int = 10, size: tuple[int, int] = (1024, 2048),
                   seed: int = 0) -> dict:
    """Time denseood and the official code on the same frames; return seconds, speedups, values, differences.

    The component threshold is denseood's best-F1 pixel threshold, given to both sides (``thresh_p`` of the
    official segment metric as a NumPy float64, as its evaluator reads it from its saved curve)."""
    from ...eval import ComponentMetrics, PixelMetrics

    data = make_frames(frames, size, seed)

    def ours_pixel() -> dict:
        pm = PixelMetrics("smiyc")
        for s, m in data:
            pm.update(s, m)
        return pm.compute()

    pix, pix_s, _ = _timed(ours_pixel)
    off_pix, off_pix_s, _ = _timed(lambda: _official_run(official.pixel, data, official.stand_ins))
    thr = float(pix["best_f1_threshold"])

    def ours_components() -> dict:
        cm = ComponentMetrics(threshold=thr, min_segment_size=500, min_instance_size=100)
        for s, m in data:
            cm.update(s, m)
        return cm.compute()

    comp, comp_s, _ = _timed(ours_components)
    official.segment.cfg.thresh_p = np.float64(thr)
    off_comp, off_comp_s, _ = _timed(lambda: _official_run(official.segment, data, official.stand_ins))
    out = dict(frames=frames, size=[int(v) for v in size], seed=seed, official_root=official.root,
               stand_ins=list(official.stand_ins), threshold=thr, n_gt=comp["n_gt"], n_pred=comp["n_pred"],
               pixel=_side(pix, pix_s, off_pix, off_pix_s, PIXEL_KEYS),
               components=_side(comp, comp_s, off_comp, off_comp_s, COMPONENT_KEYS))
    return out


def format_report(r: dict) -> str:
    """Plain-text summary of a bench_official() result."""
    h, w = r["size"]
    lines = [f"SMIYC metrics, denseood vs official road-anomaly-benchmark ({r['official_root']}): {r['frames']} "
             f"frames of {h}x{w}, seed {r['seed']}",
             f"stand-ins while importing/running the official code: {', '.join(r['stand_ins']) or 'none'}"]
    for key, label in (("pixel", "pixel protocol (PixBinaryClass)"), ("components", "components (SegEval-AnomalyTrack)")):
        v = r[key]
        lines.append(f"{label}: denseood {v['denseood_seconds']:.2f} s, official {v['official_seconds']:.2f} s "
                     f"-> {v['speedup']:.1f}x faster; max |difference| {v['max_abs_diff']:.1e}")
        lines.append("  " + ", ".join(f"{k} {v['denseood'][k]:.6g} / {v['official'][k]:.6g}" for k in v["denseood"]))
    lines.append(f"component threshold {r['threshold']:.6g} (denseood's best-F1 pixel threshold); "
                 f"{r['n_gt']} ground-truth and {r['n_pred']} predicted components")
    return "\n".join(lines)


def run(args) -> int:
    """CLI handler of ``denseood bench official`` (args: official, frames, size, seed, json)."""
    from ...config import parse_hw

    root = resolve_official(args.official)
    size = parse_hw(args.size, "--size")
    r = bench_official(load_official(root), frames=args.frames, size=size, seed=args.seed)
    print(format_report(r))
    if args.json:
        from ...io import atomic_write_json

        atomic_write_json(args.json, r)
    return 0


__all__ = ["OFFICIAL_ENV", "OfficialCode", "bench_official", "format_report", "load_official", "make_frames",
           "resolve_official", "run"]
