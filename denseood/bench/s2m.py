"""Deprecated path (0.1): the benchmark moved to :mod:`denseood.commands.bench.s2m`; removed in 0.3."""
from ..commands.bench.s2m import *  # noqa: F401,F403
from ..commands.bench.s2m import __all__  # noqa: F401
