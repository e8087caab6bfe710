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
from hailo_immich_cli.errors import BadInputError, ModelMissingError

log = logging.getLogger("hailo_immich")

RECIPE_TASKS = {
    "faces": ("face-detection", "face-recognition"),
    "clip": ("clip-visual",),
    "ocr": ("ocr-detection", "ocr-recognition"),
}


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


def pair_key(detector: str, recognizer: str | None) -> str:
    """The key of a two-model task (faces, OCR): both models, so changing either redoes the task."""
    return f"{detector}+{recognizer}" if recognizer else detector


def split_pair(name: str | None) -> tuple[str | None, str | None]:
    """`--face-model`/`--ocr-model`: one Immich name for both models, or DETECTOR,RECOGNISER recipe ids."""
    if not name:
        return None, None
    if "," in name:
        det, rec = (part.strip() or None for part in name.split(",", 1))
        return det, rec
    return name, name


def recipe_min_side(recipe: Any) -> int:
    """Pixels (shorter side) worth decoding for this recipe: its largest input/resize bound."""
    pre = recipe.preprocess
    sizes = [int(pre[k]) for k in ("max_side", "max_resolution", "size", "height", "width", "min_side") if isinstance(pre.get(k), (int, float))]
    for spec in recipe.inputs:
        if spec.shape:
            sizes.extend(int(d) for d in spec.shape if isinstance(d, int) and d > 3)
    return max(sizes) if sizes else 0


class LocalEngine:
    """Tasks through this process's SessionManager and the task pipelines."""

    concurrency = 1

    def __init__(self, session: Any, tasks: Sequence[str], names: dict[str, str | None] | None = None, clip_batch: int = 8):
        self.session = session
        self.tasks = tuple(tasks)
        names = names or {}
        self.clip_batch = clip_batch
        self.recipes: dict[str, Any] = {}
        self.embed_faces = True
        if "faces" in self.tasks:
            self._choose_faces(names.get("faces"))
        if "clip" in self.tasks:
            self.recipes["clip-visual"] = session.resolve("clip-visual", names.get("clip"))
        if "ocr" in self.tasks:
            det, rec = split_pair(names.get("ocr"))
            self.recipes["ocr-detection"] = session.resolve("ocr-detection", det)
            self.recipes["ocr-recognition"] = session.resolve("ocr-recognition", rec)
        # Loading now fixes each model's identity (recipe + file hash) before any file is judged.
        self.provenance = {task: session.model(r.id).provenance for task, r in self.recipes.items()}

    def _choose_faces(self, name: str | None) -> None:
        """Detector and recogniser as the faces pipeline picks them; detection only (said loudly) without a recogniser."""
        from hailo_immich_cli.faces import pipeline as faces

        det, rec = split_pair(name)
        self.recipes["face-detection"] = faces.choose_detector(self.session, det)
        try:
            self.recipes["face-recognition"] = faces.choose_recognizer(self.session, rec)
        except ModelMissingError as exc:
            if rec:
                raise
            self.embed_faces = False
            log.warning("faces: no face recogniser is on disk, so faces are detected but not embedded (%s)", exc)

    def model_keys(self) -> dict[str, str]:
        p = self.provenance
        keys = {}
        if "faces" in self.tasks:
            rec = p.get("face-recognition")
            keys["faces"] = pair_key(p["face-detection"].model_id, rec.model_id if rec else None)
        if "clip" in self.tasks:
            keys["clip"] = p["clip-visual"].model_id
        if "ocr" in self.tasks:
            keys["ocr"] = pair_key(p["ocr-detection"].model_id, p["ocr-recognition"].model_id)
        return keys

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
        keys = self.model_keys()
        results = [ItemResult([]) for _ in items]
        clip_idx = [i for i, it in enumerate(items) if "clip" in it.tasks]
        if clip_idx:
            from hailo_immich_cli.clip import pipeline as clip
        for start in range(0, len(clip_idx), self.clip_batch):
            chunk = clip_idx[start:start + self.clip_batch]
            try:
                emb = clip.encode_images(self.session, [items[i].rgb for i in chunk], model=self.recipes["clip-visual"].id)
                for row, i in enumerate(chunk):
                    results[i].outputs.append(TaskOutput("clip", keys["clip"], emb.provenance.backend, emb.vectors[row], items[i].scale))
            except BadInputError:
                for i in chunk:  # find the bad one(s); the others still get their vector
                    try:
                        emb = clip.encode_images(self.session, [items[i].rgb], model=self.recipes["clip-visual"].id)
                        results[i].outputs.append(TaskOutput("clip", keys["clip"], emb.provenance.backend, emb.vectors[0], items[i].scale))
                    except BadInputError as exc:
                        results[i].error = f"clip: {exc}"
        for i, it in enumerate(items):
            try:
                if "faces" in it.tasks:
                    from hailo_immich_cli.faces import pipeline as faces

                    rec = self.recipes.get("face-recognition")
                    fr = faces.analyze_faces(self.session, it.rgb, detector=self.recipes["face-detection"].id,
                                             recognizer=rec.id if rec else None, embed=rec is not None)
                    results[i].outputs.append(TaskOutput("faces", keys["faces"], fr.detector.backend, fr, it.scale))
                if "ocr" in it.tasks:
                    from hailo_immich_cli.ocr import pipeline as ocr

                    orr = ocr.read_text(self.session, it.rgb, detector=self.recipes["ocr-detection"].id,
                                        recognizer=self.recipes["ocr-recognition"].id)
                    results[i].outputs.append(TaskOutput("ocr", keys["ocr"], orr.detector.backend, orr, it.scale))
            except BadInputError as exc:
                results[i].error = str(exc)
        return results
