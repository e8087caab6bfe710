"""Every knob in one place: CLI flag > environment variable > default.

Names that Immich's own machine-learning service reads (IMMICH_*, MACHINE_LEARNING_*) mean the same
thing here, so a user can swap containers without rewriting their compose file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

from hailo_immich_cli.errors import BadInputError

BACKEND_CHOICES = ("auto", "hailo", "cpu")


def _default_models_dir() -> Path:
    repo_models = Path(__file__).resolve().parent.parent / "models"
    if repo_models.is_dir():
        return repo_models
    return Path.home() / ".cache" / "hailo-immich" / "models"


def _cpu_count() -> int:
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Setting:
    """How one field is read from the environment (first name found wins)."""

    env: tuple[str, ...]
    help: str


@dataclass(frozen=True)
class Settings:
    backend: str = "auto"
    models_dir: Path = field(default_factory=_default_models_dir)
    recipes_dir: Path | None = None
    immich_cache_folder: Path | None = None
    host: str = "[::]"
    port: int = 3003
    log_level: str = "info"
    no_color: bool = False
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    request_threads: int = field(default_factory=_cpu_count)
    worker_timeout: int = 300
    keepalive_timeout: int = 2
    header_timeout_s: float = 5.0
    min_upload_bytes_per_s: int = 32 * 1024
    max_buffered_bytes: int = 256 * 1024 * 1024
    max_inflight_pixels: int = 200_000_000
    model_arena: bool = False
    ort_spin_us: int = 0
    max_batch_faces: int = 0
    max_batch_ocr: int = 6
    max_image_pixels: int = 100_000_000
    max_request_bytes: int = 64 * 1024 * 1024
    ocr_max_resolution: int = 2048
    max_queue: int = 32
    model_backends: Mapping[str, str] = field(default_factory=dict)
    task_recipes: Mapping[str, str] = field(default_factory=dict)
    model_names_policy: str = "strict"
    hailo_multi_process_service: bool = False
    hailo_timeout_ms: int = 10_000
    host_path: str = "auto"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from env, then apply CLI overrides (None means 'flag not given')."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            spec = ENV.get(f.name)
            if spec is None:
                continue
            for name in spec.env:
                raw = env.get(name)
                if raw is not None and raw != "":
                    values[f.name] = _parse(f.name, name, raw, f.type)
                    break
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    def with_overrides(self, **overrides: Any) -> "Settings":
        changed = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        changed.validate()
        return changed

    def validate(self) -> None:
        if self.backend not in BACKEND_CHOICES:
            raise BadInputError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, not '{self.backend}'")
        from hailo_immich_cli.tasks import recipe_tasks

        tasks = recipe_tasks()
        for task, backend in self.model_backends.items():
            if backend not in ("hailo", "cpu"):
                raise BadInputError(f"HAILO_IMMICH_MODEL_BACKENDS: '{task}={backend}' must name hailo or cpu")
        for env_name, table in (("HAILO_IMMICH_MODEL_BACKENDS", self.model_backends), ("HAILO_IMMICH_TASK_RECIPES", self.task_recipes)):
            unknown = sorted(set(table) - set(tasks))
            if unknown:  # a typo must not silently leave a task on another backend or recipe
                raise BadInputError(f"{env_name}: unknown task {', '.join(unknown)} (tasks: {', '.join(tasks)})")
        if self.ocr_max_resolution < 32:
            raise BadInputError(f"HAILO_IMMICH_OCR_MAX_RESOLUTION must be at least 32, not {self.ocr_max_resolution}")
        if self.model_names_policy not in ("strict", "ignore"):
            raise BadInputError("model-names policy must be 'strict' or 'ignore'")
        if self.host_path not in ("auto", "exact", "fast"):
            raise BadInputError(f"HAILO_IMMICH_HOST_PATH must be auto, exact or fast, not '{self.host_path}'")
        if not self.header_timeout_s > 0:
            raise BadInputError(f"HAILO_IMMICH_HEADER_TIMEOUT_S must be > 0, not {self.header_timeout_s}")
        for name in ("max_image_pixels", "max_request_bytes", "max_buffered_bytes", "max_inflight_pixels"):
            if getattr(self, name) < 1:
                raise BadInputError(f"{ENV[name].env[0]} must be >= 1, not {getattr(self, name)}")

    @property
    def ort_intra_op_threads(self) -> int:
        """Immich's rule: 0 means auto, which is 2 on CPU."""
        return self.intra_op_threads if self.intra_op_threads > 0 else 2

    @property
    def ort_inter_op_threads(self) -> int:
        return self.inter_op_threads if self.inter_op_threads > 0 else 1


ENV: dict[str, Setting] = {
    "backend": Setting(("HAILO_IMMICH_BACKEND",), "auto, hailo or cpu"),
    "models_dir": Setting(("HAILO_IMMICH_MODELS_DIR", "MODELS_DIR"), "where fetched model files live"),
    "recipes_dir": Setting(("HAILO_IMMICH_RECIPES_DIR",), "extra recipes (*.toml) that add to or replace shipped ones"),
    "immich_cache_folder": Setting(("MACHINE_LEARNING_CACHE_FOLDER",), "an Immich ML model cache to read models from"),
    "host": Setting(("IMMICH_HOST",), "bind address of `serve`"),
    "port": Setting(("IMMICH_PORT",), "port of `serve`"),
    "log_level": Setting(("IMMICH_LOG_LEVEL", "HAILO_IMMICH_LOG_LEVEL"), "debug, info, warning or error"),
    "no_color": Setting(("NO_COLOR",), "plain output"),
    "intra_op_threads": Setting(("MACHINE_LEARNING_MODEL_INTRA_OP_THREADS",), "ONNX Runtime intra-op threads (0 = 2)"),
    "inter_op_threads": Setting(("MACHINE_LEARNING_MODEL_INTER_OP_THREADS",), "ONNX Runtime inter-op threads (0 = 1)"),
    "request_threads": Setting(("MACHINE_LEARNING_REQUEST_THREADS",), "request threads of `serve`"),
    "worker_timeout": Setting(("MACHINE_LEARNING_WORKER_TIMEOUT",), "gunicorn worker timeout, seconds"),
    "keepalive_timeout": Setting(("MACHINE_LEARNING_HTTP_KEEPALIVE_TIMEOUT_S",), "HTTP keep-alive, seconds"),
    "header_timeout_s": Setting(("HAILO_IMMICH_HEADER_TIMEOUT_S",), "seconds a client may take to send a request's headers (then also the grace before the upload-rate check)"),
    "min_upload_bytes_per_s": Setting(("HAILO_IMMICH_MIN_UPLOAD_BYTES_PER_S",), "slowest request body upload accepted, bytes/s (slower connections are dropped)"),
    "max_buffered_bytes": Setting(("HAILO_IMMICH_MAX_BUFFERED_BYTES",), "request body bytes all connections together may hold (more: 503)"),
    "max_inflight_pixels": Setting(("HAILO_IMMICH_MAX_INFLIGHT_PIXELS",), "decoded image pixels the predicts running at once may hold (more wait for a slot)"),
    "ort_spin_us": Setting(("HAILO_IMMICH_ORT_SPIN_US",), "microseconds an idle ONNX Runtime intra-op thread waits for more work before it sleeps (0: sleeps at once)"),
    "model_arena": Setting(("MACHINE_LEARNING_MODEL_ARENA",), "ONNX Runtime's CPU memory arena (keeps peak tensor memory; off as in Immich's CPU image)"),
    "max_batch_faces": Setting(("MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION",), "faces per recognition call (0 = recipe)"),
    "max_batch_ocr": Setting(("MACHINE_LEARNING_MAX_BATCH_SIZE__OCR",), "text lines per recognition call"),
    "max_image_pixels": Setting(("HAILO_IMMICH_MAX_IMAGE_PIXELS",), "decoded pixel bound (decompression bombs)"),
    "max_request_bytes": Setting(("HAILO_IMMICH_MAX_REQUEST_BYTES",), "largest /predict body accepted"),
    "ocr_max_resolution": Setting(("HAILO_IMMICH_OCR_MAX_RESOLUTION",), "OCR detection input at most this squared in pixels, in `serve` and batch commands (a larger maxResolution is lowered; the request log or the command says so)"),
    "max_queue": Setting(("HAILO_IMMICH_MAX_QUEUE",), "predict requests allowed to wait for a slot in `serve` (more: 503)"),
    "model_backends": Setting(("HAILO_IMMICH_MODEL_BACKENDS",), "backend per task, e.g. 'face-recognition=cpu,ocr=cpu' (Immich's task names facial-recognition, clip, ocr set both steps)"),
    "task_recipes": Setting(("HAILO_IMMICH_TASK_RECIPES",), "recipe per task, e.g. 'face-detection=scrfd-10g-hailo8'"),
    "model_names_policy": Setting(("HAILO_IMMICH_MODEL_NAMES",), "strict (refuse Immich model names we cannot reproduce) or ignore"),
    "hailo_multi_process_service": Setting(("HAILO_IMMICH_MULTI_PROCESS_SERVICE",), "share the Hailo through hailort_service"),
    "hailo_timeout_ms": Setting(("HAILO_IMMICH_DEVICE_TIMEOUT_MS",), "per-inference device timeout"),
    "host_path": Setting(("HAILO_IMMICH_HOST_PATH",), "image preparation: exact (Immich's pixels), fast (reduced JPEG decode, OpenCV resizes) or auto (fast on hailo, exact on cpu)"),
}


def _parse(field_name: str, env_name: str, raw: str, type_hint: Any) -> Any:
    hint = str(type_hint)
    try:
        if field_name in ("model_backends", "task_recipes"):
            pairs = [p.strip() for p in raw.split(",") if p.strip()]
            if any("=" not in p for p in pairs):
                raise ValueError("expected task=value pairs separated by commas")
            from hailo_immich_cli.tasks import immich_aliases

            aliases = immich_aliases()
            table: dict[str, str] = {}
            for key, value in (p.split("=", 1) for p in pairs):
                key, value = key.strip(), value.strip()
                # Immich's task names cover both steps: facial-recognition=cpu, clip=hailo, ocr=cpu.
                for task in aliases.get(key, (key,)) if field_name == "model_backends" else (key,):
                    table[task] = value
            return table
        if hint.startswith("Path"):
            return Path(raw).expanduser()
        if hint == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
        if hint == "int":
            return int(raw)
        if hint == "float":
            return float(raw)
        return raw
    except ValueError as exc:
        raise BadInputError(f"environment variable {env_name}={raw!r} is not valid: {exc}") from exc


def preload_from_env(env: Mapping[str, str] | None = None) -> dict[tuple[str, str], list[str]]:
    """MACHINE_LEARNING_PRELOAD__<TASK>__<TYPE>=name[,name]: Immich's way of naming models to load at start."""
    env = os.environ if env is None else env
    result: dict[tuple[str, str], list[str]] = {}
    prefix = "MACHINE_LEARNING_PRELOAD__"
    for key, value in env.items():
        if not key.upper().startswith(prefix) or not value.strip():
            continue
        parts = key[len(prefix):].lower().split("__")
        if len(parts) != 2:
            continue
        task = parts[0].replace("_", "-")
        result[(task, parts[1])] = [v.strip() for v in value.split(",") if v.strip()]
    return result
