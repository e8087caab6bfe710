"""Face decoders against independent loop-by-loop references on synthetic output tensors.

Faces are planted at known anchors (every stride, both anchors of a cell), encoded the way SCRFD
emits them, then decoded: positions must come back exactly (float tolerance).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hailo_immich_cli.faces.decoders import Detections, centerface_decode, nms, scrfd_anchor_centers, scrfd_decode_level, sort_and_suppress
from hailo_immich_cli.faces.detect import Letterbox, decode_scrfd_outputs
from hailo_immich_cli.testkit.face_models import STRIDES, PlantedFace, as_insightface_flat, encode_scrfd
from tests.helpers.faces import as_hailo_nhwc, reference_centerface_decode, reference_nms, reference_scrfd_decode


def planted_faces(rng: np.random.Generator) -> list[PlantedFace]:
    """Two faces per stride, the two sharing one cell (anchor 0 and anchor 1, different scores)."""
    faces = []
    for s in STRIDES:
        g = 640 // s
        row, col = int(rng.integers(2, g - 2)), int(rng.integers(2, g - 2))
        for anchor, score in ((0, 0.81 + s / 1000), (1, 0.93 - s / 1000)):
            size = s * (3 + anchor)
            ltrb = tuple(float(v) for v in rng.uniform(0.3, 0.7, 4) * size)
            kps = rng.uniform(-0.4, 0.4, (5, 2)) * size
            faces.append(PlantedFace(s, row, col, anchor, score, ltrb, kps))
    return faces


def recipe_for(layout: str, outputs):
    """A minimal recipe object naming outputs by role and stride, as the shipped recipes do."""
    specs = []
    for role_i, role in enumerate(("score", "box", "kps")):
        for s_i, s in enumerate(STRIDES):
            specs.append(SimpleNamespace(name=f"{role}{s}", role=role, extra={"stride": s}))
    return SimpleNamespace(
        id="t", path="t.toml", outputs=specs,
        postprocess={"layout": layout, "strides": list(STRIDES), "num_anchors": 2},
    )


def outputs_for(layout: str, maps) -> dict[str, np.ndarray]:
    if layout == "nhwc":
        hailo = as_hailo_nhwc(maps)
        return {f"{role}{s}": hailo[s][i] for s in STRIDES for i, role in enumerate(("score", "box", "kps"))}
    flat = as_insightface_flat(maps)
    return {f"{role}{s}": flat[r * 3 + k] for r, role in enumerate(("score", "box", "kps")) for k, s in enumerate(STRIDES)}


def test_anchor_centres_are_index_times_stride_repeated_per_anchor():
    centers = scrfd_anchor_centers(3, 4, 16, 2)
    assert centers.shape == (24, 2)
    # cell (row 0, col 1): both anchors at x = 16, y = 0; cell (row 2, col 3) at (48, 32)
    np.testing.assert_array_equal(centers[2], [16, 0])
    np.testing.assert_array_equal(centers[3], [16, 0])
    np.testing.assert_array_equal(centers[-1], [48, 32])
    assert centers.min() == 0  # no +stride/2 shift


@pytest.mark.parametrize("layout", ["nhwc", "flat"])
def test_scrfd_decode_recovers_planted_faces_in_both_layouts(layout):
    rng = np.random.default_rng(1)
    faces = planted_faces(rng)
    maps = encode_scrfd(faces, background=0.01)
    found = decode_scrfd_outputs(outputs_for(layout, maps), None, recipe_for(layout, None), Letterbox(640, 640, 640, 640, 0, 0, 1.0), 0.5)
    assert len(found) == len(faces)
    for face in faces:
        match = np.where(np.isclose(found.scores, face.score, atol=1e-6))[0]
        assert match.size == 1, "each anchor keeps its own score"
        i = match[0]
        np.testing.assert_allclose(found.boxes[i], face.box, atol=1e-3)
        np.testing.assert_allclose(found.landmarks[i], face.landmarks, atol=1e-3)


@pytest.mark.parametrize("layout", ["nhwc", "flat"])
def test_scrfd_decode_matches_reference_on_random_maps(layout):
    rng = np.random.default_rng(7)
    maps = {}
    for s in STRIDES:
        g = 640 // s
        maps[s] = (
            rng.uniform(0, 1, (g, g, 2)).astype(np.float32),
            rng.uniform(0, 4, (g, g, 2, 4)).astype(np.float32),
            rng.uniform(-3, 3, (g, g, 2, 10)).astype(np.float32),
        )
    threshold = 0.995
    ours = decode_scrfd_outputs(outputs_for(layout, maps), None, recipe_for(layout, None), Letterbox(640, 640, 640, 640, 0, 0, 1.0), threshold)
    ref = reference_scrfd_decode(maps, threshold)
    assert len(ours) == len(ref) > 20
    for i, (box, score, pts) in enumerate(ref):  # same order: stride, cell, anchor
        np.testing.assert_allclose(ours.boxes[i], box, rtol=1e-6, atol=1e-4)
        assert ours.scores[i] == pytest.approx(score, abs=1e-7)
        np.testing.assert_allclose(ours.landmarks[i], pts, rtol=1e-6, atol=1e-4)


def test_threshold_is_inclusive():
    scores = np.array([0.7, 0.6999, 0.71], np.float32)
    out = scrfd_decode_level(scores, np.ones((3, 4)), None, 8, 1, 3, 1, np.float32(0.7))
    np.testing.assert_array_equal(out.scores, np.array([0.7, 0.71], np.float32))


def test_nms_matches_reference_with_plus_one_convention():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 200, (300, 2))
    wh = rng.uniform(5, 60, (300, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    for plus_one in (True, False):
        keep = nms(boxes, scores, 0.4, plus_one)
        ref = reference_nms([(b.tolist(), float(s), None) for b, s in zip(boxes, scores)], 0.4, plus_one)
        np.testing.assert_allclose(boxes[keep], np.array([r[0] for r in ref], np.float32))


def test_nms_plus_one_changes_the_decision_near_the_threshold():
    # IoU is exactly 0.4 with plain areas (40 / 100: kept, suppression needs > 0.4) but
    # 55 / 121 = 0.45 with InsightFace's +1 areas (suppressed), so the convention matters.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 4]], np.float32)
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.4, plus_one=False).tolist() == [0, 1]
    assert nms(boxes, scores, 0.4, plus_one=True).tolist() == [0]


def test_sort_and_suppress_returns_descending_scores():
    boxes = np.array([[0, 0, 10, 10], [100, 100, 120, 120], [1, 1, 11, 11]], np.float32)
    dets = Detections(boxes, np.array([0.8, 0.95, 0.9], np.float32), np.zeros((3, 5, 2), np.float32))
    out = sort_and_suppress(dets, 0.4)
    np.testing.assert_allclose(out.scores, [0.95, 0.9])


def test_centerface_decode_matches_reference():
    rng = np.random.default_rng(5)
    h, w = 40, 56
    heat = rng.uniform(0, 1, (1, h, w)).astype(np.float32)
    scale = rng.uniform(0.5, 3, (2, h, w)).astype(np.float32)
    offset = rng.uniform(0, 1, (2, h, w)).astype(np.float32)
    lms = rng.uniform(0, 1, (10, h, w)).astype(np.float32)
    ours = centerface_decode(heat, scale, offset, lms, 4, 0.98)
    ref = reference_centerface_decode(heat, scale, offset, lms, 4, 0.98)
    assert len(ours) == len(ref) > 10
    for i, (box, score, pts) in enumerate(ref):  # row-major order in both
        np.testing.assert_allclose(ours.boxes[i], box, rtol=1e-5, atol=1e-3)
        assert ours.scores[i] == pytest.approx(score)
        np.testing.assert_allclose(ours.landmarks[i], pts, rtol=1e-5, atol=1e-3)
