"""Start-up: /ping answers at once while models are still loading in the background."""

from __future__ import annotations

import time

import pytest
import requests

from tests.helpers.immich_server import link_models, start_server, stop_server
from tests.helpers.server_models import derived_recipe, make_slow_loading_onnx

pytestmark = pytest.mark.slow


def test_ping_answers_while_models_load(cpu_models, recipe_book, tmp_path, capsys):
    models, recipes = tmp_path / "models", tmp_path / "recipes"
    recipes.mkdir()
    link_models(cpu_models.models_dir, models)
    det = recipe_book.default("ocr-detection", "cpu")
    make_slow_loading_onnx(models / "slow-det" / "slow.onnx")
    (recipes / "slow-det.toml").write_text(derived_recipe(det.id, "slow-det", ["SLOW__PP-OCRv5_mobile"], "slow.onnx"))
    server = start_server(
        tmp_path,
        {
            "HAILO_IMMICH_MODELS_DIR": str(models),
            "HAILO_IMMICH_RECIPES_DIR": str(recipes),
            "MACHINE_LEARNING_PRELOAD__OCR__DETECTION": "SLOW__PP-OCRv5_mobile",
        },
        wait_models=False,
    )
    try:
        during: list[float] = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = server.get("/health").json()["loader"]["state"]
            if state not in ("pending", "loading"):
                break
            start = time.perf_counter()
            r = requests.get(server.url + "/ping", timeout=5)  # a new connection, like Immich's probe
            during.append(time.perf_counter() - start)
            assert (r.status_code, r.content) == (200, b"pong")
            time.sleep(0.05)
        health = server.get("/health").json()
        assert "slow-det" in health["loader"]["loaded"], health["loader"]
        with capsys.disabled():
            print(f"\n/ping while models load: {len(during)} pings, max {max(during) * 1000:.1f} ms")
        assert len(during) >= 3, "the slow model should keep the loader busy for a while"
        assert max(during) < 1.0
    finally:
        stop_server(server)
