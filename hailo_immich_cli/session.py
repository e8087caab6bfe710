"""SessionManager: the one object per process that owns the device and every loaded model.

Every command and the server get models the same way: `session.run(recipe_id, feeds)`. Loading is
lazy (or preloaded), thread-safe, and each model keeps counters. The backend a model runs on is
decided here, said out loud once, and attached to every result as provenance.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from hailo_immich_cli import memory
from hailo_immich_cli.backends.base import Backend, LoadedModel, Provenance
from hailo_immich_cli.errors import BackendUnavailableError, DeviceError, HailoImmichError
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import Recipe, RecipeBook
from hailo_immich_cli.settings import Settings

log = logging.getLogger("hailo_immich")


@dataclass
class ModelStats:
    calls: int = 0
    items: int = 0
    errors: int = 0
    device_s: float = 0.0
    host_s: float = 0.0
    load_s: float = 0.0
    batch_sizes: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "items": self.items,
            "errors": self.errors,
            "device_ms": round(self.device_s * 1000, 3),
            "host_ms": round(self.host_s * 1000, 3),
            "load_ms": round(self.load_s * 1000, 3),
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
        }


@dataclass(frozen=True)
class RunResult:
    outputs: dict[str, np.ndarray]
    provenance: Provenance
    device_s: float


def probe_hailo() -> tuple[bool, str]:
    """(True, device description) when hailo_platform imports and a device answers."""
    try:
        from hailo_immich_cli.backends import hailo
    except ImportError as exc:  # the backend module itself is part of this package
        return False, f"hailo backend unavailable: {exc}"
    return hailo.probe()


class SessionManager:
    def __init__(
        self,
        settings: Settings,
        recipes: RecipeBook | None = None,
        backends: Mapping[str, Backend] | None = None,
    ):
        self.settings = settings
        memory.tune_allocator()  # before any model or worker thread allocates (see memory.py)
        if recipes is None:
            from hailo_immich_cli.models.immich_cache import load_recipe_book

            recipes = load_recipe_book(settings)
        self.recipes = recipes
        self.files = ModelFiles(settings)
        self._backends: dict[str, Backend] = dict(backends or {})
        self._models: dict[str, LoadedModel] = {}
        self._stats: dict[str, ModelStats] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._active: str | None = None
        self._fallback_reason: str | None = None
        self.notices: list[str] = []

    # ---- backend choice -------------------------------------------------------------------
    @property
    def active_backend(self) -> str:
        """The backend models run on unless configured per task; decided once, announced loudly."""
        with self._lock:
            if self._active is None:
                self._active = self._decide_backend()
            return self._active

    @property
    def fallback_reason(self) -> str | None:
        """Why `auto` chose the CPU (None when it chose the NPU or the user chose explicitly)."""
        _ = self.active_backend
        return self._fallback_reason

    def _decide_backend(self) -> str:
        wanted = self.settings.backend
        if wanted == "cpu":
            self._notice("backend: cpu (ONNX Runtime), as configured")
            return "cpu"
        opened = self._backends.get("hailo")
        if opened is not None:  # this process already holds the device: probing would open a second VDevice, which HailoRT refuses
            self._notice(f"backend: hailo ({opened.info().get('device', 'open')})")
            return "hailo"
        ok, detail = probe_hailo()
        if ok:
            self._notice(f"backend: hailo ({detail})")
            return "hailo"
        if wanted == "hailo":
            raise BackendUnavailableError(f"backend 'hailo' was requested but cannot run: {detail}")
        self._fallback_reason = detail
        self._notice(
            f"NO HAILO DEVICE: {detail}. Running on the CPU backend (ONNX Runtime) instead. "
            "Set HAILO_IMMICH_BACKEND=hailo to make this an error.",
            level=logging.WARNING,
            cpu_fallback=detail,
        )
        return "cpu"

    def _notice(self, message: str, level: int = logging.INFO, **extra: str) -> None:
        self.notices.append(message)
        log.log(level, message, extra=extra)  # extra lets a one-off CLI command shorten the CPU fallback notice

    def backend(self, name: str) -> Backend:
        with self._lock:
            if name not in self._backends:
                self._backends[name] = self._create_backend(name)
            return self._backends[name]

    def _create_backend(self, name: str) -> Backend:
        if name == "cpu":
            from hailo_immich_cli.backends.cpu import CpuBackend

            return CpuBackend(self.settings)
        if name == "hailo":
            try:
                from hailo_immich_cli.backends.hailo import HailoBackend
            except ImportError as exc:
                raise BackendUnavailableError(f"hailo backend unavailable: {exc}") from exc
            return HailoBackend(self.settings)
        raise BackendUnavailableError(f"unknown backend '{name}'")

    # ---- which recipe serves a task -------------------------------------------------------
    def backend_for_task(self, task: str) -> str:
        return self.settings.model_backends.get(task) or self.active_backend

    def resolve(self, task: str, name: str | None = None) -> Recipe:
        """The recipe for a task: a recipe id, else an Immich model name, else the default (see resolve.py)."""
        from hailo_immich_cli.models.resolve import resolve

        return resolve(self, task, name)

    def task_backends(self) -> dict[str, dict[str, Any]]:
        """Per task: the backend it runs on and which setting decided it (for /health and reports)."""
        from hailo_immich_cli.tasks import recipe_tasks

        out: dict[str, dict[str, Any]] = {}
        for task in recipe_tasks():
            pinned = self.settings.model_backends.get(task)
            entry: dict[str, Any] = {
                "backend": pinned or self.active_backend,
                "source": "HAILO_IMMICH_MODEL_BACKENDS" if pinned else "active backend",
            }
            if self.settings.task_recipes.get(task):
                entry["recipe"] = self.settings.task_recipes[task]
            out[task] = entry
        return out

    # ---- models ---------------------------------------------------------------------------
    def model(self, recipe_id: str) -> LoadedModel:
        """The loaded model for a recipe, loading it on first use (one loader per recipe)."""
        model = self._models.get(recipe_id)
        if model is not None:
            return model
        recipe = self.recipes.get(recipe_id)
        with self._lock:
            lock = self._load_locks.setdefault(recipe_id, threading.Lock())
        with lock:
            model = self._models.get(recipe_id)
            if model is not None:
                return model
            start = time.perf_counter()
            model = self.backend(recipe.backend).load(recipe, self.files)
            elapsed = time.perf_counter() - start
            with self._lock:
                self._models[recipe_id] = model
                self._stats.setdefault(recipe_id, ModelStats()).load_s += elapsed
            self._notice(f"loaded {recipe_id} on {model.provenance.backend}: {model.provenance.device} ({elapsed * 1000:.0f} ms)")
            return model

    def preload(self, recipe_ids: list[str]) -> None:
        for recipe_id in recipe_ids:
            self.model(recipe_id)

    def loaded(self) -> dict[str, LoadedModel]:
        with self._lock:
            return dict(self._models)

    def run(self, recipe_id: str, feeds: Mapping[str, np.ndarray]) -> RunResult:
        model = self.model(recipe_id)
        n = int(next(iter(feeds.values())).shape[0])
        start = time.perf_counter()
        try:
            outputs = model.run(feeds)
        except HailoImmichError:
            self._count(recipe_id, error=True)
            raise
        except Exception as exc:
            self._count(recipe_id, error=True)
            raise DeviceError(f"{recipe_id} failed on {model.provenance.backend}: {exc}") from exc
        elapsed = time.perf_counter() - start
        self._count(recipe_id, items=n, device_s=elapsed)
        return RunResult(outputs, model.provenance, elapsed)

    def _count(self, recipe_id: str, items: int = 0, device_s: float = 0.0, error: bool = False) -> None:
        with self._lock:
            stats = self._stats.setdefault(recipe_id, ModelStats())
            if error:
                stats.errors += 1
                return
            stats.calls += 1
            stats.items += items
            stats.device_s += device_s
            stats.batch_sizes[items] = stats.batch_sizes.get(items, 0) + 1

    @contextmanager
    def host_time(self, recipe_id: str) -> Iterator[None]:
        """Wrap a pipeline's pre/post-processing so the model's host time is counted."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._stats.setdefault(recipe_id, ModelStats()).host_s += elapsed

    def stats(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {rid: s.as_dict() for rid, s in sorted(self._stats.items())}

    def health(self) -> dict[str, Any]:
        """What /health and reports show: backend per model, device, runtime, counters."""
        models = {
            rid: {**m.provenance.as_dict(), "task": m.recipe.task} for rid, m in sorted(self.loaded().items())
        }
        with self._lock:
            backends = {name: b.info() for name, b in self._backends.items()}
        cache = self.settings.immich_cache_folder
        return {
            "active_backend": self.active_backend,
            "fallback_reason": self._fallback_reason,
            "task_backends": self.task_backends(),
            "immich_cache": {
                "folder": str(cache) if cache else None,
                "recipes": sorted(r.id for r in self.recipes if "immich_cache" in r.raw),
            },
            "backends": backends,
            "models": models,
            "stats": self.stats(),
        }

    def close(self) -> None:
        with self._lock:
            models, self._models = dict(self._models), {}
            backends, self._backends = dict(self._backends), {}
        for model in models.values():
            model.close()
        for backend in backends.values():
            backend.close()

    def __enter__(self) -> "SessionManager":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
