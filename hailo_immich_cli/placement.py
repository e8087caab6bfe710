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
from hailo_immich_cli.recipes import IMMICH_TASKS

# The models Immich's settings offer by default (faces: also antelopev2, the other SCRFD-10GF pack).
IMMICH_DEFAULT_MODELS: dict[str, tuple[str, ...]] = {
    "face-detection": ("buffalo_l", "antelopev2"),
    "face-recognition": ("buffalo_l", "antelopev2"),
    "clip-visual": ("ViT-B-32__openai",),
    "clip-textual": ("ViT-B-32__openai",),
    "ocr-detection": ("PP-OCRv5_mobile",),
    "ocr-recognition": ("PP-OCRv5_mobile",),
}
_IMMICH_PAIR = {task: pair for pair, task in IMMICH_TASKS.items()}


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


def place(session, task: str, model: str) -> Placement:
    immich = "/".join(_IMMICH_PAIR[task])
    try:
        recipe = session.resolve(task, model)
    except HailoImmichError as exc:
        return Placement(immich, model, task, None, None, str(exc))
    missing = [spec.name for spec in recipe.files if session.files.find(recipe, spec) is None]
    note = f"refused until fetched: hailo-immich fetch-models --recipe {recipe.id}" if missing else ""
    return Placement(immich, model, task, recipe.id, recipe.backend, note)


def default_placement(session) -> list[Placement]:
    """One row per (task, Immich default model name), in Immich's task order."""
    return [place(session, task, model) for task, models in IMMICH_DEFAULT_MODELS.items() for model in models]
