"""The face pipeline end to end on the CPU backend: real CenterFace on real photos, and generated
ONNX models with the signatures of Immich's buffalo_l detector and recogniser, run through the
shipped buffalo_l recipes and compared with an Immich/InsightFace-style reference.

No pretrained ArcFace weights are reachable offline (models.md §2): the recogniser here is a
fixed random network with ArcFace's signature. It proves shapes, preprocessing, batching and
parity of the plumbing, not identity quality; the identity test runs only when real weights
were fetched (`hailo-immich fetch-models --recipe buffalo_l-recognition-cpu`).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from hailo_immich_cli.errors import BadInputError, ModelMissingError
from hailo_immich_cli.faces.embed import cosine_similarity
from hailo_immich_cli.faces.pipeline import analyze_faces, choose_detector, choose_recognizer
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.face_models import (
    PlantedFace, blob_image, encode_scrfd, make_arcface_like_onnx, make_buffalo_like_detector_onnx,
)
from tests.helpers.faces import reference_immich_detect, reference_immich_embed

REPO = Path(__file__).resolve().parent.parent


def models_dir_with(root: Path, cpu_models: Settings, *, centerface: bool = True, recognizer: str | None = None, detector_maps=None) -> Path:
    """A models dir holding the real CenterFace file and, optionally, generated buffalo-style models."""
    root.mkdir(parents=True, exist_ok=True)
    if centerface:
        (root / "centerface-cpu").mkdir(exist_ok=True)
        target = root / "centerface-cpu" / "centerface.onnx"
        if not target.exists():
            target.symlink_to(Path(cpu_models.models_dir) / "centerface-cpu" / "centerface.onnx")
    if recognizer:
        make_arcface_like_onnx(root / recognizer / "model.onnx")
    if detector_maps is not None:
        make_buffalo_like_detector_onnx(root / "buffalo_l-detection-cpu" / "model.onnx", detector_maps)
    return root


def session_on(models_dir: Path, **overrides) -> SessionManager:
    settings = Settings.load(env={}, backend="cpu", models_dir=models_dir, **overrides)
    return SessionManager(settings, RecipeBook.load())


def two_people(photos) -> np.ndarray:
    """Astronaut, cameraman and a mirrored astronaut side by side: three real faces in one image."""
    cam = cv2.resize(photos["camera"], (512, 512))
    return np.ascontiguousarray(np.concatenate([photos["astronaut"], cam, photos["astronaut"][:, ::-1]], axis=1))


# ---- real detection (CenterFace on the CPU) -------------------------------------------------


@pytest.mark.parametrize("name,expected", [("astronaut", 1), ("camera", 1), ("chelsea", 0), ("coffee", 0)])
def test_centerface_on_real_photos(cpu_session, photos, name, expected):
    result = analyze_faces(cpu_session, photos[name], detector="centerface-cpu", embed=False)
    assert len(result.faces) == expected
    assert (result.width, result.height) == (photos[name].shape[1], photos[name].shape[0])
    assert result.detector.recipe_id == "centerface-cpu" and result.detector.backend == "cpu"
    assert result.recognizer is None and result.truncated == 0
    for face in result.faces:
        x1, y1, x2, y2 = face.box
        lm = face.landmarks
        assert lm.shape == (5, 2) and lm.dtype == np.float32
        assert face.score >= 0.7 and face.embedding is None
        assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2)), "landmarks inside the box"
        l_eye, r_eye, nose, l_mouth, r_mouth = lm
        assert l_eye[0] < r_eye[0] and l_mouth[0] < r_mouth[0], "left points left of right points (image left)"
        assert max(l_eye[1], r_eye[1]) < nose[1] < min(l_mouth[1], r_mouth[1]), "eyes above nose above mouth"
        assert (x2 - x1) > 40 and (y2 - y1) > 40


def test_astronaut_face_is_where_it_is(cpu_session, photos):
    """Eileen Collins' face in skimage's astronaut photo spans about x 180-270, y 60-178."""
    face = analyze_faces(cpu_session, photos["astronaut"], embed=False).faces[0]
    np.testing.assert_allclose(face.box, [180, 62, 271, 178], atol=12)


def test_boxes_scale_with_the_image(cpu_session, photos):
    small = analyze_faces(cpu_session, photos["astronaut"], embed=False).faces[0]
    big_img = cv2.resize(photos["astronaut"], (1024, 1024), interpolation=cv2.INTER_LINEAR)
    big = analyze_faces(cpu_session, big_img, embed=False).faces[0]
    np.testing.assert_allclose(np.array(big.box) / 2, small.box, atol=4)


def test_bad_array_is_bad_input(cpu_session):
    with pytest.raises(BadInputError):
        analyze_faces(cpu_session, np.zeros((10, 10), np.uint8), embed=False)


def test_no_offline_recogniser_says_how_to_get_one(tmp_path, cpu_models, photos):
    with session_on(models_dir_with(tmp_path / "m", cpu_models)) as session:
        with pytest.raises(ModelMissingError, match="fetch-models --recipe buffalo_l-recognition-cpu"):
            analyze_faces(session, photos["astronaut"])
        assert analyze_faces(session, photos["astronaut"], embed=False).faces


def test_fetched_pack_becomes_the_cpu_default(tmp_path, cpu_models):
    with session_on(models_dir_with(tmp_path / "a", cpu_models, recognizer="antelopev2-recognition-cpu")) as session:
        assert choose_recognizer(session).id == "antelopev2-recognition-cpu"
        assert choose_detector(session).id == "centerface-cpu"
    with session_on(models_dir_with(tmp_path / "b", cpu_models, recognizer="buffalo_l-recognition-cpu")) as session:
        assert choose_recognizer(session).id == "buffalo_l-recognition-cpu"
        assert choose_recognizer(session, "buffalo_l").id == "buffalo_l-recognition-cpu"  # Immich name


# ---- recognition with a generated ArcFace-signature model -------------------------------------


@pytest.fixture()
def rec_session(tmp_path, cpu_models):
    with session_on(models_dir_with(tmp_path / "m", cpu_models, recognizer="buffalo_l-recognition-cpu")) as session:
        yield session


def test_recognition_end_to_end_matches_immich_reference(rec_session, photos):
    image = two_people(photos)
    result = analyze_faces(rec_session, image)
    assert len(result.faces) == 3
    assert result.recognizer is not None and result.recognizer.recipe_id == "buffalo_l-recognition-cpu"
    assert [f.score for f in result.faces] == sorted((f.score for f in result.faces), reverse=True)
    vectors = np.stack([f.embedding for f in result.faces])
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0), "embeddings are raw, not normalised"
    path = rec_session.files.require(rec_session.recipes.get("buffalo_l-recognition-cpu"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    landmarks = np.stack([f.landmarks for f in result.faces])
    expected = reference_immich_embed(cv2.cvtColor(image, cv2.COLOR_RGB2BGR), landmarks, lambda blob: sess.run(None, {"input.1": blob})[0])
    for ours, ref in zip(vectors, expected):
        assert cosine_similarity(ours, ref) >= 0.999
        np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-3)


def test_batched_and_one_by_one_give_the_same_vectors(tmp_path, cpu_models, photos):
    image = two_people(photos)
    root = models_dir_with(tmp_path / "m", cpu_models, recognizer="buffalo_l-recognition-cpu")
    with session_on(root) as batched, session_on(root, max_batch_faces=1) as single:
        a = analyze_faces(batched, image)
        b = analyze_faces(single, image)
        assert batched.stats()["buffalo_l-recognition-cpu"]["batch_sizes"] == {3: 1}, "all faces in one call"
        assert single.stats()["buffalo_l-recognition-cpu"]["batch_sizes"] == {1: 3}
    for fa, fb in zip(a.faces, b.faces):
        np.testing.assert_allclose(fa.embedding, fb.embedding, rtol=1e-5, atol=1e-5)


def test_zero_faces_skip_the_recogniser_but_name_it(rec_session, photos):
    result = analyze_faces(rec_session, photos["coffee"])
    assert result.faces == []
    assert result.recognizer is not None and result.recognizer.recipe_id == "buffalo_l-recognition-cpu"
    assert rec_session.stats()["buffalo_l-recognition-cpu"]["calls"] == 0


def _real_recogniser_dir() -> Path | None:
    root = Path(os.environ.get("HAILO_IMMICH_MODELS_DIR") or REPO / "models")
    for pack in ("buffalo_l", "buffalo_m", "buffalo_s", "antelopev2"):
        path = root / f"{pack}-recognition-cpu" / "model.onnx"
        if path.is_file() and path.stat().st_size > 1_000_000:
            return root
    return None


@pytest.mark.network_models
def test_real_weights_same_face_closer_than_different_faces(photos):
    root = _real_recogniser_dir()
    if root is None:
        pytest.skip(
            "no real face-recognition weights: no ArcFace ONNX installs offline (models.md §2); "
            "run `hailo-immich fetch-models --recipe buffalo_l-recognition-cpu` to enable this test"
        )
    with session_on(root) as session:
        astro = analyze_faces(session, photos["astronaut"], detector="centerface-cpu").faces[0].embedding
        aug_img = cv2.convertScaleAbs(cv2.resize(photos["astronaut"][:, ::-1], (410, 410)), alpha=1.1, beta=12)
        aug = analyze_faces(session, np.ascontiguousarray(aug_img), detector="centerface-cpu").faces[0].embedding
        cam = analyze_faces(session, photos["camera"], detector="centerface-cpu").faces[0].embedding
    assert cosine_similarity(astro, aug) > cosine_similarity(astro, cam) + 0.2


# ---- Immich-layout (9-output SCRFD) detector through the CPU backend --------------------------


def planted(canvas_scale: float) -> list[PlantedFace]:
    """Known faces (detector-canvas pixels) on every stride, both anchors of one cell, plus an
    overlapping weaker anchor that NMS must remove. Scores are logits here."""
    rng = np.random.default_rng(11)
    kps = lambda size: rng.uniform(-0.35, 0.35, (5, 2)) * size  # noqa: E731
    return [
        PlantedFace(8, 20, 30, 0, 3.0, (10.0, 12.0, 11.0, 14.0), kps(20)),
        PlantedFace(8, 20, 30, 1, 2.5, (30.0, 28.0, 26.0, 31.0), kps(50)),  # same cell, other anchor, bigger
        PlantedFace(16, 14, 8, 0, 4.0, (40.0, 44.0, 38.0, 47.0), kps(80)),
        PlantedFace(16, 14, 9, 1, 1.0, (40.0, 44.0, 38.0, 47.0), kps(80)),  # 16 px right of the one above: NMS
        PlantedFace(32, 5, 12, 1, 2.0, (90.0, 100.0, 85.0, 110.0), kps(180)),
    ]


@pytest.fixture()
def det_session(tmp_path, cpu_models):
    maps = encode_scrfd(planted(1.0), background=-12.0)
    root = models_dir_with(tmp_path / "m", cpu_models, recognizer="buffalo_l-recognition-cpu", detector_maps=maps)
    with session_on(root) as session:
        yield session


@pytest.mark.parametrize("height,width", [(600, 800), (900, 500)])
def test_immich_layout_detector_matches_reference(det_session, height, width):
    rgb = blob_image(height, width, seed=height)
    result = analyze_faces(det_session, rgb, detector="buffalo_l", min_score=0.5, embed=False)
    assert result.detector.recipe_id == "buffalo_l-detection-cpu"
    path = det_session.files.require(det_session.recipes.get("buffalo_l-detection-cpu"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = reference_immich_detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), lambda blob: sess.run(None, {"input.1": blob}), 0.5)
    assert len(result.faces) == len(ref) == 4, "5 planted, the overlapping weaker one suppressed"
    for face, (box, score, pts) in zip(result.faces, ref):
        np.testing.assert_allclose(face.box, box, atol=1e-3)  # well within Immich's 1 px
        assert face.score == pytest.approx(score, abs=1e-4)
        np.testing.assert_allclose(face.landmarks, pts, atol=1e-3)


def test_immich_layout_detector_recovers_the_planted_faces(det_session):
    rgb = blob_image(600, 800, seed=1)
    result = analyze_faces(det_session, rgb, detector="buffalo_l-detection-cpu", min_score=0.5, embed=False)
    det_scale = 480 / 600  # 800x600 fits 640x480 on the canvas
    kept = [f for f in planted(1.0) if not (f.stride == 16 and f.col == 9)]
    expected = sorted(kept, key=lambda f: -f.score)  # logits order = probability order
    for face, plant in zip(result.faces, expected):
        np.testing.assert_allclose(face.box, plant.box / det_scale, atol=1e-3)
        np.testing.assert_allclose(face.landmarks, plant.landmarks / det_scale, atol=1e-3)
    # Both anchors of the shared stride-8 cell survive with their own boxes and scores.
    same_cell = [f for f in result.faces if abs(f.box[0] - (30 * 8 - 10) / det_scale) < 1e-2 or abs(f.box[0] - (30 * 8 - 30) / det_scale) < 1e-2]
    assert len(same_cell) == 2 and same_cell[0].score != same_cell[1].score


def test_min_score_and_max_faces(det_session):
    rgb = blob_image(600, 800, seed=2)
    everything = analyze_faces(det_session, rgb, detector="buffalo_l-detection-cpu", min_score=0.5, embed=False)
    capped = analyze_faces(det_session, rgb, detector="buffalo_l-detection-cpu", min_score=0.5, embed=False, max_faces=2)
    assert capped.truncated == len(everything.faces) - 2
    assert [f.score for f in capped.faces] == [f.score for f in everything.faces[:2]]
    strict = analyze_faces(det_session, rgb, detector="buffalo_l-detection-cpu", min_score=0.97, embed=False)
    assert all(f.score >= 0.97 for f in strict.faces) and len(strict.faces) < len(everything.faces)


def test_immich_pack_detection_and_recognition_together(det_session):
    rgb = blob_image(600, 800, seed=3)
    result = analyze_faces(det_session, rgb, detector="buffalo_l", recognizer="buffalo_l", min_score=0.5)
    assert len(result.faces) == 4 and all(f.embedding.shape == (512,) for f in result.faces)
    assert choose_detector(det_session).id == "buffalo_l-detection-cpu", "a fetched pack is preferred over CenterFace"


def test_configured_task_recipe_wins(tmp_path, cpu_models):
    root = models_dir_with(tmp_path / "m", cpu_models, recognizer="buffalo_l-recognition-cpu")
    with session_on(root, task_recipes={"face-recognition": "antelopev2-recognition-cpu"}) as session:
        assert choose_recognizer(session).id == "antelopev2-recognition-cpu"
        with pytest.raises(ModelMissingError, match="antelopev2-recognition-cpu"):
            session.model(choose_recognizer(session).id)


def test_self_normalising_recogniser_gets_raw_pixels(tmp_path, cpu_models, photos):
    """InsightFace feeds 0..255 to ArcFace exports that normalise inside the graph; so do we.
    Same weights with the normalisation inside or outside the graph must give the same vectors."""
    image = two_people(photos)
    plain = models_dir_with(tmp_path / "plain", cpu_models, recognizer="buffalo_l-recognition-cpu")
    inside = models_dir_with(tmp_path / "inside", cpu_models)
    make_arcface_like_onnx(inside / "buffalo_l-recognition-cpu" / "model.onnx", self_normalising=True)
    with session_on(plain) as a_session, session_on(inside) as b_session:
        a = analyze_faces(a_session, image)
        b = analyze_faces(b_session, image)
    assert len(a.faces) == 3
    for fa, fb in zip(a.faces, b.faces):
        np.testing.assert_allclose(fa.embedding, fb.embedding, rtol=1e-4, atol=1e-4)


def test_static_detector_input_size_overrides_640(tmp_path, cpu_models):
    """InsightFace uses a detector's static input size instead of 640x640; so must we."""
    faces = [PlantedFace(8, 10, 12, 0, 3.0, (9.0, 11.0, 10.0, 12.0), np.zeros((5, 2))), PlantedFace(16, 6, 4, 1, 2.0, (20.0, 22.0, 21.0, 25.0), np.ones((5, 2)))]
    root = models_dir_with(tmp_path / "m", cpu_models)
    make_buffalo_like_detector_onnx(root / "buffalo_l-detection-cpu" / "model.onnx", encode_scrfd(faces, canvas=320, background=-12.0), input_hw=(320, 320))
    rgb = blob_image(500, 400, seed=9)
    with session_on(root) as session:
        result = analyze_faces(session, rgb, detector="buffalo_l-detection-cpu", min_score=0.5, embed=False)
        path = session.files.require(session.recipes.get("buffalo_l-detection-cpu"))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = reference_immich_detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), lambda blob: sess.run(None, {"input.1": blob}), 0.5, size=320)
    assert len(result.faces) == len(ref) == 2
    for face, (box, score, _) in zip(result.faces, ref):
        np.testing.assert_allclose(face.box, box, atol=1e-3)
        assert face.score == pytest.approx(score, abs=1e-4)
    np.testing.assert_allclose(result.faces[0].box, faces[0].box * 500 / 320, atol=1e-3)  # det_scale = 320/500
