"""Typed errors, so the server maps them to HTTP statuses and the CLI to exit codes in one place each."""

from __future__ import annotations


class HailoImmichError(Exception):
    """Base of every error this project raises on purpose."""

    exit_code = 1


class BadInputError(HailoImmichError):
    """The caller sent something we cannot use (corrupt image, bad request, unknown option)."""

    exit_code = 2


class DatabaseDamagedError(HailoImmichError):
    """An index database has corrupt pages: nothing more is written to it, the message says what to do."""

    exit_code = 8

    def __init__(self, path: str, detail: str):
        self.path = path
        super().__init__(
            f"{path}: the index database is damaged ({detail}); nothing was written to it. "
            f"Check it with `sqlite3 {path} 'PRAGMA integrity_check'`, restore it from a backup, "
            "or index into a new file with --db NEW.db"
        )


class ImageTooLargeError(BadInputError):
    """Decoded pixel count above the configured bound (decompression bombs)."""


class RecipeError(HailoImmichError):
    """A recipe file is malformed; the message names the file and the key."""

    exit_code = 3

    def __init__(self, path: str, key: str, problem: str):
        self.path, self.key, self.problem = path, key, problem
        super().__init__(f"{path}: key '{key}': {problem}")


class UnknownModelError(HailoImmichError):
    """No recipe answers to this recipe id or Immich model name."""

    exit_code = 3


class ModelMissingError(HailoImmichError):
    """A recipe's file is not in the models dir; the message says which command fetches it."""

    exit_code = 4

    def __init__(self, recipe_id: str, path: str, hint: str | None = None):
        self.recipe_id, self.path = recipe_id, path
        hint = hint or f"hailo-immich fetch-models --recipe {recipe_id}"
        super().__init__(f"model file for recipe '{recipe_id}' is missing: {path} (run: {hint})")


class ModelCorruptError(HailoImmichError):
    """A model file exists but cannot be loaded (truncated, wrong hash, not a model)."""

    exit_code = 4

    def __init__(self, recipe_id: str, path: str, reason: str):
        self.recipe_id, self.path, self.reason = recipe_id, path, reason
        super().__init__(f"model file for recipe '{recipe_id}' is unusable: {path}: {reason}")


class ModelMismatchError(HailoImmichError):
    """The model file loads but its inputs/outputs do not match what the recipe says."""

    exit_code = 4


class FetchError(HailoImmichError):
    """Downloading or extracting a model file failed; nothing was left under the final name."""

    exit_code = 5


class BackendUnavailableError(HailoImmichError):
    """The requested backend cannot run here (no hailo_platform, no device, driver mismatch...)."""

    exit_code = 6


class DeviceError(HailoImmichError):
    """The accelerator failed while running a model; the next request may succeed."""

    exit_code = 7


class DeviceTimeoutError(DeviceError):
    """The accelerator did not answer in time."""
