"""Turn decoded uint8 RGB image batches into exactly what a recipe's model input expects.

One place for colour order, host-side normalisation, layout and dtype, so pipelines hand over
NHWC uint8 RGB and never branch on the backend.
"""

from __future__ import annotations

import numpy as np

from hailo_immich_cli.models.recipes import Recipe


def image_input(batch_rgb: np.ndarray, recipe: Recipe) -> np.ndarray:
    """NHWC uint8 RGB -> the recipe's input tensor (colour, normalisation, layout, dtype)."""
    if batch_rgb.ndim != 4 or batch_rgb.shape[-1] != 3:
        raise ValueError(f"expected an NHWC batch with 3 channels, got shape {batch_rgb.shape}")
    pre = recipe.preprocess
    spec = recipe.inputs[0] if recipe.inputs else None
    bgr = pre.get("color", "RGB") == "BGR"
    layout = (spec.layout if spec and spec.layout else None) or ("NHWC" if recipe.backend == "hailo" else "NCHW")
    dtype = (spec.dtype if spec and spec.dtype else None) or ("uint8" if pre.get("normalize") == "on-chip" else "float32")
    if pre.get("normalize", "host") == "host" and np.dtype(dtype) == np.float32:
        return _normalised(batch_rgb, pre, bgr, layout)
    x = batch_rgb[..., ::-1] if bgr else batch_rgb
    if pre.get("normalize", "host") == "host":
        mean = np.asarray(pre.get("mean", [0.0, 0.0, 0.0]), dtype=np.float32)
        std = np.asarray(pre.get("std", [1.0, 1.0, 1.0]), dtype=np.float32)
        scale = np.float32(pre.get("scale", 1.0))
        x = (x.astype(np.float32) * scale - mean) / std
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x, dtype=dtype)


def _normalised(batch_rgb: np.ndarray, pre, bgr: bool, layout: str) -> np.ndarray:
    """float32 ((x * scale) - mean) / std, written channel by channel straight into the final
    layout: the same float32 operations as the plain expression, without its four temporaries."""
    n, h, w, _ = batch_rgb.shape
    mean = [np.float32(v) for v in pre.get("mean", [0.0, 0.0, 0.0])]
    std = [np.float32(v) for v in pre.get("std", [1.0, 1.0, 1.0])]
    scale = np.float32(pre.get("scale", 1.0))
    nchw = layout == "NCHW"
    out = np.empty((n, 3, h, w) if nchw else (n, h, w, 3), np.float32)
    for c in range(3):
        src = batch_rgb[..., 2 - c if bgr else c]
        dst = out[:, c] if nchw else out[..., c]
        if scale != 1:
            np.multiply(src, scale, out=dst)
        else:
            dst[...] = src
        np.subtract(dst, mean[c], out=dst)
        np.divide(dst, std[c], out=dst)
    return out


def input_name(recipe: Recipe, model_inputs) -> str:
    """The recipe's input name if it gives one, else the model's single input."""
    if recipe.inputs and recipe.inputs[0].name:
        return recipe.inputs[0].name
    return model_inputs[0].name


def l2_normalize(x: np.ndarray, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    # np.linalg.norm's own arithmetic for real input (same bits), without its dispatch overhead
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    norm = np.sqrt(np.add.reduce(x * x, axis=axis, keepdims=True))
    return (x / np.maximum(norm, eps)).astype(np.float32, copy=False)
