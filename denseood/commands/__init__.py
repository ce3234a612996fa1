"""The commands layer: one module (or package) per ``denseood`` verb, on top of every stage.

Each verb module defines ``add_parser(subparsers) -> argparse.ArgumentParser`` and ``run(args) -> int``;
its top level imports only the standard library, ``_common`` and torch-free name modules (``scores.names``),
so that ``denseood --help`` stays fast, and ``run`` imports the stages it drives. ``cli.py`` only assembles
:data:`VERBS`.
See docs/architecture.md.
"""
from __future__ import annotations

# verb -> module that defines add_parser(subparsers) and run(args)
VERBS: dict[str, str] = {
    "eval": "denseood.commands.eval",
    "segment": "denseood.commands.segment",
    "train": "denseood.commands.train",
    "train-prompter": "denseood.commands.train_prompter",
    "demo": "denseood.commands.demo",
    "bench": "denseood.commands.bench",
    "datasets": "denseood.commands.datasets",
    "submit": "denseood.commands.submit",
    "report": "denseood.commands.report",
    "calibrate": "denseood.commands.calibrate",
}
