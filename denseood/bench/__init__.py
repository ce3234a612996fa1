"""``denseood bench``: throughput and memory figures measured as ratios in one run (ours vs baseline)."""
from __future__ import annotations

import importlib


def main(args) -> int:
    """Dispatch ``denseood bench infer|metrics|s2m`` to ``denseood.bench.<what>.run(args)``."""
    return int(importlib.import_module(f"denseood.bench.{args.what}").run(args) or 0)
