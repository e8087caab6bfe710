"""Immich's /predict contract: `entries` in, response JSON out. Pure: no HTTP, no models.

Parsing follows the official service's order and statuses (422 for a malformed `entries`, 400 for a
missing input or a recognition step without its detection step); serialisation follows its exact
JSON (task keys first, then imageHeight/imageWidth; embeddings as JSON strings; integral face
boxes; normalised OCR quads). Where the official service answers a bare 500, we keep the status
and say why in a JSON `detail`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hailo_immich_cli.errors import UnknownModelError
from hailo_immich_cli.recipes import IMMICH_TASKS
from hailo_immich_cli.server.jsonfmt import dumps, float32_array

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"

# Values Immich's server sends by default (server/src/config.ts); used only when a request omits them.
IMMICH_DEFAULT_OCR_MIN_REC_SCORE = 0.8
# The smallest OCR detection resolution a request may ask for (one 32-pixel detector cell).
MIN_OCR_RESOLUTION = 32

# Task -> the Python enum names the official service prints in its dependency error.
_TASK_ENUM = {"facial-recognition": "FACIAL_RECOGNITION", "ocr": "OCR"}


class ProtocolError(Exception):
    """An answer other than 200: status, exact body and content type (and an optional reason phrase)."""

    def __init__(self, status: int, body: bytes, content_type: str = JSON_TYPE, reason: str | None = None):
        super().__init__(body.decode("utf-8", "replace"))
        self.status, self.body, self.content_type, self.reason = status, body, content_type, reason

    @classmethod
    def detail(cls, status: int, detail: Any, reason: str | None = None) -> "ProtocolError":
        return cls(status, dumps({"detail": detail}), JSON_TYPE, reason)

    @classmethod
    def plain_500(cls) -> "ProtocolError":
        return cls(500, b"Internal Server Error", TEXT_TYPE)


def missing_entries() -> ProtocolError:
    return ProtocolError.detail(422, [{"type": "missing", "loc": ["body", "entries"], "msg": "Field required", "input": None}])


def invalid_format() -> ProtocolError:
    return ProtocolError.detail(422, "Invalid request format.")


def no_input() -> ProtocolError:
    return ProtocolError.detail(400, "Either image or text must be provided")


def missing_dependency(task: str) -> ProtocolError:
    enum = _TASK_ENUM[task]
    return ProtocolError.detail(
        400,
        f"Task {task} of type recognition depends on output of "
        f"(<ModelType.DETECTION: 'detection'>, <ModelTask.{enum}: '{task}'>)",
    )


@dataclass(frozen=True)
class Entry:
    """One (task, type) step of a request, with the recipe that will run it."""

    task: str  # Immich task key: clip | facial-recognition | ocr
    type: str  # visual | textual | detection | recognition
    model_name: str  # as Immich sent it
    recipe_id: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.task}.{self.type}"


@dataclass(frozen=True)
class Plan:
    """A parsed `entries`: the steps in request order."""

    entries: tuple[Entry, ...]

    @property
    def tasks(self) -> list[str]:
        """Immich task keys in order of first appearance: the response's key order."""
        seen: list[str] = []
        for entry in self.entries:
            if entry.task not in seen:
                seen.append(entry.task)
        return seen

    def get(self, task: str, type_: str) -> Entry | None:
        for entry in self.entries:
            if entry.task == task and entry.type == type_:
                return entry
        return None

    @property
    def recipe_ids(self) -> list[str]:
        return [e.recipe_id for e in self.entries]


# (task, type) -> the recipe that runs it; `name` None means "the configured default".
Resolver = Callable[[str, "str | None"], str]


def _loads_strict(raw: str) -> Any:
    def reject(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(raw, parse_constant=reject)


def parse_entries(raw: str | None, resolve: Resolver, policy: str = "strict") -> Plan:
    """Parse the `entries` form field exactly as the official service does, resolving model names.

    Official order of failure: missing field (422 FastAPI body), malformed JSON or shape (422),
    a non-object step (500), an unknown task/type/model (500). `policy` 'ignore' runs the
    configured default model for names no recipe declares; 'strict' refuses them.
    """
    if raw is None:
        raise missing_entries()
    try:
        request = _loads_strict(raw)
    except (ValueError, RecursionError):
        raise invalid_format() from None
    if not isinstance(request, dict):
        raise invalid_format()
    entries: list[Entry] = []
    for task, types in request.items():
        if not isinstance(types, dict):
            raise invalid_format()
        for type_, step in types.items():
            if not isinstance(step, dict):
                raise ProtocolError.detail(500, f"entries.{task}.{type_} must be an object with 'modelName'")
            if "modelName" not in step:
                raise invalid_format()
            name = step["modelName"]
            if not isinstance(name, str):
                raise invalid_format()
            options = step.get("options", {})
            if not isinstance(options, dict):
                raise ProtocolError.detail(500, f"entries.{task}.{type_}.options must be an object")
            recipe_task = IMMICH_TASKS.get((task, type_))
            if recipe_task is None:
                raise ProtocolError.detail(500, f"Unknown model combination: task '{task}', type '{type_}'")
            recipe_id = _resolve(resolve, recipe_task, task, type_, name, policy)
            entries.append(Entry(task, type_, name, recipe_id, _check_options(task, type_, options)))
    return Plan(tuple(entries))


def _resolve(resolve: Resolver, recipe_task: str, task: str, type_: str, name: str, policy: str) -> str:
    try:
        if not name.strip():  # "" would mean "the default" to the session; Immich never means that
            raise UnknownModelError("an empty model name")
        return resolve(recipe_task, name)
    except UnknownModelError as exc:
        if policy != "ignore":
            raise ProtocolError.detail(
                500,
                f"hailo-immich does not serve the Immich model '{name}' for {task}/{type_} ({exc}). "
                "Answering with another model would store incompatible vectors; configure a model "
                "this server reproduces, or start it with --model-names ignore.",
                reason="Model Not Served",
            ) from None
    try:
        return resolve(recipe_task, None)
    except UnknownModelError as exc:
        raise ProtocolError.detail(500, f"no model configured for {task}/{type_}: {exc}") from None


def _number(task: str, type_: str, options: Mapping[str, Any], key: str) -> float | None:
    if key not in options:
        return None
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError.detail(422, f"Invalid request format: {task}.{type_}.options.{key} must be a number")
    return float(value)


def _check_options(task: str, type_: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the options Immich sends; unknown keys are ignored like the official service does."""
    checked: dict[str, Any] = {}
    if type_ in ("detection", "recognition"):
        score = _number(task, type_, options, "minScore")
        if score is not None:
            checked["minScore"] = score
    if task == "ocr" and type_ == "detection":
        resolution = _number(task, type_, options, "maxResolution")
        if resolution is not None:
            if resolution < MIN_OCR_RESOLUTION:  # the detector's smallest input; Immich's service fails below ~16
                raise ProtocolError.detail(
                    422, f"Invalid request format: ocr.detection.options.maxResolution must be at least {MIN_OCR_RESOLUTION}"
                )
            checked["maxResolution"] = int(resolution)
    return checked


def bounded_ocr_resolution(requested: int, width: int, height: int, limit: int) -> tuple[int, str | None]:
    """The maxResolution OCR detection may run at, and a note for the request log when it was lowered.

    The detector's work and memory grow with its input (about 180 bytes per pixel on the CPU), so
    its input is held to `limit`^2 pixels: a maxResolution above `limit`, or a long thin image whose
    shorter side fits but whose area does not, is scaled down further. Below the bound the answer is
    the official service's (it never upscales: maxResolution >= the shorter side means full size).
    """
    short = min(width, height)
    scale = min(1.0, requested / short) if short else 1.0
    budget = limit / math.sqrt(max(1, width * height))
    if scale <= budget:
        return requested, None
    bounded = max(MIN_OCR_RESOLUTION, int(short * budget))
    return bounded, f"maxResolution={requested}->{bounded}(HAILO_IMMICH_OCR_MAX_RESOLUTION={limit})"


def check_inputs(plan: Plan, has_image: bool, has_text: bool) -> None:
    """The official checks after parsing: some input, and each step fed what it can use."""
    if not has_image and not has_text:
        raise no_input()
    for entry in plan.entries:
        needs_image = not (entry.task == "clip" and entry.type == "textual")
        if needs_image and not has_image:
            raise ProtocolError.detail(400, f"{entry.label} needs an image; the request has only text")
        if not needs_image and has_image:
            raise ProtocolError.detail(400, "clip.textual needs text; the request has an image (an image wins over text)")


def check_dependencies(plan: Plan) -> None:
    """Recognition needs its detection step in the same request (400, the official message)."""
    for task in ("facial-recognition", "ocr"):
        if plan.get(task, "recognition") and not plan.get(task, "detection"):
            raise missing_dependency(task)
    for task in ("facial-recognition", "ocr"):
        if plan.get(task, "detection") and not plan.get(task, "recognition"):
            raise ProtocolError.detail(
                500, f"{task} detection without recognition is not supported (the official service answers 500 too)"
            )


# ---- responses -------------------------------------------------------------------------------


def clip_json(vector: np.ndarray) -> str:
    """A CLIP embedding as Immich stores it: a JSON string holding a float32 array."""
    return float32_array(vector)


def faces_json(faces: Sequence[Any]) -> list[dict[str, Any]]:
    """Faces (faces.Face) as the official service lists them: integral unclipped boxes, raw embedding."""
    ordered = sorted(faces, key=lambda f: -float(np.float32(f.score)))
    result = []
    for face in ordered:
        if face.embedding is None:
            raise ValueError("face without embedding in a recognition response")
        x1, y1, x2, y2 = np.round(np.asarray(face.box, dtype=np.float32))
        result.append(
            {
                "boundingBox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                "embedding": float32_array(face.embedding),
                "score": np.float32(face.score),
            }
        )
    return result


def ocr_json(lines: Sequence[Any], width: int, height: int, min_score: float) -> dict[str, Any]:
    """OCR lines (ocr.OcrLine) as the official service returns them, filtered by textScore > min_score.

    Boxes are normalised by the image size in float32 and flattened TL TR BR BL. Unlike the
    official service, boxScore stays aligned with its box (the official one is left in detector
    order while boxes are re-sorted). Key order differs between "nothing detected" and "detected
    but all filtered out", as in the official service.
    """
    if not lines:
        return {"box": [], "boxScore": [], "text": [], "textScore": []}
    boxes, texts, box_scores, text_scores = [], [], [], []
    size = np.array([np.float32(width), np.float32(height)], dtype=np.float32)
    for line in lines:
        text_score = round(float(line.text_score), 5)
        if not text_score > min_score:
            continue
        quad = np.asarray(line.box, dtype=np.float32).reshape(4, 2) / size
        boxes.extend(np.float32(v) for v in quad.ravel())
        texts.append(str(line.text))
        box_scores.append(np.float32(line.box_score))
        text_scores.append(text_score)
    return {"box": boxes, "text": texts, "boxScore": box_scores, "textScore": text_scores}


def response_json(results: Mapping[str, Any], image_size: tuple[int, int] | None) -> bytes:
    """Task keys in request order, then imageHeight and imageWidth for image requests."""
    body: dict[str, Any] = dict(results)
    if image_size is not None:
        width, height = image_size
        body["imageHeight"] = int(height)
        body["imageWidth"] = int(width)
    return dumps(body)
