"""Which recipe runs a task: the one place a model name (recipe id or Immich model name) becomes a recipe.

Rules, in the order they apply:
- a recipe id names its recipe on any backend (explicit wins);
- HAILO_IMMICH_TASK_RECIPES sets a task's recipe; it serves no name or a name it reproduces, and
  any name for the geometry tasks (boxes, not vectors Immich compares across models);
- an Immich model name needs a recipe that reproduces it, preferably on the task's backend
  (HAILO_IMMICH_MODEL_BACKENDS, else the active one); an embedding task keeps a reproducing recipe
  on another backend (other vectors would not match the user's library) and says so loudly;
- no name: the backend's `default` recipe; `choose` also prefers a `prefer_when_present` recipe
  whose model file is on disk (Immich's own buffalo_l pack, once fetched);
- a recogniser that is not on disk and was not named leaves detection only (`recognizer_or_none`);
- `serve --model-names ignore` answers names no recipe reproduces, or only one on another backend,
  with the configured recipe (`RequestResolver`, `for_request`).

`default_placement` reports where Immich's default model names run with the current settings
(README table, /health, the `serve` start-up log, `doctor`): each row is what `resolve` answers,
plus whether the chosen recipe's model file is on disk (a missing file means the request is refused
until it is fetched). It decides nothing; the rules are recipe data (`immich_names`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any, Callable

from hailo_immich_cli.errors import HailoImmichError, ModelMissingError, UnknownModelError
from hailo_immich_cli.models.recipes import Recipe

log = logging.getLogger("hailo_immich.server")  # off-backend warnings are the server's


def split_pair(name: str | None) -> tuple[str | None, str | None]:
    """`--face-model`/`--ocr-model`: one Immich name for both models, or DETECTOR,RECOGNISER recipe ids."""
    if not name:
        return None, None
    if "," in name:
        det, rec = (part.strip() or None for part in name.split(",", 1))
        return det, rec
    return name, name


def resolve(session, task: str, name: str | None = None) -> Recipe:
    """The recipe for a task: a recipe id, else an Immich model name, else the default (rules above)."""
    from hailo_immich_cli.tasks import geometry_tasks

    configured = session.settings.task_recipes.get(task)
    if configured:
        chosen = session.recipes.get(configured)
        if chosen.task != task:
            raise UnknownModelError(f"HAILO_IMMICH_TASK_RECIPES: recipe '{configured}' is for task {chosen.task}, not {task}")
        if not name or chosen.answers_to(name) or name == configured or task in geometry_tasks():
            return chosen
        if session.recipes.by_immich_name(task, name) and name not in {r.id for r in session.recipes}:
            raise UnknownModelError(
                f"HAILO_IMMICH_TASK_RECIPES sets {configured} for {task}, which does not reproduce the Immich model "
                f"'{name}' (recipes that do: {', '.join(r.id for r in session.recipes.by_immich_name(task, name))})"
            )
    if name:
        try:
            recipe = session.recipes.get(name)
        except UnknownModelError:
            recipe = None
        if recipe is not None:
            if recipe.task != task:
                raise UnknownModelError(f"recipe '{name}' is for task {recipe.task}, not {task}")
            return recipe
        backend = session.backend_for_task(task)
        matches = session.recipes.by_immich_name(task, name, backend)
        pinned = session.settings.model_backends.get(task)
        if pinned and task in geometry_tasks() and not any(r.backend == pinned for r in matches):
            return session.recipes.default(task, pinned)
        if matches:
            return matches[0]
        raise UnknownModelError(f"no recipe for {task} reproduces the Immich model '{name}'")
    return session.recipes.default(task, session.backend_for_task(task))


def _preferred(session, task: str, backend: str) -> list[Recipe]:
    return [r for r in session.recipes.for_task(task, backend) if r.raw.get("prefer_when_present")]


def choose(session, task: str, name: str | None = None) -> Recipe:
    """`resolve`, except that with no name and no configured recipe a `prefer_when_present` recipe
    whose model file is on disk wins over the backend's default (lowest rank first)."""
    if name or session.settings.task_recipes.get(task):  # explicit, or HAILO_IMMICH_TASK_RECIPES
        return resolve(session, task, name)
    backend = session.backend_for_task(task)
    candidates = session.recipes.for_task(task, backend)
    preferred = sorted(_preferred(session, task, backend), key=lambda r: (int(r.raw.get("prefer_when_present")), r.id))
    for recipe in preferred:
        if session.files.find(recipe, recipe.file("model")) is not None:
            return recipe
    defaults = [r for r in candidates if r.default]
    if defaults:
        return defaults[0]
    if preferred:
        first = preferred[0]
        raise ModelMissingError(first.id, str(session.files.target(first, first.file("model"))))
    raise UnknownModelError(f"no recipe for {task} on the {backend} backend")


def preload_candidates(session, task: str) -> list[Recipe]:
    """The recipes `serve` loads at start for a task: its default and every `prefer_when_present` one
    (the caller keeps those whose files are present)."""
    candidates = [resolve(session, task)]
    return candidates + _preferred(session, task, session.backend_for_task(task))


def recognizer_or_none(session, task: str, name: str | None, warn: Callable[[str], None], load: bool = False) -> Recipe | None:
    """The recogniser (loaded now if `load`), or None after `warn(why)` when its model is not on disk
    and none was named: the caller runs detection only."""
    try:
        recipe = choose(session, task, name)
        if load:
            session.model(recipe.id)
        return recipe
    except ModelMissingError as exc:
        if name:
            raise
        warn(str(exc))
        return None


class NotServed(Exception):
    """strict policy: no recipe reproduces the requested model name."""


class NoDefault(Exception):
    """ignore policy: the name is not served and no recipe is configured for the task either."""


def for_request(resolve_name: Callable[[str, "str | None"], str], task: str, name: str, policy: str) -> str:
    """A /predict step's recipe id under the model-names policy: 'strict' refuses a name no recipe
    reproduces (NotServed), 'ignore' runs the configured recipe instead (NoDefault if there is none)."""
    try:
        if not name.strip():  # "" would mean "the default" to the session; Immich never means that
            raise UnknownModelError("an empty model name")
        return resolve_name(task, name)
    except UnknownModelError as exc:
        if policy != "ignore":
            raise NotServed(str(exc)) from None
    try:
        return resolve_name(task, None)
    except UnknownModelError as exc:
        raise NoDefault(str(exc)) from None


MAX_REMEMBERED_NAMES = 256


class RequestResolver:
    """`resolve` for /predict, saying loudly (once per recipe) when a request lands off the task's backend.

    An Immich model name only one CPU recipe reproduces (e.g. buffalo_l on a Hailo host) is served
    on the CPU rather than answered with another model's vectors; that must not be silent. With the
    'ignore' policy the configured recipe of the task's backend answers instead.
    """

    def __init__(self, session, policy: str):
        self.session, self.policy = session, policy
        self.off_backend: dict[str, str] = {}  # recipe id -> why it runs off the task's backend
        self._lock = threading.Lock()
        # (task, name, backend) -> recipe id. Settings and recipes do not change while serving, and
        # Immich sends the same few names on every request: resolving them was ~10% of a text request.
        self._known: dict[tuple[str, str | None, str], str] = {}

    def __call__(self, task: str, name: str | None) -> str:
        key = (task, name, self.session.backend_for_task(task))
        known = self._known.get(key)
        if known is not None:
            return known
        recipe_id = self._resolve(task, name)
        if len(self._known) >= MAX_REMEMBERED_NAMES:  # names come from clients: the memory stays bounded
            self._known.clear()
        self._known[key] = recipe_id
        return recipe_id

    def _resolve(self, task: str, name: str | None) -> str:
        recipe = resolve(self.session, task, name)
        wanted = self.session.backend_for_task(task)
        if recipe.backend != wanted and self.policy == "ignore":
            recipe = resolve(self.session, task, None)
        if recipe.backend != wanted and recipe.id not in self.off_backend:
            reason = (
                f"NOT ON THE {wanted.upper()} BACKEND: Immich model '{name}' for {task} is served by {recipe.id} "
                f"on the {recipe.backend} backend, because no {wanted} recipe reproduces it"
            )
            with self._lock:
                first = recipe.id not in self.off_backend
                self.off_backend[recipe.id] = reason
            if first:
                log.warning("%s", reason)
        return recipe.id


# ---- placement: where Immich's default model names run ---------------------------------------


def default_models() -> list[tuple[str, str, str]]:
    """(Immich task/type, recipe task, model name) per row, in the registry's order."""
    from hailo_immich_cli.tasks import registry

    rows = []
    for task in registry():
        for type_, recipe_task in task.steps.items():
            for model in (task.immich_default_model, *task.immich_also_shown):
                rows.append((f"{task.immich_task}/{type_}", recipe_task, model))
    return rows


@dataclass(frozen=True)
class Placement:
    immich: str  # Immich's task/type, e.g. facial-recognition/detection
    model: str  # the Immich model name
    task: str
    recipe: str | None
    backend: str | None  # None: refused
    note: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        where = f"{self.backend} ({self.recipe})" if self.backend else "refused"
        return f"{self.immich} {self.model}: {where}" + (f"; {self.note}" if self.note else "")


def place(session, immich: str, task: str, model: str) -> Placement:
    try:
        recipe = session.resolve(task, model)
    except HailoImmichError as exc:
        return Placement(immich, model, task, None, None, str(exc))
    missing = [spec.name for spec in recipe.files if session.files.find(recipe, spec) is None]
    note = f"refused until fetched: hailo-immich fetch-models --recipe {recipe.id}" if missing else ""
    return Placement(immich, model, task, recipe.id, recipe.backend, note)


def default_placement(session) -> list[Placement]:
    """One row per (Immich task/type, default model name), in the registry's order."""
    return [place(session, immich, task, model) for immich, task, model in default_models()]
