"""5-point alignment: the similarity estimate against scikit-image, and real pixels landing on the template."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hailo_immich_cli.faces.align import align_face, apply_transform, similarity_transform
from tests.helpers.faces import ARCFACE_TEMPLATE, skimage_similarity


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize("seed", range(5))
def test_similarity_matches_scikit_image_umeyama(seed):
    rng = np.random.default_rng(seed)
    src = ARCFACE_TEMPLATE * rng.uniform(0.5, 6) + rng.uniform(-50, 500, 2) + rng.normal(0, 3, (5, 2))
    expected = skimage_similarity(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(similarity_transform(src, ARCFACE_TEMPLATE), expected, rtol=1e-9, atol=1e-9)


def test_exact_similarity_is_recovered():
    known = similarity(2.7, 23.0, 310.0, 95.0)
    landmarks = apply_transform(known, ARCFACE_TEMPLATE)
    matrix = similarity_transform(landmarks, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(apply_transform(matrix, landmarks), ARCFACE_TEMPLATE, atol=1e-9)


def _blob_centres(crop: np.ndarray) -> np.ndarray:
    """Intensity-weighted centroids of the 5 bright spots in a crop, matched to template order."""
    gray = crop[..., 0].astype(np.float64)
    n, labels = cv2.connectedComponents((gray > 20).astype(np.uint8))
    centres = []
    ys, xs = np.mgrid[: gray.shape[0], : gray.shape[1]]
    for k in range(1, n):
        w = gray * (labels == k)
        centres.append([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])
    centres = np.array(centres)
    order = [int(np.argmin(np.linalg.norm(centres - t, axis=1))) for t in ARCFACE_TEMPLATE]
    return centres[order]


@pytest.mark.parametrize("scale,angle", [(3.1, 17.0), (1.6, -35.0), (0.8, 0.0)])
def test_face_at_known_landmarks_lands_on_template(scale, angle):
    """Draw Gaussian spots where a rotated, scaled face's 5 points are; after alignment they sit on
    the ArcFace template within 0.5 px (measured from the warped pixels, not the matrix)."""
    known = similarity(scale, angle, 260.0, 140.0)
    landmarks = apply_transform(known, ARCFACE_TEMPLATE)
    h, w = 600, 640
    ys, xs = np.mgrid[:h, :w]
    img = np.zeros((h, w), np.float64)
    sigma = 2.0 * scale
    for x, y in landmarks:
        img += 250 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    rgb = np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
    crop = align_face(rgb, landmarks.astype(np.float32), ARCFACE_TEMPLATE, 112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(_blob_centres(crop), ARCFACE_TEMPLATE, atol=0.5)


def test_alignment_equals_immich_reference_pixels():
    """Same crop as insightface's norm_crop (skimage estimate + cv2.warpAffine, border 0)."""
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    lm = apply_transform(similarity(1.9, 11.0, 120.0, 40.0), ARCFACE_TEMPLATE) + rng.normal(0, 1.5, (5, 2))
    expected = cv2.warpAffine(img, skimage_similarity(lm, ARCFACE_TEMPLATE), (112, 112), borderValue=0.0)
    ours = align_face(img, lm.astype(np.float32), ARCFACE_TEMPLATE, 112)
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


def test_degenerate_landmarks_give_a_black_crop_not_an_error():
    crop = align_face(np.full((50, 50, 3), 200, np.uint8), np.zeros((5, 2), np.float32), ARCFACE_TEMPLATE, 112)
    assert crop.shape == (112, 112, 3) and crop.max() == 0
