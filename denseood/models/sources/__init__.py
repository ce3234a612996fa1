"""Model sources behind one protocol (``models.base.SegmenterBase``): ``load_model(spec)`` in ``spec.py`` and one
module per source (``hf.py``, ``torchvision_src.py``, ``python_src.py``; denseood checkpoints live in
``models/checkpoint.py``). ``transformers`` is imported only when an ``hf:`` spec is loaded.
See docs/architecture.md.
"""
from __future__ import annotations

from .spec import PREFIXES, SPEC_FORMS, load_model, parse_spec

__all__ = ["load_model", "parse_spec", "SPEC_FORMS", "PREFIXES"]
