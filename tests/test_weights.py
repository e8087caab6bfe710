"""extract-weights: hand-written checkpoints in each format we read, plus broken ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.clip.weights import extract_text_weights, read_checkpoint, save_npz
from tests.helpers.checkpoints import write_safetensors, write_torch_zip

REPO = Path(__file__).resolve().parent.parent


def _tinyclip_like(seed=0, width=512):
    rng = np.random.default_rng(seed)
    return {
        "token_embedding.weight": rng.standard_normal((49408, width)).astype(np.float32),
        "positional_embedding": rng.standard_normal((77, width)).astype(np.float32),
        "text_projection": rng.standard_normal((width, 512)).astype(np.float32),
        "ln_final.weight": rng.standard_normal(width).astype(np.float32),
        "ln_final.bias": rng.standard_normal(width).astype(np.float32),
        "visual.conv1.weight": rng.standard_normal((4, 3, 2, 2)).astype(np.float32),
    }


def test_safetensors_hf_layout_with_linear_projection_and_bf16(tmp_path, recipe_book):
    rng = np.random.default_rng(1)
    proj_linear = rng.standard_normal((512, 512)).astype(np.float32)  # nn.Linear (out, in)
    tensors = {
        "text_model.embeddings.token_embedding.weight": rng.standard_normal((49408, 512)).astype(np.float32),
        "text_model.embeddings.position_embedding.weight": rng.standard_normal((77, 512)).astype(np.float32),
        "text_projection.weight": proj_linear,
        "text_model.final_layer_norm.weight": np.ones(512, np.float32),
        "text_model.final_layer_norm.bias": np.zeros(512, np.float32),
        "logit_scale": np.asarray(4.6, np.float32),
    }
    path = write_safetensors(tmp_path / "model.safetensors", tensors, bf16=("text_model.embeddings.position_embedding.weight",))
    out = extract_text_weights(recipe_book.get("clip-vit-b32-textual-hailo"), path)
    assert set(out) == {"token_embedding", "positional_embedding", "text_projection", "ln_final_weight", "ln_final_bias"}
    np.testing.assert_array_equal(out["token_embedding"], tensors["text_model.embeddings.token_embedding.weight"])
    np.testing.assert_array_equal(out["text_projection"], proj_linear.T)  # stored as (width, embed)
    bf = tensors["text_model.embeddings.position_embedding.weight"]
    np.testing.assert_allclose(out["positional_embedding"], bf, rtol=1 / 128)  # bf16 keeps 8 bits of mantissa


def test_torch_zip_nested_state_dict_views_and_half(tmp_path, recipe_book):
    tensors = {f"module.{k}": v for k, v in _tinyclip_like().items()}
    marker = tmp_path / "pwned"
    path = write_torch_zip(tmp_path / "TinyCLIP.pt", tensors, evil_marker=marker,
                           transposed=("module.text_projection",), half=("module.ln_final.bias",))
    listed = read_checkpoint(path)
    assert listed["state_dict.module.positional_embedding"].shape == (77, 512)
    out = extract_text_weights(recipe_book.get("tinyclip-vit-39m-16-textual-hailo"), path)
    assert not marker.exists()  # the os.system in the pickle was never called
    np.testing.assert_array_equal(out["token_embedding"], tensors["module.token_embedding.weight"])
    np.testing.assert_array_equal(out["text_projection"], tensors["module.text_projection"])  # strided view read right
    np.testing.assert_array_equal(out["positional_embedding"], tensors["module.positional_embedding"])  # storage offset
    np.testing.assert_allclose(out["ln_final_bias"], tensors["module.ln_final.bias"], rtol=1e-3, atol=1e-3)


def test_wrong_model_size_is_refused(tmp_path, recipe_book):
    path = write_safetensors(tmp_path / "small.safetensors", {k: v for k, v in _tinyclip_like(width=256).items() if v.ndim})
    with pytest.raises(BadInputError, match="shape"):
        extract_text_weights(recipe_book.get("tinyclip-vit-39m-16-textual-hailo"), path)


def test_missing_tensor_names_the_keys(tmp_path, recipe_book):
    path = write_safetensors(tmp_path / "other.safetensors", {"foo": np.zeros((2, 2), np.float32)})
    with pytest.raises(BadInputError, match="token_embedding"):
        extract_text_weights(recipe_book.get("siglip-b16-textual-hailo"), path)


def test_truncated_and_corrupt_files(tmp_path):
    good = write_safetensors(tmp_path / "good.safetensors", {"a": np.arange(1000, dtype=np.float32)})
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(BadInputError, match="truncated|outside"):
        read_checkpoint(cut)
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(BadInputError):
        read_checkpoint(tmp_path / "junk.safetensors")
    zpath = write_torch_zip(tmp_path / "w.pt", {"positional_embedding": np.ones((77, 512), np.float32)}, nest=None)
    cutzip = tmp_path / "cut.pt"
    cutzip.write_bytes(zpath.read_bytes()[: zpath.stat().st_size // 2])
    with pytest.raises(BadInputError):
        read_checkpoint(cutzip)["positional_embedding"].load()
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(b"\x80\x02\x8a\x0alegacy")
    with pytest.raises(BadInputError, match="legacy"):
        read_checkpoint(legacy)
    with pytest.raises(BadInputError, match="no such file"):
        read_checkpoint(tmp_path / "nope.pt")


def test_save_npz_is_atomic_and_loadable(tmp_path):
    target = save_npz({"a": np.ones(3, np.float32)}, tmp_path / "sub" / "w.npz")
    assert np.load(target)["a"].tolist() == [1, 1, 1] and not (tmp_path / "sub" / "w.npz.part").exists()


@pytest.mark.slow
def test_cli_extract_then_pipeline_loads_it(tmp_path, recipe_book):
    ckpt = write_torch_zip(tmp_path / "TinyCLIP.pt", {f"module.{k}": v for k, v in _tinyclip_like().items()})
    env = {**os.environ, "PYTHONPATH": str(REPO), "HAILO_IMMICH_MODELS_DIR": str(tmp_path / "models"), "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "hailo_immich_cli", "extract-weights", str(ckpt), "--recipe", "tinyclip-vit-39m-16-textual-hailo"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    target = tmp_path / "models" / "tinyclip-vit-39m-16-textual-hailo" / "tinyclip_text_weights.npz"
    assert target.is_file() and "token_embedding\t[49408, 512]" in proc.stdout
    from hailo_immich_cli.clip.pipeline import load_text_weights

    weights = load_text_weights(recipe_book.get("tinyclip-vit-39m-16-textual-hailo"), target)
    assert weights["text_projection"].shape == (512, 512) and str(weights["source_checkpoint"]) == "TinyCLIP.pt"
    keys = subprocess.run(cmd[:-2] + ["--list-keys"], capture_output=True, text=True, env=env, timeout=120)
    assert keys.returncode == 0 and "state_dict.module.text_projection\t[512, 512]\tfloat32" in keys.stdout.splitlines()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04garbage")
    proc = subprocess.run(cmd[:-3] + [str(bad), "--recipe", "tinyclip-vit-39m-16-textual-hailo"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "not a PyTorch zip" in " ".join(proc.stderr.split()) and "Traceback" not in proc.stderr
    assert target.is_file()  # the good file from before is untouched
