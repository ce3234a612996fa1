#!/usr/bin/env python
"""Issue-4 acceptance experiment: the same segmenter trained with negatives none / void / flow on the synthetic
world, each evaluated with msp, maxlogit, energy, jsd on the held-out evaluation split (one run, one table).

    python tools/compare_negatives.py --out runs/compare --steps 600

Writes OUT/compare.md and OUT/compare.json; every number comes from ``denseood eval`` results.json files.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from denseood.cli import main as cli
from denseood.io import atomic_write_json, atomic_write_text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--flow-pretrain-steps", type=int, default=150)
    ap.add_argument("--n-train", type=int, default=120)
    ap.add_argument("--n-val", type=int, default=40)
    ap.add_argument("--size", default="192x384")
    ap.add_argument("--crop", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--negatives", default="none,void,flow")
    args = ap.parse_args()
    out = Path(args.out)
    h, w = (int(v) for v in args.size.split("x"))
    data = out / "data"
    if not (data / "synthetic.json").is_file():
        from denseood.data import synthetic

        synthetic.write(data, args.n_train, args.n_val, seed=0, size=(h, w))
    rows = {}
    for neg in args.negatives.split(","):
        run = out / f"train_{neg}"
        t0 = time.perf_counter()
        if not (run / "model.pt").is_file():
            if run.exists():
                shutil.rmtree(run)
            rc = cli(["train", "--dataset", "synthetic", "--root", str(data), "--negatives", neg, "--arch", "fpn",
                      "--encoder", "resnet18", "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                      "--crop", str(args.crop), "--lr", "1e-3", "--out", str(run), "--seed", "0",
                      "--set", f"flow_pretrain_steps={args.flow_pretrain_steps}", "--set", "val_every=0",
                      "--set", f"ckpt_every={args.steps}", "--set", "fit_stats=false", "--set", "workers=1", "--set", "val_limit=30"])
            if rc:
                return rc
        train_s = time.perf_counter() - t0
        ev = out / f"eval_{neg}"
        rc = cli(["eval", "--dataset", "synthetic", "--root", str(data), "--checkpoint", str(run / "model.pt"),
                  "--score", "msp,maxlogit,energy,jsd", "--out", str(ev), "--overwrite", "--exact", "--workers", "0",
                  "--min-segment-size", "50", "--min-instance-size", "10"])
        if rc:
            return rc
        res = json.loads((ev / "results.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        rows[neg] = {"scores": res["scores"], "miou": summary.get("final", {}).get("miou"), "train_seconds": train_s}
    lines = ["| negatives | score | AP % | FPR95 % | AUROC % | sIoU % | PPV % | mean F1 % | inlier mIoU % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for neg, r in rows.items():
        for sc, m in r["scores"].items():
            f = lambda k: "n/a" if m.get(k) is None else f"{100 * m[k]:.1f}"
            lines.append(f"| {neg} | {sc} | {f('ap')} | {f('fpr95')} | {f('auroc')} | {f('sIoU')} | {f('PPV')} | "
                         f"{f('mean_F1')} | {100 * r['miou']:.1f} |" if r["miou"] is not None else "")
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "compare.json", rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
