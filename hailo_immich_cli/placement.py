"""Where the models Immich asks for by default run with the current settings (README table, /health,
the `serve` start-up log, `doctor`).

Nothing is decided here: each row is what `session.resolve` answers for an Immich model name, plus
whether the chosen recipe's model file is on disk (a missing file means the request is refused until
it is fetched). The rules themselves are recipe data: a Hailo recipe listing an Immich name in
`immich_names` serves it on the NPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hailo_immich_cli.errors import HailoImmichError
from hailo_immich_cli.tasks import registry

# Besides each task's Immich default (tasks.py: buffalo_l, ViT-B-32__openai, PP-OCRv5_mobile), the
# other face pack Immich's settings offer with the same SCRFD-10GF detector.
ALSO_SHOWN: dict[str, tuple[str, ...]] = {"face-detection": ("antelopev2",), "face-recognition": ("antelopev2",)}


def default_models() -> list[tuple[str, str, str]]:
    """(Immich task/type, recipe task, model name) per row, in the registry's order."""
    rows = []
    for task in registry():
        for type_, recipe_task in task.steps.items():
            for model in (task.immich_default_model, *ALSO_SHOWN.get(recipe_task, ())):
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
