"""Use an existing Immich ML model cache as it is: every model in it becomes a CPU recipe.

Immich's service keeps its ONNX exports in MACHINE_LEARNING_CACHE_FOLDER as
`<cache>/<task>/<model>/<type>/model.onnx` (plus `preprocess_cfg.json`, `tokenizer.json`,
`tokenizer_config.json` and `<model>/config.json` for CLIP; the OCR recogniser's dictionary is
the ONNX metadata key `character`). Shipped recipes that reproduce a model find their files there
by `immich_path` (model_files.py). For every other model in the cache a recipe is synthesised from
a shipped *template* recipe of the same kind plus the facts in the folder (CLIP size/mean/std from
preprocess_cfg.json, embedding size from config.json), so any CLIP model Immich lists, any face
pack and any OCR language variant runs with the same pipeline and the same numbers as Immich's
service. Nothing is copied; a synthesised recipe is never `default`.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from hailo_immich_cli.errors import RecipeError, UnknownModelError
from hailo_immich_cli.models.files import IMPORTED_CACHE_DIR, ModelFiles
from hailo_immich_cli.models.recipes import Recipe, RecipeBook, parse_recipe
from hailo_immich_cli.tasks import by_immich_task, immich_pairs
from hailo_immich_cli.settings import Settings

log = logging.getLogger("hailo_immich")

ID_PREFIX = "immich-"
# Files a model folder holds unless its task says otherwise (`Task.cache_files`), as (role, file name,
# path relative to the model folder).
DEFAULT_FILES = (("model", "model.onnx", "{type}/model.onnx"),)


@dataclass(frozen=True)
class CacheModel:
    """One `<task>/<model>/<type>` folder of an Immich cache that holds a model.onnx."""

    root: Path
    task_dir: str
    name: str
    type: str

    @property
    def task(self) -> str:
        return immich_pairs()[(self.task_dir, self.type)]

    @property
    def owner(self) -> Any:
        """The task package that knows this kind of folder (templates, files, recipe adjustments)."""
        return by_immich_task()[self.task_dir]

    @property
    def model_dir(self) -> Path:
        return self.root / self.task_dir / self.name

    @property
    def recipe_id(self) -> str:
        return f"{ID_PREFIX}{self.name}-{self.type}"

    def rel(self, inside_model_dir: str) -> str:
        return f"{self.task_dir}/{self.name}/{inside_model_dir}"


@dataclass(frozen=True)
class CacheScan:
    """What a cache folder offers: synthesised recipes, models served by shipped recipes, and skipped folders."""

    root: Path
    recipes: tuple[Recipe, ...]
    covered: Mapping[str, str]  # "<task>/<model>/<type>" -> shipped recipe id that finds its files there
    skipped: Mapping[str, str]  # "<task>/<model>/<type>" -> why it is not usable


def scan_folder(root: Path) -> list[CacheModel]:
    """Every model folder in Immich's layout under root (directory listing only)."""
    found = []
    root = Path(root)
    for task_dir, type_ in sorted(immich_pairs()):
        base = root / task_dir
        if not base.is_dir():
            continue
        for model_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if (model_dir / type_ / "model.onnx").is_file():
                found.append(CacheModel(root, task_dir, model_dir.name, type_))
    return found


def looks_like_cache(folder: Path) -> bool:
    return bool(scan_folder(folder))


def read_json(path: Path) -> dict[str, Any]:
    """A cache folder's JSON object (config.json, preprocess_cfg.json); a clear RecipeError otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RecipeError(str(path), "(json)", f"cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(str(path), "(json)", "must be a JSON object")
    return data


def _template(book: RecipeBook, model: CacheModel, names: list[str]) -> Recipe:
    """A shipped CPU recipe reproducing this very model if there is one, else the generic template of its kind."""
    for name in names:
        for recipe in book.by_immich_name(model.task, name, "cpu"):
            if recipe.backend == "cpu" and not recipe.id.startswith(ID_PREFIX):
                return recipe
    return book.get(model.owner.cache_templates[model.type])


def _files(model: CacheModel) -> list[dict[str, Any]]:
    specs = model.owner.cache_files.get(model.type, DEFAULT_FILES)
    files = []
    for role, name, rel in specs:
        rel = rel.format(type=model.type)
        path = model.model_dir / rel
        if role != "config" and not path.is_file():
            raise RecipeError(str(path), "(file)", "missing from the Immich cache folder")
        if role == "config" and not path.is_file():
            continue  # optional for us: Immich falls back to defaults too
        files.append({"role": role, "name": name, "immich_path": model.rel(rel), "sources": []})
    return files


def synthesise(book: RecipeBook, model: CacheModel, all_models: list[CacheModel]) -> Recipe:
    """A CPU recipe for one cache model: the template's pipeline, the folder's files and facts."""
    names = model.owner.cache_names(model, all_models)
    template = _template(book, model, names)
    data = copy.deepcopy(dict(template.raw))
    for key in ("prefer_when_present", "default", "hw_arch"):
        data.pop(key, None)
    data.update({
        "id": model.recipe_id,
        "task": model.task,
        "backend": "cpu",
        "default": False,
        "immich_names": names,
        "description": f"Immich cache model {model.name} ({model.type}), run with the pipeline of {template.id}",
        "license": "as published by immich-app for this model (see its model card)",
        "files": _files(model),
    })
    model.owner.cache_recipe(model, data)
    data["immich_cache"] = {"root": str(model.root), "folder": model.rel(model.type), "template": template.id}
    return parse_recipe(model.model_dir / model.type, data)


def _covering(book: RecipeBook, files: ModelFiles, model: CacheModel) -> Recipe | None:
    """A shipped CPU recipe reproducing this model whose every file is found (models dir or this cache)."""
    for recipe in book.by_immich_name(model.task, model.name, "cpu"):
        if recipe.backend != "cpu" or recipe.id.startswith(ID_PREFIX):
            continue
        if all(files.find(recipe, spec) is not None for spec in recipe.files):
            return recipe
    return None


def scan_cache(book: RecipeBook, settings: Settings, root: Path | None = None) -> CacheScan:
    """Recipes for the models of an Immich cache that no shipped recipe can already run from it."""
    root = Path(root or settings.immich_cache_folder or "")
    if not str(root) or not root.is_dir():
        return CacheScan(root, (), {}, {})
    files = ModelFiles(settings if settings.immich_cache_folder == root else _with_cache(settings, root))
    models = scan_folder(root)
    recipes, covered, skipped = [], {}, {}
    for model in models:
        key = model.rel(model.type)
        shipped = _covering(book, files, model)
        if shipped is not None:
            covered[key] = shipped.id
            continue
        try:
            recipes.append(synthesise(book, model, models))
        except (RecipeError, UnknownModelError, ValueError, TypeError) as exc:
            skipped[key] = str(exc)
            log.warning("Immich cache: %s is not usable: %s", key, exc)
    return CacheScan(root, tuple(recipes), covered, skipped)


def _with_cache(settings: Settings, root: Path) -> Settings:
    from dataclasses import replace

    return replace(settings, immich_cache_folder=root)


def cache_roots(settings: Settings) -> list[Path]:
    """MACHINE_LEARNING_CACHE_FOLDER, then the models dir's copy made by `fetch-models --from <cache>`."""
    roots = [Path(settings.immich_cache_folder)] if settings.immich_cache_folder else []
    imported = Path(settings.models_dir) / IMPORTED_CACHE_DIR
    if imported.is_dir():
        roots.append(imported)
    return roots


def with_cache_recipes(book: RecipeBook, settings: Settings) -> RecipeBook:
    """The book plus the recipes synthesised from the Immich cache folders (the book itself when there are none)."""
    extra: dict[str, Recipe] = {}
    for root in cache_roots(settings):
        for recipe in scan_cache(RecipeBook([*book, *extra.values()]), settings, root).recipes:
            extra.setdefault(recipe.id, recipe)
    if not extra:
        return book
    return RecipeBook([*book, *extra.values()])


def load_recipe_book(settings: Settings) -> RecipeBook:
    """Shipped recipes, the user's recipes dir, and the Immich cache's models."""
    return with_cache_recipes(RecipeBook.load(settings.recipes_dir), settings)


def import_models(scan: CacheScan, models_dir: Path) -> list[tuple[str, str, str]]:
    """Copy the scanned cache's synthesised models into `<models_dir>/immich-cache/` (Immich's layout),
    each file through a `.part` renamed into place. Returns (recipe id, relative path, status)."""
    import os
    import shutil

    target_root = Path(models_dir) / IMPORTED_CACHE_DIR
    done = []
    for recipe in scan.recipes:
        folder = recipe.raw["immich_cache"]["folder"]  # "<task>/<model>/<type>": all of it (external weights too)
        rels = {spec.immich_path for spec in recipe.files if spec.immich_path}
        rels |= {f"{folder}/{p.name}" for p in (scan.root / folder).iterdir() if p.is_file() and not p.name.endswith(".part")}
        for rel in sorted(rels):
            source, target = scan.root / rel, target_root / rel
            if target.is_file() and target.stat().st_size == source.stat().st_size:
                done.append((recipe.id, rel, "present"))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(target.name + ".part")
            try:
                shutil.copyfile(source, part)
                with part.open("rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(part, target)
            except OSError as exc:
                part.unlink(missing_ok=True)
                done.append((recipe.id, rel, f"failed: {exc.strerror or exc}"))
                continue
            done.append((recipe.id, rel, "fetched"))
    return done
