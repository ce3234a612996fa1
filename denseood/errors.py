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


class ModelOutputError(DenseOODError, ValueError):
    """A model returned unusable outputs (NaN or inf logits) for named frames."""


class OutputError(DenseOODError, OSError):
    """An output file or folder cannot be written (disk full, read-only file system, permission denied)."""


def one_line(e: BaseException) -> str:
    """The message of ``e`` as the user sees it: an error re-raised from a DataLoader worker ("Caught DatasetError
    in DataLoader worker process 0. Original Traceback ...") gives the worker's own one-line message."""
    msg = str(e)
    if msg.startswith("Caught ") and "Original Traceback" in msg:
        last = next((ln for ln in reversed(msg.splitlines()) if ln.strip()), "")
        head, sep, rest = last.partition(": ")
        msg = rest if sep and head.rsplit(".", 1)[-1] == type(e).__name__ else last
    return msg
