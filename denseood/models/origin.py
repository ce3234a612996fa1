"""Two records, standard library only: :class:`Source` (one model source: how its spec is parsed, its model loaded,
rebuilt from a checkpoint and described) and :class:`ModelOrigin` (where one loaded model came from,
``model.origin``). The table of sources is ``models/sources/registry.py``. See docs/architecture.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class ModelOrigin:
    """Where a model came from, set once by ``load_model`` / ``load_checkpoint`` as ``model.origin``.

    kind: the source that loaded it, "checkpoint" | "hf" | "torchvision" | "python" (a key of ``SOURCES``).
    spec: the spec as given. path: the file or folder read (checkpoint file, hf folder, state-dict file, the
    ``python:`` module's file; None for a dotted module name). sha256: the first 16 hex digits of the SHA-256 of
    the weight file denseood read itself (a checkpoint, ``--weights``), else None. model_source: the network the
    weights belong to, "smp" | "hf" | "torchvision" | "python" (a checkpoint's from its meta). made_from: the
    external spec a fine-tuned checkpoint (or ``--weights`` file) was made from, else None. extra: per-source
    details in plain types (e.g. torchvision ``name``; python ``module``, ``factory``, ``weights``).
    """

    kind: str
    spec: str
    path: str | None = None
    sha256: str | None = None
    model_source: str | None = None
    made_from: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def plain(self) -> dict[str, Any]:
        """The fields as a dict of plain types (for results.json and manifests)."""
        return {"kind": self.kind, "spec": self.spec, "path": self.path, "sha256": self.sha256,
                "model_source": self.model_source, "made_from": self.made_from, "extra": dict(self.extra)}


def origin_of(kind: str, spec: str, model: Any, path: str | None, **extra: Any) -> ModelOrigin:
    """The :class:`ModelOrigin` of ``model`` just loaded by source ``kind`` from ``spec``: sha256, model_source and
    made_from come from the weight file's record the loader kept (``checkpoint_sha256``, ``checkpoint_meta``)."""
    meta = getattr(model, "checkpoint_meta", None) or {}
    return ModelOrigin(kind=kind, spec=str(spec), path=None if path is None else str(path),
                       sha256=getattr(model, "checkpoint_sha256", None),
                       model_source=str(meta.get("model_source", "smp")) if meta else kind,
                       made_from=(meta.get("external") or {}).get("spec"), extra=dict(extra))


@dataclass(frozen=True)
class Source:
    """One model source (a row of ``models/sources/registry.py: SOURCES``).

    kind: its key; a spec ``KIND:REST`` selects it (the "checkpoint" source takes specs without a prefix).
    form: the spec form with a short explanation, for messages and help.
    parse(spec, rest) -> parts: the spec split into its parts (``rest`` follows ``KIND:``); ConfigError naming
    the spec and the form otherwise.
    load(parts, *, map_location, num_classes, class_set, weights, trust_code) -> the model in eval mode
    (``SegmenterBase``); num_classes / class_set are what the caller's dataset expects.
    rebuild(meta, *, class_set, source, trust_code) -> the untrained model of a checkpoint ``meta`` whose
    ``model_source`` is this source's (the "checkpoint" source rebuilds "smp", its own networks); the caller
    loads the weights.
    describe(spec, parts, model) -> the model's :class:`ModelOrigin`.
    takes_weights: whether ``--weights FILE`` applies. runs_code: whether rebuilding imports code a file names
    (then only with ``trust_code``, and never twice).
    """

    kind: str
    form: str
    parse: Callable[[str, str], tuple[str, ...]]
    load: Callable[..., Any]
    rebuild: Callable[..., Any]
    describe: Callable[[str, tuple[str, ...], Any], ModelOrigin]
    takes_weights: bool = False
    runs_code: bool = False
