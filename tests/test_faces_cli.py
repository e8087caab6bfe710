"""`hailo-immich detect` as a user runs it: a real subprocess on a temp folder with real photos,
a corrupt file, the real CenterFace model and a generated ArcFace-signature recogniser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from hailo_immich_cli.testkit.face_models import make_arcface_like_onnx

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    for key in ("HAILO_IMMICH_MODELS_DIR", "MODELS_DIR", "HAILO_IMMICH_BACKEND", "MACHINE_LEARNING_CACHE_FOLDER"):
        env.pop(key, None)
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def photo_dir(tmp_path, photos) -> Path:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "astronaut.jpg"), cv2.cvtColor(photos["astronaut"], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "sub" / "camera.png"), cv2.cvtColor(photos["camera"], cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "cat.jpg"), cv2.cvtColor(photos["chelsea"], cv2.COLOR_RGB2BGR))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder


def models_dir(root: Path, cpu_models, recognizer: bool) -> Path:
    (root / "centerface-cpu").mkdir(parents=True)
    (root / "centerface-cpu" / "centerface.onnx").symlink_to(Path(cpu_models.models_dir) / "centerface-cpu" / "centerface.onnx")
    if recognizer:
        make_arcface_like_onnx(root / "buffalo_l-recognition-cpu" / "model.onnx")
    return root


@pytest.mark.slow
def test_detect_json_with_crops_and_a_corrupt_file(tmp_path, photo_dir, cpu_models):
    models = models_dir(tmp_path / "models", cpu_models, recognizer=True)
    crops = tmp_path / "crops"
    proc = run_cli("detect", str(photo_dir), "--json", "--crops", str(crops), "--backend", "cpu", "--models-dir", str(models), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # one file failed
    assert "corrupt.jpg" in proc.stderr and "Traceback" not in proc.stderr
    records = {Path(r["file"]).name: r for r in json.loads(proc.stdout)}
    assert set(records) == {"astronaut.jpg", "camera.png", "cat.jpg"}
    for name, n in (("astronaut.jpg", 1), ("camera.png", 1), ("cat.jpg", 0)):
        rec = records[name]
        assert len(rec["faces"]) == n
        assert rec["detector"]["recipe"] == "centerface-cpu" and rec["detector"]["backend"] == "cpu"
        assert rec["recognizer"]["recipe"] == "buffalo_l-recognition-cpu" and rec["recognizer"]["backend"] == "cpu"
        assert (rec["width"], rec["height"]) == (512, 512) if name != "cat.jpg" else (451, 300)
    face = records["astronaut.jpg"]["faces"][0]
    assert len(face["embedding"]) == 512 and len(face["landmarks"]) == 5 and face["score"] >= 0.7
    pngs = sorted(crops.glob("*.png"))
    assert len(pngs) == 2
    assert sorted(Path(r["faces"][0]["crop"]) for r in records.values() if r["faces"]) == pngs
    for png in pngs:
        img = cv2.imread(str(png))
        assert img.shape == (112, 112, 3) and img.std() > 10, "a real aligned crop, not a blank"


@pytest.mark.slow
def test_detect_without_a_recogniser_explains_and_detects(tmp_path, photo_dir, cpu_models):
    models = models_dir(tmp_path / "models", cpu_models, recognizer=False)
    target = photo_dir / "astronaut.jpg"
    proc = run_cli("detect", str(target), "--jsonl", "--backend", "cpu", "--models-dir", str(models), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fetch-models --recipe buffalo_l-recognition-cpu" in " ".join(proc.stderr.split())
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["recognizer"] is None and len(rec["faces"]) == 1 and "embedding" not in rec["faces"][0]


@pytest.mark.slow
def test_detect_table_and_options(tmp_path, photo_dir, cpu_models):
    models = models_dir(tmp_path / "models", cpu_models, recognizer=True)
    table = run_cli("detect", str(photo_dir / "astronaut.jpg"), "--backend", "cpu", "--models-dir", str(models), cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "astronaut.jpg" in table.stdout and "centerface-cpu (cpu)" in table.stdout and "512-d" in table.stdout
    strict = run_cli("detect", str(photo_dir / "astronaut.jpg"), "--json", "--no-embed", "--min-score", "0.95", "--backend", "cpu", "--models-dir", str(models), cwd=tmp_path)
    assert strict.returncode == 0, strict.stderr
    (rec,) = json.loads(strict.stdout)
    assert rec["faces"] == [] and rec["recognizer"] is None  # the astronaut scores about 0.91
    bad = run_cli("detect", str(photo_dir), "--recognizer", "antelopev2", "--backend", "cpu", "--models-dir", str(models), cwd=tmp_path)
    assert bad.returncode == 4 and "fetch-models --recipe antelopev2-recognition-cpu" in " ".join(bad.stderr.split())
    assert "Traceback" not in bad.stderr
