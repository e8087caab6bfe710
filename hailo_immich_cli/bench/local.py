"""`hailo-immich bench` on this machine: device-only rate, host cost, end-to-end per task.

Three numbers per model that published figures blur together:
- device-only: `session.run` on a synthetic batch built from the loaded model's own tensor info,
  no pre/post-processing (what the NPU or ONNX Runtime alone delivers);
- host: the pipelines' pre/post-processing time per item (`session.host_time` counters);
- end-to-end: a whole task (faces, clip, ocr) on real decoded images.
Every cell of a `--batch` x `--threads` (x `--intra-op` on the CPU) sweep gets a fresh session whose
recipes carry that batch size, and the batch sizes the backend really received are read back from
`session.stats()` so a sweep can never silently measure the same thing twice.

The JSON report (`SCHEMA_VERSION`) is documented in docs/bench.md; fields are only ever added.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hailo_immich_cli.backends.base import LoadedModel, TensorInfo
from hailo_immich_cli.bench.timing import LoopResult, host_info, loop_summary, report_header, timed_loop
from hailo_immich_cli.errors import (
    BadInputError,
    DeviceError,
    HailoImmichError,
    UnknownModelError,
)
from hailo_immich_cli.models.recipes import Recipe, RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.tasks import bench_jobs, by_name, registry
from hailo_immich_cli.tensors import image_input

SCHEMA_VERSION = 1

# `--task` names: every benchmark job of the registry's tasks (CLIP has images and text queries).
TASKS: tuple[str, ...] = tuple(bench_jobs())
DEFAULT_TASKS: tuple[str, ...] = tuple(t.name for t in registry())

BUSY_HINT = (
    "the Hailo device is held by another process (HAILO_OUT_OF_PHYSICAL_DEVICES), probably `hailo-immich serve`. "
    "Stop it, or run both through HailoRT's multi-process service: start `hailort_service` "
    "(systemctl start hailort.service) and set HAILO_IMMICH_MULTI_PROCESS_SERVICE=1 for serve and bench"
)

SAMPLE_TEXTS = ("a photo of a dog on a beach", "birthday cake with candles", "snowy mountain at sunset")


# ---- provenance of the measurement ---------------------------------------------------------
def hailo_emulated() -> bool:
    """True when the imported hailo_platform is a test double (it sets `__emulated__ = True`)."""
    module = sys.modules.get("hailo_platform")
    return bool(getattr(module, "__emulated__", False)) if module is not None else False


def _pick(info: dict[str, Any], *words: str) -> Any:
    for key, value in info.items():
        if all(w in key.lower() for w in words):
            return value
    return None


def _hailort_version(info: dict[str, Any]) -> str | None:
    found = _pick(info, "hailort")
    if found:
        return str(found)
    runtime = str(info.get("runtime") or "")
    return runtime.split()[-1] if runtime.startswith("HailoRT ") else None


def _driver_version() -> str | None:
    """The loaded hailo_pci kernel module's version (Linux sysfs), if any."""
    try:
        return Path("/sys/module/hailo_pci/version").read_text().strip() or None
    except OSError:
        return None


def backend_report(session: SessionManager, name: str, fallback_reason: str | None = None) -> dict[str, Any]:
    """Backend, device and runtime versions (HailoRT, driver) as the backend states them."""
    info = dict(session.backend(name).info())
    emulated = name == "hailo" and hailo_emulated()
    return {
        "name": name,
        "emulated": emulated,
        "device": info.get("device"),
        "runtime": info.get("runtime"),
        "hailort_version": _hailort_version(info) if name == "hailo" else None,
        "driver_version": (_pick(info, "driver") or _driver_version()) if name == "hailo" else None,
        "fallback_reason": fallback_reason,
        "info": info,
    }


def _explain(exc: BaseException) -> HailoImmichError | None:
    """Turn 'device busy' anywhere in an exception chain into the multi-process-service advice."""
    seen = exc
    while seen is not None:
        if "OUT_OF_PHYSICAL_DEVICES" in str(seen) or "OUT_OF_PHYSICAL_DEVICES" in type(seen).__name__.upper():
            return DeviceError(BUSY_HINT)
        seen = seen.__cause__ or seen.__context__
    return None


def open_model(session: SessionManager, recipe_id: str) -> LoadedModel:
    try:
        return session.model(recipe_id)
    except Exception as exc:
        better = _explain(exc)
        if better is not None:
            raise better from exc
        raise


# ---- synthetic inputs ------------------------------------------------------------------------
def _image_side(recipe: Recipe) -> tuple[int, int]:
    """The H, W a pipeline would feed a dynamic-size image model (from the recipe's preprocess)."""
    pre = recipe.preprocess
    if "height" in pre and "width" in pre:
        return int(pre["height"]), int(pre["width"])
    side = int(pre.get("max_side") or pre.get("max_resolution") or pre.get("size") or 640)
    multiple = int(pre.get("multiple", 1) or 1)
    side = max(multiple, side // multiple * multiple)
    return side, side


def _layout(recipe: Recipe, info: TensorInfo, index: int) -> str | None:
    spec = recipe.inputs[index] if index < len(recipe.inputs) else None
    return (spec.layout if spec and spec.layout else None) or info.layout


def frame_shape(recipe: Recipe, info: TensorInfo, index: int = 0) -> tuple[int, ...]:
    """One frame's concrete shape: the model's static dims, dynamic ones from the recipe.

    A recipe may pin it with `[bench] input_shapes = { name = [...] }` (per frame, no batch dim).
    """
    pinned = recipe.raw.get("bench", {}).get("input_shapes", {}).get(info.name)
    if pinned:
        return tuple(int(v) for v in pinned)
    shape = list(info.shape)
    layout = _layout(recipe, info, index)
    if len(shape) == 3 and None in shape:
        h, w = _image_side(recipe)
        if layout in ("NCHW",) or (layout is None and shape[0] == 3):
            hw = (1, 2)
        else:
            hw = (0, 1)
        for pos, value in zip(hw, (h, w)):
            if shape[pos] is None:
                shape[pos] = value
    if len(shape) == 1 and shape[0] is None:  # token ids
        shape[0] = int(recipe.raw.get("tokenizer", {}).get("context_length", 77))
    if any(d is None for d in shape):
        raise BadInputError(
            f"recipe {recipe.id}: input '{info.name}' has dynamic dims {info.shape}; pin them with "
            f"[bench] input_shapes = {{ \"{info.name}\" = [...] }} in {recipe.path.name}"
        )
    return tuple(int(d) for d in shape)


def _is_image(info: TensorInfo, shape: tuple[int, ...]) -> bool:
    return len(shape) == 3 and (shape[0] == 3 or shape[-1] == 3)


def synthetic_feeds(model: LoadedModel, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch the model accepts, built from its TensorInfo (images go through the recipe's preprocess)."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for index, info in enumerate(model.inputs):
        shape = frame_shape(model.recipe, info, index)
        if index == 0 and _is_image(info, shape):
            hw = shape[1:] if shape[0] == 3 and shape[-1] != 3 else shape[:2]
            rgb = rng.integers(0, 256, size=(batch, hw[0], hw[1], 3), dtype=np.uint8)
            tensor = image_input(rgb, model.recipe)
            if tuple(tensor.shape[1:]) == shape and str(tensor.dtype) == info.dtype:
                feeds[info.name] = tensor
                continue
        dtype = np.dtype(info.dtype)
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal((batch, *shape)).astype(dtype)
        elif dtype.kind in "iu":
            high = 256 if dtype.itemsize == 1 else 100
            feeds[info.name] = rng.integers(0, high, size=(batch, *shape)).astype(dtype)
        else:
            feeds[info.name] = np.zeros((batch, *shape), dtype=dtype)
    return feeds


# ---- images for end-to-end -----------------------------------------------------------------
def synthetic_images(n: int = 4, size: tuple[int, int] = (1440, 1920), seed: int = 0) -> list[np.ndarray]:
    """Preview-sized RGB images with printed text and shapes (no faces: say so in the report)."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    h, w = size
    for i in range(n):
        y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        base = rng.uniform(60, 200, size=3).astype(np.float32)
        img = np.clip(base + 50 * y - 40 * x + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        for _ in range(6):
            c = tuple(int(v) for v in rng.integers(0, 256, 3))
            p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(img, p, int(rng.integers(20, h // 6)), c, -1)
        for line in range(4):
            text = f"BENCH {i}-{line} HAILO IMMICH {int(rng.integers(1000, 9999))}"
            org = (int(w * 0.05), int(h * (0.2 + 0.18 * line)))
            cv2.rectangle(img, (org[0] - 10, org[1] - 45), (org[0] + int(w * 0.8), org[1] + 15), (250, 250, 250), -1)
            cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 1.4, (10, 10, 10), 3, cv2.LINE_AA)
        images.append(np.ascontiguousarray(img))
    return images


@dataclass
class ImageSet:
    images: list[np.ndarray]
    source: str
    decode_ms: dict[str, float | None] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        shapes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in self.images})
        return {"source": self.source, "count": len(self.images), "sizes": shapes,
                "decode_ms": self.decode_ms, "skipped": self.skipped}


def load_images(folder: Path | None, limit: int = 16, max_pixels: int = 100_000_000) -> ImageSet:
    """Decode up to `limit` images from a folder (timed, like the service decodes), or make synthetic ones."""
    from hailo_immich_cli.batch.scan import iter_image_files
    from hailo_immich_cli.bench.timing import percentiles_ms
    from hailo_immich_cli.imaging import decode_image

    if folder is None:
        return ImageSet(synthetic_images(), "synthetic (1920x1440 like Immich previews, printed text, no faces)")
    if not Path(folder).is_dir():
        raise BadInputError(f"--images: {folder} is not a folder")
    images, times, skipped = [], [], []
    for path in itertools.islice(iter_image_files([folder]), limit * 4):
        if len(images) >= limit:
            break
        t0 = time.perf_counter()
        try:
            decoded = decode_image(path, max_pixels=max_pixels, exif_transpose=True)
        except (BadInputError, OSError) as exc:
            skipped.append(str(exc))
            continue
        times.append(time.perf_counter() - t0)
        images.append(decoded.rgb)
    if not images:
        raise BadInputError(f"--images: no decodable image in {folder}")
    return ImageSet(images, str(folder), percentiles_ms(times), skipped)


# ---- sessions per sweep cell ------------------------------------------------------------------
def book_with_batch(book: RecipeBook, recipe_ids: Iterable[str], batch: int) -> RecipeBook:
    """The same recipes, with `batch_size` set to `batch` on the named ones (device batch for HEFs)."""
    ids = set(recipe_ids)
    return RecipeBook(
        dataclasses.replace(r, batch_size=batch, raw={**r.raw, "batch_size": batch}) if r.id in ids else r for r in book
    )


def _stats_delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-model counters accumulated between two session.stats() snapshots."""
    delta = {}
    for rid, now in after.items():
        old = before.get(rid, {})
        calls = now["calls"] - old.get("calls", 0)
        items = now["items"] - old.get("items", 0)
        device_ms = now["device_ms"] - old.get("device_ms", 0.0)
        host_ms = now["host_ms"] - old.get("host_ms", 0.0)
        sizes = {int(k): v - old.get("batch_sizes", {}).get(k, 0) for k, v in now["batch_sizes"].items()}
        sizes = {k: v for k, v in sorted(sizes.items()) if v > 0}
        if calls <= 0 and host_ms <= 0:
            continue
        delta[rid] = {
            "calls": calls,
            "items": items,
            "errors": now["errors"] - old.get("errors", 0),
            "device_ms_per_call": round(device_ms / calls, 3) if calls else None,
            "device_ms_per_item": round(device_ms / items, 3) if items else None,
            "host_ms_per_item": round(host_ms / items, 3) if items else None,
            "batch_sizes": sizes,
            "max_batch_seen": max(sizes) if sizes else None,
        }
    return delta


@dataclass
class BenchOptions:
    tasks: tuple[str, ...] = DEFAULT_TASKS
    recipes: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1,)
    threads: tuple[int, ...] = (1,)
    intra_op: tuple[int, ...] = ()
    warmup: int = 2
    duration_s: float | None = 5.0
    count: int | None = None
    device_only: bool = True
    end_to_end: bool = True
    max_latency_ms: float | None = None
    host_paths: tuple[str, ...] = ()  # measure host CPU per request from the encoded image on these paths


class Bench:
    """Runs the sweep; `progress` gets one line per measured cell (the CLI prints it to stderr)."""

    def __init__(self, settings: Settings, book: RecipeBook, options: BenchOptions,
                 images: ImageSet | None = None, progress: Callable[[str], None] | None = None,
                 session_factory: Callable[[Settings, RecipeBook], SessionManager] | None = None,
                 encoded: bytes | None = None):
        self.settings = settings
        self.encoded = encoded  # one encoded image (a JPEG preview) for the host-path measurement
        self.host_path = "exact"  # resolved from the settings and the backend when the run starts
        self.book = book
        self.opts = options
        self.images = images
        self.progress = progress or (lambda _msg: None)
        self.session_factory = session_factory or (lambda s, b: SessionManager(s, b))
        self.notices: list[str] = []
        self.models: dict[str, dict[str, Any]] = {}
        self.backend: dict[str, Any] | None = None
        self._fallback: str | None = None

    # -- which recipes --------------------------------------------------------------------
    def _plan(self, probe: SessionManager) -> tuple[list[Recipe], dict[str, dict[str, Recipe]]]:
        """Models for device-only, and per task the recipe of each stage (explicit --recipe wins)."""
        chosen = [self.book.get(rid) for rid in self.opts.recipes]
        by_task = {r.task: r for r in chosen}
        plan: dict[str, dict[str, Recipe]] = {}
        found: list[Recipe] = []
        missing: list[str] = []
        for task in self.opts.tasks:
            if task not in TASKS:
                raise BadInputError(f"--task: unknown task '{task}' (choose from {', '.join(TASKS)})")
            owner, job = bench_jobs()[task]
            stages: dict[str, Recipe] = {}
            for recipe_task in job.stages:
                try:
                    recipe = by_task.get(recipe_task) or probe.resolve(recipe_task)
                except UnknownModelError as exc:
                    missing.append(f"{task}: {exc}")
                    continue
                if recipe.id not in self.opts.recipes and probe.files.find(recipe, recipe.file("model")) is None:
                    missing.append(f"{task}: the {recipe_task} model file of recipe '{recipe.id}' is missing "
                                   f"(run: hailo-immich fetch-models --recipe {recipe.id})")
                    continue
                stages[recipe_task] = recipe
            found.extend(stages.values())
            partial = owner.bench_partial(job, stages) if len(stages) < len(job.stages) else None
            if partial:
                self.notices.append(f"{task}: {partial} ({missing.pop()})")
                plan[task] = stages
            elif len(stages) == len(job.stages):
                plan[task] = stages
        self.notices.extend(f"skipped {m}" for m in missing)
        models = chosen or found
        unique = list({r.id: r for r in models}.values())
        return unique, plan

    def _settings_for(self, intra: int | None, batch: int | None, task: str | None) -> Settings:
        overrides: dict[str, Any] = {}
        if intra is not None:
            overrides["intra_op_threads"] = intra
        setting = bench_jobs()[task][1].batch_setting if task is not None else None
        if batch is not None and setting:
            overrides[setting] = batch
        return self.settings.with_overrides(**overrides) if overrides else self.settings

    def _describe(self, session: SessionManager, model: LoadedModel) -> None:
        if model.recipe.id in self.models:
            return
        prov = model.provenance
        self.models[model.recipe.id] = {
            "recipe_id": model.recipe.id,
            "task": model.recipe.task,
            "backend": prov.backend,
            "model_sha256": prov.model_sha256,
            "model_id": prov.model_id,
            "device": prov.device,
            "runtime": prov.runtime,
            "recipe_batch_size": next((r.batch_size for r in self.book if r.id == model.recipe.id), None),
            "load_ms": session.stats().get(model.recipe.id, {}).get("load_ms"),
            "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in model.inputs],
        }
        if self.backend is None:
            self.backend = backend_report(session, prov.backend, self._fallback)

    def _warm(self, work: Callable[[], int]) -> None:
        for _ in range(self.opts.warmup):
            work()

    def _loop(self, work: Callable[[], int], threads: int) -> LoopResult:
        return timed_loop(work, threads=threads, duration_s=self.opts.duration_s, count=self.opts.count,
                          classify_error=lambda exc: f"{type(exc).__name__}: {str(exc)[:120]}")

    def _intra_values(self, backend: str) -> list[int | None]:
        if not self.opts.intra_op:
            return [None]
        if backend != "cpu":
            self.notices.append("--intra-op applies to the cpu backend only; ignored")
            return [None]
        return list(self.opts.intra_op)

    # -- device-only ----------------------------------------------------------------------
    def device_only(self, recipe: Recipe) -> list[dict[str, Any]]:
        cells = []
        for intra in self._intra_values(recipe.backend):
            for batch in self.opts.batches:
                book = book_with_batch(self.book, [recipe.id], batch)
                with self.session_factory(self._settings_for(intra, None, None), book) as session:
                    model = open_model(session, recipe.id)
                    self._describe(session, model)
                    feeds = synthetic_feeds(model, batch)

                    def work(session: SessionManager = session, feeds: dict = feeds, batch: int = batch) -> int:
                        session.run(recipe.id, feeds)
                        return batch

                    for threads in self.opts.threads:
                        self._warm(work)
                        before = session.stats()
                        loop = self._loop(work, threads)
                        delta = _stats_delta(before, session.stats()).get(recipe.id, {})
                        cell = {"batch": batch, "threads": threads, "intra_op_threads": intra,
                                **loop_summary(loop), "batch_sizes": delta.get("batch_sizes", {}),
                                "device_ms_per_call": delta.get("device_ms_per_call")}
                        cells.append(cell)
                        self.progress(f"device {recipe.id} batch={batch} threads={threads}"
                                      f"{'' if intra is None else f' intra-op={intra}'}: "
                                      f"{cell['items_per_s']:.1f} items/s, p50 {cell['latency_ms']['p50']} ms")
        return with_speedup(cells)

    # -- end-to-end -----------------------------------------------------------------------
    def _work_for(self, task: str, session: SessionManager, stages: dict[str, Recipe], batch: int,
                  found: list[int]) -> Callable[[], int]:
        """One end-to-end call; appends what it found (faces, text lines) per image to `found`."""
        assert self.images is not None
        images = self.images.images
        counter = itertools.count()

        def next_image() -> np.ndarray:
            return images[next(counter) % len(images)]

        def next_texts(batch: int) -> list[str]:
            n = next(counter)
            return [SAMPLE_TEXTS[(n + i) % len(SAMPLE_TEXTS)] for i in range(batch)]

        owner, job = bench_jobs()[task]
        return owner.bench_work(job, session, stages, batch, next_image, next_texts, found, self.host_path)

    def end_to_end(self, task: str, stages: dict[str, Recipe]) -> list[dict[str, Any]]:
        wanted = bench_jobs()[task][1].batch_stage
        batch_task = wanted if wanted in stages else next(iter(stages))
        batch_recipe = stages[batch_task].id
        batches = list(self.opts.batches)
        if batch_task != wanted and batches != [1]:
            self.notices.append(f"{task}: no {wanted} stage, so the batch sweep does not apply; batch 1 only")
            batches = [1]
        cells = []
        for intra in self._intra_values(stages[batch_task].backend):
            for batch in batches:
                book = book_with_batch(self.book, [batch_recipe], batch)
                with self.session_factory(self._settings_for(intra, batch, task), book) as session:
                    for recipe in stages.values():
                        self._describe(session, open_model(session, recipe.id))
                    try:
                        found: list[int] = []
                        work = self._work_for(task, session, stages, batch, found)
                    except ImportError as exc:
                        self.notices.append(f"{task}: end-to-end skipped, its pipeline is not available ({exc})")
                        return with_speedup(cells)
                    for threads in self.opts.threads:
                        self._warm(work)
                        found.clear()
                        before = session.stats()
                        loop = self._loop(work, threads)
                        per_model = _stats_delta(before, session.stats())
                        seen = per_model.get(batch_recipe, {}).get("max_batch_seen")
                        cell = {"batch": batch, "threads": threads, "intra_op_threads": intra,
                                **loop_summary(loop), "batch_recipe": batch_recipe,
                                "batch_applies": batch_task == wanted,
                                "found_per_image": round(sum(found) / len(found), 3) if found else None,
                                "batch_honoured": None if seen is None else seen <= batch,
                                "models": per_model}
                        cells.append(cell)
                        self.progress(f"{task} batch={batch} threads={threads}"
                                      f"{'' if intra is None else f' intra-op={intra}'}: "
                                      f"{cell['items_per_s']:.2f} images/s, p50 {cell['latency_ms']['p50']} ms")
        return with_speedup(cells)

    # -- host CPU per request, per host path ------------------------------------------------
    def measure_host_paths(self, plan: dict[str, dict[str, Recipe]]) -> dict[str, Any]:
        """Host CPU per image request from the encoded image, on each asked host path (host_paths.py)."""
        from hailo_immich_cli.bench import host_paths

        if self.encoded is None:
            from hailo_immich_cli.bench.loadtest import image_bytes

            self.encoded = image_bytes(None)[0][0]
        cells = []
        for task, stages in plan.items():
            if task not in by_name() or any(rt not in stages for _, rt in host_paths.image_steps(task)):
                continue  # text jobs, and tasks missing a stage's model
            with self.session_factory(self.settings, self.book) as session:
                for path in self.opts.host_paths:
                    cell = host_paths.measure(session, task, stages, self.encoded, path, count=self.opts.count or 30,
                                              warmup=max(1, self.opts.warmup))
                    self.progress(f"host path {path} {task}: {cell['host_cpu_ms']['p50']} ms host CPU per request (decoded {cell['decoded']})")
                    cells.append(cell)
        return {"cells": cells, "compare": host_paths.compare(cells)}

    # -- everything -------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        started = datetime.now(timezone.utc)
        with self.session_factory(self.settings, self.book) as probe:
            try:
                active = probe.active_backend
            except Exception as exc:  # noqa: BLE001 - re-raised; explained when the device is busy
                better = _explain(exc)
                if better is not None:
                    raise better from exc
                raise
            self._fallback = probe.fallback_reason
            if self._fallback and "OUT_OF_PHYSICAL_DEVICES" in self._fallback:
                raise DeviceError(BUSY_HINT)  # a CPU benchmark instead would answer a question nobody asked
            self.notices.extend(probe.notices)
            models, plan = self._plan(probe)
        if self.settings.backend == "auto":  # decided once: cell sessions must not probe (and warn) again
            self.settings = self.settings.with_overrides(backend=active)
        from hailo_immich_cli import host_path

        self.host_path = host_path.resolve(self.settings.host_path, active)
        per_config = max(1, len(self.opts.intra_op)) * len(self.opts.batches) * len(self.opts.threads)
        cells = per_config * ((len(models) if self.opts.device_only else 0) + (len(plan) if self.opts.end_to_end else 0))
        bound = f"about {cells * self.opts.duration_s:.0f} s" if self.opts.duration_s else f"{self.opts.count} calls each"
        self.progress(f"{cells} cells to measure ({bound}, plus warm-up and model loads)")
        device: dict[str, list[dict[str, Any]]] = {}
        if self.opts.device_only:
            for recipe in models:
                device[recipe.id] = self.device_only(recipe)
        tasks: dict[str, dict[str, Any]] = {}
        if self.opts.end_to_end:
            if self.images is None:
                self.images = load_images(None)
            for task in plan:
                note = bench_jobs()[task][0].synthetic_images_note if self.images.source.startswith("synthetic") else None
                if note:
                    self.notices.append(f"{task}: {note}")
            for task, stages in plan.items():
                if self.opts.recipes and not any(r.id in self.opts.recipes for r in stages.values()):
                    continue
                cells = self.end_to_end(task, stages)
                if cells:
                    tasks[task] = {"recipes": {t: r.id for t, r in stages.items()}, "cells": cells}
        host_paths = self.measure_host_paths(plan) if self.opts.host_paths else None
        if self.backend is None:
            with self.session_factory(self.settings, self.book) as probe:
                self.backend = backend_report(probe, active, self._fallback)
        report = {
            **report_header("local", SCHEMA_VERSION, started),
            "emulated": bool(self.backend.get("emulated")),
            "backend": self.backend,
            "host": host_info(),
            "options": {
                "tasks": list(self.opts.tasks), "recipes": list(self.opts.recipes),
                "batches": list(self.opts.batches), "threads": list(self.opts.threads),
                "intra_op_threads": list(self.opts.intra_op), "warmup": self.opts.warmup,
                "duration_s": self.opts.duration_s, "count": self.opts.count,
                "max_latency_ms": self.opts.max_latency_ms,
            },
            "images": self.images.as_dict() if self.images is not None and tasks else None,
            "models": [{**self.models[rid], "device_only": device.get(rid, [])} for rid in self.models],
            "tasks": tasks,
            "host_path": self.host_path,
            "host_paths": host_paths,
            "notices": self.notices,
        }
        report["advice"] = advise_local(report, self.opts.max_latency_ms)
        return report


def with_speedup(cells: list[dict[str, Any]], key: str = "items_per_s") -> list[dict[str, Any]]:
    """Each cell's throughput as a ratio to the sweep's first cell, measured in the same run."""
    base = cells[0].get(key) if cells else None
    for cell in cells:
        cell["speedup_vs_first"] = round(cell[key] / base, 3) if base else None
    return cells


# ---- advice ---------------------------------------------------------------------------------


def best_cell(cells: Sequence[dict[str, Any]], max_latency_ms: float | None, key: str = "items_per_s") -> tuple[dict[str, Any] | None, bool]:
    """Highest throughput whose p95 latency is within the bound (and with no errors).

    Returns (cell, within_bound); when no cell meets the bound, the lowest-latency cell and False.
    """
    usable = [c for c in cells if c.get(key) and not c.get("errors") and c["latency_ms"]["p95"] is not None]
    if not usable:
        return None, False
    within = [c for c in usable if max_latency_ms is None or c["latency_ms"]["p95"] <= max_latency_ms]
    if within:
        return max(within, key=lambda c: (c[key], -c["latency_ms"]["p95"])), True
    return min(usable, key=lambda c: c["latency_ms"]["p95"]), False


def advise_local(report: dict[str, Any], max_latency_ms: float | None) -> list[dict[str, Any]]:
    """Per task: the swept settings with the best images/s within the latency bound, as env vars."""
    advice = []
    bound = f"p95 <= {max_latency_ms:g} ms" if max_latency_ms is not None else "no latency bound"
    for task, data in report["tasks"].items():
        cells = data["cells"]
        cell, ok = best_cell(cells, max_latency_ms)
        if cell is None:
            continue
        env: dict[str, str] = {"MACHINE_LEARNING_REQUEST_THREADS": str(cell["threads"])}
        if cell.get("intra_op_threads") is not None:
            env["MACHINE_LEARNING_MODEL_INTRA_OP_THREADS"] = str(cell["intra_op_threads"])
        applies = cell.get("batch_applies", False)
        batch_env = bench_jobs()[task][1].batch_env if task in bench_jobs() else None
        if batch_env and applies:
            env[batch_env] = str(cell["batch"])
        recipe_batch = {cell["batch_recipe"]: cell["batch"]} if applies and len(report["options"]["batches"]) > 1 else {}
        advice.append({
            "scope": task,
            "within_bound": ok,
            "bound": bound,
            "env": env,
            "recipe_batch_size": recipe_batch,
            "items_per_s": cell["items_per_s"],
            "latency_ms": cell["latency_ms"],
            "text": (
                ("" if ok else f"no setting met {bound}; lowest latency: ")
                + " ".join(f"{k}={v}" for k, v in env.items())
                + "".join(f" (recipe {rid}: batch_size = {b})" for rid, b in recipe_batch.items())
                + f" -> {cell['items_per_s']:.2f} images/s, p95 {cell['latency_ms']['p95']:.0f} ms"
            ),
        })
    for model in report["models"]:
        cells = model.get("device_only") or []
        if len(cells) < 2:
            continue
        cell, ok = best_cell(cells, max_latency_ms)
        if cell is None:
            continue
        env = {}
        if cell.get("intra_op_threads") is not None:
            env["MACHINE_LEARNING_MODEL_INTRA_OP_THREADS"] = str(cell["intra_op_threads"])
        advice.append({
            "scope": f"device-only {model['recipe_id']}",
            "within_bound": ok,
            "bound": bound,
            "env": env,
            "recipe_batch_size": {model["recipe_id"]: cell["batch"]},
            "items_per_s": cell["items_per_s"],
            "latency_ms": cell["latency_ms"],
            "text": (
                ("" if ok else f"no setting met {bound}; lowest latency: ")
                + f"recipe batch_size = {cell['batch']} with {cell['threads']} concurrent caller(s)"
                + "".join(f" {k}={v}" for k, v in env.items())
                + f" -> {cell['items_per_s']:.1f} items/s, p95 {cell['latency_ms']['p95']:.1f} ms per call"
            ),
        })
    return advice
