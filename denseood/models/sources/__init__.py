"""Model sources behind one protocol (``models.base.SegmenterBase``): the table ``SOURCES``, ``load_model(spec)``
and ``load_checkpoint(path)`` in ``registry.py``, and one module per prefixed source (``hf.py``,
``torchvision_src.py``, ``python_src.py``; the checkpoint file format is ``models/checkpoint.py``).
``transformers`` is imported only when an ``hf:`` spec is loaded. See docs/architecture.md.
"""
from __future__ import annotations

from .registry import PREFIXES, SOURCES, SPEC_FORMS, load_checkpoint, load_model, parse_spec

__all__ = ["load_model", "load_checkpoint", "parse_spec", "SOURCES", "SPEC_FORMS", "PREFIXES"]
