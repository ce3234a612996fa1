"""Exception types. Every error raised for bad user input names the file or value and the fix."""
from __future__ import annotations


class DenseOODError(Exception):
    """Base class of all denseood errors (bad input, layout, checkpoint, config)."""


class DatasetError(DenseOODError, ValueError):
    """A dataset root, split, image or label file is missing or does not follow the expected layout."""


class CheckpointError(DenseOODError, ValueError):
    """A checkpoint file is missing, not a denseood checkpoint, truncated, or incompatible."""


class ConfigError(DenseOODError, ValueError):
    """A configuration value or command-line option is invalid."""


class OutputError(DenseOODError, OSError):
    """An output file or folder cannot be written (disk full, read-only file system, permission denied)."""
