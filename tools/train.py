#!/usr/bin/env python
"""Thin wrapper: ``python tools/train.py ...`` == ``denseood train ...``."""
import sys

from denseood.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["train", *sys.argv[1:]]))
