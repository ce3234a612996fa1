"""`denseood` CLI assembly: every verb's --help shows defaults and help for each option, the parser stays
lazy (no torch import), YAML --config expansion, parse-time value checks, error and interrupt exits."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from denseood import cli
from denseood.commands import VERBS
from denseood.commands._common import config_argv, fraction, positive_int
from denseood.errors import ConfigError


def _all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parser, verbs = cli.build_parser()
    out = [("denseood", parser)]
    for name, p in verbs.items():
        out.append((name, p))
        for act in p._actions:  # nested verbs (bench infer|metrics|s2m)
            if isinstance(act, argparse._SubParsersAction):
                out += [(f"{name} {sub}", sp) for sub, sp in act.choices.items()]
    return out


def test_every_verb_is_assembled():
    _, verbs = cli.build_parser()
    assert set(verbs) == set(VERBS) == {"eval", "segment", "train", "train-prompter", "demo", "bench", "datasets",
                                             "submit", "report", "calibrate"}


@pytest.mark.parametrize("name, parser", [pytest.param(n, p, id=n) for n, p in _all_parsers()])
def test_every_option_has_help_and_shows_its_default(name, parser):
    missing = [a.option_strings[-1] for a in parser._actions
               if a.option_strings and a.help != argparse.SUPPRESS and not (a.help or "").strip()]
    assert missing == [], f"denseood {name}: options without help text: {missing}"
    text = parser.format_help()
    for a in parser._actions:
        if a.option_strings and a.default not in (None, False, argparse.SUPPRESS) and a.help != argparse.SUPPRESS:
            assert f"(default: {a.default})" in " ".join(text.split()), f"denseood {name} {a.option_strings[-1]}"
    assert "``" not in text, "raw RST in the help text"


def test_help_of_every_verb_runs_in_a_subprocess_without_importing_torch():
    code = ("import sys\nfrom denseood import cli\nparser, verbs = cli.build_parser()\n"
            "[p.format_help() for p in verbs.values()]\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "False"
    r = subprocess.run([sys.executable, "-m", "denseood", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "segment" in r.stdout and "``" not in r.stdout


def test_bench_subverbs_have_their_own_flags(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["bench", "metrics", "--arch", "fpn"])
    assert e.value.code == 2 and "unrecognized arguments: --arch" in capsys.readouterr().err


def test_numeric_options_are_checked_at_parse_time():
    assert positive_int("3") == 3 and fraction("0.5") == 0.5
    for bad in ("0", "-1", "x", "1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="positive integer"):
            positive_int(bad)
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\)"):
        fraction("1")


def test_config_argv_maps_yaml_to_options_and_rejects_unknown_keys():
    p = argparse.ArgumentParser()
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--flip", action="store_true")
    p.add_argument("--images", nargs="+")
    p.add_argument("--set", action="append", default=[])
    assert config_argv(p, {"batch_size": 8, "flip": True, "images": ["a", "b"], "set": ["x=1", "y=2"]}, "f.yaml") == \
        ["--batch-size", "8", "--flip", "--images", "a", "b", "--set", "x=1", "--set", "y=2"]
    assert config_argv(p, {"flip": False}, "f.yaml") == []
    with pytest.raises(ValueError, match=r"f\.yaml: unknown option 'batch_sise'; did you mean batch_size"):
        config_argv(p, {"batch_sise": 8}, "f.yaml")
    with pytest.raises(ValueError, match="must be true or false"):
        config_argv(p, {"flip": "yes"}, "f.yaml")
    with pytest.raises(ValueError, match="expected a mapping"):
        config_argv(p, [1, 2], "f.yaml")


def _toy_verb(monkeypatch, run):
    """Register a throwaway verb module 'toy' (with --config) whose run() is ``run``."""
    import types

    from denseood.commands._common import add_config, add_verb

    mod = types.ModuleType("denseood_test_toy")

    def add_parser(sub):
        p = add_verb(sub, "toy", help="a test verb")
        p.add_argument("--n", type=positive_int, default=1, help="a number")
        p.add_argument("--name", required=True, help="a required name")
        add_config(p)
        return p

    mod.add_parser, mod.run = add_parser, run
    monkeypatch.setitem(sys.modules, "denseood_test_toy", mod)
    monkeypatch.setitem(VERBS, "toy", "denseood_test_toy")


def test_config_file_supplies_options_and_the_command_line_wins(monkeypatch, tmp_path):
    seen = []
    _toy_verb(monkeypatch, lambda args: seen.append((args.n, args.name)) or 0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("n: 5\nname: from-yaml\n")
    assert cli.main(["toy", "--config", str(cfg)]) == 0
    assert cli.main(["toy", "--config", str(cfg), "--n", "7"]) == 0
    assert seen == [(5, "from-yaml"), (7, "from-yaml")]


def test_config_file_errors_name_the_file(monkeypatch, tmp_path, capsys):
    _toy_verb(monkeypatch, lambda args: 0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("nn: 5\n")
    with pytest.raises(SystemExit):
        cli.main(["toy", "--config", str(bad)])
    assert f"{bad}: unknown option 'nn'; did you mean n" in capsys.readouterr().err
    bad.write_text("n: 0\nname: x\n")
    with pytest.raises(SystemExit):
        cli.main(["toy", "--config", str(bad)])
    assert "not a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["toy", "--config", str(tmp_path / "missing.yaml")])
    assert "missing.yaml: cannot read" in capsys.readouterr().err


def test_denseood_errors_and_interrupts_become_one_line_and_exit_codes(monkeypatch, capsys):
    def fail(args):
        raise ConfigError("bad value 3; use 4")

    _toy_verb(monkeypatch, fail)
    assert cli.main(["toy", "--name", "x"]) == 2
    assert capsys.readouterr().err.strip() == "denseood toy: error: bad value 3; use 4"

    def interrupt(args):
        raise KeyboardInterrupt

    _toy_verb(monkeypatch, interrupt)
    assert cli.main(["toy", "--name", "x"]) == 130
    assert capsys.readouterr().err.strip() == "denseood toy: interrupted"
