"""Slow and stalled clients against a real `hailo-immich serve` on 127.0.0.1.

Hundreds of connections that send part of a request and stall must not starve Immich's health
probe or real predicts, must be dropped after the header timeout (or for uploading too slowly),
and must not hold memory beyond the buffer bound.
"""

from __future__ import annotations

import resource
import socket
import time

import numpy as np
import pytest
import requests

from hailo_immich_cli.testkit.requests import immich_form, jpeg
from tests.helpers.immich_server import free_port, ping_latencies, start_server, stop_server

pytestmark = pytest.mark.slow

STALLED = 500
HEADER_TIMEOUT_S = 4.0
BUFFER_BYTES = 30_000_000  # fits the stalled bodies (250 x 100 KB) and a predict
OCR = {
    "ocr": {
        "detection": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.5, "maxResolution": 736}},
        "recognition": {"modelName": "PP-OCRv5_mobile", "options": {"minScore": 0.8}},
    }
}


@pytest.fixture(scope="module")
def server(cpu_models, tmp_path_factory):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * STALLED + 200:  # our sockets and the server's, in one test run
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * STALLED), hard))
    srv = start_server(
        tmp_path_factory.mktemp("slow"),
        {
            "HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir),
            "HAILO_IMMICH_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
            "HAILO_IMMICH_MIN_UPLOAD_BYTES_PER_S": "20000",
            "HAILO_IMMICH_MAX_BUFFERED_BYTES": str(BUFFER_BYTES),
            "HAILO_IMMICH_MAX_REQUEST_BYTES": "4000000",
        },
    )
    yield srv
    stop_server(srv)


def _open_stalled(url: str, count: int) -> list[socket.socket]:
    """Half send part of a request head, half a whole head and 1 KB of a 100 KB body; then nothing."""
    port = int(url.rsplit(":", 1)[1])
    socks = []
    for i in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if i % 2:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n")
        else:
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 100000\r\n\r\n" + b"x" * 1000)
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket, wait_s: float) -> bool:
    """True once the server has closed the connection (EOF, possibly after a 408 answer)."""
    s.settimeout(wait_s)
    try:
        while True:
            data = s.recv(4096)
            if not data:
                return True
    except (socket.timeout, TimeoutError):
        return False
    except OSError:  # reset by the server
        return True


def _metric(text: str, name: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith(name + " "))
    return float(line.split()[-1])


def test_stalled_connections_neither_starve_ping_nor_predicts_and_are_dropped(server, capsys):
    opened = time.monotonic()
    socks = _open_stalled(server.url, STALLED)
    try:
        while server.get("/health").json()["server"]["connections"]["open"] < STALLED:  # the loop has accepted them all
            assert time.monotonic() - opened < HEADER_TIMEOUT_S / 2
            time.sleep(0.02)
        latencies = ping_latencies(server.url, 50, timeout=2)
        image = jpeg(np.full((480, 640, 3), 255, np.uint8))
        r = server.predict(OCR, image=image, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json()["ocr"]["text"] == []
        assert time.monotonic() - opened < HEADER_TIMEOUT_S  # all of the above ran while every stalled socket was open
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        with capsys.disabled():
            print(f"\n/ping with {STALLED} stalled connections open: p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
                  f"p99 {p99 * 1000:.1f} ms")
        assert p99 < 0.5  # the target is 50 ms (measured here: see the print); bounded loosely for a shared CI machine

        deadline = opened + HEADER_TIMEOUT_S + 3.0
        closed = sum(_closed_by_server(s, max(0.05, deadline - time.monotonic())) for s in socks)
        assert closed == STALLED
    finally:
        for s in socks:
            s.close()
    metrics = server.get("/metrics").text
    assert _metric(metrics, "hailo_immich_connections_dropped_header_timeout_total") >= STALLED // 2
    assert _metric(metrics, "hailo_immich_connections_dropped_slow_upload_total") >= STALLED // 2
    assert _metric(metrics, "hailo_immich_request_buffered_bytes") == 0
    assert server.get("/ping").content == b"pong"


def test_buffered_bodies_are_bounded_and_refused_with_503(server):
    """Declared bodies beyond HAILO_IMMICH_MAX_BUFFERED_BYTES are refused at once, not buffered."""
    port = int(server.url.rsplit(":", 1)[1])
    held = []
    try:
        for length in [4_000_000] * 7 + [2_000_000]:  # exactly the 30 MB budget
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % length + b"x" * 100_000)
            held.append(s)
        time.sleep(0.2)
        body, content_type = immich_form({}, image=jpeg(np.zeros((8, 8, 3), np.uint8)))
        r = requests.post(server.url + "/predict", data=body, headers={"content-type": content_type}, timeout=10)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert r.json()["detail"].startswith("busy: ")
    finally:
        for s in held:
            s.close()
    time.sleep(0.3)  # the loop releases the budget when it sees the connections close
    assert server.predict({}, image=jpeg(np.zeros((8, 8, 3), np.uint8))).content == b'{"imageHeight":8,"imageWidth":8}'


def test_keep_alive_pipelining_and_oversized_head(server):
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b'{"detail":"Not Found"}'):
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
    assert data.index(b"pong") < data.index(b'{"message":"Immich ML"}') < data.index(b"404 Not Found")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 431 ")


def test_busy_port_is_one_line_and_exit_1(cpu_models, tmp_path):
    import os
    import subprocess
    import sys

    from tests.helpers.immich_server import REPO

    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HAILO_IMMICH_", "MACHINE_LEARNING_", "IMMICH_"))}
        env.update({"PYTHONPATH": str(REPO), "IMMICH_HOST": "127.0.0.1", "IMMICH_PORT": str(port), "HAILO_IMMICH_BACKEND": "cpu",
                    "HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir), "NO_COLOR": "1", "COLUMNS": "200"})
        done = subprocess.run([sys.executable, "-m", "hailo_immich_cli", "serve"], env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 1
    assert lines == [f"error: port {port} is in use on 127.0.0.1 (choose another with --port or IMMICH_PORT)"]


def _read_answer(s: socket.socket) -> bytes:
    """One whole HTTP answer (head and Content-Length body) from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n\r\n" + body


def test_chunked_upload_is_411_and_expect_continue_is_honoured(server):
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        answer = _read_answer(s)
        assert answer.startswith(b"HTTP/1.1 411 ") and answer.endswith(b'{"detail":"send a Content-Length (chunked uploads are not accepted)"}')
        s.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")  # the chunked body was read and dropped: the connection goes on
        assert _read_answer(s).endswith(b"pong")
    body, content_type = immich_form({}, image=jpeg(np.zeros((8, 8, 3), np.uint8)))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                  % (content_type.encode(), len(body)))
        assert s.recv(4096) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        answer = _read_answer(s)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"imageHeight":8,"imageWidth":8}')


def test_sigterm_lets_the_running_predict_answer_then_exits(cpu_models, tmp_path):
    import signal
    import threading

    from PIL import Image, ImageDraw, ImageFont

    from hailo_immich_cli.testkit.requests import png

    img = Image.new("RGB", (6000, 6000), "white")
    ImageDraw.Draw(img).text((100, 100), "HELLO", fill="black", font=ImageFont.load_default(size=400))
    body, content_type = immich_form(OCR, png(np.asarray(img)))
    srv = start_server(tmp_path, {"HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir)})
    answer: list[requests.Response] = []
    try:
        post = threading.Thread(target=lambda: answer.append(
            requests.post(srv.url + "/predict", data=body, headers={"content-type": content_type}, timeout=120)))
        post.start()
        deadline = time.monotonic() + 30
        while not srv.get("/health").json()["server"]["in_flight"]:  # the predict is running
            assert time.monotonic() < deadline
            time.sleep(0.05)
        srv.process.send_signal(signal.SIGTERM)  # gunicorn's graceful stop
        post.join(120)
        assert srv.process.wait(60) == 0
    finally:
        stop_server(srv)
    assert answer and answer[0].status_code == 200 and answer[0].json()["ocr"]["text"] == ["HELLO"]
    assert "models released" in srv.log()
