"""What the server keeps for its lifetime: the session, the inference gate and the start-up loader.

The gate bounds work: `slots` predicts run at once (MACHINE_LEARNING_REQUEST_THREADS), at most
`max_queue` wait, and anything beyond is refused at once with 503 instead of piling up threads.
Models load in a background thread so /ping answers from the first moment.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

from hailo_immich_cli.errors import BackendUnavailableError, HailoImmichError
from hailo_immich_cli.models.resolve import RequestResolver, default_placement, preload_candidates
from hailo_immich_cli.server.metrics import Metrics
from hailo_immich_cli.server.protocol import PlanCache
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings, preload_from_env
from hailo_immich_cli.tasks import immich_pairs, recipe_tasks

log = logging.getLogger("hailo_immich.server")


class BusyError(Exception):
    """Every inference slot is taken and the wait queue is full."""


class Gate:
    """Admission to inference: at most `slots` predicts and `max_pixels` decoded pixels at once.

    A request that does not fit waits in arrival order (at most `max_queue` of them, for at most
    `wait_timeout` s); one that would exceed the queue is refused at once. The pixel budget bounds
    the memory that requests in flight hold: a few huge images wait for each other instead of
    being decoded together. A request alone always runs (the budget is never below one image).
    """

    def __init__(self, slots: int, max_queue: int, metrics: Metrics, wait_timeout: float, max_pixels: int | None = None):
        self.slots = max(1, slots)
        self.max_queue = max(0, max_queue)
        self.max_pixels = max_pixels if max_pixels is not None else 1 << 62
        self._lock = threading.Lock()
        self._running = 0
        self._pixels = 0
        # one condition per waiter, all on the gate's lock: only the head of the queue can be
        # admitted, so only it is woken (waking every waiter on each release cost GIL hand-offs)
        self._waiters: deque[threading.Condition] = deque()
        self._metrics = metrics
        self._timeout = wait_timeout

    @property
    def pixels_in_flight(self) -> int:
        return self._pixels

    @property
    def running(self) -> int:
        return self._running

    def _fits(self, pixels: int) -> bool:
        return self._running < self.slots and (self._running == 0 or self._pixels + pixels <= self.max_pixels)

    @contextmanager
    def slot(self, pixels: int = 0) -> Iterator[float]:
        """Hold one inference slot and `pixels` of the budget; yields the seconds spent waiting."""
        start = time.perf_counter()
        with self._lock:
            if self._waiters or not self._fits(pixels):
                self._wait(pixels)
            self._running += 1
            self._pixels += pixels
        self._metrics.adjust(in_flight=1)
        try:
            yield time.perf_counter() - start
        finally:
            self._metrics.adjust(in_flight=-1)
            with self._lock:
                self._running -= 1
                self._pixels -= pixels
                self._wake_head()

    def _wake_head(self) -> None:
        if self._waiters:
            self._waiters[0].notify()

    def _wait(self, pixels: int) -> None:
        """Queue behind earlier waiters (lock held); BusyError when the queue is full or time runs out."""
        if len(self._waiters) >= self.max_queue:
            self._metrics.adjust(rejected=1)
            raise BusyError(f"{self._running} requests running and {len(self._waiters)} waiting")
        me = threading.Condition(self._lock)
        self._waiters.append(me)
        self._metrics.adjust(queue=1)
        deadline = time.monotonic() + self._timeout
        try:
            while not (self._waiters[0] is me and self._fits(pixels)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BusyError(f"no inference slot within {self._timeout:.0f} s")
                me.wait(left)
        finally:
            self._waiters.remove(me)
            self._metrics.adjust(queue=-1)
            self._wake_head()  # the next waiter may fit now


@dataclass
class LoaderStatus:
    state: str = "pending"  # pending | loading | ready | partial
    planned: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "planned": list(self.planned),
            "loaded": list(self.loaded),
            "errors": dict(self.errors),
            "seconds": round(self.seconds, 3),
        }


def _files_present(session: SessionManager, recipe_id: str) -> bool:
    recipe = session.recipes.get(recipe_id)
    return all(s.state == "present" for s in session.files.states(recipe, verify_hash=False))


_DEPRECATED_PRELOAD = {
    "MACHINE_LEARNING_PRELOAD__CLIP": ("textual", "visual"),
    "MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION": ("detection", "recognition"),
}


def preload_plan(session: SessionManager, env: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """Per task, the default recipe and any prefer_when_present recipe whose files are present, plus
    the recipes MACHINE_LEARNING_PRELOAD__* names."""
    planned: list[str] = []
    errors: dict[str, str] = {}
    for task in recipe_tasks():
        try:
            candidates = preload_candidates(session, task)
        except BackendUnavailableError as exc:
            errors[task] = str(exc)
            continue
        except HailoImmichError:
            continue
        for recipe in candidates:
            if recipe.id not in planned and _files_present(session, recipe.id):
                planned.append(recipe.id)
    wanted = preload_from_env(env)
    for key, types in _DEPRECATED_PRELOAD.items():  # Immich's older one-level names still preload both steps
        value = next((v for k, v in env.items() if k.upper() == key and v.strip()), None)
        if value:
            log.warning("%s is deprecated in Immich; use %s__<TYPE>", key, key)
            for type_ in types:
                task = key.rsplit("__", 1)[1].lower().replace("_", "-")
                wanted.setdefault((task, type_), [v.strip() for v in value.split(",") if v.strip()])
    for (task, type_), names in sorted(wanted.items()):
        recipe_task = immich_pairs().get((task, type_))
        if recipe_task is None:
            errors[f"{task}/{type_}"] = "MACHINE_LEARNING_PRELOAD__ names an unknown task/type"
            continue
        for name in names:
            try:
                recipe_id = session.resolve(recipe_task, name).id
            except HailoImmichError as exc:
                errors[f"{task}/{type_}/{name}"] = str(exc)
                continue
            if recipe_id not in planned:
                planned.append(recipe_id)
    return planned, errors


class ServerState:
    def __init__(self, settings: Settings, session: SessionManager | None = None, env: Mapping[str, str] | None = None):
        self.settings = settings
        self.session = session if session is not None else SessionManager(settings)
        self.metrics = Metrics()
        self.env = dict(os.environ if env is None else env)
        # the budget always admits one largest image, or such an image could never run
        budget = max(settings.max_inflight_pixels, settings.max_image_pixels)
        self.gate = Gate(settings.request_threads, settings.max_queue, self.metrics, float(settings.worker_timeout), budget)
        self.http_stats: Any = None  # the HTTP loop's counters, once a worker serves
        self.loader = LoaderStatus()
        self.started = time.time()
        self._thread: threading.Thread | None = None
        # (task, Immich model name) -> recipe id for /predict, reporting requests served off the task's backend
        self.resolve_recipe = RequestResolver(self.session, settings.model_names_policy)
        self.plans = PlanCache(self.resolve_recipe, settings.model_names_policy)

    @property
    def off_backend(self) -> dict[str, str]:
        """Recipe id -> why it runs off the active backend (shown in /health)."""
        return self.resolve_recipe.off_backend

    def start_loading(self) -> threading.Thread:
        """Load models in the background; failures are recorded (and shown by /health), not fatal."""
        self._thread = threading.Thread(target=self._load, name="hailo-immich-preload", daemon=True)
        self._thread.start()
        return self._thread

    def _load(self) -> None:
        start = time.perf_counter()
        self.loader.state = "loading"
        for row in default_placement(self.session):  # where Immich's default models will run, said once at start
            log.info("placement: %s", row.line())
        try:
            planned, errors = preload_plan(self.session, self.env)
        except HailoImmichError as exc:
            planned, errors = [], {"backend": str(exc)}
        self.loader.planned = planned
        self.loader.errors.update(errors)
        for recipe_id in planned:
            try:
                self.session.model(recipe_id)
                self.loader.loaded.append(recipe_id)
            except HailoImmichError as exc:
                self.loader.errors[recipe_id] = str(exc)
                log.error("could not preload %s: %s", recipe_id, exc)
            except Exception as exc:  # a backend bug must not kill the loader thread silently
                self.loader.errors[recipe_id] = f"{type(exc).__name__}: {exc}"
                log.exception("could not preload %s", recipe_id)
        self.loader.seconds = time.perf_counter() - start
        self.loader.state = "ready" if not self.loader.errors else "partial"
        for message in sorted(set(errors.values())):
            log.error("preload: %s", message)
        log.info(
            "models ready in %.1f s: %s%s",
            self.loader.seconds,
            ", ".join(self.loader.loaded) or "none",
            f" ({len(self.loader.errors)} problem(s), see /health)" if self.loader.errors else "",
        )

    def wait_loaded(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
