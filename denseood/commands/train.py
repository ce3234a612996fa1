"""``denseood train``: train or fine-tune a segmenter (NFlowJS with ``--negatives flow``), one process or torchrun DDP.

The Python-level verb is ``denseood.train.trainer.Trainer(cfg, resume=False).fit()`` with a
``denseood.train.config.TrainConfig``; this module builds that config from ``--config FILE`` (a TrainConfig YAML),
the explicit options and ``--set KEY=VALUE`` overrides, in that order. See docs/architecture.md.
"""
from __future__ import annotations

import argparse

from ..models.names import HEADS
from ..train.names import AMP_MODES
from ._common import add_code_options, add_verb, positive_float, positive_int

#: TrainConfig fields that have their own command-line option (same name, dashes for underscores)
CLI_KEYS = ("dataset", "root", "val_root", "arch", "encoder", "encoder_weights", "negatives", "steps", "batch_size",
            "crop", "lr", "out", "init", "init_weights", "amp", "device", "seed", "sync_bn", "head")

#: the files a training run writes into --out (removed by --overwrite together with the manifest's list)
TRAIN_OUTPUTS = ("config.yaml", "last.pt", "best.pt", "model.pt", "summary.json", "flow_samples.png",
                 "flow_samples_pretrain.png")

_DESCRIPTION = """train / fine-tune a segmenter (NFlowJS with --negatives flow)

Every setting is a TrainConfig field: give a YAML file of fields with --config, the options below override it,
and --set KEY=VALUE overrides any field (e.g. --set flow_pretrain_steps=500 --set neg_size=[16,96]).
Options shown with default None take the TrainConfig (or --config) value. DDP: torchrun --nproc_per_node N -m denseood train ..."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = add_verb(subparsers, "train", help="train / fine-tune a segmenter (NFlowJS with --negatives flow)",
                 description=_DESCRIPTION)
    p.add_argument("--config", default=None, metavar="FILE",
                   help="TrainConfig YAML (any TrainConfig field); command-line options and --set override it")
    p.add_argument("--dataset", default=None, help="training dataset: cityscapes | streethazards | synthetic (TrainConfig default: synthetic)")
    p.add_argument("--root", default=None, help="training dataset root in its official layout (required here or in --config)")
    p.add_argument("--val-root", default=None, help="validation dataset root (default: --root)")
    p.add_argument("--arch", default=None, help="segmenter architecture, e.g. fpn | unet (TrainConfig default: fpn)")
    p.add_argument("--encoder", default=None, help="encoder name, e.g. resnet18 (TrainConfig default)")
    p.add_argument("--encoder-weights", default=None, help="local encoder weight file (no downloads)")
    p.add_argument("--negatives", default=None, help="negative source: flow | void | paste:DIR | none (TrainConfig default: flow)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="joint (or plain, without negatives) training steps; with --negatives flow the flow's "
                        "pre-training steps (flow_pretrain_steps, default 200) come first, on top of these: the run "
                        "has flow_pretrain_steps + --steps steps, and its progress line names the phase")
    p.add_argument("--batch-size", type=positive_int, default=None, help="global batch size (split evenly over DDP ranks)")
    p.add_argument("--crop", type=positive_int, default=None, help="square training crop side in pixels")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="segmenter learning rate (peak of the schedule; TrainConfig default 1e-3, with --init the "
                        "fine-tuning default 3e-4 and a 5%% warm-up)")
    p.add_argument("--out", default=None, help="run folder (config.yaml, last.pt, best.pt, model.pt, summary.json)")
    p.add_argument("--init", default=None, help="model to fine-tune: denseood checkpoint .pt | hf:DIR | torchvision:NAME:FILE | python:MODULE:FACTORY (then --arch/--encoder are ignored)")
    add_code_options(p, "--init", "--init-weights")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the denseood run in a non-empty --out (a folder with denseood's manifest)")
    p.add_argument("--amp", default=None, choices=AMP_MODES,
                   help="mixed precision of the segmenter (fp16 uses a GradScaler, CUDA only)")
    p.add_argument("--device", default=None,
                   help="auto | cpu | cuda | cuda:N (auto: this rank's GPU under torchrun, else cuda when available, else cpu)")
    p.add_argument("--seed", type=int, default=None, help="seed of the data order, augmentation, negatives and initial weights")
    p.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm across DDP ranks (CUDA + torchrun only)")
    p.add_argument("--head", default=None, choices=HEADS,
                   help="abet: add AbeT's learned temperature head (logits / T(x) in the CE; inlier data only, so "
                        "--negatives none; score it with --score abet)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any TrainConfig field (VALUE is YAML); repeatable")
    return p


def config_from_args(args: argparse.Namespace):
    """TrainConfig from ``--config`` YAML, then explicit CLI options, then ``--set key=value`` overrides."""
    import yaml

    from denseood.config import from_dict, load_yaml, to_dict
    from denseood.errors import ConfigError
    from denseood.train.config import TrainConfig
    from denseood.train.finetune import apply_finetune_defaults

    cfg = load_yaml(TrainConfig, args.config) if args.config else TrainConfig()
    data = to_dict(cfg)
    given = _config_file_keys(args.config)   # every field the user set, for the fine-tuning defaults
    for k in CLI_KEYS:
        v = getattr(args, k)
        if v is not None:
            data[k] = v
            given.add(k)
    for item in args.set:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        data[k.strip()] = yaml.safe_load(v)
        given.add(k.strip())
    applied = apply_finetune_defaults(data, given)
    if applied:
        print("fine-tuning defaults (--init): " + ", ".join(applied) + " (set them with --lr / --set to change)")
    return from_dict(TrainConfig, data, "train options")


def _config_file_keys(path: str | None) -> set[str]:
    """The top-level keys of the --config YAML (empty without one)."""
    import yaml

    if not path:
        return set()
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    return set(data) if isinstance(data, dict) else set()


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from denseood import dist
    from denseood.errors import ConfigError
    from denseood.outdir import open_output
    from denseood.train.trainer import Trainer

    cfg = config_from_args(args)
    out = Path(cfg.out)
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it; pass only one of them")
    if not args.resume and out.is_dir() and (out / "last.pt").exists() and not args.overwrite:
        raise ConfigError(f"--out {out} already holds a run (last.pt); pass --resume to continue it, --overwrite "
                          f"to replace it, or choose another --out")
    run_out = open_output(out, bool(args.overwrite), stage=False, alternative="--resume to continue it", resume=bool(args.resume),
                          outputs=TRAIN_OUTPUTS, info={"verb": "train", "model": {"init": cfg.init, "arch": cfg.arch,
                                                                                   "encoder": cfg.encoder}})
    try:
        trainer = Trainer(cfg, resume=bool(args.resume), trust_code=bool(args.trust_code))  # data and model load before the old run is removed
        run_out.remove_previous()
        summary = _fit(trainer)
        run_out.commit()
        if dist.is_main():
            print(f"trained {summary['steps']} steps in {summary['seconds']:.1f}s; checkpoints in {out}")
            if summary.get("final"):
                print("final validation: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["final"].items()))
    finally:
        run_out.close()
        dist.cleanup()
    return 0


def _fit(trainer) -> dict:
    """``trainer.fit()``, and for a fine-tune the validation of the initial model first and the comparison with it
    at the end (one warning line on stderr when AP or mIoU got worse; best.pt the best of the two)."""
    import sys

    from denseood import dist
    from denseood.train.finetune import finish_finetune, snapshot_initial, steps_line

    if dist.is_main():
        print(steps_line(trainer.cfg), flush=True)
    initial = snapshot_initial(trainer)
    if initial is not None and dist.is_main():
        print("initial validation: " + ", ".join(f"{k}={v:.4f}" for k, v in initial.metrics.items()), flush=True)
    summary = trainer.fit()
    warning = finish_finetune(trainer, initial, summary)
    if warning and dist.is_main():
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return summary
