"""Shared pieces of the verb parsers: the help formatter, common options and parse-time value checks.

Imports only the standard library and torch-free name modules (``denseood --help`` must not import torch). See docs/architecture.md.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from ..infer.names import DTYPE_NAMES


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows every option's default and keeps descriptions as written (plain text, line breaks kept)."""


def add_verb(subparsers, name: str, help: str, description: str | None = None) -> argparse.ArgumentParser:
    """A verb's parser with the shared formatter. ``description`` defaults to ``help``; a module docstring may be
    passed as is: its reStructuredText literals (double backticks) are shown as plain text."""
    text = (description or help).replace("``", "")
    return subparsers.add_parser(name, help=help, description=text, formatter_class=HelpFormatter)


def _checked(kind: str, convert: Callable[[str], float | int], ok: Callable[[float], bool]) -> Callable[[str], float | int]:
    def parse(text: str):
        try:
            v = convert(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}")
        return v

    parse.__name__ = kind.replace(" ", "_")  # argparse names the type in its message
    return parse


positive_int = _checked("a positive integer", int, lambda v: v > 0)
nonnegative_int = _checked("a non-negative integer", int, lambda v: v >= 0)
positive_float = _checked("a positive number", float, lambda v: v > 0 and v != float("inf"))
nonnegative_float = _checked("a non-negative number", float, lambda v: 0 <= v < float("inf"))
fraction = _checked("a fraction in [0, 1)", float, lambda v: 0 <= v < 1)


def parse_input_size(spec: Any, what: str = "--input-size") -> Any:
    """The one reading of ``input_size`` (eval, segment, submit): "model" -> "model" (the checkpoint's training
    size); None or "full" -> None (the image's own size, no resize); "HxW" / (h, w) / n -> (h, w)."""
    if spec is None or (isinstance(spec, str) and spec.lower() == "full"):
        return None
    if isinstance(spec, str) and spec.lower() == "model":
        return "model"
    from ..config import parse_hw

    return parse_hw(spec, what)


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument("--device", default=default,
                   help="auto | cpu | cuda | cuda:N (auto: this rank's GPU under torchrun, else cuda when available, else cpu)")


def add_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto", choices=["auto", *DTYPE_NAMES],
                   help="autocast dtype of the segmenter (auto: bf16 on GPUs that have it, fp16 on older GPUs, fp32 on CPU)")


def add_out(p: argparse.ArgumentParser, what: str, required: bool = True, default: str | None = None) -> None:
    p.add_argument("--out", required=required, default=default, help=f"output folder ({what})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the denseood run in a non-empty --out (a folder with denseood-manifest.json); "
                        "its files are replaced whole once the new run is complete")


def add_code_options(p: argparse.ArgumentParser, model_option: str = "--checkpoint",
                     weights: str = "--weights") -> None:
    """``--weights FILE`` (the weights of a python:MODULE:FACTORY model the user names) and ``--trust-code``
    (let a checkpoint of a python: model import the module it records; printed first). See docs/own_models.md."""
    p.add_argument(weights, default=None, metavar="FILE", dest=weights.lstrip("-").replace("-", "_"),
                   help=f"weights for {model_option} python:MODULE:FACTORY: a denseood checkpoint of that model or a "
                        f"state dict (the code is the one you name, never one a file names)")
    p.add_argument("--trust-code", action="store_true",
                   help=f"let a {model_option} .pt saved from a python: model import the module it records (printed "
                        f"first); without it such a file is refused. Command line only, never from --config")


#: options a --config file may not set: trusting code is said on the command line itself
COMMAND_LINE_ONLY = ("trust_code",)


def add_config(p: argparse.ArgumentParser) -> None:
    """``--config FILE``: a YAML mapping of option names (``batch_size`` or ``batch-size``) to values.

    The file's values act as if typed before the command line's own options, so the command line wins;
    ``cli.main`` expands it (see :func:`config_argv`).
    """
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML file of option values (keys are option names); command-line options override it")
    p.set_defaults(_yaml_options=True)


def config_argv(parser: argparse.ArgumentParser, data: object, source: str) -> list[str]:
    """Command-line tokens equal to a YAML mapping of option values, checked against ``parser``'s options.

    Raises ValueError naming the file and the unknown key (with close matches) or the bad value.
    """
    import difflib

    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping of option names to values, got {type(data).__name__}")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "config")}
    argv: list[str] = []
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest in COMMAND_LINE_ONLY:
            raise ValueError(f"{source}: {key} cannot be set in a config file; give --{dest.replace('_', '-')} on "
                             f"the command line")
        if dest not in actions:
            close = difflib.get_close_matches(dest, list(actions), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(actions))}"
            raise ValueError(f"{source}: unknown option {key!r}{hint}")
        act = actions[dest]
        flag = act.option_strings[-1]
        if act.nargs == 0:  # store_true / store_false flags
            if not isinstance(value, bool):
                raise ValueError(f"{source}: {key} must be true or false, got {value!r}")
            if value != act.default:
                argv.append(flag)
        elif isinstance(value, list):
            if isinstance(act, argparse._AppendAction):
                for v in value:
                    argv += [flag, str(v)]
            else:
                argv += [flag, *map(str, value)]
        elif value is not None:
            argv += [flag, str(value)]
    return argv


#: where --s2m / segment objects come from (issue 21): "s2m" = prompter + mask model (denseood.s2m.pipeline),
#: "queries" = a mask transformer's own query masks (denseood.s2m.queries; hf: universal models)
OBJECT_ROUTES = ("s2m", "queries")


def add_objects(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", choices=OBJECT_ROUTES, default="s2m",
                   help="s2m: prompter + mask model; queries: a mask transformer's own query masks (hf: universal "
                        "models; no prompter, no mask model)")


def check_objects(objects: str, s2m: bool = True) -> None:
    """ConfigError unless ``objects`` is one of OBJECT_ROUTES (and, for eval, --s2m is on)."""
    from ..errors import ConfigError

    if objects not in OBJECT_ROUTES:
        raise ConfigError(f"--objects {objects!r}: use one of {', '.join(OBJECT_ROUTES)}")
    if objects != "s2m" and not s2m:
        raise ConfigError(f"--objects {objects} chooses the objects of --s2m; add --s2m")

