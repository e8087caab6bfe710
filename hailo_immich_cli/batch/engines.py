"""Who runs the tasks for the indexer: the local session (NPU or CPU) or remote /predict services.

An engine says up front which model will answer each task (the key results are stored under, so a
model change re-processes only that task) and how many pixels its models need (for reduced-size
decoding), then turns decoded images into TaskOutputs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from hailo_immich_cli.batch.store import ModelInfo, TaskOutput
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.tasks import registry

log = logging.getLogger("hailo_immich")

@dataclass
class Item:
    """One decoded image waiting for the engine."""

    rgb: np.ndarray
    scale: float  # file pixels per decoded pixel
    tasks: tuple[str, ...]


@dataclass
class ItemResult:
    outputs: list[TaskOutput]
    error: str | None = None


class Engine(Protocol):
    tasks: tuple[str, ...]

    def model_keys(self) -> dict[str, str]: ...

    def models(self) -> list[ModelInfo]: ...

    def min_side(self) -> int: ...

    def run(self, items: Sequence[Item]) -> list[ItemResult]: ...

    @property
    def concurrency(self) -> int: ...


def recipe_min_side(recipe: Any) -> int:
    """Pixels (shorter side) worth decoding for this recipe: its largest input/resize bound."""
    pre = recipe.preprocess
    sizes = [int(pre[k]) for k in ("max_side", "max_resolution", "size", "height", "width", "min_side") if isinstance(pre.get(k), (int, float))]
    for spec in recipe.inputs:
        if spec.shape:
            sizes.extend(int(d) for d in spec.shape if isinstance(d, int) and d > 3)
    return max(sizes) if sizes else 0


class LocalEngine:
    """Tasks through this process's SessionManager; each task of the registry runs its own pipeline."""

    concurrency = 1

    def __init__(self, session: Any, tasks: Sequence[str], names: dict[str, str | None] | None = None, clip_batch: int = 8):
        self.session = session
        self.tasks = tuple(tasks)
        names = names or {}
        self.clip_batch = clip_batch
        self._selected = [t for t in registry() if t.name in self.tasks]
        self.stages: dict[str, dict[str, Any]] = {}  # task name -> recipe task -> recipe
        for task in self._selected:
            self.stages[task.name] = task.choose_for_index(session, names.get(task.name), lambda msg: log.warning("%s", msg))
        self.recipes: dict[str, Any] = {rt: r for stages in self.stages.values() for rt, r in stages.items()}
        # Loading now fixes each model's identity (recipe + file hash) before any file is judged.
        self.provenance = {task: session.model(r.id).provenance for task, r in self.recipes.items()}

    def model_keys(self) -> dict[str, str]:
        return {t.name: t.model_key([self.provenance[rt].model_id for rt in t.indexed if rt in self.provenance])
                for t in self._selected}

    def models(self) -> list[ModelInfo]:
        out = []
        for task, recipe in self.recipes.items():
            prov = self.provenance[task]
            out.append(ModelInfo(prov.model_id, task, recipe.id, prov.backend, prov.device, prov.runtime,
                                 tuple(recipe.immich_names), recipe.embedding_dim))
        return out

    def min_side(self) -> int:
        return max((recipe_min_side(r) for r in self.recipes.values()), default=0)

    def run(self, items: Sequence[Item]) -> list[ItemResult]:
        """Batched tasks (CLIP) first, in chunks, each bad image found on its own; then the per-image
        tasks in registry order, an image's first failure ending its run."""
        keys = self.model_keys()
        results = [ItemResult([]) for _ in items]
        for task in (t for t in self._selected if t.batched):
            stages = self.stages[task.name]
            wanted = [i for i, it in enumerate(items) if task.name in it.tasks]
            for start in range(0, len(wanted), self.clip_batch):
                chunk = wanted[start:start + self.clip_batch]
                try:
                    done = task.run_for_index(self.session, stages, [items[i].rgb for i in chunk])
                except BadInputError:
                    done = None
                for row, i in enumerate(chunk):
                    try:
                        payload, backend = done[row] if done is not None else task.run_for_index(self.session, stages, [items[i].rgb])[0]
                        results[i].outputs.append(TaskOutput(task.name, keys[task.name], backend, payload, items[i].scale))
                    except BadInputError as exc:  # only when the image failed on its own
                        results[i].error = f"{task.name}: {exc}"
        per_image = [t for t in self._selected if not t.batched]
        for i, it in enumerate(items):
            try:
                for task in per_image:
                    if task.name in it.tasks:
                        ((payload, backend),) = task.run_for_index(self.session, self.stages[task.name], [it.rgb])
                        results[i].outputs.append(TaskOutput(task.name, keys[task.name], backend, payload, it.scale))
            except BadInputError as exc:
                results[i].error = str(exc)
        return results
