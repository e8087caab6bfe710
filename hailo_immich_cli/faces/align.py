"""Align faces for a recogniser: 5-point similarity transform onto the recipe's template, then warp.

ArcFace was trained on crops made exactly this way; feeding it a stretched box crop instead
(as an earlier Hailo worker did) costs identity accuracy. The template and crop size come from
the recognition recipe.
"""

from __future__ import annotations

import cv2
import numpy as np


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity (rotation, uniform scale, translation) mapping src to dst.

    Umeyama's closed form (4 degrees of freedom, reflection excluded), computed in float64.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching (N>=2, 2) point sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / src.shape[0]
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[1] = -1.0
    rank = np.linalg.matrix_rank(cov)
    if rank == 0:
        return np.array([[np.nan] * 3] * 2)
    if rank == 1:
        # Collinear points: the rotation is only defined up to a reflection; take the proper one.
        proper = np.linalg.det(u) * np.linalg.det(vt) > 0
        rotation = u @ vt if proper else u @ np.diag([1.0, -1.0]) @ vt
    else:
        rotation = u @ np.diag(sign) @ vt
    var_src = (src_c**2).sum() / src.shape[0]
    scale = (sigma * sign).sum() / var_src if var_src > 0 else 1.0
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """The size x size crop whose 5 points land on the template (bilinear, black outside the image)."""
    matrix = similarity_transform(landmarks, template)
    if not np.all(np.isfinite(matrix)):
        return np.zeros((size, size, 3), dtype=np.uint8)
    return cv2.warpAffine(rgb, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)


def align_faces(rgb: np.ndarray, landmarks: np.ndarray, template: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 aligned crops for (N, 5, 2) landmarks."""
    crops = [align_face(rgb, lm, template, size) for lm in landmarks]
    if not crops:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack(crops)
