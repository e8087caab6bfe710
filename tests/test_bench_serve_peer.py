"""scripts/bench_serve_peer.py against real `serve` processes on loopback.

The official service is not available in CI, so the "official" side here is a second `serve` started
from the same Immich cache: the interleaved rounds, the table and the answer comparison all run for
real, and two identical services must agree.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hailo_immich_cli.testkit.immich_cache import CLIP_MODELS, build_cache
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "bench_serve_peer.py"


def run_script(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=str(REPO), capture_output=True, text=True, timeout=timeout)


def test_help_names_both_services():
    out = run_script("--help", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--peer-python" in out.stdout and "--peer-dir" in out.stdout and "--ours-only" in out.stdout


def test_a_non_loopback_peer_is_refused_before_any_traffic(tmp_path):
    out = run_script("--peer-url", "http://192.0.2.1:3003", "--ours-url", "http://127.0.0.1:9", timeout=60)
    assert out.returncode != 0
    assert "not a loopback address" in out.stderr


@pytest.fixture(scope="module")
def cache(tmp_path_factory, clip_assets, cpu_models) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("bench-peer-cache") / "cache"
    return build_cache(root, clip_assets["bpe_simple_vocab_16e6.txt.gz"], Path(cpu_models.models_dir),
                       clip=CLIP_MODELS[:1], packs=("buffalo_l",))


@pytest.mark.slow
def test_two_services_interleaved_table_and_agreement(cache, tmp_path):
    from tests.helpers.immich_server import start_server, stop_server

    models = tmp_path / "empty-models"
    models.mkdir()
    other = start_server(tmp_path, {"HAILO_IMMICH_MODELS_DIR": str(models), "MACHINE_LEARNING_CACHE_FOLDER": str(cache)})
    report_path = tmp_path / "report.json"
    try:
        out = run_script("--cache", str(cache), "--peer-url", other.url, "--tasks", "clip-text,clip,faces,ocr",
                         "--concurrency", "1", "--rounds", "2", "--round-seconds", "20", "--round-count", "1",
                         "--warmup", "0", "--images", "2", "--json", str(report_path))
    finally:
        stop_server(other)
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(report_path.read_text())

    assert report["services"]["official"]["url"] == other.url
    ours_url = report["services"]["ours"]["url"]
    assert ours_url != other.url and ours_url.startswith("http://127.0.0.1:")
    assert [(c["task"], c["concurrency"]) for c in report["cells"]] == [("clip-text", 1), ("clip", 1), ("faces", 1), ("ocr", 1)]
    for cell in report["cells"]:
        for side in ("official", "ours"):
            assert cell[side]["calls"] == 2 and not cell[side]["errors"], cell  # 2 rounds x 1 request
            assert len(cell[side]["rounds_requests_per_s"]) == 2
        assert cell["ours_over_official"] == pytest.approx(cell["ours"]["requests_per_s"] / cell["official"]["requests_per_s"], rel=1e-2)

    agreement = report["agreement"]
    assert all(agreement[t]["agree"] for t in ("clip-text", "clip", "faces", "ocr")), agreement
    signed = next(c for c in agreement["ocr"]["checks"] if c["input"] == "coffee")
    assert signed["texts"][0] > 0 and signed["text_identical"]  # the printed sign was read, identically
    assert all(c["faces"][0] > 0 for c in agreement["faces"]["checks"])

    assert "| request | concurrency | official req/s | ours req/s | ours / official |" in out.stdout
    assert "| OCR | 1 |" in out.stdout and "- faces: agree" in out.stdout

    import requests

    with pytest.raises(requests.ConnectionError):  # the serve the script started is gone
        requests.get(ours_url + "/ping", timeout=2)
