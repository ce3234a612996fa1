"""Deprecated path (0.1): ``denseood bench`` lives in :mod:`denseood.commands.bench`; removed in 0.3."""
