"""``denseood demo``: the embedded default end to end, on the CPU in minutes, following the NFlowJS paper's
fine-tuning protocol so that the printed table shows what the method does.

1. writes the synthetic road world (Cityscapes-layout training split, SMIYC-layout evaluation split);
2. trains one base FPN/ResNet-18 without negatives, then fine-tunes it twice with the same seed and data order:
   once without negatives, once with NFlowJS flow negatives; trains the S2M prompter on the flow model;
3. evaluates both fine-tunes on the evaluation split (``denseood eval``'s code);
4. segments OOD objects in evaluation images with the flow model (``denseood segment``'s code);

and prints, last and once, the comparison none+msp, none+maxlogit vs flow+jsd (AP, FPR95, inlier mIoU), then the
flow model's full results (``denseood demo``; :func:`run_demo` returns the comparison and prints neither).

Safety: the demo writes only inside ``--out`` and the ``--weights`` file. It refuses an ``--out`` that holds
anything it did not write (recognised by its marker file ``.denseood-demo``), so no user file is ever deleted.
See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from ._common import add_verb

MARKER = ".denseood-demo"


@dataclass(frozen=True)
class DemoSizes:
    size: tuple[int, int]
    n_train: int
    n_val: int
    base_steps: int              # segmenter alone, no negatives
    finetune_steps: int          # segmenter steps of each fine-tune (none / flow)
    flow_pretrain_steps: int     # flow maximum likelihood on inlier crops before the flow fine-tune
    batch_size: int
    crop: int
    prompter_steps: int
    segment_images: int


FULL = DemoSizes(size=(128, 256), n_train=80, n_val=20, base_steps=400, finetune_steps=150, flow_pretrain_steps=100,
                 batch_size=8, crop=128, prompter_steps=100, segment_images=6)
QUICK = DemoSizes(size=(64, 128), n_train=8, n_val=4, base_steps=2, finetune_steps=2, flow_pretrain_steps=2,
                  batch_size=2, crop=64, prompter_steps=2, segment_images=2)
SCORES = ("msp", "maxlogit", "energy", "entropy", "sml", "jsd")


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "demo", help="embedded default end to end: synthetic world -> base + two fine-tunes "
                                          "(none / NFlowJS flow) -> eval -> segment")
    p.add_argument("--out", default="demo_out", help="demo folder (world, runs, results); only a folder the demo "
                                                      "made itself (or an empty one) is accepted")
    p.add_argument("--weights", default="weights/demo.pt",
                   help="where the flow fine-tune's checkpoint is kept; an existing file is reused (with the run in "
                        "--out it was trained with) and never replaced without --overwrite")
    p.add_argument("--retrain", action="store_true", help="train again even when --weights exists (needs --overwrite "
                                                          "to replace an existing --weights file)")
    p.add_argument("--overwrite", action="store_true", help="allow training to replace an existing --weights file")
    p.add_argument("--quick", action="store_true", help="tiny sizes (for tests; needs a scratch --weights)")
    return p


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError

    if args.quick and Path(args.weights) == Path("weights/demo.pt"):
        raise ConfigError("--quick trains a throw-away model: pass --weights to a scratch path, not weights/demo.pt")
    _line_buffered_stdout()   # a log of stdout and stderr together keeps the order the lines were printed in
    res = run_demo(args.out, args.weights, retrain=args.retrain, quick=args.quick, overwrite=args.overwrite)
    print(f"done: results in {res['eval_dir']}, overlays in {res['segment_dir'] / 'overlays'}")
    print(f"report: {(res['eval_dir'] / 'report.html').resolve()}")
    print_tables(res["table"], res["eval_dir"])
    return 0


def _line_buffered_stdout() -> None:
    """Flush stdout at every line (it is block-buffered when it is a file), where the stream allows it."""
    import sys

    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if reconfigure is not None:
        try:
            reconfigure(line_buffering=True)
        except (ValueError, OSError):   # a stream that cannot change its buffering keeps it
            pass


def print_tables(table: str, eval_dir: Path) -> None:
    """The demo's result tables, printed once and last (after every progress line): the none-vs-flow comparison,
    then the flow model's ``results.md``."""
    import sys

    sys.stderr.flush()   # progress lines before the tables in a combined log
    print("\nSame base model, same data order, fine-tuned without negatives vs with NFlowJS flow negatives:\n")
    print(table)
    print(f"\nAll scores and S2M objects of the flow model ({eval_dir / 'results.md'}):\n")
    print((eval_dir / "results.md").read_text(), flush=True)


def claim_out(out: Path) -> None:
    """Make ``out`` the demo's folder: create it with the marker, accept it when it has the marker or is empty,
    refuse anything else (:func:`denseood.outdir.check_out_dir`: ConfigError naming the folder and the way out)."""
    from ..io import atomic_write_text
    from ..outdir import check_out_dir

    check_out_dir(out, True, marker=MARKER, owner="the demo", not_owned="the demo only writes into a folder of its "
                  f"own: pass another --out (e.g. --out {out}/demo)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / MARKER, "written by `denseood demo`; the demo may replace what is in this folder\n")


def _train(sz: DemoSizes, root: Path, out: Path, *, negatives: str, steps: int, init: Path | None,
           quick: bool, **extra) -> dict:
    from ..train.config import TrainConfig
    from ..train.trainer import Trainer

    cfg = TrainConfig(dataset="synthetic", root=str(root), arch="fpn", encoder="resnet18", negatives=negatives,
                      steps=steps, batch_size=sz.batch_size, crop=sz.crop, lr=1e-3, out=str(out),
                      init=None if init is None else str(init), val_every=max(steps // 2, 1),
                      ckpt_every=max(steps // 4, 1), workers=0 if quick else 2, val_limit=20, device="cpu", **extra)
    cfg.validate()
    return Trainer(cfg).fit()


def _evaluate(root: Path, ckpt: Path, out: Path, scores: tuple[str, ...], s2m: bool) -> dict:
    from .eval.runner import evaluate_checkpoint

    return evaluate_checkpoint(dataset="synthetic", root=root, checkpoint=ckpt, out=out, scores=",".join(scores),
                               s2m=s2m, prompter="auto", prompt_model="grabcut", overwrite=True, workers=0,
                               min_segment_size=50, min_instance_size=10, device="cpu")


def comparison_table(none: dict, flow: dict, miou_none: float | None, miou_flow: float | None) -> str:
    """Markdown table none+msp, none+maxlogit, flow+jsd (AP %, FPR95 %, inlier mIoU %) and one sentence."""
    pct = (lambda v: "–" if v is None else f"{100 * v:.1f}")
    rows = [("none", "msp", none["scores"]["msp"], miou_none), ("none", "maxlogit", none["scores"]["maxlogit"], miou_none),
            ("flow (NFlowJS)", "jsd", flow["scores"]["jsd"], miou_flow)]
    lines = ["| fine-tune negatives | score | AP % | FPR95 % | inlier mIoU % |", "|---|---|---:|---:|---:|"]
    lines += [f"| {n} | {s} | {pct(m['ap'])} | {pct(m['fpr95'])} | {pct(mi)} |" for n, s, m, mi in rows]
    best_base = max(rows[:2], key=lambda r: r[2]["ap"])
    gain = 100 * (rows[2][2]["ap"] - best_base[2]["ap"])
    if gain > 0:
        verdict = (f"NFlowJS's flow negatives raise AP by {gain:.1f} points over the best score of the same model "
                   f"fine-tuned without negatives (none+{best_base[1]}).")
    else:
        verdict = (f"At this short CPU budget the effect is NOT there: flow+jsd AP is {-gain:.1f} points below "
                   f"none+{best_base[1]}; longer fine-tuning (BENCHMARKS.md) is needed to see it.")
    return "\n".join(lines) + "\n\n" + verdict


def check_weights(weights: Path, none_ckpt: Path, retrain: bool, overwrite: bool) -> bool:
    """True when the demo must train. An existing ``weights`` file is reused together with ``none_ckpt`` (the run
    it was trained with); training would replace it, which is refused without ``overwrite`` (ConfigError)."""
    from ..errors import ConfigError

    if weights.exists() and not weights.is_file():
        raise ConfigError(f"--weights {weights} is not a file; pass a checkpoint file path")
    train = retrain or not weights.is_file() or not none_ckpt.is_file()
    if train and weights.is_file() and not overwrite:
        why = "--retrain was given" if retrain else f"--out has no run it was trained with ({none_ckpt} is missing)"
        raise ConfigError(f"--weights {weights} exists and training would replace it ({why}); the demo never "
                          f"replaces a file without --overwrite: pass --weights to a new path, or --overwrite")
    return train


def _ensure_world(sz: DemoSizes, data_root: Path) -> None:
    """Write the synthetic world (seed 0) under ``data_root`` unless its manifest already matches ``sz``."""
    import shutil

    from ..data import synthetic

    manifest = data_root / "synthetic.json"
    want = {"n_train": sz.n_train, "n_val": sz.n_val, "size": list(sz.size), "seed": 0}
    have = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if any(have.get(k) != v for k, v in want.items()):
        print(f"[1/4] writing the synthetic road world to {data_root} ({sz.n_train} train, {sz.n_val} eval, "
              f"{sz.size[1]}x{sz.size[0]})")
        if data_root.exists():
            shutil.rmtree(data_root)  # inside the demo's own folder (claim_out checked the marker)
        synthetic.write(data_root, sz.n_train, sz.n_val, seed=0, size=sz.size)
    else:
        print(f"[1/4] synthetic road world already in {data_root}")


def _train_models(sz: DemoSizes, data_root: Path, runs: Path, weights: Path, quick: bool) -> tuple[dict, dict]:
    """Base model, the two fine-tunes (none / flow) and the S2M prompter, in ``runs`` (replaced); the flow
    fine-tune with its prompter becomes ``weights``. Returns the trainer summaries (none, flow)."""
    import shutil

    from ..io import atomic_write_bytes
    from ..train.prompter import store_prompter_in_checkpoint, train_prompter

    flow_small = {"flow_hidden": 16 if quick else 64, "flow_levels": 2 if quick else 3}
    if runs.exists():
        shutil.rmtree(runs)
    print(f"[2/4] base FPN/ResNet-18: {sz.base_steps} steps without negatives")
    _train(sz, data_root, runs / "base", negatives="none", steps=sz.base_steps, init=None, quick=quick,
           fit_stats=False)
    base = runs / "base" / "model.pt"
    print(f"      fine-tune A: {sz.finetune_steps} steps without negatives")
    summ_none = _train(sz, data_root, runs / "finetune_none", negatives="none", steps=sz.finetune_steps,
                       init=base, quick=quick)
    print(f"      fine-tune B (NFlowJS): {sz.flow_pretrain_steps} flow steps, then {sz.finetune_steps} joint steps")
    # the short-schedule recipe measured in BENCHMARKS.md: JS weight 1 for the segmenter (the paper's 0.03
    # hardly moves the JS term in a few hundred steps), the paper's 0.03 for the flow (so its samples stay
    # near the inliers instead of collapsing to a pattern the segmenter rejects trivially)
    summ_flow = _train(sz, data_root, runs / "finetune_flow", negatives="flow", steps=sz.finetune_steps,
                       init=base, quick=quick, flow_pretrain_steps=sz.flow_pretrain_steps, lam=1.0,
                       flow_js_weight=0.03, neg_size=(16, 64), **flow_small)
    atomic_write_bytes(weights, (runs / "finetune_flow" / "model.pt").read_bytes())
    print(f"      S2M prompter (score-to-prompt detector): {sz.prompter_steps} steps")
    prompter = train_prompter(weights, data_root, negatives="flow", steps=sz.prompter_steps,
                              batch_size=min(4, sz.batch_size), crop=sz.crop, device="cpu")
    store_prompter_in_checkpoint(prompter, weights)
    return summ_none, summ_flow


def _segment_some(sz: DemoSizes, data_root: Path, weights: Path, seg_dir: Path) -> dict:
    """``denseood segment`` (GrabCut, CPU) of the first ``sz.segment_images`` evaluation images into ``seg_dir``."""
    from .segment import segment_images

    images = sorted((data_root / "dataset_AnomalyTrack" / "images").iterdir())[: sz.segment_images]
    print(f"[4/4] segmenting OOD objects in {len(images)} driving images -> {seg_dir}/overlays")
    return segment_images(images, weights, seg_dir, overwrite=True, prompt_model="grabcut", device="cpu")


def run_demo(out: str | Path = "demo_out", weights: str | Path = "weights/demo.pt", retrain: bool = False,
             quick: bool = False, overwrite: bool = False) -> dict:
    """Run the demo. Returns {"results", "none_results", "table", "eval_dir", "segment_dir", "weights"}.

    overwrite: allow training to replace an existing ``weights`` file (else it is reused or the demo refuses)."""
    from ..io import atomic_write_json, atomic_write_text

    sz = QUICK if quick else FULL
    out, weights = Path(out), Path(weights)
    runs = out / "runs"
    none_ckpt = runs / "finetune_none" / "model.pt"
    must_train = check_weights(weights, none_ckpt, retrain, overwrite)  # before anything is written
    claim_out(out)
    data_root = out / "data"
    _ensure_world(sz, data_root)

    if must_train:
        summ_none, summ_flow = _train_models(sz, data_root, runs, weights, quick)
        miou = {"none": summ_none.get("final", {}).get("miou"), "flow": summ_flow.get("final", {}).get("miou")}
        atomic_write_json(runs / "miou.json", miou)
    else:
        print(f"[2/4] using existing weights {weights} and {none_ckpt} (pass --retrain to train again)")
        miou_file = runs / "miou.json"
        miou = json.loads(miou_file.read_text()) if miou_file.is_file() else {"none": None, "flow": None}

    eval_dir = out / "eval"
    print(f"[3/4] evaluating both fine-tunes on the synthetic evaluation split -> {eval_dir}")
    res_none = _evaluate(data_root, none_ckpt, out / "eval_none", ("msp", "maxlogit"), s2m=False)
    res = _evaluate(data_root, weights, eval_dir, SCORES, s2m=True)
    table = comparison_table(res_none, res, miou["none"], miou["flow"])

    seg_dir = out / "segment"
    seg = _segment_some(sz, data_root, weights, seg_dir)
    if seg["failed"]:
        from ..errors import DenseOODError

        raise DenseOODError(f"segment failed on {len(seg['failed'])} image(s): {seg['failed'][:3]}")
    atomic_write_text(out / "comparison.md", table + "\n")
    return {"results": res, "none_results": res_none, "table": table, "eval_dir": eval_dir, "segment_dir": seg_dir,
            "weights": weights}
