"""S2M: anomaly maps -> box/point prompts -> promptable mask model -> whole OOD objects.

``prompts`` (Prompts, PeakPrompter), ``learned`` (LearnedPrompter), ``boxes`` (box/map math), ``promptable``
(PromptableSegmenter, SamBackend, GrabCutBackend), ``pipeline`` (S2M, S2MResult, build_s2m). The S2M evaluation rows are
``denseood.commands.eval.s2m``. Prompter training is ``denseood.train.prompter``; ``denseood segment`` is ``denseood.commands.segment``.
Imported lazily so that ``import denseood.s2m`` stays cheap. See docs/architecture.md.
"""
from __future__ import annotations

_EXPORTS = {
    "Prompts": "denseood.s2m.prompts",
    "PeakPrompter": "denseood.s2m.prompts",
    "LearnedPrompter": "denseood.s2m.learned",
    "PromptableSegmenter": "denseood.s2m.promptable",
    "SamBackend": "denseood.s2m.promptable",
    "GrabCutBackend": "denseood.s2m.promptable",
    "build_prompt_model": "denseood.s2m.promptable",
    "S2M": "denseood.s2m.pipeline",
    "S2MResult": "denseood.s2m.pipeline",
    "build_s2m": "denseood.s2m.pipeline",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'denseood.s2m' has no attribute {name!r}")
