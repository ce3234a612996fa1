"""``denseood train --init``: fine-tuning defaults, the step count shown, and the comparison with the initial model
(one warning line and best.pt the best of the two when fine-tuning made the model worse)."""
from __future__ import annotations

import argparse
import json

import pytest

from denseood.commands import train as verb
from denseood.train.finetune import (FINETUNE_LR, apply_finetune_defaults, steps_line, worse_metrics)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="denseood")
    return verb.add_parser(top.add_subparsers(dest="command"))


def test_init_gets_the_fine_tuning_defaults_unless_the_user_set_them(tmp_path, capsys):
    cfg = verb.config_from_args(parser().parse_args(["--root", "/r", "--init", "m.pt", "--steps", "100"]))
    assert (cfg.lr, cfg.warmup_steps, cfg.freeze_bn) == (FINETUNE_LR, 5, False)
    assert "fine-tuning defaults (--init): lr=0.0003, warmup_steps=5" in capsys.readouterr().out
    scratch = verb.config_from_args(parser().parse_args(["--root", "/r", "--steps", "100"]))
    assert (scratch.lr, scratch.warmup_steps) == (1e-3, 0)          # from scratch: TrainConfig's own values
    given = verb.config_from_args(parser().parse_args(["--root", "/r", "--init", "m.pt", "--lr", "1e-3",
                                                       "--set", "warmup_steps=0", "--set", "freeze_bn=true"]))
    assert (given.lr, given.warmup_steps, given.freeze_bn) == (1e-3, 0, True)
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.002\n")
    from_file = verb.config_from_args(parser().parse_args(["--config", str(f), "--root", "/r", "--init", "m.pt"]))
    assert from_file.lr == 0.002 and from_file.warmup_steps == 50    # a --config value counts as set
    assert apply_finetune_defaults({"init": None, "steps": 10}, set()) == []


def test_steps_line_counts_flow_pre_training_separately():
    cfg = verb.config_from_args(parser().parse_args(["--root", "/r", "--steps", "10", "--negatives", "flow"]))
    assert steps_line(cfg) == ("training 210 steps: 200 flow pre-training (--set flow_pretrain_steps=N) + 10 joint "
                               "(--steps)")
    none = verb.config_from_args(parser().parse_args(["--root", "/r", "--steps", "10", "--negatives", "none"]))
    assert steps_line(none) == "training 10 steps: 10 segmenter (--steps)"
    assert "flow_pretrain_steps + --steps" in " ".join(parser().format_help().split())


def test_worse_metrics():
    assert worse_metrics({"ap": 0.3, "miou": 0.5, "fpr95": 0.1}, {"ap": 0.2, "miou": 0.5, "fpr95": 0.9}) == ["ap"]
    assert worse_metrics({"miou": 0.5}, {"miou": 0.4, "ap": 0.1}) == ["miou"]
    assert worse_metrics({"ap": 0.3}, {"ap": 0.31}) == []


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from denseood.data import synthetic

    root = tmp_path_factory.mktemp("ft_world")
    synthetic.write(root / "data", n_train=6, n_val=2, seed=3, size=(64, 128), progress=False)
    return root


TINY = ["--dataset", "synthetic", "--arch", "fpn", "--encoder", "resnet18", "--batch-size", "2", "--crop", "48",
        "--device", "cpu", "--set", "workers=0", "--set", "fit_stats=false", "--set", "val_limit=2",
        "--set", "ckpt_every=0"]


@pytest.mark.slow
def test_a_fine_tune_that_gets_worse_says_so_and_keeps_the_initial_model_as_best(world, capsys):
    from denseood.cli import main
    from denseood.models.checkpoint import read_checkpoint

    data, base = world / "data", world / "base"
    assert main(["train", "--root", str(data), "--out", str(base), "--negatives", "none", "--steps", "12",
                 "--lr", "1e-3", *TINY, "--set", "val_every=0"]) == 0
    capsys.readouterr()
    ft = world / "bad"
    # a deliberately bad learning rate: 0.5 ruins the trained weights in three steps
    assert main(["train", "--root", str(data), "--out", str(ft), "--init", str(base / "model.pt"), "--negatives",
                 "none", "--steps", "3", "--lr", "0.5", *TINY, "--set", "val_every=3"]) == 0
    cap = capsys.readouterr()
    warned = [ln for ln in cap.err.splitlines() if ln.startswith("warning:")]
    assert len(warned) == 1 and "fine-tuning made the model worse" in warned[0], cap.err
    assert "on the same 2 validation frames" in warned[0] and "best.pt is the initial model" in warned[0]
    assert "initial validation: " in cap.out
    summary = json.loads((ft / "summary.json").read_text())
    initial, final = summary["initial"], summary["final"]
    assert worse_metrics(initial, final)
    assert summary["best"]["step"] == 0 and read_checkpoint(ft / "best.pt")["metrics"] == initial
    # best.pt holds the initial weights again: the same as the checkpoint fine-tuning started from
    sd_best = read_checkpoint(ft / "best.pt")["state_dict"]
    sd_init = read_checkpoint(base / "model.pt")["state_dict"]
    assert all((sd_best[k] == sd_init[k]).all() for k in sd_init if k in sd_best and sd_init[k].is_floating_point())
