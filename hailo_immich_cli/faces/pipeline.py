"""Face pipeline: detect (box, score, 5 landmarks), align, embed. Knows nothing of HTTP or SQLite.

Detector and recogniser are recipes: SCRFD + ArcFace HEFs on the Hailo, Immich's InsightFace
packs or CenterFace on the CPU. Boxes are in the pixels of the array passed in, unclipped, and
faces come in descending score, as Immich's service returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from hailo_immich_cli.backends.base import Provenance
from hailo_immich_cli.errors import BadInputError, UnknownModelError
from hailo_immich_cli.faces.detect import run_detector
from hailo_immich_cli.faces.embed import aligned_crops, cosine_similarity, embed_crops
from hailo_immich_cli.faces.task import DETECTION, RECOGNITION
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.models.resolve import choose

DEFAULT_MAX_FACES = 100

__all__ = ["Face", "FacesResult", "analyze_faces", "full_size", "choose_detector", "choose_recognizer", "cosine_similarity", "face_crops"]


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2, unclipped
    score: float
    landmarks: np.ndarray  # (5, 2) float32: l-eye, r-eye, nose, l-mouth, r-mouth
    embedding: np.ndarray | None  # (D,) float32, raw (as the recogniser outputs it)


@dataclass(frozen=True)
class FacesResult:
    faces: list[Face]  # descending score
    width: int
    height: int
    detector: Provenance
    recognizer: Provenance | None
    truncated: int  # faces dropped by max_faces


def choose_detector(session, name: str | None = None) -> Recipe:
    """The detector by the rules of resolve.choose (a fetched `prefer_when_present` pack wins over the default)."""
    return choose(session, DETECTION, name)


def choose_recognizer(session, name: str | None = None) -> Recipe:
    """The recogniser that would embed faces; ModelMissingError (with the fetch command) if none is on disk.

    No ONNX face recogniser installs offline, so on a fresh CPU-only machine this raises and
    callers run detection only.
    """
    return choose(session, RECOGNITION, name)


def analyze_faces(
    session,
    rgb: np.ndarray,
    *,
    detector: str | None = None,
    recognizer: str | None = None,
    min_score: float | None = None,
    embed: bool = True,
    max_faces: int | None = None,
) -> FacesResult:
    """Faces in one HxWx3 uint8 RGB image, each with 5 landmarks and (if embed) a raw embedding."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise BadInputError(f"faces need an HxWx3 uint8 RGB image, got {getattr(rgb, 'shape', type(rgb))}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise BadInputError("empty image")
    rgb = np.ascontiguousarray(rgb)  # OpenCV needs positive strides (flipped views are common)
    det_recipe = choose_detector(session, detector)
    rec_recipe = choose_recognizer(session, recognizer) if embed else None
    detected = run_detector(session, det_recipe, rgb, min_score)
    found = detected.detections
    limit = max_faces if max_faces is not None else int(det_recipe.postprocess.get("max_faces", DEFAULT_MAX_FACES))
    truncated = max(0, len(found) - limit) if limit > 0 else 0
    if truncated:
        found = found.take(np.arange(limit))
    embeddings: np.ndarray | None = None
    rec_provenance: Provenance | None = None
    if rec_recipe is not None:
        if len(found):
            crops = aligned_crops(rgb, found.landmarks, rec_recipe)
            out = embed_crops(session, rec_recipe, crops)
            embeddings, rec_provenance = out.vectors, out.provenance
        else:  # Immich skips the recogniser for zero faces; still say which one would have run
            rec_provenance = session.model(rec_recipe.id).provenance
    faces = [
        Face(
            box=tuple(float(v) for v in found.boxes[i]),  # type: ignore[arg-type]
            score=float(found.scores[i]),
            landmarks=found.landmarks[i].astype(np.float32),
            embedding=None if embeddings is None else embeddings[i],
        )
        for i in range(len(found))
    ]
    return FacesResult(
        faces=faces,
        width=int(rgb.shape[1]),
        height=int(rgb.shape[0]),
        detector=detected.provenance,
        recognizer=rec_provenance,
        truncated=truncated,
    )


def full_size(faces: list[Face], factor: float) -> list[Face]:
    """Faces found on a reduced decode (`factor` full-resolution pixels per decoded pixel), with
    boxes and landmarks in full-resolution pixels."""
    if factor == 1.0:
        return faces
    return [replace(f, box=tuple(float(v) * factor for v in f.box), landmarks=f.landmarks * np.float32(factor)) for f in faces]


def face_crops(session, rgb: np.ndarray, result: FacesResult, recognizer: str | None = None) -> np.ndarray:
    """The aligned crops the recogniser saw (for `detect --crops`), using its recipe's template."""
    recipe = session.recipes.get(result.recognizer.recipe_id) if result.recognizer else _crop_recipe(session, recognizer)
    landmarks = np.stack([f.landmarks for f in result.faces]) if result.faces else np.zeros((0, 5, 2), np.float32)
    return aligned_crops(np.ascontiguousarray(rgb), landmarks, recipe)


def _crop_recipe(session, recognizer: str | None) -> Recipe:
    """Any recognition recipe's template works for looking at crops when none is loaded."""
    if recognizer:
        return session.resolve(RECOGNITION, recognizer)
    recipes = session.recipes.for_task(RECOGNITION, session.backend_for_task(RECOGNITION)) or session.recipes.for_task(RECOGNITION)
    if not recipes:
        raise UnknownModelError("no face-recognition recipe defines an alignment template")
    return recipes[0]
