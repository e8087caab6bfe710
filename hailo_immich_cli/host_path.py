"""Which host path prepares images, and how small the fast one may decode.

- exact: Pillow decodes the whole image and Immich's own Pillow/OpenCV steps run on it, so results
  on an Immich model cache are the official service's.
- fast: for the NPU, whose results are quantised anyway. JPEGs are decoded with DCT scaling straight
  to the smallest size that still covers every model input of the request with a 2x margin, and
  every resize is OpenCV's. Pixel results are mapped back to full-resolution coordinates.

`auto` (the default) means fast on the hailo backend and exact on the cpu backend.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from hailo_immich_cli.imaging import HOST_PATHS, DecodedImage, decode_image
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.tasks import by_recipe_task, pillow_input_tasks

CHOICES = ("auto", *HOST_PATHS)
MARGIN = 2.0  # decoded pixels per model-input pixel the fast path keeps, at least


def resolve(setting: str, backend: str) -> str:
    """exact or fast for a server or bench run on `backend`."""
    if setting in HOST_PATHS:
        return setting
    return "fast" if backend == "hailo" else "exact"


def model_scale(recipe: Recipe, width: int, height: int, options: Mapping | None = None) -> float:
    """Model-input pixels per image pixel for this recipe's resize (0: the recipe needs no pixels of its own)."""
    task = by_recipe_task().get(recipe.task)
    return task.input_scale(recipe, width, height, options or {}) if task is not None else 0.0


def takes_pillow_image(recipe: Recipe) -> bool:
    """On the exact path this stage resizes a Pillow image as Immich does (else it takes the array,
    which a JPEG decodes to directly)."""
    return recipe.task in pillow_input_tasks()


def decode_min_side(recipes: Iterable[tuple[Recipe, Mapping | None]], width: int, height: int) -> int | None:
    """Shorter side the fast path decodes to: every model input covered MARGIN times (None: full size)."""
    scale = max((model_scale(r, width, height, o) for r, o in recipes), default=0.0)
    if scale <= 0:
        return None
    return min(min(width, height), math.ceil(MARGIN * scale * min(width, height)))


def decode(data: bytes, stages: Sequence[tuple[Recipe, Mapping | None]], path: str, max_pixels: int) -> DecodedImage:
    """One request's image, decoded once for all its stages (recipe, request options).

    exact: Pillow, full size, its own image kept for the Pillow steps (as Immich decodes).
    fast: JPEGs DCT-scaled by libjpeg-turbo to the smallest size covering every stage's input MARGIN times.
    """
    if path != "fast":
        return decode_image(data, max_pixels=max_pixels, keep_pil=any(takes_pillow_image(r) for r, _ in stages))
    return decode_image(data, max_pixels=max_pixels, decoder="fast",
                        draft_min_side=lambda w, h: decode_min_side(stages, w, h))
