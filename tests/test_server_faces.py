"""`facial-recognition` through a real gunicorn server, requested exactly as Immich requests it.

buffalo_l's weights are not reachable offline, so the models dir holds generated ONNX files with
buffalo_l's signatures (the faces helpers' generators): a 9-output SCRFD-layout detector whose
outputs hold known planted faces, and an ArcFace-signature recogniser. The real CenterFace
detector runs too, on a real photo, when asked for by recipe id.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from hailo_immich_cli.testkit.requests import jpeg
from tests.helpers.immich_server import link_models, start_server, stop_server

pytestmark = pytest.mark.slow

FACES = {
    "facial-recognition": {
        "detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}},
        "recognition": {"modelName": "buffalo_l"},
    }
}
OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}


def planted_faces():
    from hailo_immich_cli.testkit.face_models import PlantedFace

    rng = np.random.default_rng(5)

    def kps(size: float) -> np.ndarray:
        return rng.uniform(-0.35, 0.35, (5, 2)) * size

    return [  # scores are logits; the last one overlaps the second and is removed by NMS
        PlantedFace(8, 20, 30, 0, 3.0, (10.0, 12.0, 11.0, 14.0), kps(20)),
        PlantedFace(16, 14, 8, 0, 4.0, (40.0, 44.0, 38.0, 47.0), kps(80)),
        PlantedFace(32, 5, 12, 1, 2.0, (90.0, 100.0, 85.0, 110.0), kps(180)),
        PlantedFace(32, 0, 0, 0, 2.5, (20.0, 25.0, 40.0, 45.0), kps(60)),  # reaches past the top-left corner
        PlantedFace(16, 14, 9, 1, 1.0, (40.0, 44.0, 38.0, 47.0), kps(80)),
    ]


@pytest.fixture(scope="module")
def faces_server(cpu_models, tmp_path_factory):
    from hailo_immich_cli.testkit.face_models import encode_scrfd, make_arcface_like_onnx, make_buffalo_like_detector_onnx

    root = tmp_path_factory.mktemp("faces")
    models = root / "models"
    link_models(cpu_models.models_dir, models)
    make_buffalo_like_detector_onnx(models / "buffalo_l-detection-cpu" / "model.onnx", encode_scrfd(planted_faces(), background=-12.0))
    make_arcface_like_onnx(models / "buffalo_l-recognition-cpu" / "model.onnx")
    srv = start_server(root, {"HAILO_IMMICH_MODELS_DIR": str(models)})
    yield srv
    stop_server(srv)


def blob(height: int, width: int) -> bytes:
    from hailo_immich_cli.testkit.face_models import blob_image

    return jpeg(blob_image(height, width, seed=3), quality=95)


def test_faces_shape_types_order_and_boxes(faces_server):
    r = faces_server.predict(FACES, image=blob(600, 800))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["facial-recognition", "imageHeight", "imageWidth"]
    assert (body["imageHeight"], body["imageWidth"]) == (600, 800)
    loaded_at_start = faces_server.get("/health").json()["loader"]["loaded"]
    assert {"buffalo_l-detection-cpu", "buffalo_l-recognition-cpu"} <= set(loaded_at_start)  # fetched packs preload
    faces = body["facial-recognition"]
    assert len(faces) == 4  # 5 planted, one suppressed by NMS
    scale = 480 / 600  # 800x600 is letterboxed onto the 640x640 canvas at 0.8
    expected = sorted(planted_faces()[:4], key=lambda f: -f.score)
    for face, plant in zip(faces, expected):
        assert list(face) == ["boundingBox", "embedding", "score"]
        assert list(face["boundingBox"]) == ["x1", "y1", "x2", "y2"]
        want = np.round(np.float32(plant.box / scale))
        assert [face["boundingBox"][k] for k in ("x1", "y1", "x2", "y2")] == [float(v) for v in want]
        assert all(float(v).is_integer() for v in face["boundingBox"].values())
        assert isinstance(face["embedding"], str)
        vector = json.loads(face["embedding"])
        assert len(vector) == 512 and all(isinstance(v, float) for v in vector)
        assert abs(np.linalg.norm(vector) - 1.0) > 1e-3  # raw ArcFace output, not normalised
        assert isinstance(face["score"], float) and 0.7 <= face["score"] <= 1.0
    assert [f["score"] for f in faces] == sorted((f["score"] for f in faces), reverse=True)
    # bytes: integral boxes print as 123.0, embeddings are compact strings
    assert b'"x1":' in r.content and b", " not in r.content
    first = faces[0]["boundingBox"]["x1"]
    assert f'"x1":{first:.1f}'.encode() in r.content


def test_boxes_are_not_clipped_to_the_image(faces_server):
    # 800x200 fills only the top 640x160 of the canvas: planted faces lie below the image, and
    # one reaches past the top-left corner.
    r = faces_server.predict(FACES, image=blob(200, 800))
    assert r.status_code == 200
    boxes = [f["boundingBox"] for f in r.json()["facial-recognition"]]
    assert any(b["y2"] > 200 for b in boxes)
    assert any(b["x1"] < 0 and b["y1"] < 0 for b in boxes)


def test_min_score_option_is_honoured(faces_server):
    loose = faces_server.predict(FACES, image=blob(600, 800)).json()["facial-recognition"]
    strict = json.loads(json.dumps(FACES))
    strict["facial-recognition"]["detection"]["options"]["minScore"] = 0.975
    tight = faces_server.predict(strict, image=blob(600, 800)).json()["facial-recognition"]
    assert 0 < len(tight) < len(loose)
    assert all(f["score"] >= 0.975 for f in tight)


def test_no_faces_is_an_empty_list(faces_server):
    r = faces_server.predict(FACES, image=jpeg(np.zeros((800, 600, 3), np.uint8) + np.uint8([0, 0, 255])))
    assert r.status_code == 200
    assert r.content == b'{"facial-recognition":[],"imageHeight":800,"imageWidth":600}'


def test_recognition_without_detection_is_400_official_message(faces_server):
    r = faces_server.predict({"facial-recognition": {"recognition": {"modelName": "buffalo_l"}}}, image=blob(60, 80))
    assert r.status_code == 400
    assert r.content == (
        b'{"detail":"Task facial-recognition of type recognition depends on output of '
        b"(<ModelType.DETECTION: 'detection'>, <ModelTask.FACIAL_RECOGNITION: 'facial-recognition'>)\"}"
    )


def test_detection_only_is_500_like_the_official_service(faces_server):
    r = faces_server.predict({"facial-recognition": {"detection": {"modelName": "buffalo_l"}}}, image=blob(60, 80))
    assert r.status_code == 500 and "detection without recognition" in r.json()["detail"]


def test_other_packs_are_refused_in_strict_mode(faces_server):
    entries = {"facial-recognition": {"detection": {"modelName": "antelopev2"}, "recognition": {"modelName": "antelopev2"}}}
    r = faces_server.predict(entries, image=blob(60, 80))
    assert r.status_code == 500  # antelopev2's files are not here: never answered with buffalo_l's vectors
    assert "antelopev2" in r.json()["detail"]


def test_real_centerface_detector_on_a_real_photo(faces_server, photos):
    entries = {"facial-recognition": {"detection": {"modelName": "centerface-cpu", "options": {"minScore": 0.7}}, "recognition": {"modelName": "buffalo_l"}}}
    r = faces_server.predict(entries, image=jpeg(photos["astronaut"]))
    assert r.status_code == 200, r.text
    faces = r.json()["facial-recognition"]
    assert len(faces) == 1
    box = faces[0]["boundingBox"]
    assert abs(box["x1"] - 180) < 15 and abs(box["y1"] - 62) < 15 and abs(box["x2"] - 271) < 15 and abs(box["y2"] - 178) < 15
    assert len(json.loads(faces[0]["embedding"])) == 512


def test_faces_and_ocr_in_one_request(faces_server):
    entries = {**OCR, **FACES}
    r = faces_server.predict(entries, image=blob(600, 800))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["ocr", "facial-recognition", "imageHeight", "imageWidth"]
    assert list(body["ocr"]) == ["box", "boxScore", "text", "textScore"]
    assert len(body["facial-recognition"]) == 4
    health = faces_server.get("/health").json()
    assert {"buffalo_l-detection-cpu", "buffalo_l-recognition-cpu"} <= set(health["models"])
    assert health["models"]["buffalo_l-recognition-cpu"]["backend"] == "cpu"
