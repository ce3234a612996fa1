#!/usr/bin/env python
"""Thin wrapper: ``python tools/segment.py ...`` == ``denseood segment ...``."""
import sys

from denseood.cli import main

if __name__ == "__main__":
    raise SystemExit(main(["segment", *sys.argv[1:]]))
