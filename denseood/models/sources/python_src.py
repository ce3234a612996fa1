"""``python:MODULE:FACTORY``: a user's factory function returning an ``nn.Module``.

MODULE is a dotted module name (importable from ``sys.path``) or the path of a ``.py`` file. ``FACTORY()`` must
return a module mapping normalised (B,3,H,W) float images to logits (B,C,h,w); smaller logits are upsampled
(bilinear) to the input size. When the factory's signature declares ``num_classes`` or ``class_set`` keyword
arguments, denseood passes the caller's values. Metadata, first found wins per key:

1. attributes of the returned module: ``class_names``, ``mean``, ``std`` (3 floats for 0..1 RGB), ``train_size``
   ([H, W] or None), ``output_kind`` ("logits" | "mask_scores");
2. a YAML file beside the module, ``MODULE.yaml`` (``model.py`` -> ``model.yaml``) or else ``denseood.yaml`` in
   its folder, with the same keys;
3. defaults: ImageNet mean/std, train_size None, classes from the number of output channels of a 64x64 probe.

When the module's ``forward`` takes ``return_features``, ``model(x, return_features=True)`` returns
``(logits, features)`` (for mahalanobis); otherwise it raises ConfigError. A fine-tuned model is saved as a denseood
checkpoint recording MODULE (a file as its absolute path), FACTORY and the metadata above (``checkpoint_record``);
:func:`rebuild_python` imports MODULE and calls FACTORY again (only with ``--trust-code``; otherwise name the code
yourself: ``python:MODULE:FACTORY`` with ``weights=`` the checkpoint), and the caller loads the weights strictly.
See docs/architecture.md.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...errors import CheckpointError, ConfigError
from ..base import IMAGENET_MEAN, IMAGENET_STD, SegmenterBase, match_classes
from ..checkpoint import load_weights_file
from ..origin import ModelOrigin, Source, origin_of

#: keys of the YAML file beside the module (and attributes read from the returned module)
META_KEYS = ("class_names", "mean", "std", "train_size", "output_kind")


class PythonSegmenter(SegmenterBase):
    """A user module behind the :class:`SegmenterBase` protocol."""

    def __init__(self, net: nn.Module, *, meta: dict[str, Any], class_names: tuple[str, ...],
                 class_set: str | None, source: str) -> None:
        super().__init__()
        self.net = net
        self._set_meta(class_names=class_names, class_set=class_set, mean=meta.get("mean", IMAGENET_MEAN),
                       std=meta.get("std", IMAGENET_STD), train_size=meta.get("train_size"), source=source,
                       output_kind=meta.get("output_kind", "logits"))
        self.spec = source  # the original python: spec
        self.module_name, self.factory_name = "", ""  # set by load_python / rebuild_python
        self.meta_in = {k: v for k, v in meta.items() if k in META_KEYS}
        try:
            self._takes_features = "return_features" in inspect.signature(net.forward).parameters
        except (TypeError, ValueError):
            self._takes_features = False

    def forward(self, x: torch.Tensor, return_features: bool = False):
        """x: (B,3,H,W) normalised -> logits (B,C,H,W) float at the input size (or ``(logits, features)``)."""
        if return_features and not self._takes_features:
            raise self.no_features("its forward has no return_features argument (add one returning "
                                   "(logits, features (B,F,h,w)))")
        out = self.net(x, return_features=True) if return_features else self.net(x)
        logits, feats = out if return_features else (out, None)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[0] != x.shape[0]:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ConfigError(f"{self.describe()} must return logits (B,C,h,w) with B={x.shape[0]}, got {got}")
        if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
            logits = F.interpolate(logits.float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, feats) if return_features else logits

    def checkpoint_record(self) -> dict[str, Any]:
        """What rebuilds this model (checkpoint ``meta["external"]``): module, factory, metadata, spec."""
        return {"module": self.module_name, "factory": self.factory_name, "spec": self.spec,
                "meta": {**self.meta_in, "class_names": list(self.class_names), "mean": list(self.mean),
                         "std": list(self.std), "output_kind": self.output_kind,
                         "train_size": None if self.train_size is None else list(self.train_size)}}


def import_module(spec: str) -> tuple[Any, Path | None]:
    """(module, its file or None) for a dotted name or a ``.py`` path; ConfigError naming ``spec`` on failure."""
    p = Path(spec).expanduser()
    if spec.endswith(".py") or p.is_file():
        if not p.is_file():
            raise ConfigError(f"python: module file not found: {p}")
        name = f"denseood_user_{p.stem}_{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"
        ispec = importlib.util.spec_from_file_location(name, p)
        if ispec is None or ispec.loader is None:
            raise ConfigError(f"cannot import {p} as a Python module")
        mod = importlib.util.module_from_spec(ispec)
        sys.modules[name] = mod
        try:
            ispec.loader.exec_module(mod)
        except Exception as e:  # noqa: BLE001 - the user's module may raise anything
            sys.modules.pop(name, None)
            raise ConfigError(f"importing {p} failed: {type(e).__name__}: {e}") from e
        return mod, p
    try:
        mod = importlib.import_module(spec)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot import module {spec!r} ({type(e).__name__}: {e}); give a dotted module name on "
                          f"sys.path or the path of a .py file") from e
    f = getattr(mod, "__file__", None)
    return mod, (Path(f) if f else None)


def _is_file(module: str) -> bool:
    """Whether a ``python:`` MODULE names a file (a ``.py`` path, or an existing file) rather than a dotted name."""
    return module.endswith(".py") or Path(module).expanduser().is_file()


def read_yaml_meta(module_file: Path | None) -> tuple[dict[str, Any], Path | None]:
    """Metadata from ``<module>.yaml`` or ``denseood.yaml`` beside ``module_file`` ({} when neither exists)."""
    if module_file is None:
        return {}, None
    stem = module_file.parent.name if module_file.name == "__init__.py" else module_file.stem
    for f in (module_file.with_name(f"{stem}.yaml"), module_file.with_name("denseood.yaml")):
        if f.is_file():
            import yaml

            try:
                data = yaml.safe_load(f.read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"cannot read {f}: {e}") from e
            if not isinstance(data, dict):
                raise ConfigError(f"{f} must be a mapping with keys {', '.join(META_KEYS)}")
            bad = sorted(set(data) - set(META_KEYS))
            if bad:
                raise ConfigError(f"{f}: unknown key(s) {bad}; valid keys: {', '.join(META_KEYS)}")
            return data, f
    return {}, None


def _call_factory(module: str, factory: str, num_classes: int | None,
                  class_set: str | None) -> tuple[nn.Module, Path | None]:
    """(the nn.Module ``FACTORY(...)`` returns, the module's file or None); ConfigError naming the spec."""
    mod, file = import_module(module)
    fn = getattr(mod, factory, None)
    if not callable(fn):
        avail = sorted(n for n, v in vars(mod).items() if callable(v) and not n.startswith("_"))[:10]
        raise ConfigError(f"module {module!r} has no callable {factory!r}; callables there: {avail}")
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    kw = {k: v for k, v in (("num_classes", num_classes), ("class_set", class_set)) if k in params and v is not None}
    try:
        net = fn(**kw)
    except Exception as e:  # noqa: BLE001 - the user's factory may raise anything
        raise ConfigError(f"python:{module}:{factory}() failed: {type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise ConfigError(f"python:{module}:{factory}() returned a {type(net).__name__}; it must return an nn.Module")
    return net, file


def load_python(module: str, factory: str, *, map_location: Any = "cpu", num_classes: int | None = None,
                class_set: str | None = None) -> PythonSegmenter:
    """Import ``module``, call ``factory`` and wrap the returned nn.Module (see the module docstring); eval mode."""
    net, file = _call_factory(module, factory, num_classes, class_set)
    yaml_meta, _ = read_yaml_meta(file)
    meta = {k: getattr(net, k) for k in META_KEYS if getattr(net, k, None) is not None}
    meta.update({k: v for k, v in yaml_meta.items() if k not in meta and v is not None})
    names = meta.get("class_names")
    if names is not None:
        n = len(names)
    else:
        net.eval()
        with torch.no_grad():
            probe = net(torch.zeros(1, 3, 64, 64))
        n = int(probe.shape[1]) if isinstance(probe, torch.Tensor) and probe.ndim == 4 else 0
        if n < 1:
            raise ConfigError(f"python:{module}:{factory}: the model's output on a (1,3,64,64) probe is not "
                              f"(B,C,h,w) logits; return a module mapping images to logits")
    names, cset = match_classes(names, n, num_classes=num_classes, class_set=class_set,
                                where=f"python:{module}:{factory}")
    model = PythonSegmenter(net, meta=meta, class_names=names, class_set=cset, source=f"python:{module}:{factory}")
    model.module_name = str(Path(module).expanduser().resolve()) if _is_file(module) else module
    model.factory_name = factory
    return model.to(map_location).eval()


def rebuild_python(record: dict[str, Any], *, class_names: tuple[str, ...], class_set: str | None,
                   source: str) -> PythonSegmenter:
    """Import the recorded module, call its factory again (with the recorded classes) and wrap the module; the
    caller loads the checkpoint's weights strictly over the factory's. Runs code named by a file: only reached
    through the registry's rebuild with ``trust_code`` (``--trust-code``); prints what it imports first."""
    module, factory = str(record.get("module") or ""), str(record.get("factory") or "")
    if not module or not factory or not factory.isidentifier():
        raise CheckpointError(f"{source}: the python: record lacks a valid module or factory (corrupt checkpoint)")
    print(f"denseood: --trust-code: importing {module!r} and calling {factory}(), as {source} records",
          file=sys.stderr, flush=True)
    net, _ = _call_factory(module, factory, len(class_names), class_set)
    meta = {k: v for k, v in dict(record.get("meta") or {}).items() if k in META_KEYS and v is not None}
    model = PythonSegmenter(net, meta=meta, class_names=class_names, class_set=class_set, source=source)
    model.module_name, model.factory_name = module, factory
    model.spec = str(record.get("spec") or source)
    return model


def _shown(value: Any) -> str:
    """A value read from a file, quoted on one line for a message (at most 120 characters)."""
    text = repr(str(value))
    return text if len(text) <= 120 else text[:117] + "..."


def untrusted_code_error(record: dict[str, Any], source: str) -> CheckpointError:
    """The refusal of a checkpoint that records a ``python:`` model (its code is never run on the file's word)."""
    return CheckpointError(
        f"{source} was saved from a python: model and names code to import (module {_shown(record.get('module'))}, "
        f"factory {_shown(record.get('factory'))}); denseood never runs code named by a file. If you trust that "
        f"code, name it yourself: --checkpoint python:MODULE:FACTORY --weights {source} (or add --trust-code)")


# ------------------------------------------------------------------------------------------ the registry's row
def _parse(spec: str, rest: str) -> tuple[str, ...]:
    module, sep, factory = rest.rpartition(":")
    if not sep or not module or not factory or not factory.isidentifier():
        raise ConfigError(f"model spec {spec!r} must be python:MODULE:FACTORY (FACTORY a function name)")
    return module, factory


def _load(parts: tuple[str, ...], *, map_location: Any, num_classes: int | None, class_set: str | None,
          weights: str | Path | None = None, **_: Any) -> PythonSegmenter:
    """``load_python``, then the ``--weights`` file (a checkpoint of this model or a bare state dict) strictly."""
    model = load_python(*parts, map_location=map_location, num_classes=num_classes, class_set=class_set)
    return model if weights is None else load_weights_file(model, weights, map_location=map_location)


def _rebuild(meta: dict[str, Any], *, class_set: str | None, source: str, trust_code: bool = False,
             **_: Any) -> PythonSegmenter:
    if not trust_code:
        raise untrusted_code_error(meta["external"], source)
    return rebuild_python(meta["external"], class_names=tuple(meta["class_names"]), class_set=class_set,
                          source=source)


def _describe(spec: str, parts: tuple[str, ...], model: PythonSegmenter) -> ModelOrigin:
    return origin_of("python", spec, model, model.module_name if _is_file(parts[0]) else None, module=parts[0],
                     factory=parts[1], weights=model.checkpoint_path)


SOURCE = Source("python", "python:MODULE:FACTORY (MODULE a dotted name or a .py file; FACTORY() returns an "
                "nn.Module)", _parse, _load, _rebuild, _describe, takes_weights=True, runs_code=True)
