#!/usr/bin/env python
"""Thin wrapper: ``python tools/bench.py infer|metrics|s2m ...`` == ``denseood bench ...``."""
import sys

from denseood.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["bench", *sys.argv[1:]]))
