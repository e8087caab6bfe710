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
from hailo_immich_cli.imaging import pil_map
from hailo_immich_cli.ocr.ctc import ctc_greedy, load_charset
from hailo_immich_cli.models.recipes import Recipe
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


def _quad_warps(boxes: np.ndarray) -> list[tuple[np.ndarray, int, int]]:
    """Per (4, 2) TL/TR/BR/BL quad: the 8 PIL PERSPECTIVE coefficients and the crop's width and height."""
    b = boxes.astype(np.float32)
    widths = np.maximum(np.linalg.norm(b[:, 1] - b[:, 0], axis=1), np.linalg.norm(b[:, 2] - b[:, 3], axis=1)).astype(np.int32)
    heights = np.maximum(np.linalg.norm(b[:, 0] - b[:, 3], axis=1), np.linalg.norm(b[:, 1] - b[:, 2], axis=1)).astype(np.int32)
    widths, heights = np.maximum(widths, 1), np.maximum(heights, 1)
    return list(zip(perspective_coefficients(b, widths, heights), widths.tolist(), heights.tolist()))


def _upright(arr: np.ndarray, w: int, h: int) -> np.ndarray:
    """Tall crops are vertical text: turned 90 degrees CCW."""
    return np.ascontiguousarray(np.rot90(arr) if h / w >= TALL_RATIO else arr)


def crop_lines(image: Image.Image, boxes: np.ndarray) -> list[np.ndarray]:
    """RGB uint8 crop per (4, 2) TL/TR/BR/BL quad: bicubic perspective warp, tall crops turned 90
    degrees CCW. A lone request spreads the crops over the idle cores (`pil_map`)."""
    if len(boxes) == 0:
        return []

    def crop(warp: tuple[np.ndarray, int, int]) -> np.ndarray:
        c, w, h = warp
        return _upright(np.asarray(image.transform((w, h), Image.Transform.PERSPECTIVE, tuple(c.tolist()), Image.Resampling.BICUBIC)), w, h)

    warps = _quad_warps(boxes)
    return pil_map(crop, warps, sum(w * h for _, w, h in warps))


# Pillow samples pixel centres (x + 0.5), OpenCV pixel indices: shift in, map, shift back.
_TO_CENTRES = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
_FROM_CENTRES = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])


def crop_lines_fast(rgb: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """`crop_lines` for the fast host path: the same quads warped with OpenCV (bicubic) from the array."""
    if len(boxes) == 0:
        return []
    crops = []
    for c, w, h in _quad_warps(boxes):
        matrix = _FROM_CENTRES @ np.append(c.astype(np.float64), 1.0).reshape(3, 3) @ _TO_CENTRES
        crops.append(_upright(cv2.warpPerspective(rgb, matrix, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP), w, h))
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
    """(N, T, C) by the output's own class axis (last), so a dictionary giving another class count
    reaches ctc_greedy's ModelMismatchError instead of failing the reshape."""
    return raw.reshape(n, -1, raw.shape[-1] if raw.ndim > 1 else classes)


def _cut_positions(crop: np.ndarray, pieces: int) -> list[tuple[int, bool]]:
    """Where to cut a long line into `pieces`, and whether each cut falls in a word gap.

    Each cut goes to the middle of the emptiest run of columns (least ink against the line's median
    background) within a quarter piece of its even position, so cuts land between characters.
    """
    h, w = crop.shape[:2]
    gray = crop.astype(np.float32).mean(axis=2)
    ink = (np.abs(gray - np.median(gray)) > 40).sum(axis=0)
    step = w / pieces
    cuts = []
    for j in range(1, pieces):
        lo, hi = int(j * step - step / 4), int(j * step + step / 4)
        window = ink[lo:hi]
        quiet = window <= window.min()
        # widest run of the quietest columns in the window
        best_start, best_len, run_start = lo, 0, None
        for k, q in enumerate(np.append(quiet, False)):
            if q and run_start is None:
                run_start = k
            elif not q and run_start is not None:
                if k - run_start > best_len:
                    best_start, best_len = lo + run_start, k - run_start
                run_start = None
        centre = best_start + best_len // 2
        # the gap's full width (it may extend past the window) decides between a space and nothing
        left = centre
        while left > 0 and ink[left - 1] == 0:
            left -= 1
        right = centre
        while right < w - 1 and ink[right + 1] == 0:
            right += 1
        gap = (right - left + 1) if ink[centre] == 0 else 0
        cuts.append((centre, gap >= WORD_GAP * h))
    return cuts


WORD_GAP = 0.12  # a column gap this wide, relative to the crop height, separates words


def split_wide(crop: np.ndarray, height: int, width: int, max_squeeze: float) -> tuple[list[np.ndarray], list[bool]]:
    """Pieces of a line too long for a fixed-width input (40 CTC steps at 320 px), and the spaces between them.

    Squeezing a 100-character line into 320 px leaves it unreadable; pieces of at most ~width px
    (at the model height) keep characters at their trained size. Lines within `max_squeeze` pass whole.
    """
    h, w = crop.shape[:2]
    needed = math.ceil(height * w / float(h))
    if needed <= width * max_squeeze:
        return [crop], []
    pieces = math.ceil(needed / (width * 0.9))
    cuts = _cut_positions(crop, pieces)
    bounds = [0] + [c for c, _ in cuts] + [w]
    parts = [np.ascontiguousarray(crop[:, a:b]) for a, b in zip(bounds, bounds[1:]) if b - a > 0]
    return parts, [space for _, space in cuts][: len(parts) - 1]


def _run_crops(session, recipe: Recipe, crops: Sequence[np.ndarray], charset: tuple[str, ...]) -> tuple[list[str], list[float], Provenance]:
    model = session.model(recipe.id)
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
    return texts, scores, provenance


def recognize(session, recipe: Recipe, crops: Sequence[np.ndarray]) -> Recognition:
    """Text and confidence per crop, in the crops' order.

    Fixed-width recipes split lines longer than `max_squeeze` x width into pieces at gaps and join
    the pieces' texts (with a space where the cut fell in a word gap); the line's confidence is the
    pieces' confidences weighted by their character counts.
    """
    model = session.model(recipe.id)
    charset = model.host_resource("charset", lambda: load_charset(recipe, session.files))
    if not crops:
        return Recognition([], [], model.provenance)
    pre = recipe.preprocess
    max_squeeze = float(pre.get("max_squeeze", 0))
    if pre.get("width_mode", "dynamic") != "fixed" or max_squeeze <= 0:
        texts, scores, provenance = _run_crops(session, recipe, crops, charset)
        return Recognition(texts, scores, provenance)
    height, width = int(pre.get("height", 48)), int(pre.get("width", 320))
    with session.host_time(recipe.id):
        split = [split_wide(c, height, width, max_squeeze) for c in crops]
        pieces = [p for parts, _ in split for p in parts]
    texts, scores, provenance = _run_crops(session, recipe, pieces, charset)
    out_texts, out_scores, k = [], [], 0
    for parts, spaces in split:
        n = len(parts)
        if n == 1:
            out_texts.append(texts[k])
            out_scores.append(scores[k])
        else:
            segs = [t.strip() for t in texts[k : k + n]]
            text = segs[0]
            for seg, space in zip(segs[1:], spaces):
                text += (" " if space and text and seg else "") + seg
            weights = [len(t) for t in segs]
            total = sum(weights)
            score = sum(w * sc for w, sc in zip(weights, scores[k : k + n])) / total if total else 0.0
            out_texts.append(text)
            out_scores.append(round(score, 5))
        k += n
    return Recognition(out_texts, out_scores, provenance)
