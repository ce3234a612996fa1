"""``denseood demo``: the embedded default end to end, on CPU in a few minutes.

1. writes the synthetic road world (Cityscapes-layout training split, SMIYC-layout evaluation split);
2. trains a small FPN/ResNet-18 with NFlowJS (flow negatives) unless the weights file exists, then the S2M prompter;
3. evaluates every score on the evaluation split (the same code path as ``denseood eval``) and prints the table;
4. segments OOD objects in the evaluation images (the same code path as ``denseood segment``) and writes overlays.
"""
from __future__ import annotations

import json
import shutil
import sys
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError


@dataclass
class DemoSizes:
    size: tuple[int, int]
    n_train: int
    n_val: int
    pretrain_steps: int          # segmenter alone, no negatives
    flow_pretrain_steps: int     # flow maximum likelihood on inlier crops
    steps: int                   # joint NFlowJS fine-tuning
    batch_size: int
    crop: int
    prompter_steps: int
    segment_images: int


FULL = DemoSizes(size=(128, 256), n_train=80, n_val=20, pretrain_steps=400, flow_pretrain_steps=100, steps=200,
                 batch_size=8, crop=128, prompter_steps=100, segment_images=6)
QUICK = DemoSizes(size=(64, 128), n_train=8, n_val=4, pretrain_steps=2, flow_pretrain_steps=2, steps=4, batch_size=2,
                  crop=64, prompter_steps=2, segment_images=2)


def run_demo(out: str | Path = "demo_out", weights: str | Path = "weights/demo.pt", retrain: bool = False,
             quick: bool = False) -> dict:
    """Run the demo; returns {"results": results.json dict, "segment_dir": Path, "weights": Path}."""
    from .cli import main as cli_main
    from .data import synthetic

    sz = QUICK if quick else FULL
    out = Path(out)
    weights = Path(weights)
    data_root = out / "data"
    manifest = data_root / "synthetic.json"
    want = {"n_train": sz.n_train, "n_val": sz.n_val, "size": list(sz.size), "seed": 0}
    have = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if any(have.get(k) != v for k, v in want.items()):
        print(f"[1/4] writing the synthetic road world to {data_root} ({sz.n_train} train, {sz.n_val} eval, {sz.size[1]}x{sz.size[0]})")
        if data_root.exists():
            shutil.rmtree(data_root)
        synthetic.write(data_root, sz.n_train, sz.n_val, seed=0, size=sz.size)
    else:
        print(f"[1/4] synthetic road world already in {data_root}")

    if retrain or not weights.is_file():
        run_dir = out / "train"
        if run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"[2/4] training FPN/ResNet-18: {sz.pretrain_steps} segmenter steps, {sz.flow_pretrain_steps} flow steps, "
              f"{sz.steps} joint NFlowJS steps -> {weights}")
        # the short-schedule NFlowJS recipe measured in BENCHMARKS.md: JS weight 1 for the segmenter (the paper's
        # 0.03 hardly moves the JS term in a few hundred steps), the paper's 0.03 for the flow (so its samples stay
        # near the inliers instead of collapsing to a pattern the segmenter rejects trivially)
        rc = cli_main(["train", "--dataset", "synthetic", "--root", str(data_root), "--negatives", "flow",
                       "--arch", "fpn", "--encoder", "resnet18", "--steps", str(sz.steps), "--batch-size", str(sz.batch_size),
                       "--crop", str(sz.crop), "--lr", "1e-3", "--out", str(run_dir),
                       "--set", f"pretrain_steps={sz.pretrain_steps}", "--set", f"flow_pretrain_steps={sz.flow_pretrain_steps}",
                       "--set", "lam=1.0", "--set", "flow_js_weight=0.03", "--set", "neg_size=[16,64]",
                       "--set", f"val_every={max(sz.steps // 2, 1)}", "--set", f"ckpt_every={max(sz.steps // 4, 1)}",
                       "--set", f"workers={0 if quick else 2}", "--set", "val_limit=20",
                       "--set", f"flow_hidden={16 if quick else 64}", "--set", f"flow_levels={2 if quick else 3}"])
        if rc:
            raise SystemExit(rc)
        weights.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "model.pt", weights)
        print(f"      training prompter (S2M score-to-prompt detector) for {sz.prompter_steps} steps")
        rc = cli_main(["train-prompter", "--checkpoint", str(weights), "--dataset", "synthetic", "--root", str(data_root),
                       "--negatives", "flow", "--steps", str(sz.prompter_steps), "--batch-size", str(min(4, sz.batch_size)),
                       "--crop", str(sz.crop)])
        if rc:
            raise SystemExit(rc)
    else:
        print(f"[2/4] using existing weights {weights} (pass --retrain to train again)")

    eval_dir = out / "eval"
    print(f"[3/4] evaluating msp, maxlogit, energy, entropy, sml, jsd on the synthetic evaluation split -> {eval_dir}")
    rc = cli_main(["eval", "--dataset", "synthetic", "--root", str(data_root), "--checkpoint", str(weights),
                   "--score", "msp,maxlogit,energy,entropy,sml,jsd", "--out", str(eval_dir), "--overwrite",
                   "--s2m", "--prompter", "auto", "--prompt-model", "grabcut", "--workers", "0",
                   "--min-segment-size", "50", "--min-instance-size", "10"])
    if rc:
        raise SystemExit(rc)
    print((eval_dir / "results.md").read_text())

    seg_dir = out / "segment"
    images = sorted((data_root / "dataset_AnomalyTrack" / "images").iterdir())[: sz.segment_images]
    print(f"[4/4] segmenting OOD objects in {len(images)} driving images -> {seg_dir}/overlays")
    rc = cli_main(["segment", "--images", *map(str, images), "--checkpoint", str(weights), "--out", str(seg_dir),
                   "--overwrite", "--prompt-model", "grabcut"])
    if rc:
        raise SystemExit(rc)
    return {"results": json.loads((eval_dir / "results.json").read_text()), "segment_dir": seg_dir, "weights": weights}


def main(args: Namespace) -> int:
    if args.quick and Path(args.weights) == Path("weights/demo.pt"):
        raise ConfigError("--quick trains a throw-away model: pass --weights to a scratch path, not weights/demo.pt")
    res = run_demo(args.out, args.weights, retrain=args.retrain, quick=args.quick)
    print(f"done: results in {Path(args.out) / 'eval'}, overlays in {res['segment_dir'] / 'overlays'}", file=sys.stderr)
    return 0
