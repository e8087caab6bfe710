"""The task registry: every job the package runs, each owned by its own package.

A task package (`faces/`, `clip/`, `ocr/`) exports one `TASK`: what Immich calls it, its
(task, type) pairs and the recipe task each one runs, and how it runs for `serve`, `index` (local
and remote) and `bench`. The server, the indexer, the benchmarks and the CLI loop over
`registry()`; nothing outside the task packages branches on a task's name. Adding a task is one
package and one line in `_PACKAGES`.

The registry is built on first use, so low layers (recipes, settings, session) can ask it for
vocabularies without importing the pipelines at start-up.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

# The task packages, in the order results, reports and /health list them.
_PACKAGES = ("faces", "clip", "ocr")


@dataclass(frozen=True)
class BenchJob:
    """One end-to-end benchmark job of a task (CLIP has two: images and text queries)."""

    name: str  # `bench --task` name
    stages: tuple[str, ...]  # recipe tasks it runs
    batch_stage: str  # the recipe task whose batch size the sweep changes
    batch_setting: str | None = None  # Settings field holding that batch size, if any
    batch_env: str | None = None  # Immich's env var for it (advice)
    job_label: str = ""  # Immich's job name, for `bench --url` reports
    url_default_model: str = ""  # model name `bench --url` asks for
    url_entries: Callable[[str], dict[str, Any]] | None = None  # /predict entries for `bench --url`
    text: bool = False  # fed text, not images
    url_default: bool = False  # `bench --url` measures it when no --task is given


@dataclass(frozen=True)
class VectorTable:
    """Where a task's vectors live in the index database; each (task, model) gets one vector index
    beside it, named by the task (`<db>.vectors/<task>-<model>.usearch`)."""

    table: str
    model_column: str  # the model whose embedding space a row's vector is in
    hit_columns: str  # what a search hit needs, besides the embedding (the first is the content hash)
    per: str  # what one vector stands for: "photo" (similar photos, duplicates) or "face" (face search, people)


@dataclass(frozen=True)
class ImmichStep:
    """What /predict needs to know about one (task, type) pair, looked up once per entry."""

    recipe_task: str
    text: bool  # fed text, not an image
    int_options: tuple[tuple[str, int], ...]  # integer options and their minimum


@dataclass(frozen=True)
class Task:
    """What every task declares; its package subclasses it with the pipeline-facing methods.

    Methods a task package implements (see faces/task.py for the fullest one):
    - `serve(session, plan, image, text, outcome, host_path)`: one /predict task -> the JSON value
      under its key; `image` is the request's `imaging.DecodedImage`, decoded once for all tasks;
    - `choose_for_index(session, name, warn)`: recipe per indexed stage;
    - `run_for_index(session, recipes, images)`: (payload, backend) per image for the index;
    - `index_rows(content, out)`: (items, [(sql, rows)]) that store a payload in the index;
    - `remote_entries(name)` / `parse_remote(body, name, url)`: the same through a /predict service;
    - `bench_work(job, session, stages, batch, next_image, next_texts, found, host_path)`: one benchmark call;
    - for its per-file CLI command: `cli_record(path, result, **extra)` (one JSON record),
      `cli_table(no_color)` (a table writer with `add(path, result)` and `close()`) and
      `cli_models(result)` (the provenance of each model that made a result; `--db` keys it by them).
    """

    name: str  # index / CLI name
    immich_task: str  # key in /predict entries and responses
    steps: Mapping[str, str]  # Immich model type -> recipe task, in Immich's order
    indexed: tuple[str, ...]  # recipe tasks `index` runs; the stored model key joins their model ids
    immich_enum: str  # the official service's ModelTask enum name (its error messages quote it)
    immich_default_model: str  # the model Immich's server asks for by default
    immich_also_shown: tuple[str, ...] = ()  # other Immich model names the placement table (/health, doctor) lists
    geometry: tuple[str, ...] = ()  # recipe tasks whose output is boxes: any Immich model name may serve them
    embeddings: tuple[str, ...] = ()  # recipe tasks whose output is a vector (recipes must say its size)
    text_types: tuple[str, ...] = ()  # Immich types fed text instead of an image
    detect_then_recognize: bool = False  # "recognition" needs "detection" in the same request
    int_options: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # type -> integer option -> minimum
    batched: bool = False  # index runs several images per call
    index_tables: tuple[str, ...] = ()  # index tables whose rows for (content, model) a new result replaces
    stored_tables: tuple[str, ...] = ()  # every index table holding the task's rows (pruned with their photos)
    vectors: VectorTable | None = None  # its searchable vectors, if any
    bench_jobs: tuple[BenchJob, ...] = ()
    synthetic_images_note: str | None = None  # what `bench` cannot show on synthetic images
    recipe_keys: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)  # recipe task -> section -> key -> schema Key
    cli_lists_failures: bool = False  # --json/--jsonl also list failed files ({"file", "error"})
    pillow_inputs: tuple[str, ...] = ()  # recipe tasks whose exact-path input Immich resizes with Pillow
    # An Immich cache folder (models/immich_cache.py): Immich type -> the shipped CPU recipe whose
    # pipeline runs any such model, and the files its folder holds if not just `<type>/model.onnx`.
    cache_templates: Mapping[str, str] = field(default_factory=dict)
    cache_files: Mapping[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)

    @property
    def recipe_tasks(self) -> tuple[str, ...]:
        return tuple(self.steps.values())

    def bench_partial(self, job: BenchJob, stages: Mapping[str, Any]) -> str | None:
        """When some stages' models are missing: what the job still measures, or None to skip it."""
        return None

    def cache_names(self, model: Any, all_models: Sequence[Any]) -> list[str]:
        """The Immich model names a recipe synthesised for an Immich cache folder answers to."""
        return [model.name]

    def cache_recipe(self, model: Any, data: dict[str, Any]) -> None:
        """Adjust the recipe synthesised for an Immich cache folder from its template's: the template's
        input names go, the export's own are read from the file."""
        for tensor in data.get("inputs", []):
            tensor.pop("name", None)

    def answer_count(self, value: Any) -> int:
        """How many results the task's value in an Immich answer holds (faces, lines; a vector is one)."""
        return 1

    def path_agreement(self, exact: Any, fast: Any) -> dict[str, Any]:
        """How far the fast host path's answer value is from the exact one's (`bench --host-path`)."""
        raise NotImplementedError

    def input_scale(self, recipe: Any, width: int, height: int, options: Mapping[str, Any]) -> float:
        """Model-input pixels per image pixel of this recipe's resize, for a width x height image
        (0: no pixels of its own); the fast host path decodes just large enough to cover it."""
        return 0.0

    def search_hit(self, row: tuple) -> dict[str, Any]:
        """A vector search hit's details from `vectors.hit_columns` after the hash."""
        return {}

    def model_key(self, model_ids: Sequence[str]) -> str:
        """The key index results are stored under: every model that produced them, so changing any redoes the task."""
        return "+".join(model_ids)


def detector_recognizer(detection: str, recognition: str) -> dict[str, Any]:
    """The `Task` fields of a two-model task whose recogniser reads what its detector found (faces,
    OCR): Immich's detection + recognition pair, both indexed, the detector's boxes being geometry."""
    return {"steps": {"detection": detection, "recognition": recognition}, "indexed": (detection, recognition),
            "geometry": (detection,), "detect_then_recognize": True}


@lru_cache(maxsize=None)
def registry() -> tuple[Any, ...]:
    return tuple(importlib.import_module(f"hailo_immich_cli.{name}.task").TASK for name in _PACKAGES)


@lru_cache(maxsize=None)
def by_name() -> dict[str, Any]:
    return {t.name: t for t in registry()}


@lru_cache(maxsize=None)
def by_immich_task() -> dict[str, Any]:
    return {t.immich_task: t for t in registry()}


@lru_cache(maxsize=None)
def by_recipe_task() -> dict[str, Any]:
    return {rt: t for t in registry() for rt in t.recipe_tasks}


@lru_cache(maxsize=None)
def pillow_input_tasks() -> frozenset[str]:
    """Recipe tasks whose exact-path input is resized with Pillow (the decoder keeps its Pillow image)."""
    return frozenset(rt for t in registry() for rt in t.pillow_inputs)


@lru_cache(maxsize=None)
def recipe_tasks() -> tuple[str, ...]:
    """Every recipe task, grouped by task package."""
    return tuple(rt for t in registry() for rt in t.recipe_tasks)


@lru_cache(maxsize=None)
def immich_pairs() -> dict[tuple[str, str], str]:
    """Immich's (task, type) pairs in /predict entries -> the recipe task each one runs."""
    return {(t.immich_task, type_): rt for t in registry() for type_, rt in t.steps.items()}


@lru_cache(maxsize=None)
def immich_steps() -> dict[tuple[str, str], ImmichStep]:
    """The same pairs with what the request path checks (built once: no registry scan per request)."""
    return {(t.immich_task, type_): ImmichStep(rt, type_ in t.text_types, tuple(t.int_options.get(type_, {}).items()))
            for t in registry() for type_, rt in t.steps.items()}


@lru_cache(maxsize=None)
def immich_aliases() -> dict[str, tuple[str, ...]]:
    """An Immich task name -> the recipe tasks of both its steps (settings accept either)."""
    return {t.immich_task: t.recipe_tasks for t in registry()}


@lru_cache(maxsize=None)
def geometry_tasks() -> frozenset[str]:
    """Recipe tasks whose output is geometry (boxes), not vectors Immich compares across models."""
    return frozenset(rt for t in registry() for rt in t.geometry)


@lru_cache(maxsize=None)
def detect_then_recognize() -> tuple[str, ...]:
    """Immich task names whose recognition step needs the detection step in the same request."""
    return tuple(t.immich_task for t in registry() if t.detect_then_recognize)


@lru_cache(maxsize=None)
def embedding_tasks() -> frozenset[str]:
    return frozenset(rt for t in registry() for rt in t.embeddings)


@lru_cache(maxsize=None)
def bench_jobs() -> dict[str, tuple[Any, BenchJob]]:
    """`bench --task` name -> (task, job)."""
    return {job.name: (t, job) for t in registry() for job in t.bench_jobs}


@lru_cache(maxsize=None)
def vector_tasks() -> dict[str, Any]:
    """Tasks with searchable vectors by name, in name order (the order their indexes are synced)."""
    return {t.name: t for t in sorted(registry(), key=lambda t: t.name) if t.vectors is not None}


def vectors_per(unit: str) -> Any:
    """The task whose vectors stand for one `unit` ("photo" or "face")."""
    for t in vector_tasks().values():
        if t.vectors.per == unit:
            return t
    raise KeyError(unit)


@lru_cache(maxsize=None)
def stored_tables() -> tuple[str, ...]:
    """Every index table holding task rows, in registry order."""
    return tuple(table for t in registry() for table in t.stored_tables)


def owner(recipe_task: str) -> Any:
    """The task package a recipe task belongs to."""
    for t in registry():
        if recipe_task in t.recipe_tasks:
            return t
    raise KeyError(recipe_task)
