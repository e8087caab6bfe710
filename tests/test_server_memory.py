"""What requests in flight may hold, and what the server gives back: the pixel bound, the pixel
budget of the gate, and RSS after a burst of huge images (real server on 127.0.0.1, real OCR)."""

from __future__ import annotations

import struct
import threading
import time
import zlib

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw, ImageFont

from hailo_immich_cli import memory
from hailo_immich_cli.errors import ImageTooLargeError
from hailo_immich_cli.imaging import decode_image
from hailo_immich_cli.server.metrics import Metrics
from hailo_immich_cli.server.state import Gate
from hailo_immich_cli.testkit.requests import immich_form, png
from tests.helpers.immich_server import start_server, stop_server

PILLOW_WARNING_PIXELS = 89_478_485  # Pillow's own bound, which must never be the one that fires
MAX_PIXELS = 95_000_000
OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds no pixels: a decompression bomb's opening."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side, limit", [(9500, 90_000_000), (20_000, 100_000_000), (65_000, 100_000_000)])
def test_the_setting_is_the_bound_and_the_message_quotes_it(side, limit):
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(png_header(side, side), max_pixels=limit)
    message = str(caught.value)
    assert str(limit) in message and "HAILO_IMMICH_MAX_IMAGE_PIXELS" in message
    assert str(PILLOW_WARNING_PIXELS) not in message and str(2 * PILLOW_WARNING_PIXELS) not in message


def test_gate_admits_by_pixels_in_arrival_order():
    gate = Gate(slots=4, max_queue=4, metrics=Metrics(), wait_timeout=5, max_pixels=100)
    order: list[str] = []
    release = threading.Event()

    def run(name: str, pixels: int, hold: bool = False) -> None:
        with gate.slot(pixels):
            order.append(name)
            if hold:
                release.wait(5)

    first = threading.Thread(target=run, args=("big-1", 60, True))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=run, args=("big-2", 60))
    second.start()
    time.sleep(0.05)
    small = threading.Thread(target=run, args=("small", 10))  # fits the budget, but arrives after big-2
    small.start()
    time.sleep(0.05)
    assert order == ["big-1"] and gate.pixels_in_flight == 60
    release.set()
    for t in (first, second, small):
        t.join(5)
    assert order == ["big-1", "big-2", "small"]
    assert gate.pixels_in_flight == 0


def test_a_request_alone_always_runs_whatever_its_pixels():
    gate = Gate(slots=2, max_queue=0, metrics=Metrics(), wait_timeout=1, max_pixels=10)
    with gate.slot(1_000) as waited:
        assert waited < 0.5


@pytest.fixture(scope="module")
def server(cpu_models, tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("memory"),
        {
            "HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir),
            "HAILO_IMMICH_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
            "MACHINE_LEARNING_REQUEST_THREADS": "4",
            "IMMICH_LOG_LEVEL": "warning",
        },
    )
    yield srv
    stop_server(srv)


@pytest.mark.slow
def test_an_image_over_pillows_bound_but_under_ours_is_served(server):
    side = 9500  # 90.25 MP: over Pillow's 89.48 MP, under the server's 95 MP
    out = png(np.zeros((side, side, 3), np.uint8))
    r = server.predict({}, image=out, timeout=120)
    assert (r.status_code, r.content) == (200, b'{"imageHeight":9500,"imageWidth":9500}')


@pytest.mark.slow
def test_an_image_over_our_bound_is_413_quoting_the_setting(server):
    r = server.predict({}, image=png_header(9800, 9800))
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "95000000" in detail and "HAILO_IMMICH_MAX_IMAGE_PIXELS" in detail and str(PILLOW_WARNING_PIXELS) not in detail


def _rss(server) -> tuple[int, int]:
    info = server.get("/health").json()["server"]
    return info["rss_bytes"], info["peak_rss_bytes"]


@pytest.mark.slow
def test_memory_is_given_back_after_a_burst_of_huge_images(server, capsys):
    img = Image.new("RGB", (9000, 9000), "white")
    ImageDraw.Draw(img).text((500, 500), "HAILO IMMICH", fill="black", font=ImageFont.load_default(size=600))
    huge = png(np.asarray(img))
    del img
    small = png(np.full((600, 800, 3), 255, np.uint8))
    for _ in range(3):  # warm the models' own buffers: the idle level is that of a server in use
        assert server.predict(OCR, image=small).status_code == 200
    time.sleep(1)
    idle, _ = _rss(server)
    statuses: list[int] = []

    def post() -> None:
        body, content_type = immich_form(OCR, huge)
        statuses.append(requests.post(server.url + "/predict", data=body, headers={"content-type": content_type}, timeout=600).status_code)

    burst = [threading.Thread(target=post) for _ in range(4)]
    for t in burst:
        t.start()
    for t in burst:
        t.join(600)
    assert statuses == [200] * 4
    time.sleep(10)
    after, peak = _rss(server)
    with capsys.disabled():
        print(f"\nRSS idle {idle / 2**20:.0f} MiB, peak {peak / 2**20:.0f} MiB, 10 s after the burst {after / 2**20:.0f} MiB "
              f"({after / idle:.2f}x idle)")
    assert peak > idle + 240 * 2**20  # the burst really held the decoded images (243 MB each)
    assert after <= 1.5 * idle
    heap = server.get("/health").json()["server"]["heap"]
    assert heap == {"reuse_freed_buffers": memory.tune_allocator(), "trim_after_idle_s": 5.0, "trim_after_pixels": 4_000_000}
    metrics = server.get("/metrics").text
    assert "hailo_immich_resident_memory_bytes " in metrics and "hailo_immich_resident_memory_peak_bytes " in metrics
