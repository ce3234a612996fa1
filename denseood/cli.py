"""denseood: dense anomaly segmentation for driving scenes.

Verbs: eval (benchmark metrics), segment (OOD object masks in a folder of images), train (NFlowJS and
other training or fine-tuning), train-prompter (the S2M learned prompter), demo (the embedded default end to
end), bench (speed), datasets (what is found under a root), submit (benchmark submission files), calibrate
(a deployment threshold from inlier-only data). Run "denseood VERB --help" for a verb's options.

This module only assembles the verb parsers of denseood.commands; each verb's handler is imported when
it runs, so that "denseood --help" stays fast. See docs/architecture.md.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from .commands import VERBS
from .commands._common import HelpFormatter, config_argv
from .errors import DenseOODError, one_line


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each verb's parser (by verb name)."""
    from ._version import __version__

    doc = (__doc__ or "").split("\n\nThis module")[0]
    parser = argparse.ArgumentParser(prog="denseood", description=doc, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"denseood {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="VERB")
    verbs = {name: importlib.import_module(mod).add_parser(sub) for name, mod in VERBS.items()}
    return parser, verbs


def _expand_config(argv: list[str], verbs: dict[str, argparse.ArgumentParser]) -> list[str]:
    """Insert the options of ``--config FILE`` right after the verb (for verbs that take YAML option files)."""
    verb_at = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if verb_at is None or argv[verb_at] not in verbs:
        return argv
    sp = verbs[argv[verb_at]]
    if not sp.get_default("_yaml_options"):
        return argv
    rest = argv[verb_at + 1:]
    path = None
    for i, a in enumerate(rest):
        if a == "--config" and i + 1 < len(rest):
            path = rest[i + 1]
        elif a.startswith("--config="):
            path = a.split("=", 1)[1]
    if path is None:
        return argv
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        extra = config_argv(sp, data, path)
    except OSError as e:
        sp.error(f"--config {path}: cannot read ({e.strerror or e})")
    except yaml.YAMLError as e:
        sp.error(f"--config {path}: not valid YAML ({e})")
    except ValueError as e:
        sp.error(str(e))
    return argv[: verb_at + 1] + extra + rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, verbs = build_parser()
    args = parser.parse_args(_expand_config(argv, verbs))
    run = importlib.import_module(VERBS[args.command]).run
    try:
        return int(run(args) or 0)
    except DenseOODError as e:
        print(f"denseood {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"denseood {args.command}: interrupted", file=sys.stderr)
        return 130
