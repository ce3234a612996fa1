"""Shared fixtures for the S2M tests: tiny SAM, textured scenes with discs, tiny segmenter checkpoints."""
from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch


def tiny_sam(img_size: int = 64, dim: int = 32, seed: int = 0):
    """A segment_anything Sam assembled from its own modules with random weights (no download)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    patch = 16
    return Sam(
        image_encoder=ImageEncoderViT(img_size=img_size, patch_size=patch, embed_dim=dim, depth=1, num_heads=2,
                                      out_chans=dim, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6)),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(img_size // patch, img_size // patch),
                                     input_image_size=(img_size, img_size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=dim,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2),
                                 iou_head_depth=2, iou_head_hidden_dim=16),
    ).eval()


def textured_background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h,w,3) uint8 grey-green noisy texture."""
    base = np.empty((h, w, 3), np.float32)
    base[..., 0] = 90
    base[..., 1] = 110
    base[..., 2] = 80
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 1.0)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def disc_scene(h: int, w: int, discs: list[tuple[int, int, int]], rng: np.random.Generator,
               colours: list[tuple[int, int, int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image with saturated coloured discs (cx, cy, r) on a texture; returns (image, instance ids (h,w) int32)."""
    img = textured_background(h, w, rng)
    inst = np.zeros((h, w), np.int32)
    colours = colours or [(230, 30, 40), (40, 60, 235), (250, 220, 20), (240, 20, 220)]
    for k, (cx, cy, r) in enumerate(discs):
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (cx, cy), r, 1, -1)
        col = np.array(colours[k % len(colours)], np.float32)
        noisy = np.clip(col + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
        img[m > 0] = noisy[m > 0]
        inst[m > 0] = k + 1
    return img, inst


def map_from_instances(inst: np.ndarray, rng: np.random.Generator, peak: float = 0.6, noise: float = 0.02,
                       blur: float = 1.5) -> np.ndarray:
    """A soft anomaly map: blurred object masks * peak + noise (float32)."""
    m = (inst > 0).astype(np.float32) * peak
    m = cv2.GaussianBlur(m, (0, 0), blur) if blur > 0 else m
    return (m + rng.normal(0, noise, inst.shape)).astype(np.float32)


def box_of(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def iou_box(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua


def iou_mask(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def tiny_checkpoint(path: Path, train_size=(64, 128), seed: int = 0, extra: dict | None = None) -> Path:
    """A random-init FPN/resnet18 segmenter saved as a denseood checkpoint."""
    from denseood.models.checkpoint import save_checkpoint
    from denseood.models.segmenter import create_segmenter

    torch.manual_seed(seed)
    model = create_segmenter("fpn", "resnet18", 19, train_size=train_size, encoder_depth=3,
                             decoder_segmentation_channels=32, decoder_pyramid_channels=32)
    save_checkpoint(model, path, config={"note": "test"}, metrics={"x": 1.0}, extra=extra or {})
    return path


def write_synthetic_train(root: Path, n: int = 4, size=(64, 128), seed: int = 0) -> Path:
    """A tiny training split in the synthetic reader's Cityscapes layout (no anomalies)."""
    from denseood.io import write_png

    rng = np.random.default_rng(seed)
    for i in range(n):
        img = textured_background(*size, rng)
        lab = np.zeros(size, np.uint8)
        lab[size[0] // 2:] = 0  # road
        lab[: size[0] // 2] = 10  # sky
        stem = f"synth_000000_{i:06d}"
        write_png(root / "leftImg8bit" / "train" / "synth" / f"{stem}_leftImg8bit.png", img)
        write_png(root / "gtFine" / "train" / "synth" / f"{stem}_gtFine_labelTrainIds.png", lab)
    return root


@pytest.fixture(scope="session")
def _ckpt_master(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("s2m_ckpt") / "master.pt")


@pytest.fixture
def ckpt(tmp_path, _ckpt_master):
    """A private copy of a tiny random segmenter checkpoint (64x128 train size)."""
    return shutil.copy(_ckpt_master, tmp_path / "m.pt")
