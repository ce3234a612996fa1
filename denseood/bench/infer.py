"""Deprecated path (0.1): the benchmark moved to :mod:`denseood.commands.bench.infer`; removed in 0.3."""
from ..commands.bench.infer import *  # noqa: F401,F403
from ..commands.bench.infer import __all__  # noqa: F401
