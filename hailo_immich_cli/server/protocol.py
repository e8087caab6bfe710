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
from typing import Any, Callable, Mapping

from hailo_immich_cli.models.resolve import NoDefault, NotServed, for_request
from hailo_immich_cli.server.jsonfmt import dumps
from hailo_immich_cli.tasks import by_immich_task, detect_then_recognize, immich_steps

JSON_TYPE = "application/json"
TEXT_TYPE = "text/plain; charset=utf-8"


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
    enum = by_immich_task()[task].immich_enum
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
    steps = immich_steps()
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
            known = steps.get((task, type_))
            if known is None:
                raise ProtocolError.detail(500, f"Unknown model combination: task '{task}', type '{type_}'")
            recipe_id = _resolve(resolve, known.recipe_task, task, type_, name, policy)
            entries.append(Entry(task, type_, name, recipe_id, _check_options(task, type_, options, known.int_options)))
    return Plan(tuple(entries))


class PlanCache:
    """Parsed `entries` by their exact text: Immich's server sends the same few strings on every
    request, and parsing plus resolving them was about a tenth of a CLIP text request. Only plans
    that parsed are remembered (a bad request is checked again each time); the memory is bounded
    because the strings come from clients."""

    def __init__(self, resolve: Resolver, policy: str = "strict", size: int = 256):
        self.resolve, self.policy, self.size = resolve, policy, size
        self._plans: dict[str, Plan] = {}

    def __call__(self, raw: str | None) -> Plan:
        plan = self._plans.get(raw) if raw is not None else None
        if plan is None:
            plan = parse_entries(raw, self.resolve, self.policy)
            if len(self._plans) >= self.size:
                self._plans.clear()
            self._plans[raw] = plan  # type: ignore[index]  # parse_entries refuses None
        return plan


def _resolve(resolve: Resolver, recipe_task: str, task: str, type_: str, name: str, policy: str) -> str:
    try:
        return for_request(resolve, recipe_task, name, policy)
    except NotServed as exc:
        raise ProtocolError.detail(
            500,
            f"hailo-immich does not serve the Immich model '{name}' for {task}/{type_} ({exc}). "
            "Answering with another model would store incompatible vectors; configure a model "
            "this server reproduces, or start it with --model-names ignore.",
            reason="Model Not Served",
        ) from None
    except NoDefault as exc:
        raise ProtocolError.detail(500, f"no model configured for {task}/{type_}: {exc}") from None


def _number(task: str, type_: str, options: Mapping[str, Any], key: str) -> float | None:
    if key not in options:
        return None
    value = options[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ProtocolError.detail(422, f"Invalid request format: {task}.{type_}.options.{key} must be a number")
    return float(value)


def _check_options(task: str, type_: str, options: Mapping[str, Any], int_options: tuple[tuple[str, int], ...]) -> dict[str, Any]:
    """Validate the options Immich sends (and the step's integer options); unknown keys are ignored like the official service does."""
    checked: dict[str, Any] = {}
    if type_ in ("detection", "recognition"):
        score = _number(task, type_, options, "minScore")
        if score is not None:
            checked["minScore"] = score
    for key, minimum in int_options:
        value = _number(task, type_, options, key)
        if value is not None:
            if value < minimum:
                raise ProtocolError.detail(422, f"Invalid request format: {task}.{type_}.options.{key} must be at least {minimum}")
            checked[key] = int(value)
    return checked


def check_inputs(plan: Plan, has_image: bool, has_text: bool) -> None:
    """The official checks after parsing: some input, and each step fed what it can use."""
    if not has_image and not has_text:
        raise no_input()
    steps = immich_steps()
    for entry in plan.entries:
        needs_image = not steps[(entry.task, entry.type)].text
        if needs_image and not has_image:
            raise ProtocolError.detail(400, f"{entry.label} needs an image; the request has only text")
        if not needs_image and has_image:
            raise ProtocolError.detail(400, f"{entry.label} needs text; the request has an image (an image wins over text)")


def check_dependencies(plan: Plan) -> None:
    """Recognition needs its detection step in the same request (400, the official message)."""
    for task in detect_then_recognize():
        if plan.get(task, "recognition") and not plan.get(task, "detection"):
            raise missing_dependency(task)
    for task in detect_then_recognize():
        if plan.get(task, "detection") and not plan.get(task, "recognition"):
            raise ProtocolError.detail(
                500, f"{task} detection without recognition is not supported (the official service answers 500 too)"
            )


# ---- responses -------------------------------------------------------------------------------


def response_json(results: Mapping[str, Any], image_size: tuple[int, int] | None) -> bytes:
    """Task keys in request order, then imageHeight and imageWidth for image requests."""
    body: dict[str, Any] = dict(results)
    if image_size is not None:
        width, height = image_size
        body["imageHeight"] = int(height)
        body["imageWidth"] = int(width)
    return dumps(body)
