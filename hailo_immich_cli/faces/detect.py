"""Run a face-detection recipe on one RGB image: letterbox, run, decode, map back, NMS.

Everything model-specific (input size, letterbox placement, normalisation, output roles and
strides, thresholds) is read from the recipe, so SCRFD on a HEF, SCRFD from an Immich pack and
CenterFace take the same path. Boxes come back in the pixels of the array passed in, unclipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import cv2
import numpy as np

from hailo_immich_cli.backends.base import LoadedModel, Provenance, TensorInfo
from hailo_immich_cli.errors import ModelMismatchError, RecipeError
from hailo_immich_cli.faces.decoders import Detections, centerface_decode, concat, scrfd_decode_level, sort_and_suppress
from hailo_immich_cli.models.recipes import Recipe, TensorSpec
from hailo_immich_cli.tensors import image_input, input_name

DECODERS = ("scrfd", "centerface")
# Dims per frame (no batch) of each output layout the decoders read.
_FRAME_NDIM = {"flat": 2, "nhwc": 3, "nchw": 3}


@dataclass(frozen=True)
class Letterbox:
    """How the image was placed on the detector canvas: resized to new_w x new_h at (pad_x, pad_y)."""

    new_w: int
    new_h: int
    canvas_w: int
    canvas_h: int
    pad_x: int
    pad_y: int
    scale: float  # detector pixels per image pixel


@dataclass(frozen=True)
class DetectorOutput:
    detections: Detections  # image pixels, descending score, after NMS
    provenance: Provenance
    letterbox: Letterbox


def _static_hw(recipe: Recipe, model: LoadedModel) -> tuple[int, int] | None:
    """The model's fixed input height/width, if the file (or the recipe) pins one."""
    info: TensorInfo | None = None
    name = recipe.inputs[0].name if recipe.inputs and recipe.inputs[0].name else None
    for candidate in model.inputs:
        if name is None or candidate.name == name:
            info = candidate
            break
    layout = (recipe.inputs[0].layout if recipe.inputs and recipe.inputs[0].layout else None) or (
        "NHWC" if recipe.backend == "hailo" else "NCHW"
    )
    if info is not None and len(info.shape) == 3:
        h, w = (info.shape[0], info.shape[1]) if layout == "NHWC" else (info.shape[1], info.shape[2])
        if h and w:
            return int(h), int(w)
    return None


def plan_letterbox(height: int, width: int, recipe: Recipe, static_hw: tuple[int, int] | None) -> Letterbox:
    """Fixed canvas (SCRFD): InsightFace's aspect-preserving fit with int() sizes.

    Dynamic canvas (CenterFace): longest side to `max_side`, canvas rounded up to `multiple`.
    """
    pre = recipe.preprocess
    size = static_hw or (tuple(pre["size"]) if "size" in pre else None)
    if size is not None:
        canvas_h, canvas_w = int(size[0]), int(size[1])
        if height / width > canvas_h / canvas_w:
            new_h = canvas_h
            new_w = int(new_h / (height / width))
        else:
            new_w = canvas_w
            new_h = int(new_w * (height / width))
        new_w, new_h = max(new_w, 1), max(new_h, 1)
        scale = new_h / height
    else:
        if "max_side" not in pre:
            raise RecipeError(str(recipe.path), "preprocess", "a detector needs `size` (fixed canvas) or `max_side` (dynamic)")
        max_side = int(pre["max_side"])
        multiple = int(pre.get("multiple", 1))
        scale = max_side / max(height, width)
        new_w, new_h = max(1, int(round(width * scale))), max(1, int(round(height * scale)))
        canvas_w = int(math.ceil(new_w / multiple) * multiple)
        canvas_h = int(math.ceil(new_h / multiple) * multiple)
    placement = pre.get("letterbox", "top-left")
    if placement == "top-left":
        pad_x = pad_y = 0
    elif placement == "center":
        pad_x, pad_y = (canvas_w - new_w) // 2, (canvas_h - new_h) // 2
    else:
        raise RecipeError(str(recipe.path), "preprocess.letterbox", f"must be top-left or center, got {placement!r}")
    return Letterbox(new_w, new_h, canvas_w, canvas_h, pad_x, pad_y, scale)


def letterbox_image(rgb: np.ndarray, box: Letterbox) -> np.ndarray:
    """Bilinear resize (cv2 INTER_LINEAR, as InsightFace) onto a zero canvas."""
    resized = cv2.resize(rgb, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.zeros((box.canvas_h, box.canvas_w, 3), dtype=np.uint8)
    canvas[box.pad_y : box.pad_y + box.new_h, box.pad_x : box.pad_x + box.new_w] = resized
    return canvas


def _output_array(outputs: Mapping[str, np.ndarray], model: LoadedModel, spec: TensorSpec, recipe: Recipe) -> np.ndarray:
    """An output named by the recipe (by name, or by position for exports with meaningless names)."""
    if spec.name:
        if spec.name not in outputs:
            raise ModelMismatchError(f"recipe {recipe.id}: output '{spec.name}' not produced (got {sorted(outputs)})")
        return outputs[spec.name]
    index = spec.extra.get("index")
    if not isinstance(index, int) or not 0 <= index < len(model.outputs):
        raise RecipeError(str(recipe.path), "outputs.index", f"needs a name or an index below {len(model.outputs)}")
    return outputs[model.outputs[index].name]


def _frame(array: np.ndarray, layout: str) -> np.ndarray:
    """Drop the leading batch dim (exports without one give the frame directly)."""
    want = _FRAME_NDIM[layout]
    array = np.asarray(array)
    if array.ndim == want + 1:
        if array.shape[0] != 1:
            raise ModelMismatchError(f"detector returned a batch of {array.shape[0]} for one image")
        return array[0]
    if array.ndim == want:
        return array
    raise ModelMismatchError(f"detector output has shape {array.shape}; a {layout} layout needs {want} dims per frame")


def _roles(recipe: Recipe) -> list[TensorSpec]:
    if not recipe.outputs or any(not spec.role for spec in recipe.outputs):
        raise RecipeError(str(recipe.path), "outputs", "every detector output needs a role")
    return list(recipe.outputs)


def decode_scrfd_outputs(outputs: Mapping[str, np.ndarray], model: LoadedModel, recipe: Recipe, box: Letterbox, threshold: float) -> Detections:
    """Per stride: scores, distances, landmark offsets -> candidates in detector-canvas pixels."""
    post = recipe.postprocess
    layout = post.get("layout", "flat")
    if layout not in ("flat", "nhwc"):
        raise RecipeError(str(recipe.path), "postprocess.layout", f"SCRFD layout must be flat or nhwc, got {layout!r}")
    anchors = int(post.get("num_anchors", 2))
    by_stride: dict[int, dict[str, np.ndarray]] = {}
    for spec in _roles(recipe):
        stride = spec.extra.get("stride")
        if not isinstance(stride, int):
            raise RecipeError(str(recipe.path), "outputs.stride", f"output role {spec.role} needs an integer stride")
        by_stride.setdefault(stride, {})[spec.role] = _frame(_output_array(outputs, model, spec, recipe), layout)
    parts = []
    for stride in [int(s) for s in post.get("strides", sorted(by_stride))]:
        maps = by_stride.get(stride, {})
        if "score" not in maps or "box" not in maps:
            raise RecipeError(str(recipe.path), "outputs", f"stride {stride} needs a score and a box output")
        scores = maps["score"]
        if post.get("score_activation") == "sigmoid":
            scores = 1.0 / (1.0 + np.exp(-scores.astype(np.float32)))
        parts.append(
            scrfd_decode_level(
                scores, maps["box"], maps.get("kps"), stride,
                box.canvas_h // stride, box.canvas_w // stride, anchors, threshold,
                float(post.get("anchor_offset", 0.0)),
            )
        )
    return concat(parts)


def decode_centerface_outputs(outputs: Mapping[str, np.ndarray], model: LoadedModel, recipe: Recipe, threshold: float) -> Detections:
    maps = {spec.role: _frame(_output_array(outputs, model, spec, recipe), "nchw") for spec in _roles(recipe)}
    missing = {"heatmap", "scale", "offset", "landmarks"} - set(maps)
    if missing:
        raise RecipeError(str(recipe.path), "outputs", f"CenterFace needs roles {sorted(missing)}")
    stride = int(recipe.postprocess.get("stride", 4))
    return centerface_decode(maps["heatmap"], maps["scale"], maps["offset"], maps["landmarks"], stride, threshold)


def run_detector(session, recipe: Recipe, rgb: np.ndarray, min_score: float | None = None) -> DetectorOutput:
    """Detect faces in one RGB uint8 image with a face-detection recipe."""
    post = recipe.postprocess
    kind = post.get("kind")
    if kind not in DECODERS:
        raise RecipeError(str(recipe.path), "postprocess.kind", f"must be one of {', '.join(DECODERS)}, got {kind!r}")
    threshold = float(post.get("score_threshold", 0.7) if min_score is None else min_score)
    model = session.model(recipe.id)
    with session.host_time(recipe.id):
        height, width = rgb.shape[:2]
        box = plan_letterbox(height, width, recipe, _static_hw(recipe, model))
        canvas = letterbox_image(rgb, box)
        feeds = {input_name(recipe, model.inputs): image_input(canvas[None], recipe)}
    result = session.run(recipe.id, feeds)
    with session.host_time(recipe.id):
        if kind == "scrfd":
            found = decode_scrfd_outputs(result.outputs, model, recipe, box, threshold)
        else:
            found = decode_centerface_outputs(result.outputs, model, recipe, threshold)
        found = found.shifted(box.pad_x, box.pad_y).scaled(box.scale)
        found = sort_and_suppress(found, float(post.get("nms_threshold", 0.4)), bool(post.get("nms_plus_one", True)))
    return DetectorOutput(found, result.provenance, box)
