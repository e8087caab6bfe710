"""Turn raw face-detector output tensors into boxes, scores and 5 landmarks (pure NumPy).

Two detector families sit behind one result type:
- SCRFD (Hailo HEFs and Immich's InsightFace packs): anchor-free distances at strides 8/16/32,
  two anchors per cell, each anchor with its own score, box and landmarks.
- CenterFace (the offline CPU detector): a stride-4 centre heatmap with log-scale sizes,
  sub-cell offsets and landmarks relative to the box.
Coordinates come out in the detector's input pixels; the caller maps them back to the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Candidates in one coordinate frame: boxes (N,4) x1y1x2y2, scores (N,), landmarks (N,5,2)."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def take(self, index: np.ndarray) -> "Detections":
        return Detections(self.boxes[index], self.scores[index], self.landmarks[index])

    def scaled(self, factor: float) -> "Detections":
        """Divide coordinates by the input scale (input pixels -> image pixels), as InsightFace does."""
        return Detections(self.boxes / factor, self.scores, self.landmarks / factor)

    def shifted(self, dx: float, dy: float) -> "Detections":
        """Subtract a letterbox offset (centred padding) from every coordinate."""
        if dx == 0 and dy == 0:
            return self
        off = np.array([dx, dy], dtype=np.float32)
        return Detections(self.boxes - np.tile(off, 2), self.scores, self.landmarks - off)


# ---- SCRFD -----------------------------------------------------------------------------------


def scrfd_anchor_centers(height: int, width: int, stride: int, num_anchors: int, offset: float = 0.0) -> np.ndarray:
    """(H*W*A, 2) x,y anchor centres: cell (row, col) sits at ((col+offset)*stride, (row+offset)*stride).

    InsightFace and the Model Zoo use offset 0 (no half-cell shift); `offset` exists so a network
    exported with half-cell centres is a recipe setting. Cells are row-major and each cell's anchors
    are adjacent, which is the order of both the flattened ONNX outputs and a row-major read of the
    HEF's NHWC maps.
    """
    cols, rows = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    centers = (np.stack([cols, rows], axis=-1).reshape(-1, 2) + np.float32(offset)) * np.float32(stride)
    if num_anchors > 1:
        centers = np.repeat(centers, num_anchors, axis=0)
    return centers


def scrfd_decode_level(
    scores: np.ndarray,
    boxes: np.ndarray,
    kps: np.ndarray | None,
    stride: int,
    height: int,
    width: int,
    num_anchors: int,
    threshold: float,
    anchor_offset: float = 0.0,
) -> Detections:
    """Decode one stride level; any layout whose row-major order is (cell, anchor, values) works.

    scores: H*W*A values (probabilities), boxes: H*W*A*4 distances (l, t, r, b) in stride units,
    kps: H*W*A*10 offsets (x, y) * 5 in stride units. Keeps candidates with score >= threshold.
    """
    n = height * width * num_anchors
    s = np.asarray(scores, dtype=np.float32).reshape(-1)
    if s.shape[0] != n:
        raise ValueError(f"stride {stride}: expected {n} scores for {height}x{width}x{num_anchors}, got {s.shape[0]}")
    d = np.asarray(boxes, dtype=np.float32).reshape(n, 4) * np.float32(stride)
    keep = np.where(s >= threshold)[0]
    centers = scrfd_anchor_centers(height, width, stride, num_anchors, anchor_offset)[keep]
    d = d[keep]
    out_boxes = np.concatenate([centers - d[:, :2], centers + d[:, 2:]], axis=1)
    if kps is not None:
        k = np.asarray(kps, dtype=np.float32).reshape(n, 5, 2)[keep] * np.float32(stride)
        landmarks = centers[:, None, :] + k
    else:
        landmarks = np.repeat(centers[:, None, :], 5, axis=1)
    return Detections(out_boxes.astype(np.float32), s[keep], landmarks.astype(np.float32))


def concat(parts: list[Detections]) -> Detections:
    if not parts:
        return Detections.empty()
    return Detections(
        np.concatenate([p.boxes for p in parts]).astype(np.float32, copy=False),
        np.concatenate([p.scores for p in parts]).astype(np.float32, copy=False),
        np.concatenate([p.landmarks for p in parts]).astype(np.float32, copy=False),
    )


# ---- CenterFace ------------------------------------------------------------------------------


def centerface_decode(
    heatmap: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    landmarks: np.ndarray,
    stride: int,
    threshold: float,
) -> Detections:
    """Decode one frame of CenterFace maps (channels first, no batch dim).

    heatmap (1,h,w) centre probability; scale (2,h,w) log(height/stride), log(width/stride);
    offset (2,h,w) sub-cell (dy, dx); landmarks (10,h,w) as (dy, dx) per point, in box units
    from the box's top-left corner. The centre of cell (r, c) is ((c + dx + 0.5) * stride, ...).
    """
    heat = np.asarray(heatmap, dtype=np.float32).reshape(heatmap.shape[-2:])
    rows, cols = np.nonzero(heat >= threshold)
    if rows.size == 0:
        return Detections.empty()
    size_h = np.exp(scale[0, rows, cols]).astype(np.float32) * stride
    size_w = np.exp(scale[1, rows, cols]).astype(np.float32) * stride
    cy = (rows + offset[0, rows, cols] + 0.5) * stride
    cx = (cols + offset[1, rows, cols] + 0.5) * stride
    x1, y1 = cx - size_w / 2, cy - size_h / 2
    boxes = np.stack([x1, y1, x1 + size_w, y1 + size_h], axis=1).astype(np.float32)
    lm = landmarks[:, rows, cols].T.reshape(-1, 5, 2)  # (N, 5, [dy, dx])
    points = np.stack([lm[:, :, 1] * size_w[:, None] + x1[:, None], lm[:, :, 0] * size_h[:, None] + y1[:, None]], axis=-1)
    return Detections(boxes, heat[rows, cols].astype(np.float32), points.astype(np.float32))


# ---- shared ----------------------------------------------------------------------------------


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, plus_one: bool = True) -> np.ndarray:
    """Greedy NMS; indices of kept boxes in descending score order.

    plus_one=True is InsightFace's pixel convention (width = x2 - x1 + 1), which Immich's
    results depend on; a box is suppressed when its IoU with a kept box is above the threshold.
    """
    if boxes.shape[0] == 0:
        return np.zeros((0,), dtype=np.int64)
    one = 1.0 if plus_one else 0.0
    x1, y1, x2, y2 = (boxes[:, i] for i in range(4))
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    order = scores.argsort()[::-1]
    kept: list[int] = []
    while order.size > 0:
        best = order[0]
        kept.append(int(best))
        rest = order[1:]
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + one)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + one)
        inter = inter_w * inter_h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def sort_and_suppress(candidates: Detections, iou_threshold: float, plus_one: bool = True) -> Detections:
    """Sort by descending score, then NMS: InsightFace's order of operations."""
    if len(candidates) == 0:
        return candidates
    ordered = candidates.take(candidates.scores.argsort()[::-1])
    return ordered.take(nms(ordered.boxes, ordered.scores, iou_threshold, plus_one))
