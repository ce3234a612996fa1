"""Dataset readers for the official layouts; ``open_dataset(name, root, split)``.

Imported lazily, so that the torch-free ``data.names`` stays cheap. See docs/architecture.md.
"""
from __future__ import annotations

_EXPORTS = {"IGNORE": ".sample", "Sample": ".sample", "DATASETS": ".registry", "open_dataset": ".registry"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
