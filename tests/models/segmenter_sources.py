"""The model sources of the segmenter contract suite (tests/models/test_segmenter_contract.py): one
:class:`Source` per way ``denseood.models.load_model`` can load a model, each with a builder that writes a tiny
random model into a folder and returns its load spec, and what the source documents (mean/std, features,
output kind). A new source gets the whole suite by adding one entry to ``SOURCES``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from denseood.models import IMAGENET_MEAN, IMAGENET_STD, create_segmenter, save_checkpoint
from tests.model_builders import MEAN, STD, tiny_lraspp, tiny_mask2former, tiny_segformer, write_factory

#: the mean/std given to the smp model (not ImageNet's: the checkpoint must carry them)
SMP_MEAN, SMP_STD = (0.3, 0.4, 0.5), (0.2, 0.3, 0.4)
#: metadata of the python: factory with features (module attributes, read by the python: source)
FEAT_MEAN, FEAT_STD = (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)

FEATURE_FACTORY = f'''import torch
import torch.nn as nn


class Net(nn.Module):
    class_names = ["road", "wall", "thing"]
    mean = {FEAT_MEAN!r}
    std = {FEAT_STD!r}

    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.head = nn.Conv2d(6, 3, 1)

    def forward(self, x, return_features=False):
        f = torch.relu(self.body(x))
        out = self.head(f)
        return (out, f) if return_features else out


def make():
    torch.manual_seed(4)
    return Net()
'''


@dataclass(frozen=True)
class Source:
    """One model source. ``build(folder)`` writes the model's files into ``folder`` and returns the
    ``load_model`` spec; ``mean``/``std`` are what the source documents for 0..1 RGB; ``features``: whether
    ``model(x, return_features=True)`` gives ``(scores, features)`` (else a ConfigError); ``self_contained``:
    whether a checkpoint saved by ``save_checkpoint`` loads with the source's files gone; ``reload_kw``: the
    keywords ``load_model`` needs for that checkpoint; ``needs``: a package to skip on when absent."""

    name: str
    build: Callable[[Path], str]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    features: bool
    output_kind: str = "logits"
    self_contained: bool = True
    reload_kw: dict[str, Any] = field(default_factory=dict)
    needs: str | None = None


def _smp(d: Path) -> str:
    torch.manual_seed(0)
    model = create_segmenter("fpn", "resnet18", 4, mean=SMP_MEAN, std=SMP_STD, decoder_segmentation_channels=32,
                              decoder_pyramid_channels=32)
    return str(save_checkpoint(model, d / "smp.pt"))


def _smp_abet(d: Path) -> str:
    """An smp checkpoint carrying AbeT's learned temperature head (``train --head abet``)."""
    torch.manual_seed(0)
    model = create_segmenter("fpn", "resnet18", 4, mean=SMP_MEAN, std=SMP_STD, decoder_segmentation_channels=32,
                              decoder_pyramid_channels=32, head="abet")
    return str(save_checkpoint(model, d / "smp_abet.pt"))


def _segformer(d: Path) -> str:
    tiny_segformer(d / "segformer", num_labels=5)
    return f"hf:{d / 'segformer'}"


def _mask2former(d: Path) -> str:
    tiny_mask2former(d / "m2f", num_labels=4)
    return f"hf:{d / 'm2f'}"


def _torchvision(d: Path) -> str:
    tiny_lraspp(d / "lraspp.pth", num_classes=6)
    return f"torchvision:lraspp_mobilenet_v3_large:{d / 'lraspp.pth'}"


def _python(d: Path) -> str:
    return f"python:{write_factory(d / 'factory.py')}:make"


def _python_features(d: Path) -> str:
    (d / "featnet.py").write_text(FEATURE_FACTORY)
    return f"python:{d / 'featnet.py'}:make"


SOURCES: list[Source] = [
    Source("smp", _smp, SMP_MEAN, SMP_STD, features=True),
    Source("smp-abet", _smp_abet, SMP_MEAN, SMP_STD, features=True),
    Source("hf-semantic", _segformer, MEAN, STD, features=False, needs="transformers"),
    Source("hf-universal", _mask2former, MEAN, STD, features=True, output_kind="mask_scores", needs="transformers"),
    Source("torchvision", _torchvision, IMAGENET_MEAN, IMAGENET_STD, features=False),
    Source("python", _python, IMAGENET_MEAN, IMAGENET_STD, features=False, self_contained=False,
           reload_kw={"trust_code": True}),
    Source("python-features", _python_features, FEAT_MEAN, FEAT_STD, features=True, self_contained=False,
           reload_kw={"trust_code": True}),
]

