"""CLIP smart search: image and text embeddings, L2-normalised, with the model that made them.

Everything model-specific comes from the recipe:
- images: `[preprocess] resize` = `shortest-crop` (Immich's path for its exports: PIL resize of the
  shorter side to `size`, `int()` centre crop), `crop-resize` (centre square crop, then resize) or
  `squash`; `interpolation` = a PIL filter; normalisation on the host or on the chip (tensors.py).
- text: `[tokenizer]` (clip/tokenizers.py) and `[text] feed`:
  `token-ids` (ONNX exports take ids), or `token-embeddings` (the Hailo text encoders start after
  the embedding lookup: the host looks rows up in the extracted weights `.npz` and feeds them).
  `[text] output` = `pooled` (the graph returns the embedding) or `eot-projection` (the graph returns
  the whole sequence; the host takes the row at the first EOT and multiplies by `text_projection`).

The host-side text steps are pure functions (`token_embeddings`, `pool_text_output`) so they are
testable without a device; quantising a feed for an integer device input is the hailo backend's job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.errors import (
    BadInputError, ModelCorruptError, ModelMismatchError, ModelMissingError, RecipeError, UnknownModelError,
)
from hailo_immich_cli.imaging import fast_resize, pil_resize
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.tensors import image_input, input_name, l2_normalize
from hailo_immich_cli.clip.task import TEXTUAL, VISUAL
from hailo_immich_cli.clip.tokenizers import TextTokenizer, build_tokenizer

_MAX_RATIO = 32
_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS,
            "nearest": Image.Resampling.NEAREST, "box": Image.Resampling.BOX}


@dataclass(frozen=True)
class Embeddings:
    vectors: np.ndarray  # (N, D) float32, L2-normalised
    provenance: Provenance


# ---- images ---------------------------------------------------------------------------------


def _size(pre: Mapping[str, Any]) -> int:
    size = pre.get("size", 224)
    return int(size[0] if isinstance(size, list) else size)


def _shortest_crop_box(w: int, h: int, size: int) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """Immich's shortest-side resize + int() centre crop: the resized size Immich computes, and the
    source box that ends up in the crop (the fast path resizes only that box)."""
    new = (size, int(h / w * size)) if w < h else (int(w / h * size), size)
    left, upper = int(new[0] / 2 - size / 2), int(new[1] / 2 - size / 2)
    sx, sy = w / new[0], h / new[1]
    return new, (left * sx, upper * sy, (left + size) * sx, (upper + size) * sy)


def _strip_box(w: int, h: int) -> tuple[int, int, int, int] | None:
    """Only the centre square survives the crop, so an extreme strip (1 x 100000 px) is first cut to
    its central 32:1 part: resizing all of it would allocate gigabytes. Up to 32:1 this is exact."""
    if max(w, h) <= _MAX_RATIO * min(w, h):
        return None
    keep = _MAX_RATIO * min(w, h)
    return ((w - keep) // 2, 0, (w - keep) // 2 + keep, h) if w > h else (0, (h - keep) // 2, w, (h - keep) // 2 + keep)


def _check_rgb(image: np.ndarray | Image.Image) -> None:
    if isinstance(image, Image.Image):
        if image.mode != "RGB" or min(image.size) < 1:
            raise BadInputError(f"expected an RGB image, got mode {image.mode} {image.size}")
        return
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        raise BadInputError(f"expected an HxWx3 uint8 RGB image, got {image.dtype} {image.shape}")


def resize_for_clip(rgb: np.ndarray | Image.Image, pre: Mapping[str, Any]) -> np.ndarray:
    """One RGB image (array or Pillow image, used as it is) -> SxSx3 uint8, by the recipe's resize mode (Pillow, as Immich)."""
    _check_rgb(rgb)
    size = _size(pre)
    mode = pre.get("resize", "shortest-crop")
    resample = _FILTERS[pre.get("interpolation", "bicubic")]
    img = rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)
    w, h = img.size
    if mode == "shortest-crop":
        # Immich's visual path (resize_pil + crop_pil), including its int() truncations. (Folding the
        # crop into the resize's source box would be faster, but Pillow rounds a box to float32.)
        strip = _strip_box(w, h)
        if strip is not None:
            img = img.crop(strip)
            w, h = img.size
        new, _ = _shortest_crop_box(w, h, size)
        left, upper = int(new[0] / 2 - size / 2), int(new[1] / 2 - size / 2)
        img = pil_resize(img, new, resample, keep_rows=(upper, upper + size))
        img = img.crop((left, upper, left + size, upper + size))
    elif mode == "crop-resize":
        side = min(w, h)
        left, upper = (w - side) // 2, (h - side) // 2
        img = img.crop((left, upper, left + side, upper + side)).resize((size, size), resample=resample)
    elif mode == "squash":
        img = img.resize((size, size), resample=resample)
    else:
        raise RecipeError("(recipe)", "preprocess.resize", f"unknown mode {mode!r} (shortest-crop, crop-resize, squash)")
    return np.asarray(img, dtype=np.uint8)


def resize_for_clip_fast(rgb: np.ndarray, pre: Mapping[str, Any], out: np.ndarray) -> None:
    """The fast host path: the same crop geometry, only the source box resized (OpenCV, `fast_resize`)
    straight into `out` (SxSx3 uint8, a slot of the model's input batch). Not Pillow-exact."""
    _check_rgb(rgb)
    size = _size(pre)
    h, w = rgb.shape[:2]
    mode = pre.get("resize", "shortest-crop")
    if mode == "shortest-crop":
        _, (x0, y0, x1, y1) = _shortest_crop_box(w, h, size)
    elif mode == "crop-resize":
        side = min(w, h)
        x0, y0 = (w - side) // 2, (h - side) // 2
        x1, y1 = x0 + side, y0 + side
    elif mode == "squash":
        x0, y0, x1, y1 = 0, 0, w, h
    else:
        raise RecipeError("(recipe)", "preprocess.resize", f"unknown mode {mode!r} (shortest-crop, crop-resize, squash)")
    src = rgb[int(round(y0)) : max(int(round(y1)), int(round(y0)) + 1), int(round(x0)) : max(int(round(x1)), int(round(x0)) + 1)]
    fast_resize(src, (size, size), out)


_RESIZE_MODES = ("shortest-crop", "crop-resize", "squash")
_CHOICES = {
    ("preprocess", "resize"): _RESIZE_MODES,
    ("preprocess", "interpolation"): tuple(_FILTERS),
    ("text", "feed"): ("token-ids", "token-embeddings"),
    ("text", "output"): ("pooled", "eot-projection"),
    ("tokenizer", "kind"): ("clip-bpe", "sentencepiece", "hf-json"),
}


def check_recipe(recipe: Recipe) -> None:
    """The CLIP-specific recipe keys (a few lookups), with errors naming file and key."""
    tables = {"preprocess": recipe.preprocess, "text": recipe.raw.get("text", {}), "tokenizer": recipe.raw.get("tokenizer", {})}
    for (table, key), choices in _CHOICES.items():
        value = tables[table].get(key)
        if value is not None and value not in choices:
            raise RecipeError(str(recipe.path), f"{table}.{key}", f"must be one of {', '.join(choices)}, got {value!r}")
    if recipe.task == TEXTUAL:
        if "kind" not in tables["tokenizer"]:
            raise RecipeError(str(recipe.path), "tokenizer.kind", "is required for a clip-textual recipe")
        if tables["text"].get("feed") == "token-embeddings" and not recipe.has_file("weights"):
            raise RecipeError(str(recipe.path), "files", "feed = token-embeddings needs a file with role = \"weights\"")
        if tables["text"].get("output") == "eot-projection" and "eot_id" not in tables["text"]:
            raise RecipeError(str(recipe.path), "text.eot_id", "is required with output = eot-projection")


def prepare_images(recipe: Recipe, images: Sequence[np.ndarray | Image.Image], host_path: str = "exact") -> np.ndarray:
    """Decoded RGB images -> the recipe's visual input batch (resize, crop, normalisation, layout, dtype).

    host_path "exact" resizes with Pillow as Immich does; "fast" with OpenCV, straight into the batch.
    """
    check_recipe(recipe)
    size = _size(recipe.preprocess)
    batch = np.empty((len(images), size, size, 3), np.uint8)
    for i, img in enumerate(images):
        if host_path == "fast":
            resize_for_clip_fast(np.asarray(img) if isinstance(img, Image.Image) else img, recipe.preprocess, batch[i])
        else:
            batch[i] = resize_for_clip(img, recipe.preprocess)
    return image_input(batch, recipe)


def check_preprocess_cfg(recipe: Recipe, path: Path) -> None:
    """Immich reads size/mean/std from the export's preprocess_cfg.json; it must agree with the recipe."""
    import json

    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorruptError(recipe.id, str(path), f"not JSON: {exc}") from exc
    pre = recipe.preprocess
    size = cfg.get("size")
    size = size[0] if isinstance(size, list) else size
    problems = []
    if size is not None and int(size) != _size(pre):
        problems.append(f"size {size} != {_size(pre)}")
    for key in ("mean", "std"):
        if key in cfg and key in pre and not np.allclose(cfg[key], pre[key], rtol=0, atol=1e-7):
            problems.append(f"{key} {cfg[key]} != {pre[key]}")
    if problems:
        raise ModelMismatchError(f"recipe {recipe.id}: {path.name} disagrees with the recipe: {'; '.join(problems)}")


def _output(recipe: Recipe, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    name = recipe.outputs[0].name if recipe.outputs and recipe.outputs[0].name else None
    if name is not None:
        if name not in outputs:
            raise ModelMismatchError(f"recipe {recipe.id} names output '{name}', the model returned {sorted(outputs)}")
        return outputs[name]
    return next(iter(outputs.values()))


def _finish(recipe: Recipe, raw: np.ndarray) -> np.ndarray:
    vectors = np.asarray(raw, dtype=np.float32).reshape(raw.shape[0], -1)
    if recipe.embedding_dim is not None and vectors.shape[1] != recipe.embedding_dim:
        raise ModelMismatchError(f"recipe {recipe.id}: the model returned {vectors.shape[1]}-d vectors, the recipe says {recipe.embedding_dim}")
    return l2_normalize(vectors)


def _chunks(n: int, step: int) -> list[slice]:
    step = max(1, step)
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def encode_images(session, images: Sequence[np.ndarray | Image.Image], model: str | None = None, host_path: str = "exact") -> Embeddings:
    """Image embeddings (N, D), L2-normalised, in input order (host_path: see `prepare_images`)."""
    recipe = session.resolve(VISUAL, model)
    parts: list[np.ndarray] = []
    provenance = session.model(recipe.id).provenance
    for part in _chunks(len(images), recipe.batch_size):
        with session.host_time(recipe.id):
            feed = prepare_images(recipe, images[part], host_path)
        done = encode_prepared(session, recipe, feed)
        parts.append(done.vectors)
        provenance = done.provenance
    vectors = np.concatenate(parts) if parts else np.zeros((0, recipe.embedding_dim or 0), np.float32)
    return Embeddings(vectors, provenance)


def encode_prepared(session, recipe: Recipe, feed: np.ndarray) -> Embeddings:
    """Run an already prepared visual batch (from `prepare_images`); for callers that decode and
    prepare one image at a time (the `embed` command) and batch afterwards."""
    loaded = session.model(recipe.id)
    _check_visual_files(session, recipe)
    result = session.run(recipe.id, {input_name(recipe, loaded.inputs): feed})
    with session.host_time(recipe.id):
        vectors = _finish(recipe, _output(recipe, result.outputs))
    return Embeddings(vectors, result.provenance)


def _check_visual_files(session, recipe: Recipe) -> None:
    """An Immich cache's preprocess_cfg.json must agree with the recipe; read once per loaded model."""
    if not recipe.has_file("preprocess_cfg"):
        return
    path = session.files.find(recipe, recipe.file("preprocess_cfg"))
    if path is not None:
        session.model(recipe.id).host_resource("preprocess_cfg_checked", lambda: check_preprocess_cfg(recipe, path) or True)


def paired_model(recipes, model: str | None, task: str) -> str | None:
    """A recipe id of the other CLIP tower becomes its `[clip] pair` (so one --model serves images and text)."""
    if not model:
        return model
    try:
        recipe = recipes.get(model)
    except UnknownModelError:
        return model  # an Immich model name: resolved per task as usual
    pair = recipe.raw.get("clip", {}).get("pair")
    return pair if recipe.task != task and pair else model


def declared_pair(recipe) -> str | None:
    """The other tower a recipe names: `[clip] pair`, or the older top-level `textual` key."""
    table = recipe.raw.get("clip", {})
    return (table.get("pair") if isinstance(table, dict) else None) or recipe.raw.get("textual")


def textual_for(recipes, visual_recipe):
    """The text encoder paired with a visual one: named in the recipe, else same Immich name and backend."""
    paired = declared_pair(visual_recipe)
    if paired:
        return recipes.get(paired)
    for name in visual_recipe.immich_names:
        found = recipes.by_immich_name(TEXTUAL, name, visual_recipe.backend)
        if found:
            return found[0]
    guess = visual_recipe.id.replace("visual", "textual")
    if guess != visual_recipe.id:
        return recipes.get(guess)
    raise UnknownModelError(f"no text encoder is paired with {visual_recipe.id} (give the recipe a `textual = \"...\"` key)")


# ---- text: pure host-side steps -------------------------------------------------------------


def token_embeddings(ids: np.ndarray, token_embedding: np.ndarray, positional: np.ndarray | None = None) -> np.ndarray:
    """(N, L) ids -> (N, L, W) float32 rows of the embedding table (+ positional rows if given)."""
    if ids.size and (ids.min() < 0 or ids.max() >= token_embedding.shape[0]):
        raise BadInputError(f"token id out of range for a {token_embedding.shape[0]}-row embedding table")
    x = token_embedding[ids].astype(np.float32, copy=False)
    if positional is not None:
        x = x + positional[: ids.shape[1]].astype(np.float32, copy=False)[None]
    return np.ascontiguousarray(x, dtype=np.float32)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps) * weight + bias).astype(np.float32)


def eot_positions(ids: np.ndarray, eot_id: int) -> np.ndarray:
    """Index of the first EOT per row (CLIP pools there; padding with EOT does not move it)."""
    hits = ids == eot_id
    if not hits.any(axis=1).all():
        raise BadInputError("a token row has no end-of-text token")
    return hits.argmax(axis=1)


def pool_text_output(
    out: np.ndarray,
    ids: np.ndarray,
    *,
    mode: str,
    eot_id: int,
    projection: np.ndarray | None = None,
    ln_weight: np.ndarray | None = None,
    ln_bias: np.ndarray | None = None,
) -> np.ndarray:
    """Device output -> unnormalised text embeddings (N, D).

    `pooled`: the graph already pooled (and projected); just flatten.
    `eot-projection`: out is the sequence (N, L, W) in any equivalent shape; take the row at the
    first EOT, optionally apply the final LayerNorm, then `@ projection` (W, D).
    """
    n = ids.shape[0]
    if mode == "pooled":
        return np.asarray(out, dtype=np.float32).reshape(n, -1)
    if mode != "eot-projection":
        raise RecipeError("(recipe)", "text.output", f"unknown mode {mode!r} (pooled, eot-projection)")
    if projection is None:
        raise ModelMismatchError("eot-projection needs a text_projection in the weights file")
    seq = np.asarray(out, dtype=np.float32).reshape(n, ids.shape[1], -1)
    rows = seq[np.arange(n), eot_positions(ids, eot_id)]
    if ln_weight is not None and ln_bias is not None:
        rows = layer_norm(rows, ln_weight, ln_bias)
    return rows @ projection.astype(np.float32, copy=False)


# ---- text: per-model resources (tokenizer, weights), kept on the loaded model -----------------


@dataclass(frozen=True)
class _TextResources:
    tokenizer: TextTokenizer
    weights: Mapping[str, np.ndarray]
    weights_sha256: str | None
    input_name: str  # the token-id input (a model with an attention mask takes MCLIP_INPUTS)
    with_mask: bool  # M-CLIP exports take ids and an attention mask
    eot_id: int


def _role_paths(session, recipe: Recipe) -> dict[str, Path | None]:
    paths: dict[str, Path | None] = {}
    for spec in recipe.files:
        if spec.role in ("model", "weights"):
            continue
        if spec.role == "config":  # optional for us; Immich reads context length from it
            paths[spec.role] = session.files.find(recipe, spec)
        else:
            paths[spec.role] = session.files.require(recipe, spec.role)
    return paths


def load_text_weights(recipe: Recipe, path: Path) -> dict[str, np.ndarray]:
    """The `.npz` made by `hailo-immich extract-weights`, with the arrays the recipe needs."""
    try:
        with np.load(path, allow_pickle=False) as data:
            weights = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as exc:
        raise ModelCorruptError(recipe.id, str(path), f"not a readable .npz ({exc}); run hailo-immich extract-weights again") from exc
    for spec in recipe.raw.get("weights", {}).get("tensors", []):
        name, shape = spec["name"], tuple(spec.get("shape", ()))
        if name not in weights:
            if spec.get("optional"):
                continue
            raise ModelCorruptError(recipe.id, str(path), f"has no '{name}'; run hailo-immich extract-weights --recipe {recipe.id}")
        if shape and weights[name].shape != shape:
            raise ModelCorruptError(recipe.id, str(path), f"'{name}' has shape {weights[name].shape}, the recipe says {shape}")
    return weights


def text_resources(session, recipe: Recipe) -> _TextResources:
    """The text recipe's tokenizer and host-side weights, built once per loaded model."""
    return session.model(recipe.id).host_resource("text", lambda: _build_text_resources(session, recipe))


def _build_text_resources(session, recipe: Recipe) -> _TextResources:
    weights_path = None
    if recipe.has_file("weights"):
        spec = recipe.file("weights")
        weights_path = session.files.find(recipe, spec)
        if weights_path is None:
            raise ModelMissingError(recipe.id, str(session.files.target(recipe, spec)),
                                    hint=f"hailo-immich extract-weights --recipe {recipe.id} CHECKPOINT (see the recipe for where to get it)")
    check_recipe(recipe)
    tokenizer = build_tokenizer(recipe.raw.get("tokenizer", {}), _role_paths(session, recipe))
    weights = load_text_weights(recipe, weights_path) if weights_path else {}
    inputs = session.model(recipe.id).inputs
    eot_id = int(recipe.raw.get("text", {}).get("eot_id", getattr(tokenizer, "eot_id", 49407)))
    return _TextResources(tokenizer, weights, session.files.sha256(weights_path) if weights_path else None,
                          input_name(recipe, inputs), {t.name for t in inputs} == set(MCLIP_INPUTS), eot_id)


def tokenize(session, texts: Sequence[str], model: str | None = None) -> np.ndarray:
    """Token ids exactly as the resolved text recipe feeds them (for inspection and tests)."""
    recipe = session.resolve(TEXTUAL, model)
    return text_resources(session, recipe).tokenizer(list(texts))


def text_feed(recipe: Recipe, ids: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """Token ids -> the text encoder's input tensor, as the recipe says the compiled graph expects it."""
    text = recipe.raw.get("text", {})
    spec = recipe.inputs[0] if recipe.inputs else None
    dtype = (spec.dtype if spec and spec.dtype else None) or "int64"
    if text.get("feed", "token-ids") == "token-ids":
        return np.ascontiguousarray(ids.astype(dtype))
    positional = weights.get("positional_embedding") if text.get("add_positional_on_host", False) else None
    x = token_embeddings(ids, weights["token_embedding"], positional)
    if spec is not None and spec.shape:
        x = x.reshape((x.shape[0], *spec.shape))
    if dtype in ("uint8", "uint16"):  # a quantised device input: the hailo backend quantises floats
        return x
    return x.astype(dtype, copy=False)


def text_vectors(recipe: Recipe, out: np.ndarray, ids: np.ndarray, weights: Mapping[str, np.ndarray], eot_id: int) -> np.ndarray:
    text = recipe.raw.get("text", {})
    ln = text.get("final_layer_norm_on_host", False)
    raw = pool_text_output(
        out, ids, mode=text.get("output", "pooled"), eot_id=eot_id, projection=weights.get("text_projection"),
        ln_weight=weights.get("ln_final_weight") if ln else None, ln_bias=weights.get("ln_final_bias") if ln else None,
    )
    return _finish(recipe, raw)


MCLIP_INPUTS = ("input_ids", "attention_mask")


def _ids_and_mask(recipe: Recipe, tokenizer: TextTokenizer, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    encode = getattr(tokenizer, "encode_with_mask", None)
    if encode is None:
        raise ModelMismatchError(f"recipe {recipe.id}: the model takes {' and '.join(MCLIP_INPUTS)}, which needs an hf-json tokenizer")
    return encode(texts)


def encode_texts(session, texts: Sequence[str], model: str | None = None) -> Embeddings:
    """Text embeddings (N, D), L2-normalised, in input order."""
    recipe = session.resolve(TEXTUAL, model)
    loaded = session.model(recipe.id)
    resources = text_resources(session, recipe)
    provenance = loaded.provenance
    parts: list[np.ndarray] = []
    for part in _chunks(len(texts), recipe.batch_size):
        with session.host_time(recipe.id):
            if resources.with_mask:
                ids, mask = _ids_and_mask(recipe, resources.tokenizer, [str(t) for t in texts[part]])
                feeds = {MCLIP_INPUTS[0]: text_feed(recipe, ids, resources.weights), MCLIP_INPUTS[1]: mask.astype(np.int32)}
            else:
                ids = resources.tokenizer([str(t) for t in texts[part]])
                feeds = {resources.input_name: text_feed(recipe, ids, resources.weights)}
        result = session.run(recipe.id, feeds)
        provenance = result.provenance
        with session.host_time(recipe.id):
            parts.append(text_vectors(recipe, _output(recipe, result.outputs), ids, resources.weights, resources.eot_id))
    if resources.weights_sha256:
        provenance = replace(provenance, extra={**provenance.extra, "weights_sha256": resources.weights_sha256})
    vectors = np.concatenate(parts) if parts else np.zeros((0, recipe.embedding_dim or 0), np.float32)
    return Embeddings(vectors, provenance)
