"""Fine-tuning the demo model with ``train --init`` defaults (issue 24; BENCHMARKS.md "Fine-tuning the demo model").

Fine-tunes the demo's flow checkpoint (``denseood demo`` -> weights/demo.pt) on the demo's own world with
--negatives none and flow, 400 steps each, with the fine-tuning defaults of ``denseood train --init``
(denseood.train.finetune: lr, warm-up, BatchNorm) and the demo's batch 8 / crop 128, validating (jsd AP, mIoU on the
same 20 val frames) before the run and at steps 10, 100 and 400 of it. One JSON line per run in OUT/results.jsonl.
Usage: python tools/finetune_demo_table.py --init weights/demo.pt --root demo_out/data OUT [--negatives none,flow]
       python tools/finetune_demo_table.py OUT --table
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

AT = (10, 100, 400)


def run(init: str, root: str, negatives: str, out: Path) -> dict:
    from denseood.train.config import TrainConfig
    from denseood.train.finetune import apply_finetune_defaults
    from denseood.train.trainer import Trainer

    data = dict(dataset="synthetic", root=root, init=init, negatives=negatives, steps=AT[-1], batch_size=8, crop=128,
                val_every=10, val_limit=20, ckpt_every=0, workers=2, device="cpu", fit_stats=False, out=str(out))
    applied = apply_finetune_defaults(data, set())
    cfg = TrainConfig(**data)
    cfg.validate()
    tr = Trainer(cfg, progress=False)
    initial = tr.validate()
    t0 = time.time()
    tr.fit()
    off = cfg.total_steps - cfg.steps   # flow pre-training steps come first
    vals = {h["step"] - off: {k[4:]: v for k, v in h.items() if k.startswith("val_")} for h in tr.history
            if "val_miou" in h}
    return {"negatives": negatives, "defaults": applied, "initial": initial,
            "at": {s: vals.get(s, {}) for s in AT}, "seconds": round(time.time() - t0, 1)}


def table(res_file: Path) -> str:
    rows = ["| negatives | jsd AP % before | step 10 | step 100 | step 400 | mIoU % before | step 10 | step 100 | "
            "step 400 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    pct = (lambda d, k: "–" if k not in d else f"{100 * d[k]:.1f}")
    for line in res_file.read_text().splitlines():
        r = json.loads(line)
        at = r["at"]
        rows.append(f"| {r['negatives']} | {pct(r['initial'], 'ap')} | " + " | ".join(pct(at[str(s)], "ap") for s in AT)
                    + f" | {pct(r['initial'], 'miou')} | " + " | ".join(pct(at[str(s)], "miou") for s in AT) + " |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--init")
    ap.add_argument("--root")
    ap.add_argument("--negatives", default="none,flow")
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    if a.table:
        print(table(out / "results.jsonl"))
        return
    out.mkdir(parents=True, exist_ok=True)
    for neg in a.negatives.split(","):
        r = run(a.init, a.root, neg, out / neg)
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
