"""A failure inside the backend answers 5xx for that request only; the next request is served.

Runs a real `hailo-immich serve` whose extra recipes (HAILO_IMMICH_RECIPES_DIR) add a text detector
that raises inside ONNX Runtime on bright images, next to the real PP-OCRv5 models.
"""

from __future__ import annotations


import numpy as np
import pytest

from hailo_immich_cli.testkit.requests import jpeg
from tests.helpers.immich_server import link_models, start_server, stop_server
from tests.helpers.server_models import derived_recipe, make_flaky_text_detector_onnx

pytestmark = pytest.mark.slow

FLAKY = {
    "ocr": {
        "detection": {"modelName": "FLAKY__PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "FLAKY__PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}
REAL = {"ocr": {"detection": {"modelName": "PP-OCRv5_mobile"}, "recognition": {"modelName": "PP-OCRv5_mobile"}}}


@pytest.fixture(scope="module")
def flaky_server(cpu_models, recipe_book, tmp_path_factory):
    root = tmp_path_factory.mktemp("flaky")
    models, recipes = root / "models", root / "recipes"
    recipes.mkdir()
    link_models(cpu_models.models_dir, models)
    det = recipe_book.default("ocr-detection", "cpu")
    rec = recipe_book.default("ocr-recognition", "cpu")
    make_flaky_text_detector_onnx(models / "flaky-det" / "flaky.onnx")
    (recipes / "flaky-det.toml").write_text(derived_recipe(det.id, "flaky-det", ["FLAKY__PP-OCRv5_mobile"], "flaky.onnx"))
    (recipes / "flaky-rec.toml").write_text(derived_recipe(rec.id, "flaky-rec", ["FLAKY__PP-OCRv5_mobile"]))
    (models / "flaky-rec").symlink_to(cpu_models.models_dir / rec.id)
    srv = start_server(root, {"HAILO_IMMICH_MODELS_DIR": str(models), "HAILO_IMMICH_RECIPES_DIR": str(recipes)})
    yield srv
    stop_server(srv)


def test_backend_failure_is_503_and_the_next_request_works(flaky_server):
    dark = jpeg(np.full((480, 640, 3), 10, np.uint8))
    bright = jpeg(np.full((480, 640, 3), 245, np.uint8))
    ok = flaky_server.predict(FLAKY, image=dark)
    assert ok.status_code == 200, ok.text
    assert ok.content == b'{"ocr":{"box":[],"boxScore":[],"text":[],"textScore":[]},"imageHeight":480,"imageWidth":640}'

    failed = flaky_server.predict(FLAKY, image=bright)
    assert failed.status_code == 503
    assert "flaky-det" in failed.json()["detail"]

    assert flaky_server.predict(FLAKY, image=dark).content == ok.content
    assert flaky_server.predict(REAL, image=bright).status_code == 200
    metrics = flaky_server.get("/metrics").text
    errors = [line for line in metrics.splitlines() if line.startswith('hailo_immich_model_errors_total{model="flaky-det"')]
    assert errors and float(errors[0].split()[-1]) == 1
    assert 'hailo_immich_requests_total{task="ocr",status="503"} 1' in metrics
    assert "flaky-det failed" in flaky_server.log()
