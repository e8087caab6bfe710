"""Text-line recognition: perspective crops of detected quads, batching by aspect ratio, CTC decode.

Two input layouts, chosen by the recipe's `preprocess.width_mode`:
- "dynamic" (ONNX, Immich's pipeline): crops sorted by width/height, batches padded with zeros to
  the widest crop in the batch (at least `width`), float32 NCHW;
- "fixed" (Hailo HEF): every crop resized to `height` and at most `width`, right-padded with
  `pad_value`, uint8 NHWC; normalisation happens on the chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from PIL import Image

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.ocr_ctc import ctc_greedy, load_charset
from hailo_immich_cli.recipes import Recipe
from hailo_immich_cli.tensors import image_input, input_name

TALL_RATIO = 1.5  # crops at least this much taller than wide are vertical text: rotate 90 degrees


def perspective_coefficients(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """(N, 8) PIL PERSPECTIVE coefficients mapping each output rectangle onto its quad (float32 DLT via SVD)."""
    n = len(boxes)
    src = np.zeros((n, 4, 2), dtype=np.float32)
    src[:, 1:3, 0] = widths[:, None]
    src[:, 2:4, 1] = heights[:, None]
    x, y = src[..., 0], src[..., 1]
    u, v = boxes[..., 0].astype(np.float32), boxes[..., 1].astype(np.float32)
    a = np.zeros((n, 8, 9), dtype=np.float32)
    a[:, ::2, 0], a[:, ::2, 1], a[:, ::2, 2] = x, y, 1
    a[:, ::2, 6], a[:, ::2, 7], a[:, ::2, 8] = -u * x, -u * y, -u
    a[:, 1::2, 3], a[:, 1::2, 4], a[:, 1::2, 5] = x, y, 1
    a[:, 1::2, 6], a[:, 1::2, 7], a[:, 1::2, 8] = -v * x, -v * y, -v
    h = np.linalg.svd(a)[2][:, -1, :].reshape(n, 3, 3)
    h = h / h[:, 2:3, 2:3]
    return h.reshape(n, 9)[:, :8]


def crop_lines(image: Image.Image, boxes: np.ndarray) -> list[np.ndarray]:
    """RGB uint8 crop per (4, 2) TL/TR/BR/BL quad: bicubic perspective warp, tall crops turned 90 degrees CCW."""
    if len(boxes) == 0:
        return []
    b = boxes.astype(np.float32)
    widths = np.maximum(np.linalg.norm(b[:, 1] - b[:, 0], axis=1), np.linalg.norm(b[:, 2] - b[:, 3], axis=1)).astype(np.int32)
    heights = np.maximum(np.linalg.norm(b[:, 0] - b[:, 3], axis=1), np.linalg.norm(b[:, 1] - b[:, 2], axis=1)).astype(np.int32)
    widths, heights = np.maximum(widths, 1), np.maximum(heights, 1)
    coeffs = perspective_coefficients(b, widths, heights)
    crops = []
    for c, w, h in zip(coeffs, widths.tolist(), heights.tolist()):
        crop = image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(c.tolist()), Image.Resampling.BICUBIC)
        arr = np.asarray(crop)
        if h / w >= TALL_RATIO:
            arr = np.rot90(arr)
        crops.append(np.ascontiguousarray(arr))
    return crops


def _resized_width(crop: np.ndarray, height: int, limit: int) -> int:
    h, w = crop.shape[:2]
    return max(1, min(limit, int(math.ceil(height * (w / float(h))))))


def dynamic_batch(crops: Sequence[np.ndarray], recipe: Recipe) -> np.ndarray:
    """Immich/RapidOCR layout: NCHW float32, width = height * max(width/height, widest crop), zero padded."""
    pre = recipe.preprocess
    height, base_w = int(pre.get("height", 48)), int(pre.get("width", 320))
    max_ratio = max([base_w / height] + [c.shape[1] / float(c.shape[0]) for c in crops])
    width = int(height * max_ratio)
    bgr = pre.get("color", "BGR") == "BGR"
    divisor = np.float32(pre.get("divisor", 255.0))
    mean = np.float32(pre.get("mean", [0.5])[0])
    std = np.float32(pre.get("std", [0.5])[0])
    out = np.zeros((len(crops), 3, height, width), dtype=np.float32)
    for i, crop in enumerate(crops):
        rw = _resized_width(crop, height, width)
        img = cv2.resize(crop, (rw, height))
        img = (img[..., ::-1] if bgr else img).astype(np.float32)
        img = img.transpose(2, 0, 1) / divisor
        img -= mean
        img /= std
        out[i, :, :, :rw] = img
    return out


def fixed_batch(crops: Sequence[np.ndarray], recipe: Recipe) -> np.ndarray:
    """Hailo layout: NHWC uint8 at exactly height x width, right-padded with pad_value (normalisation on-chip)."""
    pre = recipe.preprocess
    height, width = int(pre.get("height", 48)), int(pre.get("width", 320))
    out = np.full((len(crops), height, width, 3), int(pre.get("pad_value", 128)), dtype=np.uint8)
    for i, crop in enumerate(crops):
        rw = _resized_width(crop, height, width)
        out[i, :, :rw] = cv2.resize(crop, (rw, height))
    return image_input(out, recipe)  # colour order, dtype, layout (and host normalisation for ONNX stand-ins)


@dataclass(frozen=True)
class Recognition:
    texts: list[str]
    scores: list[float]
    provenance: Provenance


def _as_ntc(raw: np.ndarray, n: int, classes: int) -> np.ndarray:
    return raw.reshape(n, -1, classes)


def recognize(session, recipe: Recipe, crops: Sequence[np.ndarray]) -> Recognition:
    """Text and confidence per crop, in the crops' order."""
    model = session.model(recipe.id)
    charset = load_charset(recipe, session.files)
    if not crops:
        return Recognition([], [], model.provenance)
    fixed = recipe.preprocess.get("width_mode", "dynamic") == "fixed"
    batch = recipe.batch_size if fixed else (session.settings.max_batch_ocr or recipe.batch_size)
    name = input_name(recipe, model.inputs)
    out_name = recipe.outputs[0].name if recipe.outputs and recipe.outputs[0].name else None
    order = np.argsort(np.array([c.shape[1] / float(c.shape[0]) for c in crops]))
    texts: list[str] = [""] * len(crops)
    scores: list[float] = [0.0] * len(crops)
    provenance = model.provenance
    for start in range(0, len(crops), batch):
        ids = order[start : start + batch]
        with session.host_time(recipe.id):
            chunk = [crops[i] for i in ids]
            feed = fixed_batch(chunk, recipe) if fixed else dynamic_batch(chunk, recipe)
        result = session.run(recipe.id, {name: feed})
        provenance = result.provenance
        with session.host_time(recipe.id):
            raw = result.outputs[out_name] if out_name else next(iter(result.outputs.values()))
            decoded = ctc_greedy(_as_ntc(np.asarray(raw, dtype=np.float32), len(ids), len(charset)), charset)
            for i, (text, score) in zip(ids.tolist(), decoded):
                texts[i], scores[i] = text, score
    return Recognition(texts, scores, provenance)
