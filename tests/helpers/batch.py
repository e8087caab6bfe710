"""Test helpers for batch mode: DB dumps and the model folders an index run uses.

The photo library itself is built by `hailo_immich_cli.testkit.photos.make_library`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from hailo_immich_cli.testkit.onnx_build import save_graph


def dump(db: Path) -> dict[str, list[tuple]]:
    """Every table's rows without timestamps, run ids or row ids, sorted: equal dumps = same index."""
    conn = sqlite3.connect(db)
    try:
        out = {
            "files": conn.execute(
                "SELECT path, size, mtime_ns, hash, width, height, orientation, format, status, error, deleted FROM files"
            ).fetchall(),
            "processed": conn.execute("SELECT hash, task, model_id, backend, items FROM processed").fetchall(),
            "faces": conn.execute(
                "SELECT hash, model_id, detector, recognizer, backend, idx, x1, y1, x2, y2, score, landmarks, embedding FROM faces"
            ).fetchall(),
            "clip": conn.execute("SELECT hash, model_id, backend, dim, embedding FROM clip").fetchall(),
            "ocr_lines": conn.execute("SELECT hash, model_id, backend, idx, text, box, box_score, text_score FROM ocr_lines").fetchall(),
            "ocr_text": conn.execute("SELECT hash, model_id, backend, text FROM ocr_text").fetchall(),
            "fts": conn.execute("SELECT t.hash, f.text FROM ocr_text_fts f JOIN ocr_text t ON t.id = f.rowid").fetchall(),
            "models": conn.execute("SELECT model_id, task, recipe_id, backend, immich_names, dim FROM models").fetchall(),
        }
    finally:
        conn.close()
    return {k: sorted(v, key=repr) for k, v in out.items()}


def rows(db: Path, sql: str, *params: Any) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


# ---- models the index tests need that have no offline weights ------------------------------------
def arcface_like_onnx(path: Path, seed: int = 0) -> Path:
    """ArcFace's signature, input.1 (N,3,112,112) -> (N,512), as a fixed random net (no identity knowledge)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (3 * 14 * 14, 512)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
            helper.make_node("Flatten", ["p"], ["f"], axis=1),
            helper.make_node("MatMul", ["f", "w"], ["683"]),
        ],
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        [numpy_helper.from_array(w, "w")],
    )
    return save_graph(graph, path)


RECOGNIZER_TOML = """\
id = "{id}"
task = "face-recognition"
backend = "cpu"
default = true
description = "test: ArcFace-signature random net"
license = "test"
immich_names = ["buffalo_l"]
embedding_dim = 512

[[files]]
role = "model"
name = "model.onnx"
sha256 = "{sha}"

[[inputs]]
layout = "NCHW"
dtype = "float32"

[preprocess]
color = "RGB"
normalize = "host"
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]
crop_size = 112
align_template = [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
"""


def model_env(base: Path, real_models: Path, recognizer_seed: int = 0, recognizer_id: str = "test-arcface-cpu",
              buffalo_stand_in: bool = False) -> dict[str, str]:
    """A recipes dir + models dir: the real CPU models (linked) plus a generated face recogniser.

    Returns the environment variables that point hailo-immich at them (for subprocesses and Settings).
    """
    import hashlib

    recipes, models = base / "recipes", base / "models"
    recipes.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    for child in real_models.iterdir():
        if child.is_dir() and not (models / child.name).exists():
            (models / child.name).symlink_to(child.resolve())
    onnx_path = arcface_like_onnx(models / recognizer_id / "model.onnx", seed=recognizer_seed)
    sha = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    (recipes / f"{recognizer_id}.toml").write_text(RECOGNIZER_TOML.format(id=recognizer_id, sha=sha))
    if buffalo_stand_in:  # Immich asks for "buffalo_l": let CenterFace answer to it (no offline buffalo_l weights)
        from hailo_immich_cli.models.recipes import shipped_recipes_dir

        text = (shipped_recipes_dir() / "centerface-cpu.toml").read_text()
        text = text.replace('id = "centerface-cpu"', 'id = "buffalo_l-detection-cpu"').replace("immich_names = []", 'immich_names = ["buffalo_l"]')
        (recipes / "buffalo_l-detection-cpu.toml").write_text(text)
        if not (models / "buffalo_l-detection-cpu").exists():
            (models / "buffalo_l-detection-cpu").symlink_to((models / "centerface-cpu").resolve())
    if not (models / "clip-vit-b32-openai-textual-cpu" / "tokenizer.json").exists():
        from hailo_immich_cli.testkit.clip_models import clip_stand_ins

        clip_stand_ins(models)
    return {"HAILO_IMMICH_RECIPES_DIR": str(recipes), "HAILO_IMMICH_MODELS_DIR": str(models), "HAILO_IMMICH_BACKEND": "cpu"}


def processed_count(db: Path) -> int:
    """Rows in `processed` as another process sees them mid-run (0 while the file is not readable yet)."""
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return conn.execute("SELECT count(*) FROM processed").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return 0
