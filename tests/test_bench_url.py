"""`bench --url`: Immich-shaped load against a real HTTP server on loopback."""

from __future__ import annotations

import json

import cv2
import pytest
from typer.testing import CliRunner

from hailo_immich_cli.cli import app
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.bench.loadtest import (
    LoadTest,
    Target,
    UrlOptions,
    entries_for,
    multipart,
)
from tests.helpers.immich_stub import StubState, start_stub

runner = CliRunner()


@pytest.fixture()
def stub():
    state = StubState(work_s=0.02)
    server, url = start_stub(state)
    yield state, url
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def jpegs(photos) -> list[bytes]:
    return [cv2.imencode(".jpg", photos[name][..., ::-1])[1].tobytes() for name in ("astronaut", "page")]


def test_requests_are_shaped_like_immichs(stub, jpegs):
    state, url = stub
    opts = UrlOptions(tasks=("faces", "ocr", "clip-text"), concurrency=(1, 2), duration_s=None, count=4, warmup=1, control_pings=3)
    report = LoadTest(url, opts, jpegs, "test photos").run()

    ok = [p for p in state.predicts if p["status"] == 200]
    image_requests = [p for p in ok if len(p["parts"]) == 2 and p["parts"][1][0] == "image"]
    assert image_requests, "no image request reached the service"
    for p in image_requests:
        assert p["parts"][0] == ("entries", None, None)  # entries first, a plain field
        assert p["parts"][1] == ("image", "blob", "application/octet-stream")
    assert {p["entries"] for p in ok} == {entries_for("faces", "buffalo_l"), entries_for("ocr", "PP-OCRv5_mobile"),
                                          entries_for("clip-text", "ViT-B-32__openai")}
    assert entries_for("faces", "buffalo_l") == (
        '{"facial-recognition":{"detection":{"modelName":"buffalo_l","options":{"minScore":0.7}},'
        '"recognition":{"modelName":"buffalo_l"}}}'
    )
    text_requests = [p for p in ok if p["parts"][-1][0] == "text"]
    assert text_requests and all(p["parts"][-1] == ("text", None, None) for p in text_requests)
    assert state.hosts == {url.split("//")[1]}  # only the address given

    # counts add up: 3 tasks x 2 concurrencies x (1 warm-up + 4 measured), all answered 200
    for task in ("faces", "ocr", "clip-text"):
        cells = report["tasks"][task]["cells"]
        assert [c["concurrency"] for c in cells] == [1, 2]
        for c in cells:
            assert c["calls"] == 4 and c["items"] == 4 and c["errors"] == {}
            assert c["requests_per_s"] > 0
            lat = c["latency_ms"]
            assert 20 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]  # the stub works 20 ms per request
    assert len(ok) == 3 * 2 * 5


def test_control_phase_and_ping_under_load(stub, jpegs):
    state, url = stub
    state.work_s = 0.05
    opts = UrlOptions(tasks=("clip",), concurrency=(2,), duration_s=0.6, count=None, warmup=0, control_pings=5, ping_interval_s=0.05)
    report = LoadTest(url, opts, jpegs, "test photos").run()
    control = report["control"]
    assert control["idle_ping"]["pings"] == 5 and control["idle_ping"]["errors"] == {}
    ceiling = control["client_ceiling"]
    assert set(ceiling["statuses"]) == {"422"} and ceiling["calls"] > 0  # rejected before any model ran
    cell = report["tasks"]["clip"]["cells"][0]
    assert cell["ping_under_load"]["pings"] >= 3 and cell["ping_under_load"]["errors"] == {}
    assert cell["ping_under_load"]["over_immich_timeout"] == 0
    assert 0.6 <= cell["wall_s"] < 2.0  # bounded in time
    assert report["service"]["root"] == {"status": 200, "body": '{"message":"Immich ML"}'}
    assert report["schema_version"] == 1 and report["kind"] == "url" and report["emulated"] is False
    assert report["advice"][0]["concurrency"] == 2


def test_errors_are_reported_by_status(stub, jpegs):
    _, url = stub
    opts = UrlOptions(tasks=("clip",), concurrency=(1,), duration_s=None, count=3, warmup=0, control_pings=1,
                      model_names={"clip": "no-such-model"})
    report = LoadTest(url, opts, jpegs, "test photos").run()
    cell = report["tasks"]["clip"]["cells"][0]
    assert cell["errors"] == {"500": 3} and cell["calls"] == 0
    assert cell["latency_ms"]["p50"] is None
    assert "no error-free phase" in report["advice"][0]["text"]


def test_target_keeps_host_and_port_only():
    assert str(Target.parse("http://127.0.0.1:3003/ml/")) == "http://127.0.0.1:3003"
    assert str(Target.parse("localhost:3003")) == "http://localhost:3003"
    with pytest.raises(BadInputError):
        Target.parse("ftp://example.org")
    body, ctype = multipart('{"clip":{"visual":{"modelName":"x"}}}', image=b"\xff\xd8")
    assert ctype.startswith("multipart/form-data; boundary=")
    assert body.index(b'name="entries"') < body.index(b'name="image"; filename="blob"')


def test_cli_url_json_and_table(stub, jpegs, tmp_path):
    _, url = stub
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, data in enumerate(jpegs):
        (folder / f"{i}.jpg").write_bytes(data)
    result = runner.invoke(app, ["bench", "--url", url, "--task", "ocr", "--concurrency", "1,2", "--count", "3",
                                 "--warmup", "0", "--images", str(folder), "--json", "--max-latency-ms", "10000"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [c["calls"] for c in report["tasks"]["ocr"]["cells"]] == [3, 3]
    assert report["images"]["count"] == 2 and report["advice"][0]["within_bound"] is True
    result = runner.invoke(app, ["bench", "--url", url, "--task", "ocr", "--concurrency", "1", "--count", "2", "--warmup", "0",
                                 "--images", str(folder)])
    assert result.exit_code == 0, result.output
    assert "/predict ocr" in result.stdout and "idle /ping" in result.stdout and "advice" in result.stdout


def test_nothing_listening_is_a_clear_error():
    result = runner.invoke(app, ["bench", "--url", "http://127.0.0.1:9", "--count", "1"])
    assert result.exit_code == 2
    assert "nothing answers at http://127.0.0.1:9" in result.output and "Traceback" not in result.output


def test_raw_client_reads_every_answer_framing():
    """Content-Length, chunked and close-delimited answers, each body whole, from a real loopback server."""
    import http.server
    import threading

    from hailo_immich_cli.bench.loadtest import RawClient, raw_request

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            if self.path == "/predict" and body == b"chunked":
                self.send_response(200)
                self.send_header("transfer-encoding", "chunked")
                self.end_headers()
                for piece in (b"ab", b"cde" * 1000, b""):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            elif body == b"close":
                self.send_response(503)
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(b"busy, bye")
                self.close_connection = True
            else:
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        target = Target.parse(f"http://127.0.0.1:{server.server_address[1]}")
        client = RawClient(target, timeout=5)
        assert client.request(raw_request(target, "/predict", b"x" * 70000, "text/plain")) == (200, b"x" * 70000)
        assert client.request(raw_request(target, "/predict", b"chunked", "text/plain")) == (200, b"ab" + b"cde" * 1000)
        assert client.request(raw_request(target, "/predict", b"close", "text/plain")) == (503, b"busy, bye")
        assert client.request(raw_request(target, "/predict", b"again", "text/plain")) == (200, b"again")  # reconnected
        client.close()
    finally:
        server.shutdown()
        server.server_close()
