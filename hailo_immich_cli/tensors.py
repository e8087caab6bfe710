"""Turn decoded uint8 RGB image batches into exactly what a recipe's model input expects.

One place for colour order, host-side normalisation, layout and dtype, so pipelines hand over
NHWC uint8 RGB and never branch on the backend.
"""

from __future__ import annotations

import numpy as np

from hailo_immich_cli.recipes import Recipe


def image_input(batch_rgb: np.ndarray, recipe: Recipe) -> np.ndarray:
    """NHWC uint8 RGB -> the recipe's input tensor (colour, normalisation, layout, dtype)."""
    if batch_rgb.ndim != 4 or batch_rgb.shape[-1] != 3:
        raise ValueError(f"expected an NHWC batch with 3 channels, got shape {batch_rgb.shape}")
    pre = recipe.preprocess
    spec = recipe.inputs[0] if recipe.inputs else None
    x = batch_rgb
    if pre.get("color", "RGB") == "BGR":
        x = x[..., ::-1]
    if pre.get("normalize", "host") == "host":
        mean = np.asarray(pre.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
        std = np.asarray(pre.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
        scale = np.float32(pre.get("scale", 1.0))
        x = (x.astype(np.float32) * scale - mean) / std
    layout = (spec.layout if spec and spec.layout else None) or ("NHWC" if recipe.backend == "hailo" else "NCHW")
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    dtype = (spec.dtype if spec and spec.dtype else None) or ("uint8" if pre.get("normalize") == "on-chip" else "float32")
    return np.ascontiguousarray(x, dtype=dtype)


def input_name(recipe: Recipe, model_inputs) -> str:
    """The recipe's input name if it gives one, else the model's single input."""
    if recipe.inputs and recipe.inputs[0].name:
        return recipe.inputs[0].name
    return model_inputs[0].name


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32, copy=False)
