"""Typed errors, so the server maps them to HTTP statuses and the CLI to exit codes in one place each."""

from __future__ import annotations


class HailoImmichError(Exception):
    """Base of every error this project raises on purpose; `exit_code` is the CLI's exit status for it."""

    exit_code = 1

    def __init_subclass__(cls, exit_code: int | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code


class BadInputError(HailoImmichError, exit_code=2):
    """The caller sent something we cannot use (corrupt image, bad request, unknown option)."""


class DatabaseDamagedError(HailoImmichError, exit_code=8):
    """An index database has corrupt pages: nothing more is written to it, the message says what to do."""

    def __init__(self, path: str, detail: str):
        self.path = path
        super().__init__(
            f"{path}: the index database is damaged ({detail}); nothing was written to it. "
            f"Check it with `sqlite3 {path} 'PRAGMA integrity_check'`, restore it from a backup, "
            "or index into a new file with --db NEW.db"
        )


class ImageTooLargeError(BadInputError):
    """Decoded pixel count above the configured bound (decompression bombs)."""


class RecipeError(HailoImmichError, exit_code=3):
    """A recipe file is malformed; the message names the file and the key."""

    def __init__(self, path: str, key: str, problem: str):
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{path}: key '{key}': {problem}")


class UnknownModelError(HailoImmichError, exit_code=3):
    """No recipe answers to this recipe id or Immich model name."""


class ModelFileError(HailoImmichError, exit_code=4):
    """A recipe's model file cannot be used; the message names the recipe and the file."""

    def __init__(self, recipe_id: str, path: str, problem: str):
        self.recipe_id, self.path = recipe_id, path
        super().__init__(f"model file for recipe '{recipe_id}' is {problem}")


class ModelMissingError(ModelFileError):
    """A recipe's file is not in the models dir; the message says which command fetches it."""

    def __init__(self, recipe_id: str, path: str, hint: str | None = None):
        super().__init__(recipe_id, path, f"missing: {path} (run: {hint or f'hailo-immich fetch-models --recipe {recipe_id}'})")


class ModelCorruptError(ModelFileError):
    """A model file exists but cannot be loaded (truncated, wrong hash, not a model)."""

    def __init__(self, recipe_id: str, path: str, reason: str):
        self.reason = reason
        super().__init__(recipe_id, path, f"unusable: {path}: {reason}")


class ModelMismatchError(HailoImmichError, exit_code=4):
    """The model file loads but its inputs/outputs do not match what the recipe says."""


class FetchError(HailoImmichError, exit_code=5):
    """Downloading or extracting a model file failed; nothing was left under the final name."""


class BackendUnavailableError(HailoImmichError, exit_code=6):
    """The requested backend cannot run here (no hailo_platform, no device, driver mismatch...)."""


class DeviceError(HailoImmichError, exit_code=7):
    """The accelerator failed while running a model; the next request may succeed."""


class DeviceTimeoutError(DeviceError):
    """The accelerator did not answer in time."""
