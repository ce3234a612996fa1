#!/usr/bin/env python
"""Issue-4 acceptance experiment: the same segmenter fine-tuned with negatives none / void / flow on the synthetic
world, each evaluated with msp, maxlogit, energy, jsd on the held-out evaluation split (one run, one table).

Protocol (as in the NFlowJS paper, which fine-tunes a pre-trained segmenter): one base model is trained without
negatives for ``--base-steps``; every variant then fine-tunes that checkpoint (``--init``) for ``--steps`` with the
same schedule, seed and data order, differing only in its negatives. ``none`` is therefore the fair baseline: the
same number of training steps without negatives. ``--base-steps 0`` trains every variant from scratch instead.

    python tools/compare_negatives.py --out runs/compare --base-steps 800 --steps 400 --flow-js-weight lam,0.03

``--flow-js-weight`` lists the JS weights the flow sees through its samples, one ``flow`` run each (``lam``: the
single joint objective of the paper, run ``train_flow``; a number: run ``train_flow_fjw<number>``). ``--reuse DIR``
takes the synthetic world and the base model of an earlier output folder (e.g. to add a ``--lam`` variant).

Writes OUT/compare.md and OUT/compare.json; every number comes from ``denseood eval`` results.json files.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from denseood.cli import main as cli
from denseood.io import atomic_write_json, atomic_write_text


def _evaluate(data: Path, ckpt: Path, out: Path) -> int:
    return cli(["eval", "--dataset", "synthetic", "--root", str(data), "--checkpoint", str(ckpt),
                "--score", "msp,maxlogit,energy,jsd", "--out", str(out), "--overwrite", "--protocol", "exact", "--workers", "0",
                "--min-segment-size", "50", "--min-instance-size", "10"])


def _criterion(rows: dict) -> list[str]:
    """Issue-4 check per flow row: its jsd AP above and FPR95 below those of ``none`` with msp and with maxlogit, and
    inlier mIoU at most 2 points below ``none``'s."""
    none = next((r for k, r in rows.items() if k.startswith("none")), None)
    if none is None:
        return []
    out = []
    for k, r in rows.items():
        if not k.startswith("flow") or "jsd" not in r["scores"]:
            continue
        js = r["scores"]["jsd"]
        ok = all(js["ap"] > none["scores"][b]["ap"] and js["fpr95"] < none["scores"][b]["fpr95"] for b in ("msp", "maxlogit"))
        drop = 100 * (none["miou"] - r["miou"])
        ok = ok and drop <= 2.0
        out.append(f"- {k} + jsd vs none + msp/maxlogit: AP {100 * js['ap']:.1f} vs "
                   f"{100 * none['scores']['msp']['ap']:.1f}/{100 * none['scores']['maxlogit']['ap']:.1f}, FPR95 "
                   f"{100 * js['fpr95']:.1f} vs {100 * none['scores']['msp']['fpr95']:.1f}/"
                   f"{100 * none['scores']['maxlogit']['fpr95']:.1f}, mIoU drop {drop:.1f} points: "
                   f"{'criterion met' if ok else 'criterion NOT met'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/compare")
    ap.add_argument("--base-steps", type=int, default=800, help="steps of the shared base model (no negatives)")
    ap.add_argument("--steps", type=int, default=400, help="fine-tuning steps of every variant")
    ap.add_argument("--lr", type=float, default=1e-3, help="base learning rate")
    ap.add_argument("--ft-lr", type=float, default=5e-4, help="fine-tuning learning rate")
    ap.add_argument("--lam", type=float, default=1.0,
                    help="weight of the JS loss on negative pixels (the trainer's default 0.03 is too weak to act "
                         "within a few hundred fine-tuning steps; see BENCHMARKS.md)")
    ap.add_argument("--flow-js-weight", default="lam",
                    help="comma list of JS weights the flow sees through its samples, one flow run each; 'lam' = "
                         "--lam (the single joint objective)")
    ap.add_argument("--reuse", default=None, help="output folder whose data/ and base/ to use instead of OUT's")
    ap.add_argument("--neg-size", default="16x64", help="MINxMAX side of the pasted negatives in px")
    ap.add_argument("--flow-lr", type=float, default=1e-3)
    ap.add_argument("--flow-pretrain-steps", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-train", type=int, default=80)
    ap.add_argument("--n-val", type=int, default=30)
    ap.add_argument("--size", default="128x256")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--negatives", default="none,void,flow")
    args = ap.parse_args()
    out = Path(args.out)
    h, w = (int(v) for v in args.size.split("x"))
    src = Path(args.reuse) if args.reuse else out
    if args.reuse and not (src / "data" / "synthetic.json").is_file():
        raise SystemExit(f"--reuse {src}: no synthetic world in {src / 'data'}")
    data = src / "data"
    fjws = [None if v.strip() == "lam" else float(v) for v in args.flow_js_weight.split(",")]
    if not (data / "synthetic.json").is_file():
        from denseood.data import synthetic

        synthetic.write(data, args.n_train, args.n_val, seed=0, size=(h, w))
    common = ["--dataset", "synthetic", "--root", str(data), "--arch", "fpn", "--encoder", "resnet18",
              "--batch-size", str(args.batch_size), "--crop", str(args.crop), "--seed", str(args.seed),
              "--set", "val_every=0", "--set", "fit_stats=false", "--set", "workers=1"]
    init: list[str] = []
    lr = args.lr
    if args.base_steps:
        base = src / "base"
        if not (base / "model.pt").is_file():
            if base.exists():
                shutil.rmtree(base)
            rc = cli(["train", *common, "--negatives", "none", "--steps", str(args.base_steps), "--lr", str(args.lr),
                      "--out", str(base), "--set", f"ckpt_every={args.base_steps}"])
            if rc:
                return rc
        init, lr = ["--init", str(base / "model.pt")], args.ft_lr
    rows = {}
    if args.base_steps:
        rc = _evaluate(data, base / "model.pt", out / "eval_base")
        if rc:
            return rc
        res = json.loads((out / "eval_base" / "results.json").read_text())
        summary = json.loads((base / "summary.json").read_text())
        rows[f"base ({args.base_steps} steps)"] = {"scores": res["scores"], "miou": summary.get("final", {}).get("miou")}
    variants: list[tuple[str, str, float | None]] = []   # (run name, negatives, flow JS weight)
    for neg in args.negatives.split(","):
        if neg == "flow":
            variants += [("flow" if v is None else f"flow_fjw{v:g}", neg, v) for v in fjws]
        else:
            variants.append((neg, neg, None))
    for name, neg, fjw in variants:
        run = out / f"train_{name}"
        if not (run / "model.pt").is_file():
            if run.exists():
                shutil.rmtree(run)
            rc = cli(["train", *common, *init, "--negatives", neg, "--steps", str(args.steps), "--lr", str(lr),
                      "--out", str(run), "--set", f"ckpt_every={args.steps}", "--set", f"lam={args.lam}",
                      "--set", f"flow_lr={args.flow_lr}", "--set", f"flow_pretrain_steps={args.flow_pretrain_steps}",
                      "--set", f"neg_size=[{args.neg_size.replace('x', ',')}]",
                      *([] if fjw is None else ["--set", f"flow_js_weight={fjw}"])])
            if rc:
                return rc
        ev = out / f"eval_{name}"
        rc = _evaluate(data, run / "model.pt", ev)
        if rc:
            return rc
        res = json.loads((ev / "results.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        label = neg
        if neg == "flow":
            label = f"flow (lam {args.lam:g}, flow JS weight {'= lam' if fjw is None else f'{fjw:g}'})"
        elif neg != "none":
            label = f"{neg} (lam {args.lam:g})"
        rows[f"{label} (+{args.steps} steps)" if args.base_steps else label] = {
            "scores": res["scores"], "miou": summary.get("final", {}).get("miou"), "train_seconds": summary.get("seconds"),
            "flow_heldout_bpd": summary.get("flow_heldout_bpd")}
    lines = ["| negatives | score | AP % | FPR95 % | AUROC % | sIoU % | PPV % | mean F1 % | inlier mIoU % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for neg, r in rows.items():
        for sc, m in r["scores"].items():
            f = lambda k: "n/a" if m.get(k) is None else f"{100 * m[k]:.1f}"
            lines.append(f"| {neg} | {sc} | {f('ap')} | {f('fpr95')} | {f('auroc')} | {f('sIoU')} | {f('PPV')} | "
                         f"{f('mean_F1')} | {100 * r['miou']:.1f} |" if r["miou"] is not None else "")
    lines += ["", *_criterion(rows)]
    atomic_write_text(out / "compare.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "compare.json", rows)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
