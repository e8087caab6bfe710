"""DB (differentiable binarisation) post-processing: text probability map -> quadrilaterals.

Shared by every OCR detector layout (Immich's dynamic-size ONNX input and the Hailo fixed-canvas
tiles). The arithmetic follows the reference DB post-processing that Immich's service runs, step
for step, because the boxes feed the recogniser and their order reaches Immich's database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import cv2
import numpy as np
import pyclipper


@dataclass(frozen=True)
class DbParams:
    """Thresholds of the DB post-processing; every default comes from the recipe."""

    binary_threshold: float = 0.3
    box_threshold: float = 0.5
    unclip_ratio: float = 1.6
    min_size: int = 3
    max_candidates: int = 1000
    dilate: bool = True

    @classmethod
    def from_recipe(cls, post: Mapping[str, Any], box_threshold: float | None = None) -> "DbParams":
        return cls(
            binary_threshold=float(post.get("binary_threshold", 0.3)),
            box_threshold=float(box_threshold if box_threshold is not None else post.get("box_threshold", 0.5)),
            unclip_ratio=float(post.get("unclip_ratio", 1.6)),
            min_size=int(post.get("min_size", 3)),
            max_candidates=int(post.get("max_candidates", 1000)),
            dilate=bool(post.get("dilate", True)),
        )


def _mini_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle as 4 float32 corners (TL, TR, BR, BL by the x-then-y rule) and its short side."""
    rect = cv2.minAreaRect(points)
    corners = cv2.boxPoints(rect)
    corners = corners[np.argsort(corners[:, 0], kind="stable")]
    left = (0, 1) if corners[1, 1] > corners[0, 1] else (1, 0)
    right = (2, 3) if corners[3, 1] > corners[2, 1] else (3, 2)
    box = corners[[left[0], right[0], right[1], left[1]]]
    return box, float(min(rect[1]))


def _box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the polygon, rasterised on its bounding rectangle only (no full-size mask)."""
    h, w = prob.shape
    xmin = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    xmax = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    ymin = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    ymax = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((ymax - ymin + 1, xmax - xmin + 1), dtype=np.uint8)
    local = (box - np.array([xmin, ymin], dtype=box.dtype)).astype(np.int32)
    cv2.fillPoly(mask, local.reshape(1, -1, 2), 1)
    return float(cv2.mean(prob[ymin : ymax + 1, xmin : xmax + 1], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    """Grow the box by area * ratio / perimeter (rounded joins), as DB's label generation shrank it."""
    x, y = box[:, 0].astype(np.float64), box[:, 1].astype(np.float64)
    area = abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2.0
    perimeter = float(np.sum(np.hypot(x - np.roll(x, -1), y - np.roll(y, -1))))
    if perimeter == 0:
        return box.astype(np.int32)
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * ratio / perimeter)
    if not grown:
        return np.zeros((0, 2), np.int32)
    return np.concatenate([np.asarray(p, dtype=np.int32).reshape(-1, 2) for p in grown])


def db_boxes(prob: np.ndarray, params: DbParams, dest_w: int, dest_h: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (N, 4, 2) int32 in destination pixels and their scores (N,) float32, in contour order.

    `prob` is the (H', W') probability map; coordinates scale by dest/map size and are clipped to
    [0, dest]. The per-contour loop only does geometry; scoring touches the bounding rectangle.
    """
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    height, width = prob.shape
    bitmap = (prob > params.binary_threshold).astype(np.uint8)
    if params.dilate:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    boxes: list[np.ndarray] = []
    scores: list[float] = []
    for contour in contours[: params.max_candidates]:
        box, short = _mini_box(contour)
        if short < params.min_size:
            continue
        score = _box_score(prob, box)
        if params.box_threshold > score:
            continue
        grown = _unclip(box, params.unclip_ratio)
        if len(grown) < 3:
            continue
        box, short = _mini_box(grown)
        if short < params.min_size + 2:
            continue
        boxes.append(box)
        scores.append(score)
    if not boxes:
        return np.zeros((0, 4, 2), np.int32), np.zeros(0, np.float32)
    stacked = np.stack(boxes)  # float32, map pixels
    stacked[..., 0] = np.clip(np.round(stacked[..., 0] / width * dest_w), 0, dest_w)
    stacked[..., 1] = np.clip(np.round(stacked[..., 1] / height * dest_h), 0, dest_h)
    return stacked.astype(np.int32), np.asarray(scores, dtype=np.float32)


def order_and_filter(boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Corners as TL, TR, BR, BL, clipped to the image, dropping boxes with a side of 3 px or less.

    Vectorised over all boxes: sort corners by x, then each half by y.
    """
    if len(boxes) == 0:
        return np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    b = boxes.astype(np.float32)
    by_x = np.take_along_axis(b, np.argsort(b[..., 0], axis=1, kind="stable")[..., None], axis=1)
    left, right = by_x[:, :2], by_x[:, 2:]
    left = np.take_along_axis(left, np.argsort(left[..., 1], axis=1, kind="stable")[..., None], axis=1)
    right = np.take_along_axis(right, np.argsort(right[..., 1], axis=1, kind="stable")[..., None], axis=1)
    ordered = np.stack([left[:, 0], right[:, 0], right[:, 1], left[:, 1]], axis=1)
    ordered[..., 0] = np.trunc(np.clip(ordered[..., 0], 0, width - 1))
    ordered[..., 1] = np.trunc(np.clip(ordered[..., 1], 0, height - 1))
    w = np.linalg.norm(ordered[:, 0] - ordered[:, 1], axis=1).astype(np.int64)
    h = np.linalg.norm(ordered[:, 0] - ordered[:, 3], axis=1).astype(np.int64)
    keep = (w > 3) & (h > 3)
    return ordered[keep], np.asarray(scores, np.float32)[keep]
