"""The Hailo OCR layout (544x960 detector tiles, 48x320 recogniser crops) run with the real ONNX weights.

No Hailo device exists here, so these CPU recipes copy the HEF recipes' layout keys (tiles, fixed
width, pad value) but point at the PP-OCRv5 ONNX files and normalise on the host. They measure the
tiling and fixed-width strategies with real model outputs; they say nothing about quantisation.
"""

from __future__ import annotations

import os
from pathlib import Path

from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings

DET_ID = "emulated-hailo-ocr-det-cpu"
REC_ID = "emulated-hailo-ocr-rec-cpu"
LETTERBOX_DET_ID = "emulated-letterbox-ocr-det-cpu"
FULL_TILES_DET_ID = "emulated-hailo-ocr-det-full-scale-cpu"
REC_SQUEEZE_ID = "emulated-hailo-ocr-rec-squeeze-cpu"
MID_TILES_DET_ID = "emulated-hailo-ocr-det-085-cpu"


def _det_toml(recipe_id: str, model: str, min_scale: float, max_resolution: int) -> str:
    return f'''id = "{recipe_id}"
task = "ocr-detection"
backend = "cpu"
description = "PP-OCRv5 mobile det ONNX in the Hailo 544x960 tile layout (emulation)"
[[files]]
role = "model"
name = "{model}"
[[inputs]]
name = "x"
shape = [544, 960, 3]
layout = "NCHW"
dtype = "float32"
[preprocess]
resize = "tiles"
min_side = 32
color = "RGB"
normalize = "host"
mean = [123.675, 116.28, 103.53]
std = [58.395, 57.12, 57.375]
max_resolution = {max_resolution}
min_scale = {min_scale}
tile_overlap = 64
[postprocess]
binary_threshold = 0.3
box_threshold = 0.5
unclip_ratio = 1.6
min_size = 3
max_candidates = 1000
dilate = true
'''


def _rec_toml(model: str, dictionary: str, recipe_id: str = REC_ID, max_squeeze: float = 1.25) -> str:
    return f'''id = "{recipe_id}"
task = "ocr-recognition"
backend = "cpu"
description = "PP-OCRv5 mobile rec ONNX in the Hailo 48x320 layout (emulation)"
batch_size = 8
[[files]]
role = "model"
name = "{model}"
[[files]]
role = "dictionary"
name = "{dictionary}"
[[inputs]]
name = "x"
layout = "NCHW"
dtype = "float32"
[preprocess]
width_mode = "fixed"
color = "BGR"
normalize = "host"
mean = [127.5, 127.5, 127.5]
std = [127.5, 127.5, 127.5]
height = 48
width = 320
pad_value = 128
max_squeeze = {max_squeeze}
[postprocess]
blank_index = 0
dictionary_offset = 1
append_space = true
min_score = 0.8
'''


def emulation_session(base: Settings, workdir: Path) -> SessionManager:
    """A CPU session that also knows the emulated Hailo-layout recipes (model files symlinked, nothing copied)."""
    book = RecipeBook.load(base.recipes_dir)
    det, rec = book.get("ppocrv5-mobile-det-cpu"), book.get("ppocrv5-mobile-rec-cpu")
    src = Path(base.models_dir)
    recipes_dir, models_dir = workdir / "recipes", workdir / "models"
    recipes_dir.mkdir(parents=True, exist_ok=True)
    det_file, rec_file, dict_file = det.file("model").name, rec.file("model").name, rec.file("dictionary").name
    (recipes_dir / f"{DET_ID}.toml").write_text(_det_toml(DET_ID, det_file, 0.7, 736))
    # Letterbox = the whole image into one canvas (what a single fixed-size run does).
    (recipes_dir / f"{LETTERBOX_DET_ID}.toml").write_text(_det_toml(LETTERBOX_DET_ID, det_file, 0.0001, 736))
    # Tiles that never trade resolution for fewer runs (min_scale 1.0), and a middle ground.
    (recipes_dir / f"{FULL_TILES_DET_ID}.toml").write_text(_det_toml(FULL_TILES_DET_ID, det_file, 1.0, 736))
    (recipes_dir / f"{MID_TILES_DET_ID}.toml").write_text(_det_toml(MID_TILES_DET_ID, det_file, 0.85, 736))
    (recipes_dir / f"{REC_ID}.toml").write_text(_rec_toml(rec_file, dict_file))
    # Long lines squeezed into 320 px instead of split (what a plain fixed-width run does).
    (recipes_dir / f"{REC_SQUEEZE_ID}.toml").write_text(_rec_toml(rec_file, dict_file, REC_SQUEEZE_ID, 0))
    links = {
        (DET_ID, det_file): src / det.id / det_file,
        (LETTERBOX_DET_ID, det_file): src / det.id / det_file,
        (FULL_TILES_DET_ID, det_file): src / det.id / det_file,
        (MID_TILES_DET_ID, det_file): src / det.id / det_file,
        (REC_ID, rec_file): src / rec.id / rec_file,
        (REC_ID, dict_file): src / rec.id / dict_file,
        (REC_SQUEEZE_ID, rec_file): src / rec.id / rec_file,
        (REC_SQUEEZE_ID, dict_file): src / rec.id / dict_file,
    }
    for (rid, name), target in links.items():
        (models_dir / rid).mkdir(parents=True, exist_ok=True)
        link = models_dir / rid / name
        if not link.exists():
            os.symlink(target.resolve(), link)
    for rid, name in ((det.id, det_file), (rec.id, rec_file), (rec.id, dict_file)):
        (models_dir / rid).mkdir(parents=True, exist_ok=True)
        link = models_dir / rid / name
        if not link.exists():
            os.symlink((src / rid / name).resolve(), link)
    settings = Settings.load(env={}, backend="cpu", models_dir=models_dir, recipes_dir=recipes_dir)
    return SessionManager(settings, RecipeBook.load(recipes_dir))
