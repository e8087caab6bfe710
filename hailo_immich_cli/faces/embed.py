"""Run a face-recognition recipe on aligned crops: batching, normalisation and output shape checks.

Embeddings are returned raw, as the recogniser emits them (Immich stores them unnormalised);
`cosine_similarity` normalises where vectors are compared.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.errors import ModelMismatchError, RecipeError
from hailo_immich_cli.faces.align import align_faces
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.tensors import image_input, input_name, l2_normalize


@dataclass(frozen=True)
class RecognizerOutput:
    vectors: np.ndarray  # (N, D) float32, raw
    provenance: Provenance


def alignment_of(recipe: Recipe) -> tuple[np.ndarray, int]:
    """(5x2 template, crop size) the recogniser was trained with, from the recipe."""
    pre = recipe.preprocess
    template = np.asarray(pre.get("align_template", []), dtype=np.float64)
    if template.shape != (5, 2):
        raise RecipeError(str(recipe.path), "preprocess.align_template", "must be 5 [x, y] points")
    size = pre.get("crop_size")
    if not isinstance(size, int) or size < 8:
        raise RecipeError(str(recipe.path), "preprocess.crop_size", "must be an integer crop side in pixels")
    return template, size


def aligned_crops(rgb: np.ndarray, landmarks: np.ndarray, recipe: Recipe) -> np.ndarray:
    template, size = alignment_of(recipe)
    return align_faces(rgb, landmarks, template, size)


def batch_size_for(recipe: Recipe, configured: int, count: int) -> int:
    """MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION if set, else the recipe's device batch,
    else every face in one call (Immich's ONNX default)."""
    if configured > 0:
        return configured
    if "batch_size" in recipe.raw:
        return recipe.batch_size
    return max(count, 1)


@functools.lru_cache(maxsize=16)
def _graph_normalises_itself(path: Path, size: int, mtime_ns: int) -> bool:
    """InsightFace's rule for ArcFace ONNX files: if the first 8 graph nodes include a Sub*/_minus*
    and a Mul*/_mul* node (MXNet-style exports), the model normalises itself and gets raw 0..255."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return has_sub and has_mul


def effective_recipe(session, recipe: Recipe) -> Recipe:
    """The recipe with host mean/std as the reference runtime would pick them for this file.

    `preprocess.mean_std_from_graph = true` applies InsightFace's graph check (Immich's packs);
    otherwise the recipe's mean/std are used as written.
    """
    if not recipe.preprocess.get("mean_std_from_graph") or recipe.backend != "cpu":
        return recipe
    path = session.files.require(recipe)
    st = path.stat()
    if not _graph_normalises_itself(path, st.st_size, st.st_mtime_ns):
        return recipe
    return replace(recipe, preprocess={**recipe.preprocess, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})


def embed_crops(session, recipe: Recipe, crops: np.ndarray) -> RecognizerOutput:
    """(N, S, S, 3) uint8 RGB aligned crops -> (N, D) raw embeddings."""
    model = session.model(recipe.id)
    feed_recipe = effective_recipe(session, recipe)
    name = input_name(recipe, model.inputs)
    output = recipe.outputs[0].name if recipe.outputs and recipe.outputs[0].name else model.outputs[0].name
    step = batch_size_for(recipe, session.settings.max_batch_faces, len(crops))
    chunks = []
    provenance = model.provenance
    for start in range(0, len(crops), step):
        part = crops[start : start + step]
        with session.host_time(recipe.id):
            feeds = {name: image_input(part, feed_recipe)}
        result = session.run(recipe.id, feeds)
        provenance = result.provenance
        values = np.asarray(result.outputs[output], dtype=np.float32).reshape(len(part), -1)
        chunks.append(values)
    vectors = np.concatenate(chunks) if chunks else np.zeros((0, recipe.embedding_dim or 0), np.float32)
    if recipe.embedding_dim and vectors.shape[1:] != (recipe.embedding_dim,) and len(vectors):
        raise ModelMismatchError(f"recipe {recipe.id} expects {recipe.embedding_dim}-d embeddings, the model gave {vectors.shape[1]}")
    return RecognizerOutput(vectors, provenance)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of raw embeddings: (D,) x (D,) -> scalar, (N,D) x (M,D) -> (N,M)."""
    a2, b2 = l2_normalize(np.atleast_2d(np.asarray(a, np.float32))), l2_normalize(np.atleast_2d(np.asarray(b, np.float32)))
    sim = a2 @ b2.T
    if np.ndim(a) == 1 and np.ndim(b) == 1:
        return sim[0, 0]
    return sim
