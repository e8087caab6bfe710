"""`bench --url` against the real `hailo-immich serve` (gunicorn, CPU backend, real OCR models) on loopback."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from hailo_immich_cli.cli import app
from hailo_immich_cli.bench.loadtest import LoadTest, UrlOptions

pytestmark = pytest.mark.slow

from hailo_immich_cli.testkit.requests import jpeg
from tests.helpers.immich_server import start_server, stop_server

runner = CliRunner()


@pytest.fixture(scope="module")
def server(cpu_models, tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("bench-serve"), {"HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir)})
    yield srv
    stop_server(srv)


def test_load_test_of_serve(server, photos):
    images = [jpeg(photos["page"]), jpeg(photos["coffee"])]
    opts = UrlOptions(tasks=("ocr",), concurrency=(1, 2), duration_s=None, count=4, warmup=1, control_pings=3,
                      ping_interval_s=0.1, timeout_s=60)
    report = LoadTest(server.url, opts, images, "test photos").run()
    assert report["service"]["root"] == {"status": 200, "body": '{"message":"Immich ML"}'}
    health = report["service"]["health"]  # our serve describes itself; Immich's answers 404 here
    assert health["active_backend"] == "cpu" and report["emulated"] is False
    control = report["control"]
    assert control["idle_ping"]["pings"] == 3 and control["idle_ping"]["errors"] == {}
    assert set(control["client_ceiling"]["statuses"]) == {"422"}  # invalid entries: rejected before inference
    cells = report["tasks"]["ocr"]["cells"]
    assert [c["concurrency"] for c in cells] == [1, 2]
    for cell in cells:
        assert cell["errors"] == {} and cell["calls"] == 4 and cell["requests_per_s"] > 0
        lat = cell["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]
        assert cell["ping_under_load"]["pings"] >= 1 and cell["ping_under_load"]["errors"] == {}
    assert report["advice"][0]["concurrency"] in (1, 2)
    # the service counted what we sent: 2 phases x (1 warm-up + 4) OCR requests
    assert server.alive()


def test_cli_url_against_serve_reports_errors_by_status(server, photos, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(photos["page"]).save(folder / "page.jpg")
    result = runner.invoke(app, ["bench", "--url", server.url, "--task", "ocr,clip", "--concurrency", "1", "--count", "2",
                                 "--warmup", "0", "--images", str(folder), "--json",
                                 "--model-name", "clip=no-such-model"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["tasks"]["ocr"]["cells"][0]["errors"] == {}
    clip = report["tasks"]["clip"]["cells"][0]
    assert clip["calls"] == 0 and sum(clip["errors"].values()) == 2
    assert all(status.isdigit() and int(status) >= 400 for status in clip["errors"])
