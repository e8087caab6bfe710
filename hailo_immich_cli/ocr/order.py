"""Orderings of detected text boxes: true reading order, and the order Immich's service emits.

Immich's service sorts boxes with a line-grouping sort whose final step indexes its line ids twice,
so its order is not a reading order and depends on contour order. The server's protocol module
needs that exact order (and Immich's unsorted box scores) to answer like the official service;
pipelines use `reading_order`.
"""

from __future__ import annotations

import numpy as np

LINE_GAP_PX = 10  # a top-left y step of this many pixels or more starts a new line (Immich's value)


def _line_ids(y_sorted: np.ndarray) -> np.ndarray:
    ids = np.zeros(len(y_sorted), dtype=np.int64)
    if len(y_sorted) > 1:
        np.cumsum(np.abs(np.diff(y_sorted)) >= LINE_GAP_PX, out=ids[1:])
    return ids


def reading_order(boxes: np.ndarray, min_overlap: float = 0.5) -> np.ndarray:
    """Indices putting (N, 4, 2) boxes in reading order: lines top to bottom, each left to right.

    A box joins the line of the previous box (by vertical centre) when their vertical extents overlap
    by at least `min_overlap` of the shorter one, so slightly rotated lines stay one line even when
    their ends differ in height by more than a few pixels.
    """
    n = len(boxes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    top, bottom = boxes[:, :, 1].min(axis=1), boxes[:, :, 1].max(axis=1)
    by_centre = np.argsort((top + bottom) / 2, kind="stable")
    line_of = np.zeros(n, dtype=np.int64)
    line, prev = 0, by_centre[0]
    for i in by_centre[1:]:
        overlap = min(bottom[i], bottom[prev]) - max(top[i], top[prev])
        if overlap < min_overlap * min(bottom[i] - top[i], bottom[prev] - top[prev]):
            line += 1
        line_of[i] = line
        prev = i
    return np.lexsort((boxes[:, :, 0].min(axis=1), line_of))


def immich_order(boxes: np.ndarray) -> np.ndarray:
    """Indices reproducing Immich's `sorted_boxes` literally, including its double indexing of line ids."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    y_order = np.argsort(boxes[:, 0, 1], kind="stable")
    lines = _line_ids(boxes[y_order, 0, 1]).astype(np.int32)
    key = lines[y_order] * 1e6 + boxes[y_order, 0, 0]
    return y_order[np.argsort(key, kind="stable")]
