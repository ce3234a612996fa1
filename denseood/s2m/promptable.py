"""Promptable mask models: image + box (+ point) prompts -> one mask per box.

Interface (:class:`PromptableSegmenter`)::

    predict(image uint8 (H,W,3) RGB, boxes (N,4) float xyxy pixels,
            points (coords (N,K,2) float xy, labels (N,K) int 1/0/-1) or None)
        -> masks (N,H,W) bool, quality (N,) float32

Backends: :class:`SamBackend` (segment-anything; checkpoint files go in ``weights/``) and
:class:`GrabCutBackend` (OpenCV, no weights). :func:`build_prompt_model` parses "grabcut" | "sam:TYPE:PATH".
See docs/architecture.md.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np
import torch

from ..dist import resolve_device
from ..errors import CheckpointError, ConfigError
from ..io import safe_torch_load

#: official segment-anything checkpoint file per model type
SAM_FILES = {"vit_b": "sam_vit_b_01ec64.pth", "vit_l": "sam_vit_l_0b3195.pth", "vit_h": "sam_vit_h_4b8939.pth"}
#: image-encoder width of each SAM type (used to tell which type a checkpoint file holds)
_SAM_WIDTH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}



@runtime_checkable
class PromptableSegmenter(Protocol):
    """A mask backend: one mask per box prompt (the contract S2M relies on; see the module docstring).

    predict(image (H,W,3) uint8 RGB, boxes (N,4) float xyxy pixels, points None or (coords (N,K,2) float xy,
    labels (N,K) int 1 positive / 0 negative / -1 padding)) -> (masks (N,H,W) bool, quality (N,) float32,
    higher = better). N may be 0. S2M passes ``point_only=True`` (keyword) only for point prompters
    (``Prompts.meta["point_only"]``): a backend that can then drop the boxes does so (SAM).
    """

    def predict(self, image: np.ndarray, boxes: np.ndarray, points: Any = None,
                point_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        ...


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """"auto" -> bf16 on CUDA when supported, fp16 on older CUDA, fp32 on CPU (denseood.infer.resolve_dtype)."""
    from ..infer import resolve_dtype as _resolve

    return dtype if isinstance(dtype, torch.dtype) else _resolve(str(dtype), device)


def _autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _check_inputs(image: np.ndarray, boxes: Any, points: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ConfigError(f"image must be (H,W,3) uint8 RGB, got {image.shape} {image.dtype}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    coords = labels = None
    if points is not None:
        coords = np.asarray(points[0], np.float32).reshape(len(boxes), -1, 2)
        labels = np.asarray(points[1], np.int64).reshape(len(boxes), -1)
        if coords.shape[1] != labels.shape[1]:
            raise ConfigError(f"point coords {coords.shape} and labels {labels.shape} disagree")
        if coords.shape[1] == 0 or not (labels >= 0).any():
            coords = labels = None
    return image, boxes, coords, labels


# ----------------------------------------------------------------------------------------------------------
# SAM


def _key_diff(target: dict, state: dict) -> str:
    """One line: how a state dict differs from the model's (missing / unexpected / mis-shaped keys, a few named)."""
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = [f"{k} file {tuple(state[k].shape)} vs model {tuple(target[k].shape)}" for k in sorted(set(target) & set(state))
              if isinstance(state[k], torch.Tensor) and state[k].shape != target[k].shape]
    return (f"The file has {len(missing)} missing keys {missing[:3]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:3]} and {len(shapes)} shape mismatches {shapes[:2]}")


class SamBackend:
    """segment-anything backend.

    model_type: "vit_b" | "vit_l" | "vit_h". checkpoint: the official file for that type (see SAM_FILES), or
    None when ``model`` (an already built ``segment_anything.modeling.Sam``, e.g. a tiny one in tests) is given.
    device/dtype: "auto" picks CUDA with bf16 (fp16 on GPUs without bf16) autocast, else CPU fp32.
    max_batch: boxes per ``predict_torch`` call; all boxes of an image go into one call unless an image has
    more than this many (memory bound: masks are upsampled to full image size, 3 per box).
    Per image: one image embedding (``SamPredictor.set_image``), prompts mapped with the model's own
    ``ResizeLongestSide`` (``apply_boxes_torch`` / ``apply_coords_torch``), ``multimask_output=True`` and the
    mask with the highest predicted IoU kept; quality = that predicted IoU.
    """

    def __init__(self, model_type: str = "vit_b", checkpoint: str | Path | None = None, device: str = "auto",
                 dtype: str = "auto", model: Any = None, max_batch: int = 64) -> None:
        from segment_anything import SamPredictor, sam_model_registry

        if model is None:
            if model_type not in SAM_FILES:
                raise ConfigError(f"unknown SAM model type {model_type!r}; choose one of {list(SAM_FILES)} "
                                  f"(e.g. sam:vit_b:weights/{SAM_FILES['vit_b']})")
            if checkpoint is None:
                raise CheckpointError(f"SAM {model_type} needs its checkpoint file: download the official "
                                      f"{SAM_FILES[model_type]} into weights/ and pass sam:{model_type}:weights/{SAM_FILES[model_type]}")
            model = self._load(model_type, Path(checkpoint), sam_model_registry)
        self.model_type = model_type
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = model.to(self.device).eval()
        self.predictor = SamPredictor(self.model)
        self.max_batch = int(max_batch)

    @staticmethod
    def _load(model_type: str, path: Path, registry: dict) -> Any:
        if not path.is_file():
            raise CheckpointError(f"SAM checkpoint not found: {path}; download the official {SAM_FILES[model_type]} "
                                  f"for model type {model_type} into weights/ (see weights/README.md)")
        try:
            state = safe_torch_load(path, path=path, what="SAM checkpoint")
        except CheckpointError as e:
            raise CheckpointError(f"{e}; expected the official {SAM_FILES[model_type]} for model type "
                                  f"{model_type}") from e.__cause__
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if not isinstance(state, dict):
            raise CheckpointError(f"{path} is not a SAM state dict; expected the official {SAM_FILES[model_type]} "
                                  f"for model type {model_type}")
        sam = registry[model_type](checkpoint=None)
        try:
            sam.load_state_dict(state)
        except RuntimeError as e:
            w = state.get("image_encoder.patch_embed.proj.weight")
            held = _SAM_WIDTH.get(int(w.shape[0])) if isinstance(w, torch.Tensor) and w.ndim == 4 else None
            hint = f" (the file looks like a {held} checkpoint: use sam:{held}:{path})" if held and held != model_type else ""
            raise CheckpointError(f"SAM checkpoint {path} does not match model type {model_type}; expected the official "
                                  f"{SAM_FILES[model_type]}{hint}. {_key_diff(sam.state_dict(), state)}") from e
        return sam

    @torch.no_grad()
    def predict(self, image: np.ndarray, boxes: np.ndarray, points: Any = None,
                point_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """See the module doc. Returns masks (N,H,W) bool and quality (N,) float32 (SAM's predicted IoU).
        point_only: prompt with the points alone (the boxes are not given to SAM; UGainS' point prompts)."""
        image, boxes, coords, labels = _check_inputs(image, boxes, points)
        if point_only and coords is None:
            raise ConfigError("SamBackend: point_only prompts need points")
        h, w = image.shape[:2]
        if len(boxes) == 0:
            return np.zeros((0, h, w), bool), np.zeros(0, np.float32)
        dev = self.device
        with _autocast(dev, self.dtype):
            self.predictor.set_image(image)
        tr = self.predictor.transform
        masks_out, q_out = [], []
        for s in range(0, len(boxes), self.max_batch):
            b = None if point_only else tr.apply_boxes_torch(torch.as_tensor(boxes[s:s + self.max_batch],
                                                                             device=dev), (h, w))
            pc = pl = None
            if coords is not None:
                pc = tr.apply_coords_torch(torch.as_tensor(coords[s:s + self.max_batch], device=dev), (h, w))
                pl = torch.as_tensor(labels[s:s + self.max_batch], device=dev, dtype=torch.int)
            with _autocast(dev, self.dtype):
                masks, iou, _ = self.predictor.predict_torch(pc, pl, b, multimask_output=True)
            iou = iou.float()
            best = iou.argmax(1)
            ar = torch.arange(len(best), device=best.device)
            masks_out.append(masks[ar, best].cpu().numpy().astype(bool))
            q_out.append(iou[ar, best].cpu().numpy().astype(np.float32))
        self.predictor.reset_image()
        return np.concatenate(masks_out, 0), np.concatenate(q_out, 0)


# ----------------------------------------------------------------------------------------------------------
# GrabCut


class GrabCutBackend:
    """OpenCV GrabCut from each box; no weights needed.

    Each box is widened by ``margin`` (fraction of its size, + 2 px) so a tight or slightly clipped box still
    encloses the object; GrabCut runs on a window around it (the box plus ``context`` times its size on each
    side, for background colour samples). Without points the mask is initialised as GC_INIT_WITH_RECT does
    (outside = background, inside = probable foreground); with points the same initial mask additionally
    marks discs of radius ``point_radius`` px around positive points as definite foreground and around
    negative points as definite background, and GrabCut runs with GC_INIT_WITH_MASK. ``iters`` iterations.
    quality (in [0,1]) = 1 - the fraction of the widened box's 2-px border band covered by the mask (an
    object segmented whole from a loose box does not touch the box border; a mask that floods the box does);
    0 for an empty mask. When GrabCut cannot run (no background pixels in the window, degenerate box) the mask
    is the box itself with quality 0.
    """

    def __init__(self, iters: int = 5, margin: float = 0.1, context: float = 0.5, point_radius: int = 3) -> None:
        self.iters = int(iters)
        self.margin = float(margin)
        self.context = float(context)
        self.point_radius = int(point_radius)

    def predict(self, image: np.ndarray, boxes: np.ndarray, points: Any = None,
                point_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """See the class doc. point_only is accepted for the S2M contract and changes nothing: GrabCut always
        needs a rectangle (the point prompter gives a window around each point,
        :func:`~denseood.s2m.points.point_window`)."""
        image, boxes, coords, labels = _check_inputs(image, boxes, points)
        h, w = image.shape[:2]
        masks = np.zeros((len(boxes), h, w), bool)
        quality = np.zeros(len(boxes), np.float32)
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        for i, b in enumerate(boxes):
            pc = coords[i] if coords is not None else None
            pl = labels[i] if labels is not None else None
            masks[i], quality[i] = self._one(bgr, b, pc, pl)
        return masks, quality

    def _one(self, bgr: np.ndarray, box: np.ndarray, pc: np.ndarray | None, pl: np.ndarray | None) -> tuple[np.ndarray, float]:
        h, w = bgr.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in box)
        bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        mx, my = self.margin * bw + 2, self.margin * bh + 2
        rx0, ry0 = int(max(0, np.floor(x0 - mx))), int(max(0, np.floor(y0 - my)))
        rx1, ry1 = int(min(w, np.ceil(x1 + mx))), int(min(h, np.ceil(y1 + my)))
        full = np.zeros((h, w), bool)
        if rx1 - rx0 < 2 or ry1 - ry0 < 2:
            return full, 0.0
        cx, cy = self.context * (rx1 - rx0) + 8, self.context * (ry1 - ry0) + 8
        wx0, wy0 = int(max(0, rx0 - cx)), int(max(0, ry0 - cy))
        wx1, wy1 = int(min(w, rx1 + cx)), int(min(h, ry1 + cy))
        win = np.ascontiguousarray(bgr[wy0:wy1, wx0:wx1])
        mask = np.full(win.shape[:2], cv2.GC_BGD, np.uint8)
        mask[ry0 - wy0:ry1 - wy0, rx0 - wx0:rx1 - wx0] = cv2.GC_PR_FGD
        has_points = pc is not None and pl is not None and (pl >= 0).any()
        if has_points:
            for (px, py), lab in zip(pc, pl):
                if lab < 0:
                    continue
                cv2.circle(mask, (int(round(px)) - wx0, int(round(py)) - wy0), self.point_radius,
                           int(cv2.GC_FGD if lab == 1 else cv2.GC_BGD), -1)
        box_region = np.zeros((h, w), bool)
        box_region[ry0:ry1, rx0:rx1] = True
        if not (mask == cv2.GC_BGD).any() or not ((mask == cv2.GC_PR_FGD) | (mask == cv2.GC_FGD)).any():
            return box_region, 0.0
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        # GrabCut's k-means draws from OpenCV's thread RNG, whose state carries over from the previous call:
        # reseed it so a box's mask depends only on the image and the prompt, not on what ran before
        cv2.setRNGSeed(0)
        try:
            if has_points:
                cv2.grabCut(win, mask, None, bgd, fgd, self.iters, cv2.GC_INIT_WITH_MASK)
            else:
                rect = (rx0 - wx0, ry0 - wy0, rx1 - rx0, ry1 - ry0)
                cv2.grabCut(win, mask, rect, bgd, fgd, self.iters, cv2.GC_INIT_WITH_RECT)
        except cv2.error:
            return box_region, 0.0
        fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
        full[wy0:wy1, wx0:wx1] = fg
        full &= box_region
        if not full.any():
            return full, 0.0
        band = box_region.copy()
        band[ry0 + 2:ry1 - 2, rx0 + 2:rx1 - 2] = False
        q = 1.0 - float(full[band].mean()) if band.any() else 0.0
        return full, q


# ----------------------------------------------------------------------------------------------------------


def build_prompt_model(spec: str, device: str = "auto", dtype: str = "auto") -> PromptableSegmenter:
    """Parse a prompt-model spec: "grabcut" | "sam:TYPE:PATH" (TYPE vit_b|vit_l|vit_h)."""
    spec = str(spec).strip()
    if spec == "grabcut":
        return GrabCutBackend()
    if spec.startswith("sam:") or spec == "sam":
        parts = spec.split(":", 2)
        if len(parts) != 3 or not parts[2]:
            raise ConfigError(f"bad prompt model {spec!r}: write sam:TYPE:PATH, e.g. sam:vit_b:weights/{SAM_FILES['vit_b']}")
        return SamBackend(parts[1], parts[2], device=device, dtype=dtype)
    raise ConfigError(f"unknown prompt model {spec!r}; use 'grabcut' or 'sam:TYPE:PATH' "
                      f"(e.g. sam:vit_b:weights/{SAM_FILES['vit_b']})")
