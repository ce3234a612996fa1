"""Fine-tuning learning-rate sweep on a small synthetic world (issue 24; BENCHMARKS.md "Fine-tuning").

Writes a synthetic world, trains a base model without negatives, then fine-tunes it with --negatives none / flow at
each learning rate for 100 steps (5 % linear warm-up, poly decay) and records validation (jsd AP, mIoU) of the
initial model and at steps 10 and 100 of the run, one JSON line per run in OUT/results.jsonl.
Usage: python tools/finetune_lr_sweep.py OUT [--size 64x128] [--n-train 16] [--n-val 8] [--base-steps 100]
       python tools/finetune_lr_sweep.py OUT --table     (the markdown table of the runs so far)
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def run(cfg_kw: dict) -> dict:
    from denseood.train.config import TrainConfig
    from denseood.train.trainer import Trainer

    cfg = TrainConfig(**cfg_kw)
    tr = Trainer(cfg, progress=False)
    initial = tr.validate() if cfg.init else {}
    t0 = time.time()
    summ = tr.fit()
    vals = {h["step"]: {k[4:]: v for k, v in h.items() if k.startswith("val_")} for h in tr.history
            if "val_miou" in h}
    return {"initial": initial, "vals": vals, "final": summ.get("final"), "seconds": round(time.time() - t0, 1)}


def table(res_file: Path) -> str:
    """Markdown table of OUT/results.jsonl: per run, jsd AP / mIoU % of the initial model, after 10 segmenter steps
    and at the end (the flow's pre-training steps not counted)."""
    rows = ["| negatives | lr | freeze_bn | AP % initial | AP % step 10 | AP % step 100 | mIoU % initial | "
            "mIoU % step 10 | mIoU % step 100 | s |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    pct = (lambda d, k: "–" if k not in d else f"{100 * d[k]:.1f}")
    for line in res_file.read_text().splitlines():
        r = json.loads(line)
        if r["run"] == "base":
            continue
        off = 10 if r["negatives"] == "flow" else 0   # the flow's 10 pre-training steps come first
        v10, v100, ini = r["vals"].get(str(10 + off), {}), r["final"] or {}, r["initial"]
        rows.append(f"| {r['negatives']} | {r['lr']:g} | {r['freeze_bn']} | {pct(ini, 'ap')} | {pct(v10, 'ap')} | "
                    f"{pct(v100, 'ap')} | {pct(ini, 'miou')} | {pct(v10, 'miou')} | {pct(v100, 'miou')} | "
                    f"{r['seconds']:.0f} |")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--table", action="store_true", help="print the table of OUT/results.jsonl and stop")
    ap.add_argument("--size", default="64x128")
    ap.add_argument("--n-train", type=int, default=16)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--base-steps", type=int, default=100)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--lrs", default="1e-3,3e-4,1e-4")
    a = ap.parse_args()
    if a.table:
        print(table(Path(a.out) / "results.jsonl"))
        return
    from denseood.data import synthetic

    out = Path(a.out)
    h, w = (int(v) for v in a.size.split("x"))
    data = out / "data"
    if not (data / "synthetic.json").is_file():
        synthetic.write(data, a.n_train, a.n_val, seed=0, size=(h, w))
    common = dict(dataset="synthetic", root=str(data), arch="fpn", encoder="resnet18", batch_size=4, crop=64,
                  workers=0, device="cpu", val_limit=a.n_val, ckpt_every=0, fit_stats=False)
    base = out / "base" / "model.pt"
    res_file = out / "results.jsonl"
    if not base.is_file():
        r = run({**common, "negatives": "none", "steps": a.base_steps, "lr": 1e-3, "out": str(out / "base"),
                 "val_every": a.base_steps})
        with res_file.open("a") as f:
            f.write(json.dumps({"run": "base", "steps": a.base_steps, **r}) + "\n")
    flow = dict(flow_pretrain_steps=10, lam=1.0, flow_js_weight=0.03, neg_size=(16, 48), flow_hidden=16,
                flow_levels=2)
    plan = [(neg, float(lr), False) for neg in ("none", "flow") for lr in a.lrs.split(",")]
    plan += [("none", 1e-4, True), ("none", 3e-4, True)]
    for neg, lr, fbn in plan:
        name = f"{neg}_lr{lr:g}" + ("_freezebn" if fbn else "")
        kw = {**common, "negatives": neg, "steps": a.steps, "lr": lr, "init": str(base), "out": str(out / name),
              "warmup_steps": max(1, round(0.05 * a.steps)), "val_every": 10, "freeze_bn": fbn,
              **(flow if neg == "flow" else {})}
        r = run(kw)
        with res_file.open("a") as f:
            f.write(json.dumps({"run": name, "negatives": neg, "lr": lr, "freeze_bn": fbn, "steps": a.steps, **r})
                    + "\n")
        print(name, json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
