"""Deprecated path (0.1): the benchmark moved to :mod:`denseood.commands.bench.metrics`; removed in 0.3."""
from ..commands.bench.metrics import *  # noqa: F401,F403
from ..commands.bench.metrics import __all__  # noqa: F401
