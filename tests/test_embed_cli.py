"""`hailo-immich embed` as a user runs it: a real subprocess on real image files, tiny stand-in
encoders under the real Immich-export recipes (no pretrained CLIP weights are reachable offline)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.testkit.clip_models import clip_tokenizer_json, tiny_textual_onnx, tiny_visual_onnx, write_json
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def models(tmp_path_factory, clip_assets) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("embed-models")
    tiny_visual_onnx(root / "clip-vit-b32-openai-visual-cpu" / "model.onnx", dim=512)
    text_dir = root / "clip-vit-b32-openai-textual-cpu"
    tiny_textual_onnx(text_dir / "model.onnx", context=77, dim=512)
    clip_tokenizer_json(clip_assets["bpe_simple_vocab_16e6.txt.gz"], text_dir / "tokenizer.json")
    write_json(text_dir / "tokenizer_config.json", {"pad_token": "<|endoftext|>"})
    return root


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos) -> Path:
    root = tmp_path_factory.mktemp("photos")
    (root / "sub").mkdir()
    Image.fromarray(photos["astronaut"]).save(root / "astronaut.jpg", quality=92)
    Image.fromarray(photos["chelsea"]).save(root / "sub" / "cat.png")
    Image.fromarray(photos["coffee"]).save(root / "sub" / "coffee.webp")
    (root / "broken.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    return root


def run(args: list[str], models: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HAILO_IMMICH_BACKEND": "cpu", "HAILO_IMMICH_MODELS_DIR": str(models), "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_embed_folder_jsonl_skips_bad_file(models, photo_dir):
    proc = run(["embed", str(photo_dir), "--jsonl"], models)
    assert proc.returncode == 1, proc.stderr  # one broken file -> exit 1, others still embedded
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert sorted(Path(r["path"]).name for r in rows) == ["astronaut.jpg", "cat.png", "coffee.webp"]
    for r in rows:
        assert r["model_id"].startswith("clip-vit-b32-openai-visual-cpu@") and r["backend"] == "cpu" and r["dim"] == 512
        assert abs(np.linalg.norm(r["embedding"]) - 1.0) < 1e-5
    assert "broken.jpg" in proc.stderr


@pytest.mark.slow
def test_embed_npy_matches_jsonl_and_text(models, photo_dir, tmp_path):
    files = [str(photo_dir / "astronaut.jpg"), str(photo_dir / "sub" / "cat.png")]
    proc = run(["embed", *files, "--npy", str(tmp_path / "vecs.npy")], models)
    assert proc.returncode == 0, proc.stderr
    vecs = np.load(tmp_path / "vecs.npy")
    meta = json.loads((tmp_path / "vecs.json").read_text())
    assert vecs.shape == (2, 512) and vecs.dtype == np.float32
    assert meta["items"] == files and meta["backend"] == "cpu" and meta["model_id"].startswith("clip-vit-b32-openai-visual-cpu@")
    again = run(["embed", files[1], "--jsonl"], models)
    np.testing.assert_allclose(vecs[1], json.loads(again.stdout)["embedding"], atol=1e-6)  # batch of 2 == single

    text = run(["embed", "--text", "a photo of a cat", "--text", "Ünïcödé 2019", "--jsonl"], models)
    assert text.returncode == 0, text.stderr
    rows = [json.loads(line) for line in text.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a photo of a cat", "Ünïcödé 2019"]
    assert all(r["model_id"].startswith("clip-vit-b32-openai-textual-cpu@") and r["dim"] == 512 for r in rows)
    paired = run(["embed", "--text", "a photo of a cat", "--jsonl", "--model", "clip-vit-b32-openai-visual-cpu"], models)
    assert paired.returncode == 0 and json.loads(paired.stdout)["embedding"] == rows[0]["embedding"]  # visual id -> its text pair
    plain = run(["embed", "--text", "a photo of a cat"], models)
    assert "clip-vit-b32-openai-textual-cpu@" in plain.stdout and "\tcpu\t512-d\t" in plain.stdout


def test_embed_usage_errors(models, tmp_path):
    both = run(["embed", str(tmp_path), "--text", "x"], models)
    assert both.returncode == 2 and "not both" in both.stderr and "Traceback" not in both.stderr
    missing = run(["embed", "--text", "x", "--model", "ViT-B-16-SigLIP__webli"], models)
    assert missing.returncode == 4 and "fetch-models" in missing.stderr and "Traceback" not in missing.stderr
