"""What Immich reads from a CLIP model folder of its cache (config.json, visual/preprocess_cfg.json), applied
to the recipe synthesised for that folder (`models/immich_cache.py`)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hailo_immich_cli.errors import RecipeError
from hailo_immich_cli.models.immich_cache import read_json


def apply_folder_config(model, data: dict[str, Any]) -> None:
    """Size/mean/std from preprocess_cfg.json, embed_dim and text settings from config.json, as Immich reads them."""
    config_path = model.model_dir / "config.json"
    config = read_json(config_path) if config_path.is_file() else {}
    if "embed_dim" in config:
        data["embedding_dim"] = int(config["embed_dim"])
    elif data.get("embedding_dim") is None:
        raise RecipeError(str(config_path), "embed_dim", "needed to know the embedding size")
    if model.type == "visual":
        cfg = read_json(model.model_dir / "visual" / "preprocess_cfg.json")
        pre = data.setdefault("preprocess", {})
        if "size" in cfg:
            size = cfg["size"]
            pre["size"] = int(size[0] if isinstance(size, list) else size)
        for key in ("mean", "std"):
            if key in cfg:
                pre[key] = [float(v) for v in cfg[key]]
        # Immich resizes the shorter side with PIL BICUBIC and centre-crops, whatever the config's
        # resize_mode/interpolation say (§5.2); the template's resize and interpolation stay.
    else:
        text_cfg = config.get("text_cfg", {}) if isinstance(config.get("text_cfg"), dict) else {}
        tok = data.setdefault("tokenizer", {})
        tok["kind"] = "hf-json"
        tok["context_length"] = int(text_cfg.get("context_length", tok.get("context_length", 77)))
        kwargs = text_cfg.get("tokenizer_kwargs") if isinstance(text_cfg.get("tokenizer_kwargs"), dict) else {}
        tok["canonicalize"] = kwargs.get("clean") == "canonicalize"
        tok.pop("pad_token", None)  # tokenizer_config.json names it


def pair_folder(model, data: dict[str, Any]) -> None:
    """Pair the tower with the other one of the same folder when it is there (one --model serves both)."""
    other = "textual" if model.type == "visual" else "visual"
    if (model.model_dir / other / "model.onnx").is_file():
        data["clip"] = {**data.get("clip", {}), "pair": replace(model, type=other).recipe_id}
    else:
        data.pop("clip", None)
