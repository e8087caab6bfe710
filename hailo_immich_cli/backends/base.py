"""The interface every backend implements: load a recipe, describe tensors, run a batch.

Quantisation and device details stay inside a backend; pipelines only see float/int arrays with a
leading batch dimension, named as the recipe names them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
import threading
from typing import Any, Callable, Mapping, TypeVar

import numpy as np

from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import Recipe


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as the loaded model file declares it (per frame; None = dynamic)."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str
    layout: str | None = None
    quant_scale: float | None = None
    quant_zp: float | None = None
    quant_per_feature: bool = False


@dataclass(frozen=True)
class Provenance:
    """Which model and backend produced a result; attached to every result we return or store."""

    recipe_id: str
    backend: str
    model_sha256: str
    device: str
    runtime: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["extra"] = dict(self.extra)
        return data

    @property
    def model_id(self) -> str:
        return model_id_of(self.recipe_id, self.model_sha256)


def model_id_of(recipe_id: str, model_sha256: str) -> str:
    """Short id stored next to vectors: recipe id plus the first 12 hex of the model file's hash."""
    return f"{recipe_id}@{model_sha256[:12]}"


T = TypeVar("T")
_BUILDING = threading.Lock()  # serialises first builds of host resources (rare, at first use)


class LoadedModel(ABC):
    """One model ready to run; safe to call from many threads at once."""

    recipe: Recipe
    provenance: Provenance
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]

    @property
    def max_batch(self) -> int:
        """Largest batch worth handing over in one call (0 = no limit)."""
        return 0

    @abstractmethod
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch: every feed has a leading batch dim N; every output has N rows."""

    def close(self) -> None:
        """Release device resources; the default has nothing to release."""

    def host_resource(self, key: str, build: Callable[[], T]) -> T:
        """What the host needs beside the model (tokenizer, text weights, OCR charset), built on first
        use and kept with the model, so it lives exactly as long as the session holds the model."""
        cache: dict[str, Any] = self.__dict__.setdefault("_host_resources", {})
        if key not in cache:
            with _BUILDING:
                if key not in cache:
                    cache[key] = build()
        return cache[key]


class Backend(ABC):
    name: str

    @abstractmethod
    def load(self, recipe: Recipe, files: ModelFiles) -> LoadedModel:
        """Load a recipe's model, raising ModelMissing/ModelCorrupt/ModelMismatch errors."""

    @abstractmethod
    def info(self) -> dict[str, Any]:
        """Device and runtime versions, for /health and every report."""

    def close(self) -> None:
        """Release the device; called once at process end."""
