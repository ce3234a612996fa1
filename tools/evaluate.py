#!/usr/bin/env python
"""Thin wrapper: ``python tools/evaluate.py ...`` == ``denseood eval ...``."""
import sys

from denseood.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["eval", *sys.argv[1:]]))
