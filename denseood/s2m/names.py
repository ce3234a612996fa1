"""Defaults of the S2M stage that command-line help needs (torch-free). See docs/architecture.md."""
from __future__ import annotations

#: learned-prompter detector backbones and input channel sets (``train-prompter --backbone / --input``)
PROMPTER_BACKBONES = ("tiny", "resnet18")
PROMPTER_INPUTS: dict[str, int] = {"score": 1, "score+image": 4}

#: default --work-size: S2M prompts and masks are computed on the frame shrunk to at most this long side
WORK_SIZE = 2048
