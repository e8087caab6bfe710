"""Options and form fields cannot make one /predict request do unbounded work (real server on loopback).

A blank 4500x4500 PNG is 69 KB; with `maxResolution: 100000` the OCR detector used to run on all 20 M
pixels (about 3 GB more RSS, kept after the request). The detector's input is now held to
HAILO_IMMICH_OCR_MAX_RESOLUTION^2 pixels, the request log says when a request was lowered, and the
valid values Immich sends are answered as before.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.testkit.requests import png
from tests.helpers.immich_server import start_server, stop_server

pytestmark = pytest.mark.slow

OCR_LIMIT = 1024
# The worker's RSS may grow by at most this much on the bomb request: the detector on OCR_LIMIT^2
# pixels needs about 200 MB; the unbounded run needed about 3 GB.
RSS_GROWTH_BOUND = 700 * 1024 * 1024


def ocr_entries(max_resolution: object) -> dict:
    return {
        "ocr": {
            "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": max_resolution}},
            "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
        }
    }


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _tree_rss(pid: int) -> int:
    """RSS of the gunicorn master and its workers."""
    total = _rss(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        total += sum(_tree_rss(int(child)) for child in children)
    return total


@pytest.fixture(scope="module")
def server(cpu_models, tmp_path_factory):
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to read the server's RSS")
    srv = start_server(
        tmp_path_factory.mktemp("limits"),
        {"HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir), "HAILO_IMMICH_OCR_MAX_RESOLUTION": str(OCR_LIMIT)},
    )
    yield srv
    stop_server(srv)


def test_ocr_max_resolution_bomb_is_lowered_before_the_work_and_memory_stays_bounded(server):
    bomb = png(np.full((4500, 4500, 3), 255, np.uint8))
    assert len(bomb) < 200_000
    small = png(np.full((200, 300, 3), 255, np.uint8))
    assert server.predict(ocr_entries(736), image=small).status_code == 200  # models warm, arenas allocated
    before = _tree_rss(server.process.pid)
    start = time.monotonic()
    r = server.predict(ocr_entries(100000), image=bomb, timeout=120)
    elapsed = time.monotonic() - start
    after = _tree_rss(server.process.pid)
    assert r.status_code == 200, r.text
    assert r.json()["ocr"] == {"box": [], "boxScore": [], "text": [], "textScore": []}
    assert after - before < RSS_GROWTH_BOUND, f"RSS grew by {(after - before) / 2**20:.0f} MiB in {elapsed:.1f} s"
    time.sleep(0.2)
    line = [ln for ln in server.log().splitlines() if "POST /predict 200" in ln][-1]
    assert f"maxResolution=100000->{OCR_LIMIT}(HAILO_IMMICH_OCR_MAX_RESOLUTION={OCR_LIMIT})" in line


def test_a_long_thin_image_is_held_to_the_same_pixel_budget(server):
    strip = png(np.full((400, 16000, 3), 255, np.uint8))  # 736 on the short side would be 6.4 M detector pixels
    r = server.predict(ocr_entries(736), image=strip)
    assert r.status_code == 200, r.text
    time.sleep(0.2)
    line = [ln for ln in server.log().splitlines() if "POST /predict 200" in ln][-1]
    lowered = re.search(r"maxResolution=736->(\d+)", line)
    assert lowered, line
    assert int(lowered.group(1)) ** 2 * (16000 / 400) <= OCR_LIMIT**2


def test_max_resolution_under_the_bound_is_answered_like_immich(server):
    photo = png(np.full((600, 800, 3), 255, np.uint8))
    for value in (32, 736, 1000):
        r = server.predict(ocr_entries(value), image=photo)
        assert r.status_code == 200
    time.sleep(0.2)
    assert "maxResolution=1000->" not in server.log()


@pytest.mark.parametrize("value", [0, 1, 31, -5])
def test_max_resolution_below_32_is_one_422_rule(server, value):
    r = server.predict(ocr_entries(value), image=png(np.full((64, 64, 3), 255, np.uint8)))
    assert r.status_code == 422
    assert r.json()["detail"] == "Invalid request format: ocr.detection.options.maxResolution must be at least 32"


@pytest.mark.parametrize("field", ["entries", "text"])
def test_a_form_field_over_the_in_memory_limit_is_413_too_large(server, field):
    big = "x" * (10 * 1024 * 1024)
    if field == "entries":
        r = server.predict('{"clip":{"textual":{"modelName":"ViT-B-32__openai"}},"pad":"' + big + '"}', text="a photo")
    else:
        r = server.predict({"clip": {"textual": {"modelName": "ViT-B-32__openai"}}}, text=big)
    assert r.status_code == 413
    assert r.json()["detail"].startswith(f"form field '{field}' is larger than the ")
    assert server.get("/ping").text == "pong"
