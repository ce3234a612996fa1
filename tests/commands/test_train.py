"""``denseood train`` parser and handler: help texts, value checks, config precedence, refusing an existing run."""
from __future__ import annotations

import argparse

import pytest

from denseood.commands import train as verb
from denseood.errors import ConfigError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="denseood")
    return verb.add_parser(top.add_subparsers(dest="command"))


def test_every_option_has_help_and_each_cli_key_an_option():
    p = parser()
    for a in p._actions:
        if a.option_strings and a.dest != "help":
            assert a.help and a.help.strip(), a.option_strings
    dests = {a.dest for a in p._actions}
    assert set(verb.CLI_KEYS) <= dests


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--batch-size", "-2"], ["--crop", "x"], ["--lr", "0"], ["--lr", "-1"],
                                  ["--amp", "fp8"]])
def test_numeric_options_are_checked_at_parse_time(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args(argv)
    assert e.value.code == 2


def test_config_then_options_then_set(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("lr: 0.5\nsteps: 7\ncrop: 64\nneg_size: [4, 8]\n")
    args = parser().parse_args(["--config", str(cfg_file), "--steps", "9", "--root", "/r",
                                "--set", "crop=32", "--set", "neg_size=[8, 16]"])
    cfg = verb.config_from_args(args)
    assert (cfg.lr, cfg.steps, cfg.crop, cfg.root, tuple(cfg.neg_size)) == (0.5, 9, 32, "/r", (8, 16))
    assert cfg.sync_bn is False                       # an unset store_true flag keeps the config's value
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        verb.config_from_args(parser().parse_args(["--set", "crop"]))
    with pytest.raises(ConfigError):
        verb.config_from_args(parser().parse_args(["--set", "learning_rate=1"]))


def test_train_does_not_use_the_generic_yaml_expansion():
    assert not parser().get_default("_yaml_options")


def test_run_refuses_an_existing_run_without_resume(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"")
    args = parser().parse_args(["--root", "/r", "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="already holds a run"):
        verb.run(args)


def test_cli_reports_config_errors_as_exit_2(tmp_path, capsys):
    from denseood.cli import main

    assert main(["train", "--out", str(tmp_path / "o")]) == 2     # no --root
    assert "denseood train: error: --root is required" in capsys.readouterr().err


@pytest.mark.parametrize("key, value", [("lr", "-1"), ("flow_lr", "0"), ("weight_decay", "-0.1"), ("grad_clip", "-1"),
                                        ("flow_levels", "0"), ("flow_hidden", "-4"), ("neg_per_image", "0"),
                                        ("neg_temperature", ".nan"), ("workers", "-3"), ("ckpt_every", "-1"),
                                        ("val_limit", "0"), ("stats_batches", "0"), ("log_every", "0"),
                                        ("scale", "[1.5, 0.5]"), ("neg_size", "[0, 8]"), ("lr", ".inf")])
def test_every_numeric_field_set_via_set_is_validated_naming_the_key(key, value):
    from denseood.train.config import TrainConfig  # noqa: F401

    cfg = verb.config_from_args(parser().parse_args(["--root", "/r", "--set", f"{key}={value}"]))
    with pytest.raises(ConfigError) as e:
        cfg.validate()
    assert str(e.value).startswith(f"{key} must be")


def test_numeric_fields_from_a_config_file_are_validated(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: -0.5\n")
    cfg = verb.config_from_args(parser().parse_args(["--root", "/r", "--config", str(f)]))
    with pytest.raises(ConfigError, match="lr must be a positive number, got -0.5"):
        cfg.validate()
    verb.config_from_args(parser().parse_args(["--root", "/r", "--set", "val_limit=null", "--set", "grad_clip=0"])
                          ).validate()  # None / 0 = off stay valid
