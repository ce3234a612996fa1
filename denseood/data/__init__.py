"""Dataset readers for the official layouts; ``open_dataset(name, root, split)``.

See docs/architecture.md.
"""
from .sample import IGNORE, Sample
from .registry import DATASETS, open_dataset

__all__ = ["IGNORE", "Sample", "DATASETS", "open_dataset"]
