"""A real gunicorn `hailo-immich serve` on 127.0.0.1, driven with requests built exactly like Immich's.

CPU backend, real models (PP-OCRv5 OCR, CenterFace detection). Statuses and bodies are the
official service's (immich-protocol.md §1, §3, §4.1).
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import zlib

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw, ImageFont

from hailo_immich_cli.testkit.requests import immich_form, jpeg, png
from tests.helpers.immich_server import ping_latencies, start_server, stop_server

pytestmark = pytest.mark.slow

OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}
MAX_PIXELS = 20_000_000
MAX_BYTES = 12 * 1024 * 1024


@pytest.fixture(scope="module")
def server(cpu_models, tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("server"),
        {
            "HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir),
            "HAILO_IMMICH_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
            "HAILO_IMMICH_MAX_REQUEST_BYTES": str(MAX_BYTES),
            "HAILO_IMMICH_MAX_QUEUE": "16",
        },
    )
    yield srv
    stop_server(srv)
    assert "models released" in srv.log()  # SIGTERM: the worker closed the session (device released)


@pytest.fixture(scope="module")
def text_image() -> bytes:
    img = Image.new("RGB", (800, 600), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=48)
    draw.text((60, 100), "HAILO IMMICH", fill="black", font=font)
    draw.text((60, 300), "Smart search 2026", fill="black", font=font)
    return jpeg(np.asarray(img), quality=95)


def blank(width: int = 600, height: int = 800, value: int = 255) -> bytes:
    return jpeg(np.full((height, width, 3), value, np.uint8))


# ---- plain routes ----------------------------------------------------------------------------


def test_root_and_ping_are_byte_exact(server):
    r = server.get("/")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b'{"message":"Immich ML"}', "application/json")
    r = server.get("/ping")
    assert (r.status_code, r.content, r.headers["content-type"]) == (200, b"pong", "text/plain; charset=utf-8")


@pytest.mark.parametrize(
    "method, path, allow",
    [("GET", "/predict", "POST"), ("POST", "/ping", "GET"), ("HEAD", "/ping", "GET"), ("HEAD", "/", "GET"), ("PUT", "/", "GET"), ("DELETE", "/predict", "POST")],
)
def test_wrong_method_is_405_with_allow(server, method, path, allow):
    r = server.http.request(method, server.url + path, timeout=10)
    assert r.status_code == 405
    assert r.headers["allow"] == allow
    if method != "HEAD":
        assert r.content == b'{"detail":"Method Not Allowed"}'


@pytest.mark.parametrize("path", ["/nope", "/predict/x", "/docs/../etc", "/ping/"])
def test_unknown_path_is_404(server, path):
    r = server.get(path)
    assert (r.status_code, r.content) == (404, b'{"detail":"Not Found"}')


def test_health_names_backend_models_and_loader(server):
    health = server.get("/health").json()
    assert health["active_backend"] == "cpu"
    assert health["fallback_reason"] is None and "warning" not in health
    assert health["loader"]["state"] == "ready", health["loader"]
    loaded = health["models"]
    for recipe_id in ("centerface-cpu", "ppocrv5-mobile-det-cpu", "ppocrv5-mobile-rec-cpu"):
        assert loaded[recipe_id]["backend"] == "cpu"
        assert loaded[recipe_id]["runtime"].startswith("onnxruntime")
    assert health["recipes"]["ppocrv5-mobile-det-cpu"]["immich_names"][0] == "PP-OCRv5_mobile"
    assert health["model_names_policy"] == "strict"
    assert health["server"]["request_threads"] == 2


# ---- §4.1 errors -----------------------------------------------------------------------------

MISSING = b'{"detail":[{"type":"missing","loc":["body","entries"],"msg":"Field required","input":null}]}'
INVALID = b'{"detail":"Invalid request format."}'
NO_INPUT = b'{"detail":"Either image or text must be provided"}'


@pytest.mark.parametrize("image, text", [(None, None), (b"abc", None), (None, "a cat")])
def test_missing_entries_is_422(server, image, text):
    r = server.predict(None, image=image, text=text)
    assert (r.status_code, r.content) == (422, MISSING)


@pytest.mark.parametrize("entries", ["not json", "[]", '{"clip":"x"}', '{"clip":{"visual":{}}}', '{"clip":{"visual":{"modelName":3}}}'])
def test_malformed_entries_is_422(server, entries):
    r = server.predict(entries, text="a cat")
    assert (r.status_code, r.content) == (422, INVALID)


@pytest.mark.parametrize(
    "entries",
    [
        {"clip": {"visual": {"modelName": "nope"}}},
        {"foo": {"visual": {"modelName": "x"}}},
        {"clip": {"vision": {"modelName": "ViT-B-32__openai"}}},
        '{"clip":{"visual":"ViT-B-32__openai"}}',
        {"ocr": {"detection": {"modelName": "PP-OCRv5_mobile", "options": None}, "recognition": {"modelName": "PP-OCRv5_mobile"}}},
    ],
)
def test_unknown_model_task_type_or_non_object_is_500_json(server, entries):
    r = server.predict(entries, image=blank())
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_unknown_model_name_is_refused_clearly(server):
    r = server.predict({"facial-recognition": {"detection": {"modelName": "custom_pack"}, "recognition": {"modelName": "custom_pack"}}}, image=blank())
    assert r.status_code == 500 and r.reason == "Model Not Served"
    assert "custom_pack" in r.json()["detail"]


@pytest.mark.parametrize("text", [None, ""])
def test_no_image_and_no_text_is_400(server, text):
    r = server.predict(OCR, text=text)
    assert (r.status_code, r.content) == (400, NO_INPUT)


def test_recognition_without_detection_is_400_official_message(server):
    r = server.predict({"ocr": {"recognition": {"modelName": "PP-OCRv5_mobile"}}}, image=blank())
    assert r.status_code == 400
    assert r.content == (
        b'{"detail":"Task ocr of type recognition depends on output of '
        b"(<ModelType.DETECTION: 'detection'>, <ModelTask.OCR: 'ocr'>)\"}"
    )


@pytest.mark.parametrize("payload", [b"", b"not an image", b"\xff\xd8\xff\xe0" + b"\x00" * 64, b"GIF89a" + b"\x01" * 20])
def test_undecodable_image_is_500(server, payload):
    r = server.predict(OCR, image=payload)
    assert r.status_code == 500
    assert "detail" in r.json()


def test_image_as_plain_field_is_500(server):
    boundary = "----formdata-undici-012345678901"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="entries"\r\n\r\n{json.dumps(OCR)}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"\r\n\r\nabc\r\n--{boundary}--\r\n'
    ).encode()
    r = server.http.post(server.url + "/predict", data=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}, timeout=30)
    assert r.status_code == 500


def test_empty_entries_answers_empty_object(server):
    r = server.predict({}, text="a cat")
    assert (r.status_code, r.content) == (200, b"{}")
    r = server.predict({}, image=blank(600, 800))
    assert (r.status_code, r.content) == (200, b'{"imageHeight":800,"imageWidth":600}')


def test_oversized_body_is_413_and_next_request_works(server):
    r = server.predict({}, image=b"\xff" * (MAX_BYTES + 1))
    assert r.status_code == 413
    assert server.predict({}, image=blank(64, 48)).content == b'{"imageHeight":48,"imageWidth":64}'


def test_decompression_bomb_is_413(server):
    side = 6000  # 36 MP > MAX_PIXELS, but a tiny PNG
    raw = png(np.zeros((side, side, 3), np.uint8))
    assert len(raw) < MAX_BYTES
    r = server.predict({}, image=raw)
    assert r.status_code == 413
    assert "pixels" in r.json()["detail"]


# ---- OCR -------------------------------------------------------------------------------------


def test_ocr_response_shape_types_and_order(server, text_image):
    r = server.predict(OCR, image=text_image)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["ocr", "imageHeight", "imageWidth"]
    assert (body["imageHeight"], body["imageWidth"]) == (600, 800)
    ocr = body["ocr"]
    assert list(ocr) == ["box", "text", "boxScore", "textScore"]
    n = len(ocr["text"])
    assert n == 2 and len(ocr["box"]) == 8 * n and len(ocr["boxScore"]) == n and len(ocr["textScore"]) == n
    assert sorted(ocr["text"]) == ["HAILO IMMICH", "Smart search 2026"]
    assert all(isinstance(t, str) for t in ocr["text"])
    assert all(isinstance(v, float) and 0 <= v < 1 for v in ocr["box"])
    assert all(isinstance(v, float) and 0 < v <= 1 for v in ocr["boxScore"])
    assert all(isinstance(v, float) and v > 0.8 and round(v, 5) == v for v in ocr["textScore"])
    for i in range(n):
        x1, y1, x2, y2, x3, y3, x4, y4 = ocr["box"][8 * i : 8 * i + 8]
        assert x1 < x2 and y2 < y3 and x4 < x3 and y1 < y4  # TL, TR, BR, BL
    line = ocr["text"].index("HAILO IMMICH")
    x1, y1 = ocr["box"][8 * line : 8 * line + 2]
    assert abs(x1 * 800 - 60) < 12 and abs(y1 * 600 - 110) < 15  # normalised by width and height
    # the raw bytes: compact, float32 shortest repr
    assert b" " not in r.content.replace(b"HAILO IMMICH", b"").replace(b"Smart search 2026", b"")


def test_ocr_nothing_detected_and_all_filtered_key_orders(server, text_image):
    r = server.predict(OCR, image=blank(320, 240))
    assert r.content == b'{"ocr":{"box":[],"boxScore":[],"text":[],"textScore":[]},"imageHeight":240,"imageWidth":320}'
    strict = json.loads(json.dumps(OCR))
    strict["ocr"]["recognition"]["options"]["minScore"] = 1.0  # textScore > 1.0 never holds
    r = server.predict(strict, image=text_image)
    assert r.content == b'{"ocr":{"box":[],"text":[],"boxScore":[],"textScore":[]},"imageHeight":600,"imageWidth":800}'


def test_ocr_tiny_image_is_empty_result(server):
    r = server.predict(OCR, image=blank(20, 20, 0))
    assert r.status_code == 200
    assert r.json()["ocr"] == {"box": [], "boxScore": [], "text": [], "textScore": []}


def test_ocr_answers_are_deterministic(server, text_image):
    first = server.predict(OCR, image=text_image).content
    assert server.predict(OCR, image=text_image).content == first


def test_image_wins_over_text(server, text_image):
    body, content_type = immich_form(OCR, text_image, "ignored text")
    r = server.http.post(server.url + "/predict", data=body, headers={"content-type": content_type}, timeout=60)
    assert r.status_code == 200 and "ocr" in r.json()


# ---- metrics ---------------------------------------------------------------------------------


def test_metrics_count_requests_and_model_time(server, text_image):
    assert server.predict(OCR, image=text_image).status_code == 200
    text = server.get("/metrics").text
    assert server.get("/metrics").headers["content-type"].startswith("text/plain; version=0.0.4")
    count = [line for line in text.splitlines() if line.startswith('hailo_immich_requests_total{task="ocr",status="200"}')]
    assert count and int(count[0].split()[-1]) >= 1
    assert 'hailo_immich_request_duration_seconds_bucket{task="ocr",le="+Inf"}' in text
    device = [line for line in text.splitlines() if line.startswith('hailo_immich_model_device_seconds_total{model="ppocrv5-mobile-det-cpu",backend="cpu"}')]
    assert device and float(device[0].split()[-1]) > 0
    assert "hailo_immich_queue_depth 0" in text


# ---- fuzz ------------------------------------------------------------------------------------


def _fuzz_cases(seed: int, text_image: bytes) -> list[tuple[object, bytes | None, str | None]]:
    rng = random.Random(seed)
    good = json.dumps(OCR)
    cases: list[tuple[object, bytes | None, str | None]] = []
    entries_pool: list[object] = [
        good, "", "{", "null", "1e999", '{"ocr":{}}', '{"ocr":{"detection":1}}', '{"ocr":{"detection":{"modelName":[]}}}',
        '{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"maxResolution":-5}},"recognition":{"modelName":"PP-OCRv5_mobile"}}}',
        '{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"maxResolution":1e12}},"recognition":{"modelName":"PP-OCRv5_mobile"}}}',
        '{"ocr":{"detection":{"modelName":"PP-OCRv5_mobile","options":{"minScore":-1}},"recognition":{"modelName":"PP-OCRv5_mobile","options":{"minScore":"x"}}}}',
        '{"clip":{"visual":{"modelName":"ViT-B-32__openai"}}}', '{"x":{"y":{"modelName":"z"}}}', '{"\\ud800":{}}',
        '{"facial-recognition":{"detection":{"modelName":"buffalo_l"}}}', "\x00\x01\x02", '{"a":' * 5000,
    ]
    for _ in range(60):
        entries = rng.choice(entries_pool)
        if rng.random() < 0.3:
            raw = bytearray(good.encode())
            for _ in range(rng.randint(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            entries = raw.decode("latin-1")
        kind = rng.randrange(6)
        image: bytes | None
        if kind == 0:
            image = None
        elif kind == 1:
            image = bytes(rng.randrange(256) for _ in range(rng.randint(0, 2000)))
        elif kind == 2:
            image = text_image[: rng.randint(0, len(text_image))]
        elif kind == 3:
            corrupt = bytearray(text_image)
            for _ in range(20):
                corrupt[rng.randrange(200, len(corrupt))] = rng.randrange(256)
            image = bytes(corrupt)
        elif kind == 4:  # a PNG header claiming a huge size
            header = b"\x89PNG\r\n\x1a\n" + (13).to_bytes(4, "big") + b"IHDR" + (60000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
            image = header + zlib.crc32(header[12:]).to_bytes(4, "big")
        else:
            image = text_image
        text = rng.choice([None, "", "a cat", "\u00e9\u6f22" * 50])
        cases.append((entries, image, text))
    return cases


def test_fuzz_never_breaks_the_server(server, text_image):
    for entries, image, text in _fuzz_cases(1234, text_image):
        r = server.predict(entries, image=image, text=text)
        assert r.status_code != 200 or r.headers["content-type"] == "application/json"
        if r.status_code == 200:
            body = json.loads(r.content)  # never a 200 with a broken body
            assert isinstance(body, dict)
            if image is not None:
                assert list(body)[-2:] == ["imageHeight", "imageWidth"]
        else:
            assert 400 <= r.status_code < 600
            if r.headers["content-type"] == "application/json":
                assert "detail" in json.loads(r.content)
        assert server.alive()
    r = server.predict(OCR, image=text_image)
    assert r.status_code == 200 and len(r.json()["ocr"]["text"]) == 2


# ---- capacity ----------------------------------------------------------------------------------


def test_ping_stays_fast_while_predicts_run(server, text_image, capsys):
    big = Image.open(io.BytesIO(text_image)).resize((1440, 1080))
    payload = jpeg(np.asarray(big))
    stop = threading.Event()
    statuses: list[int] = []

    def worker():
        with requests.Session() as http:
            while not stop.is_set():
                body, content_type = immich_form(OCR, payload)
                statuses.append(http.post(server.url + "/predict", data=body, headers={"content-type": content_type}, timeout=120).status_code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    latencies = ping_latencies(server.url, 30, pause=0.1)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    with capsys.disabled():
        print(
            f"\n/ping under 8 concurrent OCR predicts: median {latencies[len(latencies) // 2] * 1000:.1f} ms, "
            f"max {latencies[-1] * 1000:.1f} ms ({len(statuses)} predicts, statuses {sorted(set(statuses))})"
        )
    assert statuses and set(statuses) == {200}
    assert latencies[-1] < 1.0  # Immich's probe gives up after 2 s


# ---- a tight server: one slot, no queue, model names ignored, warnings only --------------------


@pytest.fixture(scope="module")
def tight_server(cpu_models, tmp_path_factory):
    srv = start_server(
        tmp_path_factory.mktemp("tight"),
        {
            "HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir),
            "MACHINE_LEARNING_REQUEST_THREADS": "1",
            "HAILO_IMMICH_MAX_QUEUE": "0",
            "HAILO_IMMICH_MODEL_NAMES": "ignore",
            "IMMICH_LOG_LEVEL": "warning",
        },
    )
    yield srv
    stop_server(srv)


def test_ignore_policy_warns_loudly_at_start(tight_server):
    assert "MODEL NAMES IGNORED" in tight_server.log()
    assert tight_server.get("/health").json()["model_names_policy"] == "ignore"


def test_ignore_policy_serves_unknown_names_with_the_configured_model(tight_server, text_image):
    entries = {"ocr": {"detection": {"modelName": "some-other-ocr"}, "recognition": {"modelName": "some-other-ocr", "options": {"minScore": 0.8}}}}
    r = tight_server.predict(entries, image=text_image)
    assert r.status_code == 200, r.text
    assert sorted(r.json()["ocr"]["text"]) == ["HAILO IMMICH", "Smart search 2026"]


def test_full_queue_answers_503_at_once_and_recovers(tight_server, text_image):
    big = jpeg(np.asarray(Image.open(io.BytesIO(text_image)).resize((1600, 1200))))
    results: list[tuple[int, str | None, float]] = []

    def post():
        start = time.perf_counter()
        body, content_type = immich_form(OCR, big)
        r = requests.post(tight_server.url + "/predict", data=body, headers={"content-type": content_type}, timeout=120)
        results.append((r.status_code, r.headers.get("retry-after"), time.perf_counter() - start))

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    statuses = sorted(s for s, _, _ in results)
    assert 200 in statuses and 503 in statuses, results
    busy = [(s, retry, took) for s, retry, took in results if s == 503]
    assert all(retry == "1" for _, retry, _ in busy)
    assert tight_server.predict(OCR, image=text_image).status_code == 200
    log = tight_server.log()
    assert "POST /predict 503" in log  # failures are warnings: logged at IMMICH_LOG_LEVEL=warning
    assert "POST /predict 200" not in log  # successes are info: not logged
    assert "hailo_immich_rejected_busy_total 0" not in tight_server.get("/metrics").text


def test_form_fields_are_utf8(server):
    r = server.predict({"clip": {"visual": {"modelName": "ViT-ü-漢"}}}, text="größe 漢字")
    assert r.status_code == 500
    assert "ViT-ü-漢" in r.json()["detail"]


def test_one_log_line_per_predict(server, text_image):
    import re

    marker = "mark-" + str(random.random())
    server.predict({"clip": {"visual": {"modelName": marker}}}, text="x")  # a failure naming the marker
    assert server.predict(OCR, image=text_image).status_code == 200
    lines = server.log().splitlines()
    failed = [line for line in lines if marker in line]
    assert len(failed) == 1 and re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING hailo_immich.server: POST /predict 500 ", failed[0])
    ok = [line for line in lines[lines.index(failed[0]) :] if "POST /predict 200 tasks=ocr" in line]
    assert ok and re.search(r"models=ppocrv5-mobile-det-cpu@cpu,ppocrv5-mobile-rec-cpu@cpu total=[\d.]+ms queue=[\d.]+ms decode=[\d.]+ms ocr=[\d.]+ms", ok[0])
