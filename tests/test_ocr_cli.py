"""`hailo-immich ocr` as a user runs it: a real process on a folder of real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hailo_immich_cli.testkit.ocr_samples import render_lines

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], models_dir: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HAILO_IMMICH_MODELS_DIR": str(models_dir), "NO_COLOR": "1", **extra_env}
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", "ocr", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    (root / "nested").mkdir(parents=True)
    Image.fromarray(render_lines(["Garden party 2025", "bring snacks"], (640, 220), font_size=36)).save(root / "nested" / "good.png")
    good_jpeg = root / "cut.jpg"
    Image.fromarray(render_lines(["cut short"], (400, 120))).save(good_jpeg, "JPEG")
    good_jpeg.write_bytes(good_jpeg.read_bytes()[:300])  # corrupt JPEG: truncated
    (root / "fake.jpg").write_text("this is a text file with an image name\n")
    (root / "notes.txt").write_text("not an image, not scanned\n")
    return root


@pytest.mark.slow
def test_ocr_folder_reports_bad_files_and_exits_1(folder: Path, cpu_models):
    proc = _run([str(folder), "--json", "--backend", "cpu"], cpu_models.models_dir)
    assert proc.returncode == 1, proc.stderr
    records = json.loads(proc.stdout)
    by_name = {Path(r["file"]).name: r for r in records}
    assert set(by_name) == {"good.png", "cut.jpg", "fake.jpg"}
    good = by_name["good.png"]
    assert [line["text"] for line in good["lines"]] == ["Garden party 2025", "bring snacks"]
    assert good["detector"]["recipe"] == "ppocrv5-mobile-det-cpu" and good["detector"]["backend"] == "cpu"
    assert good["recognizer"]["recipe"] == "ppocrv5-mobile-rec-cpu"
    assert len(good["lines"][0]["box"]) == 4 and good["lines"][0]["text_score"] > 0.8
    assert "corrupt" in by_name["cut.jpg"]["error"] or "decodable" in by_name["cut.jpg"]["error"]
    assert "not a decodable image" in by_name["fake.jpg"]["error"]
    assert "2 file(s) failed" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_ocr_table_and_jsonl_and_options(folder: Path, cpu_models):
    good = folder / "nested" / "good.png"
    table = _run([str(good), "--backend", "cpu"], cpu_models.models_dir)
    assert table.returncode == 0, table.stderr
    assert "Garden party 2025" in table.stdout and "ppocrv5-mobile-rec-cpu" in table.stdout
    jsonl = _run([str(good), str(folder / "fake.jpg"), "--jsonl", "--backend", "cpu", "--min-rec-score", "0.999999"], cpu_models.models_dir)
    assert jsonl.returncode == 1
    first, second = (json.loads(line) for line in jsonl.stdout.splitlines())
    assert first["lines"] == [] and "error" in second  # nothing scores above 0.999999
    low_res = _run([str(good), "--json", "--backend", "cpu", "--max-resolution", "32", "--min-det-score", "0.3"], cpu_models.models_dir)
    assert low_res.returncode == 0
    assert json.loads(low_res.stdout)[0]["lines"] != json.loads(_run([str(good), "--json", "--backend", "cpu"], cpu_models.models_dir).stdout)[0]["lines"]


def test_ocr_rejects_json_and_jsonl_together(tmp_path: Path, cpu_models):
    proc = _run([str(tmp_path), "--json", "--jsonl", "--backend", "cpu"], cpu_models.models_dir)
    assert proc.returncode == 2 and "choose one" in proc.stderr


@pytest.mark.slow
def test_a_long_thin_image_is_held_to_the_pixel_budget_and_the_command_says_so(tmp_path: Path, cpu_models):
    strip = tmp_path / "banner.png"
    Image.fromarray(render_lines(["a banner far wider than it is tall " * 3], (3200, 100), font_size=40)).save(strip)
    plain = _run([str(strip), "--json", "--backend", "cpu"], cpu_models.models_dir)
    assert plain.returncode == 0, plain.stderr
    assert "maxResolution" not in plain.stderr  # 3200x100 is within the default 2048^2 budget
    bounded = _run([str(strip), "--json", "--backend", "cpu"], cpu_models.models_dir, HAILO_IMMICH_OCR_MAX_RESOLUTION="300")
    assert bounded.returncode == 0, bounded.stderr
    # 300^2 pixels for a 32:1 image: the shorter side goes from 100 to int(100 * 300 / sqrt(320000)) = 53
    assert "banner.png: maxResolution=736->53(HAILO_IMMICH_OCR_MAX_RESOLUTION=300)" in bounded.stderr
    assert json.loads(bounded.stdout)[0]["width"] == 3200  # boxes stay in the file's pixels
