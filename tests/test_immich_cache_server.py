"""A real `hailo-immich serve` on loopback whose only models are an Immich ML cache
(MACHINE_LEARNING_CACHE_FOLDER), requested exactly as Immich's server requests them, by Immich
model names, including CLIP models we ship no recipe for. Answers are checked against independent
reference code written from research/immich-protocol.md §5."""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from hailo_immich_cli.faces.embed import cosine_similarity
from hailo_immich_cli.testkit.face_models import blob_image
from tests.helpers.faces import reference_immich_detect, reference_immich_embed
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)
from tests.test_immich_cache import SPECS, cache, empty_models, reference_text_ids, reference_visual  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(cache, empty_models, tmp_path_factory):  # noqa: F811
    from tests.helpers.immich_server import start_server, stop_server

    srv = start_server(tmp_path_factory.mktemp("cache-server"), {
        "HAILO_IMMICH_MODELS_DIR": str(empty_models),
        "MACHINE_LEARNING_CACHE_FOLDER": str(cache),
        "HAILO_IMMICH_MODEL_BACKENDS": "face-recognition=cpu",
    })
    yield srv
    stop_server(srv)


def decoded(payload: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(payload)).convert("RGB"))


@pytest.mark.parametrize("name", ["ViT-L-14-336__openai", "XLM-Roberta-Large-Vit-B-16Plus", "ViT-B-32__openai"])
def test_clip_visual_by_immich_name(server, cache, photos, name):  # noqa: F811
    from hailo_immich_cli.testkit.requests import jpeg

    spec = SPECS[name]
    payload = jpeg(photos["astronaut"], quality=80)
    r = server.predict({"clip": {"visual": {"modelName": name}}}, image=payload)
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body["clip"], str) and (body["imageHeight"], body["imageWidth"]) == (512, 512)
    vec = np.asarray(json.loads(body["clip"]), np.float32)
    assert vec.shape == (spec.dim,)
    ref = reference_visual(cache / "clip" / name / "visual" / "model.onnx", decoded(payload), spec.size, spec.mean, spec.std)
    assert float(vec @ ref) >= 0.9999


@pytest.mark.parametrize("name", ["ViT-L-14-336__openai", "ViT-B-16-SigLIP2__webli", "XLM-Roberta-Large-Vit-B-16Plus"])
def test_clip_textual_by_immich_name(server, cache, name):  # noqa: F811
    spec = SPECS[name]
    text = "Test,  a photo of an astronaut!"
    r = server.predict({"clip": {"textual": {"modelName": name, "options": {"language": "de"}}}}, text=text)
    assert r.status_code == 200, r.text
    vec = np.asarray(json.loads(r.json()["clip"]), np.float32)
    folder = cache / "clip" / name / "textual"
    ids, mask = reference_text_ids(folder, text, spec.context, spec.canonicalize, with_mask=True)
    feeds = {"input_ids": ids[None], "attention_mask": mask[None]} if spec.mclip else {"text": ids[None]}
    out = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0][0]
    assert float(vec @ (out / np.linalg.norm(out))) >= 0.9999


def test_faces_by_immich_name(server, cache):  # noqa: F811
    from hailo_immich_cli.testkit.requests import jpeg

    payload = jpeg(blob_image(600, 800, seed=1400), quality=80)
    entries = {"facial-recognition": {"detection": {"modelName": "buffalo_l", "options": {"minScore": 0.5}},
                                      "recognition": {"modelName": "buffalo_l"}}}
    r = server.predict(entries, image=payload)
    assert r.status_code == 200, r.text
    faces = r.json()["facial-recognition"]
    bgr = cv2.cvtColor(decoded(payload), cv2.COLOR_RGB2BGR)
    folder = cache / "facial-recognition" / "buffalo_l"
    det = ort.InferenceSession(str(folder / "detection" / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = reference_immich_detect(bgr, lambda blob: det.run(None, {"input.1": blob}), 0.5)
    rec = ort.InferenceSession(str(folder / "recognition" / "model.onnx"), providers=["CPUExecutionProvider"])
    ref_emb = reference_immich_embed(bgr, np.stack([np.asarray(p, np.float32) for _, _, p in ref]), lambda b: rec.run(None, {"input.1": b})[0])
    assert len(faces) == len(ref) == 3
    for face, (box, score, _), emb in zip(faces, ref, ref_emb):
        got_box = [face["boundingBox"][k] for k in ("x1", "y1", "x2", "y2")]
        assert all(float(v).is_integer() for v in got_box)
        assert np.abs(np.asarray(got_box) - np.round(np.asarray(box, np.float32))).max() <= 1
        assert abs(face["score"] - score) <= 1e-4
        assert cosine_similarity(np.asarray(json.loads(face["embedding"]), np.float32), emb) >= 0.999


def test_health_names_backends_per_task_and_the_cache(server, cache):  # noqa: F811
    health = server.get("/health").json()
    assert health["task_backends"]["face-recognition"] == {"backend": "cpu", "source": "HAILO_IMMICH_MODEL_BACKENDS"}
    assert health["immich_cache"]["folder"] == str(cache)
    assert "immich-ViT-L-14-336__openai-visual" in health["immich_cache"]["recipes"]
    for rid, info in health["recipes"].items():
        assert info["backend"] == "cpu", rid


def test_unknown_name_is_refused(server):
    r = server.predict({"clip": {"visual": {"modelName": "ViT-Nope__none"}}}, image=(Path(__file__).parent / "__init__.py").read_bytes())
    assert r.status_code >= 400


@pytest.mark.parametrize("name", ["PP-OCRv5_mobile", "EN__PP-OCRv5_mobile"])
def test_ocr_by_immich_name(server, cache, cpu_models, name):  # noqa: F811
    from hailo_immich_cli.testkit.requests import jpeg
    from hailo_immich_cli.testkit.ocr_samples import render_lines

    payload = jpeg(render_lines(["Hello Immich cache", "Total 42.50"], (700, 200)), quality=95)
    entries = {"ocr": {"detection": {"modelName": name, "options": {"minScore": 0.5, "maxResolution": 736}},
                       "recognition": {"modelName": name, "options": {"minScore": 0.8}}}}
    r = server.predict(entries, image=payload)
    assert r.status_code == 200, r.text
    ocr = r.json()["ocr"]
    assert sorted(ocr["text"]) == ["Hello Immich cache", "Total 42.50"]  # in Immich's (not reading) order
    if importlib.util.find_spec("rapidocr") is not None and importlib.util.find_spec("shapely") is not None:
        from tests.test_immich_cache_ocr import immich_reference

        want = immich_reference(cache, Path(cpu_models.models_dir))(decoded(payload), min_score=0.8)
        assert ocr["text"] == want.text and ocr["textScore"] == want.text_score.tolist()
    assert len(ocr["box"]) == 16 and all(0 <= v < 1 for v in ocr["box"])
    assert server.get("/health").json()["recipes"]  # loaded models listed with their backend
