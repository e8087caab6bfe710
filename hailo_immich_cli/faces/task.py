"""Faces as a task: Immich's `facial-recognition` (detection + recognition), served, indexed and benchmarked.

The pipeline is imported on first use, so the registry stays cheap to load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from hailo_immich_cli.faces.recipe_keys import RECIPE_KEYS
from hailo_immich_cli.server.jsonfmt import embedding_from_json, float32_array
from hailo_immich_cli.tasks import BenchJob, Task, detector_recognizer, VectorTable

DETECTION, RECOGNITION = "face-detection", "face-recognition"


def faces_json(faces: Sequence[Any]) -> list[dict[str, Any]]:
    """Faces (pipeline.Face) as the official service lists them: integral unclipped boxes, raw embedding."""
    ordered = sorted(faces, key=lambda f: -float(np.float32(f.score)))
    result = []
    for face in ordered:
        if face.embedding is None:
            raise ValueError("face without embedding in a recognition response")
        x1, y1, x2, y2 = np.round(np.asarray(face.box, dtype=np.float32))
        result.append(
            {
                "boundingBox": {"x1": x1, "y1": y1, "x2": x2, "y2": y2},
                "embedding": float32_array(face.embedding),
                "score": np.float32(face.score),
            }
        )
    return result


def box_iou(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Intersection over union of two Immich bounding boxes."""
    ix = max(0.0, min(a["x2"], b["x2"]) - max(a["x1"], b["x1"]))
    iy = max(0.0, min(a["y2"], b["y2"]) - max(a["y1"], b["y1"]))
    inter = ix * iy
    union = (a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) - inter
    return inter / union if union > 0 else 0.0


def _entries(name: str) -> dict[str, Any]:
    """What Immich's server sends for face detection (its default minScore)."""
    return {"facial-recognition": {"detection": {"modelName": name, "options": {"minScore": 0.7}},
                                   "recognition": {"modelName": name}}}


class FacesTable:
    """`detect`'s table: one row per face, printed when every file is done."""

    def __init__(self, no_color: bool):
        from rich.table import Table

        self.no_color = no_color
        self.table = Table(title="faces")
        for col in ("file", "#", "score", "box (x1, y1, x2, y2)", "embedding", "models"):
            self.table.add_column(col)

    def add(self, path: Path, result) -> None:
        from rich.markup import escape

        models = f"{result.detector.recipe_id} ({result.detector.backend})"
        if result.recognizer:
            models += f" + {result.recognizer.recipe_id} ({result.recognizer.backend})"
        if not result.faces:
            self.table.add_row(escape(str(path)), "0", "", "", "", models)
        for i, face in enumerate(result.faces):
            emb = f"{face.embedding.shape[0]}-d, |v|={np.linalg.norm(face.embedding):.2f}" if face.embedding is not None else "-"
            box = ", ".join(f"{v:.0f}" for v in face.box)
            self.table.add_row(escape(str(path)) if i == 0 else "", str(i + 1), f"{face.score:.3f}", box, emb, models if i == 0 else "")
        if result.truncated:
            self.table.add_row("", f"+{result.truncated}", "dropped by --max-faces", "", "", "")

    def close(self) -> None:
        from rich.console import Console

        Console(no_color=self.no_color).print(self.table)


def _model_json(prov) -> dict[str, str]:
    return {"recipe": prov.recipe_id, "backend": prov.backend, "model": prov.model_id}


def _canvas(recipe) -> tuple[int, int] | None:
    """The detector's fixed input (height, width), from the recipe's size or its input shape."""
    size = recipe.preprocess.get("size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    spec = recipe.inputs[0] if recipe.inputs else None
    if spec is not None and spec.shape and len(spec.shape) == 3:
        shape = spec.shape
        return (shape[0], shape[1]) if shape[2] == 3 else (shape[1], shape[2])
    return None


class FacesTask(Task):
    def input_scale(self, recipe, width: int, height: int, options: Mapping[str, Any]) -> float:
        if recipe.task != DETECTION:
            return 0.0  # the aligned crops come from the decoded image, mapped to its resolution
        canvas = _canvas(recipe)
        if canvas is not None:
            return min(canvas[0] / height, canvas[1] / width)
        return int(recipe.preprocess.get("max_side", 640)) / max(width, height)

    def serve(self, session, plan, image, text: str | None, outcome, host_path: str = "exact") -> list[dict[str, Any]]:
        from hailo_immich_cli.faces import pipeline

        det = plan.get(self.immich_task, "detection")
        rec = plan.get(self.immich_task, "recognition")
        assert det is not None and rec is not None and image is not None
        result = pipeline.analyze_faces(
            session,
            image.rgb,
            detector=det.recipe_id,
            recognizer=rec.recipe_id,
            min_score=det.options.get("minScore"),
            embed=True,
        )
        outcome.backends[result.detector.recipe_id] = result.detector.backend
        if result.truncated:  # the recipe's max_faces bound; the official service has none
            outcome.notes.append(f"faces_dropped={result.truncated}")
        if result.recognizer is not None:
            outcome.backends[result.recognizer.recipe_id] = result.recognizer.backend
        return faces_json(pipeline.full_size(result.faces, image.reduction))

    def choose_for_index(self, session, name: str | None, warn: Callable[[str], None]) -> dict[str, Any]:
        """Detector and recogniser; detection only (said loudly) when no recogniser is on disk and none was named."""
        from hailo_immich_cli.models.resolve import choose, recognizer_or_none, split_pair

        det, rec = split_pair(name)
        chosen = {DETECTION: choose(session, DETECTION, det)}
        recognizer = recognizer_or_none(session, RECOGNITION, rec, lambda why: warn(
            f"faces: no face recogniser is on disk, so faces are detected but not embedded ({why})"))
        if recognizer is not None:
            chosen[RECOGNITION] = recognizer
        return chosen

    def run_for_index(self, session, recipes: Mapping[str, Any], images: Sequence[np.ndarray]) -> list[tuple[Any, str]]:
        from hailo_immich_cli.faces import pipeline

        rec = recipes.get(RECOGNITION)
        out = []
        for rgb in images:
            result = pipeline.analyze_faces(session, rgb, detector=recipes[DETECTION].id,
                                            recognizer=rec.id if rec else None, embed=rec is not None)
            out.append((result, result.detector.backend))
        return out

    def index_rows(self, content: str, out) -> tuple[int, list[tuple[str, list[tuple]]]]:
        """One `faces` row per face, in file pixels: box, score, landmarks (when known), embedding."""
        import json

        from hailo_immich_cli.batch.store import vector_blob
        from hailo_immich_cli.batch.vector_keys import face_key

        result, s = out.payload, out.scale
        detector = result.detector.model_id
        recognizer = result.recognizer.model_id if result.recognizer is not None else None
        rows = []
        for idx, face in enumerate(result.faces):
            marks = np.asarray(face.landmarks, dtype=np.float64).reshape(-1, 2) if face.landmarks is not None else None
            landmarks = None
            if marks is not None and marks.size and np.isfinite(marks).all():
                landmarks = json.dumps([[round(float(x) * s, 2), round(float(y) * s, 2)] for x, y in marks])
            emb = vector_blob(face.embedding) if face.embedding is not None else None
            x1, y1, x2, y2 = (float(v) * s for v in face.box)
            rows.append((content, out.model_id, detector, recognizer, out.backend, idx, x1, y1, x2, y2,
                         float(face.score), landmarks, emb, face_key(content, out.model_id, idx)))
        sql = ("INSERT INTO faces (hash, model_id, detector, recognizer, backend, idx, x1, y1, x2, y2, score, landmarks, embedding,"
               " vkey) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
        return len(rows), [(sql, rows)]

    def remote_entries(self, name: str) -> dict[str, Any]:
        return _entries(name)

    def parse_remote(self, body: Mapping[str, Any], provenance) -> Any:
        from hailo_immich_cli.faces.pipeline import Face, FacesResult

        faces = []
        for f in body.get(self.immich_task, []):
            b = f["boundingBox"]
            faces.append(Face(box=(float(b["x1"]), float(b["y1"]), float(b["x2"]), float(b["y2"])), score=float(f["score"]),
                              landmarks=np.full((5, 2), np.nan, dtype=np.float32), embedding=embedding_from_json(f["embedding"])))
        return FacesResult(faces=faces, width=int(body["imageWidth"]), height=int(body["imageHeight"]),
                           detector=provenance, recognizer=provenance, truncated=0)

    def bench_work(self, job: BenchJob, session, stages: Mapping[str, Any], batch: int,
                   next_image: Callable[[], np.ndarray], next_texts: Callable[[int], list[str]], found: list[int],
                   host_path: str = "exact") -> Callable[[], int]:
        from hailo_immich_cli.faces.pipeline import analyze_faces

        det = stages[DETECTION].id
        rec = stages[RECOGNITION].id if RECOGNITION in stages else None

        def work() -> int:
            found.append(len(analyze_faces(session, next_image(), detector=det, recognizer=rec, embed=rec is not None).faces))
            return 1

        return work

    def cli_record(self, path: Path, result, crops: list[Path] | None = None) -> dict[str, Any]:
        """`detect`'s record of one file, naming the recipes and backends that produced it."""
        record = {
            "file": str(path),
            "width": result.width,
            "height": result.height,
            "detector": _model_json(result.detector),
            "recognizer": _model_json(result.recognizer) if result.recognizer else None,
            "truncated": result.truncated,
            "faces": [
                {
                    "box": [round(v, 2) for v in face.box],
                    "score": round(face.score, 5),
                    "landmarks": np.round(face.landmarks.astype(np.float64), 2).tolist(),
                    **({"embedding": face.embedding.astype(np.float64).tolist()} if face.embedding is not None else {}),
                }
                for face in result.faces
            ],
        }
        for face, crop in zip(record["faces"], crops or ()):
            face["crop"] = str(crop)
        return record

    def cli_table(self, no_color: bool) -> FacesTable:
        return FacesTable(no_color)

    def cli_models(self, result) -> list[Any]:
        return [result.detector] + ([result.recognizer] if result.recognizer else [])

    def answer_count(self, value: list[Any]) -> int:
        return len(value)

    def path_agreement(self, exact: list[dict[str, Any]], fast: list[dict[str, Any]]) -> dict[str, Any]:
        """Per exact face the best IoU of a fast face (0 if none), and the face counts."""
        ious = [max((box_iou(e["boundingBox"], f["boundingBox"]) for f in fast), default=0.0) for e in exact]
        return {"exact_faces": len(exact), "fast_faces": len(fast), "min_iou": min(ious, default=1.0 if not fast else 0.0),
                "mean_iou": float(np.mean(ious)) if ious else (1.0 if not fast else 0.0)}

    def search_hit(self, row: tuple) -> dict[str, Any]:
        return {"box": [round(v, 1) for v in row[1:5]], "face_score": round(row[5], 4)}

    def bench_partial(self, job: BenchJob, stages: Mapping[str, Any]) -> str | None:
        """Without a recogniser, faces are still benchmarked: detection only."""
        return "end-to-end runs detection only" if DETECTION in stages else None


TASK = FacesTask(
    name="faces",
    immich_task="facial-recognition",
    **detector_recognizer(DETECTION, RECOGNITION),
    recipe_keys=RECIPE_KEYS,
    immich_enum="FACIAL_RECOGNITION",
    immich_default_model="buffalo_l",
    immich_also_shown=("antelopev2",),  # the other face pack Immich's settings offer, same SCRFD-10GF detector
    embeddings=(RECOGNITION,),
    index_tables=("faces",),
    cache_templates={"detection": "buffalo_l-detection-cpu", "recognition": "buffalo_l-recognition-cpu"},
    stored_tables=("faces",),
    vectors=VectorTable("faces", "recognizer", "v.hash, v.x1, v.y1, v.x2, v.y2, v.score, v.id", per="face"),
    synthetic_images_note="the synthetic images have no faces, so the recogniser is not exercised; "
                          "give --images DIR with photos of people",
    bench_jobs=(BenchJob("faces", (DETECTION, RECOGNITION), RECOGNITION, "max_batch_faces",
                         "MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION", "Face Detection", "buffalo_l", _entries),),
)
