"""Text detection: resize or tile the image for the detector, run it, DB-decode boxes in original pixels.

Two layouts, chosen by the recipe's `preprocess.resize`:
- "short-side" (ONNX, dynamic input): Immich's own pipeline, reproduced exactly so results equal the
  official service's: shorter side -> min(max_resolution, short), sides rounded to multiples of 32
  with Python's round, Pillow LANCZOS, BGR, (x - mean) * (1 / std).
- "tiles" (Hailo HEF, fixed landscape canvas such as 544x960): the image is scaled so its shorter
  side is about max_resolution (like Immich), then covered by as few overlapping canvas-sized tiles
  as possible; the tiles run as one batch, their probability maps are stitched (each pixel taken
  from the tile where it is furthest from a border) and DB-decoded once. Letterboxing a portrait
  photo into the landscape canvas instead would shrink its text by about 2.5x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.imaging import fast_resize, pil_resize
from hailo_immich_cli.ocr.binarize import DbParams, db_boxes, order_and_filter
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.tensors import image_input, input_name


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (N, 4, 2) float32 original pixels, TL TR BR BL, in detector (contour) order
    scores: np.ndarray  # (N,) float32
    provenance: Provenance
    tiles: int = 1  # detector runs this image took


# ---------------------------------------------------------------- Immich's short-side layout
def short_side_size(height: int, width: int, max_resolution: int, multiple: int = 32) -> tuple[int, int]:
    """(h, w) the detector sees: no upscaling, shorter side to max_resolution, sides to a multiple (round half even)."""
    ratio = float(max_resolution) / (height if height < width else width)
    ratio = min(ratio, 1.0)
    rh, rw = int(height * ratio), int(width * ratio)
    return int(round(rh / multiple) * multiple), int(round(rw / multiple) * multiple)


def bounded_resolution(requested: int, width: int, height: int, limit: int, floor: int = 32) -> tuple[int, str | None]:
    """The maxResolution OCR detection may run at, and a note for the request log when it was lowered.

    The detector's work and memory grow with its input (about 180 bytes per pixel on the CPU), so
    its input is held to `limit`^2 pixels: a maxResolution above `limit`, or a long thin image whose
    shorter side fits but whose area does not, is scaled down further. Below the bound the answer is
    the official service's (it never upscales: maxResolution >= the shorter side means full size).
    It never goes below `floor`, one detector cell.
    """
    short = min(width, height)
    scale = min(1.0, requested / short) if short else 1.0
    budget = limit / math.sqrt(max(1, width * height))
    if scale <= budget:
        return requested, None
    bounded = max(floor, int(short * budget))
    return bounded, f"maxResolution={requested}->{bounded}(HAILO_IMMICH_OCR_MAX_RESOLUTION={limit})"


def short_side_input(image: Image.Image | np.ndarray, recipe: Recipe, max_resolution: int) -> np.ndarray:
    """Immich's detector input from a Pillow image (LANCZOS, exact); from an array (the fast host
    path) the same size with OpenCV (`fast_resize`)."""
    pre = recipe.preprocess
    if isinstance(image, Image.Image):
        height, width = image.height, image.width
    else:
        height, width = image.shape[:2]
    rh, rw = short_side_size(height, width, max_resolution, int(pre.get("multiple", 32)))
    if isinstance(image, Image.Image):
        resized = np.asarray(pil_resize(image, (rw, rh), Image.Resampling.LANCZOS))
    else:
        resized = fast_resize(image, (rw, rh))
    mean = np.asarray(pre.get("mean", [0.5, 0.5, 0.5]), dtype=np.float32)
    scale = np.float32(1.0) / np.asarray(pre.get("std", [127.5, 127.5, 127.5]), dtype=np.float32)
    sources = (2, 1, 0) if pre.get("color", "BGR") == "BGR" else (0, 1, 2)
    # Straight into the NCHW input, one channel at a time: the float32 arithmetic of
    # (x - mean) * (1 / std) unchanged, without the HxWx3 float copies in between.
    out = np.empty((1, 3, rh, rw), dtype=np.float32)
    for channel, source in enumerate(sources):
        plane = out[0, channel]
        np.subtract(resized[..., source], mean[channel], out=plane, dtype=np.float32)
        plane *= scale[channel]
    return out


# ---------------------------------------------------------------- fixed-canvas tiles
@dataclass(frozen=True)
class TilePlan:
    scale: float
    height: int  # scaled image size
    width: int
    ys: tuple[int, ...]  # tile origins in the scaled image
    xs: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)


def _tiles_along(length: int, tile: int, overlap: int) -> int:
    return 1 if length <= tile else math.ceil((length - overlap) / (tile - overlap))


def _origins(length: int, tile: int, count: int) -> tuple[int, ...]:
    if count == 1:
        return (0,)
    return tuple(int(v) for v in np.round(np.linspace(0, length - tile, count)))


def plan_tiles(
    height: int, width: int, tile_h: int, tile_w: int, max_resolution: int, min_scale: float, overlap: int, max_tiles: int = 16
) -> TilePlan:
    """Fewest tiles that keep the shorter side within [min_scale, 1] x min(max_resolution, short); largest scale wins ties.

    Extreme aspect ratios (a 100000x32 strip) would need hundreds of tiles: at most `max_tiles` are
    used, shrinking further if needed, so memory and device time stay bounded.
    """
    target = min(1.0, max_resolution / min(height, width))
    floor = target * min_scale
    ny0 = _tiles_along(round(height * target), tile_h, overlap)
    nx0 = _tiles_along(round(width * target), tile_w, overlap)
    best: tuple[int, float] | None = None
    fallback: tuple[float, int] | None = None
    for ny in range(1, min(ny0, max_tiles) + 1):
        for nx in range(1, min(nx0, max_tiles // ny) + 1):
            fit_h = ny * tile_h - (ny - 1) * overlap
            fit_w = nx * tile_w - (nx - 1) * overlap
            scale = min(target, fit_h / height, fit_w / width)
            if fallback is None or (scale, -ny * nx) > fallback:
                fallback = (scale, -ny * nx)
            if scale < floor - 1e-9:
                continue
            key = (ny * nx, -scale)
            if best is None or key < (best[0], -best[1]):
                best = (ny * nx, scale)
    assert fallback is not None
    scale = best[1] if best is not None else fallback[0]
    sh, sw = max(1, round(height * scale)), max(1, round(width * scale))
    ny, nx = _tiles_along(sh, tile_h, overlap), _tiles_along(sw, tile_w, overlap)
    return TilePlan(scale, sh, sw, _origins(sh, tile_h, ny), _origins(sw, tile_w, nx))


def cut_tiles(scaled: np.ndarray, plan: TilePlan, tile_h: int, tile_w: int) -> np.ndarray:
    """(n, tile_h, tile_w, 3) uint8 tiles, row-major; parts beyond the image are black."""
    out = np.zeros((plan.count, tile_h, tile_w, 3), dtype=np.uint8)
    k = 0
    for y in plan.ys:
        for x in plan.xs:
            part = scaled[y : y + tile_h, x : x + tile_w]
            out[k, : part.shape[0], : part.shape[1]] = part
            k += 1
    return out


def _owned(origins: tuple[int, ...], tile: int, length: int) -> list[tuple[int, int]]:
    """Per tile, the [start, end) span it contributes: overlaps are split at their middle."""
    cuts = [0] + [(origins[i] + origins[i - 1] + tile) // 2 for i in range(1, len(origins))] + [length]
    return [(cuts[i], cuts[i + 1]) for i in range(len(origins))]


def stitch(maps: np.ndarray, plan: TilePlan) -> np.ndarray:
    """One (height, width) probability map for the scaled image from (n, tile_h, tile_w) tile maps."""
    tile_h, tile_w = maps.shape[1:3]
    out = np.empty((plan.height, plan.width), dtype=np.float32)
    rows, cols = _owned(plan.ys, tile_h, plan.height), _owned(plan.xs, tile_w, plan.width)
    k = 0
    for (y0, y1), oy in zip(rows, plan.ys):
        for (x0, x1), ox in zip(cols, plan.xs):
            out[y0:y1, x0:x1] = maps[k, y0 - oy : y1 - oy, x0 - ox : x1 - ox]
            k += 1
    return out


def tile_input_size(recipe: Recipe) -> tuple[int, int]:
    shape = recipe.inputs[0].shape if recipe.inputs and recipe.inputs[0].shape else None
    if not shape or len(shape) != 3:
        from hailo_immich_cli.errors import RecipeError

        raise RecipeError(str(recipe.path), "inputs[0].shape", "tiled detection needs the fixed input shape [H, W, 3]")
    return (shape[0], shape[1]) if shape[2] == 3 else (shape[1], shape[2])


def probability_maps(raw: np.ndarray, n: int, tile_h: int, tile_w: int) -> np.ndarray:
    """(n, tile_h, tile_w) from NHWC (n, h, w, 1) or NCHW (n, 1, h, w) detector output."""
    return np.asarray(raw, dtype=np.float32).reshape(n, tile_h, tile_w)


# ---------------------------------------------------------------- the stage
def detect_text(
    session,
    recipe: Recipe,
    rgb: np.ndarray | None,
    image: Image.Image | None = None,
    *,
    min_score: float | None = None,
    max_resolution: int | None = None,
    width: int | None = None,
    height: int | None = None,
) -> Detections:
    """Boxes and scores for one RGB image, in the detector's contour order.

    The short-side layout resizes `image` (Pillow, exact) when given, else `rgb` (OpenCV); tiles need `rgb`.
    """
    pre, post = recipe.preprocess, recipe.postprocess
    params = DbParams.from_recipe(post, min_score)
    max_res = int(max_resolution if max_resolution is not None else pre.get("max_resolution", 736))
    if width is None or height is None:
        height, width = rgb.shape[:2] if rgb is not None else (image.height, image.width)
    model = session.model(recipe.id)
    name = input_name(recipe, model.inputs)
    out_name = recipe.outputs[0].name if recipe.outputs and recipe.outputs[0].name else None
    empty = np.zeros((0, 4, 2), np.float32), np.zeros(0, np.float32)
    if min(height, width) < int(pre.get("min_side", 32)):
        return Detections(*empty, model.provenance, tiles=0)
    if pre.get("resize", "short-side") == "tiles":
        tile_h, tile_w = tile_input_size(recipe)
        with session.host_time(recipe.id):
            plan = plan_tiles(
                height, width, tile_h, tile_w, max_res, float(pre.get("min_scale", 0.85)),
                int(pre.get("tile_overlap", 64)), int(pre.get("max_tiles", 16)),
            )
            interp = cv2.INTER_AREA if plan.scale < 1 else cv2.INTER_LINEAR
            scaled = rgb if (plan.height, plan.width) == (height, width) else cv2.resize(rgb, (plan.width, plan.height), interpolation=interp)
            feed = image_input(cut_tiles(scaled, plan, tile_h, tile_w), recipe)
        result = session.run(recipe.id, {name: feed})
        with session.host_time(recipe.id):
            raw = result.outputs[out_name] if out_name else next(iter(result.outputs.values()))
            prob = stitch(probability_maps(raw, plan.count, tile_h, tile_w), plan)
            boxes, scores = db_boxes(prob, params, width, height)
            boxes, scores = order_and_filter(boxes, scores, width, height)
        return Detections(boxes, scores, result.provenance, tiles=plan.count)
    with session.host_time(recipe.id):
        feed = short_side_input(image if image is not None else rgb, recipe, max_res)
    result = session.run(recipe.id, {name: feed})
    with session.host_time(recipe.id):
        raw = result.outputs[out_name] if out_name else next(iter(result.outputs.values()))
        prob = np.asarray(raw, dtype=np.float32).reshape(feed.shape[2], feed.shape[3])
        boxes, scores = db_boxes(prob, params, width, height)
        boxes, scores = order_and_filter(boxes, scores, width, height)
    return Detections(boxes, scores, result.provenance, tiles=1)
