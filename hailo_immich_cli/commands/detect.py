"""`hailo-immich detect PATH...`: faces (box, score, landmarks, embedding) for image files and folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hailo_immich_cli.commands._common import BackendOption, ModelsDirOption, check_arguments, handle_errors, load_settings, open_session, stderr_console
from hailo_immich_cli.commands._images import RunSummary, process_images, report_failures
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.faces.pipeline import FacesResult, analyze_faces, choose_detector, face_crops
from hailo_immich_cli.faces.task import RECOGNITION, TASK
from hailo_immich_cli.imaging import DecodedImage
from hailo_immich_cli.models.resolve import recognizer_or_none


def face_record(path: Path, result: FacesResult, with_embeddings: bool = True, crops: list[Path] | None = None) -> dict:
    """One JSON record per file, naming the recipes and backends that produced it."""
    record = {
        "file": str(path),
        "width": result.width,
        "height": result.height,
        "detector": {"recipe": result.detector.recipe_id, "backend": result.detector.backend, "model": result.detector.model_id},
        "recognizer": (
            {"recipe": result.recognizer.recipe_id, "backend": result.recognizer.backend, "model": result.recognizer.model_id}
            if result.recognizer
            else None
        ),
        "truncated": result.truncated,
        "faces": [
            {
                "box": [round(v, 2) for v in face.box],
                "score": round(face.score, 5),
                "landmarks": np.round(face.landmarks.astype(np.float64), 2).tolist(),
                **({"embedding": face.embedding.astype(np.float64).tolist()} if with_embeddings and face.embedding is not None else {}),
            }
            for face in result.faces
        ],
    }
    if crops:
        for face, crop in zip(record["faces"], crops):
            face["crop"] = str(crop)
    return record


def save_crops(folder: Path, path: Path, index: int, crops: np.ndarray) -> list[Path]:
    """Aligned crops as PNG (<stem>_<file#>_face<k>.png) so a person can check the alignment."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for k, crop in enumerate(crops):
        target = folder / f"{path.stem}_{index:05d}_face{k}.png"
        if not cv2.imwrite(str(target), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR)):
            raise BadInputError(f"cannot write {target}")
        written.append(target)
    return written


def register(app: typer.Typer) -> None:
    @app.command("detect")
    @handle_errors
    def detect(
        paths: List[Path] = typer.Argument(..., help="Image files and/or folders (searched recursively)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON array on stdout."),
        as_jsonl: bool = typer.Option(False, "--jsonl", help="One JSON object per file on stdout."),
        min_score: Optional[float] = typer.Option(None, "--min-score", help="Detection threshold (default: the recipe's, 0.7)."),
        no_embed: bool = typer.Option(False, "--no-embed", help="Detect only; skip the recogniser."),
        crops: Optional[Path] = typer.Option(None, "--crops", help="Save the aligned face crops as PNG into this folder."),
        detector: Optional[str] = typer.Option(None, "--detector", help="Detection recipe id or Immich model name."),
        recognizer: Optional[str] = typer.Option(None, "--recognizer", help="Recognition recipe id or Immich model name."),
        max_faces: Optional[int] = typer.Option(None, "--max-faces", help="Faces kept per image (default: the recipe's)."),
        db: Optional[Path] = typer.Option(None, "--db", help="Also store the faces in this index database (as `index` does)."),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Find faces (box, score, 5 landmarks) and their embeddings."""
        if as_json and as_jsonl:
            raise BadInputError("give --json or --jsonl, not both")
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise BadInputError("--min-score must be between 0 and 1")
        check_arguments(paths, db)
        settings = load_settings(backend=backend, models_dir=models_dir)
        err = stderr_console(settings)
        with open_session(settings) as session:
            det_recipe = choose_detector(session, detector)
            session.model(det_recipe.id)  # load now: a missing detector is one clear error, not one per file
            rec_recipe = None
            if not no_embed:
                rec_recipe = recognizer_or_none(session, RECOGNITION, recognizer, lambda why: err.print(
                    f"[yellow]no embeddings:[/] {escape(why)}. Faces are detected only; for embeddings "
                    "fetch a recogniser (needs internet) or run on the Hailo backend.",
                    highlight=False,
                ), load=True)
            embed = rec_recipe is not None
            sink = _open_sink(db, paths, session, det_recipe, rec_recipe if embed else None)
            tweaks = "".join(f"?{k}={v}" for k, v in (("min_score", min_score), ("max_faces", max_faces)) if v is not None)
            images: dict[Path, DecodedImage] = {}
            summary = RunSummary()
            records: list[dict] = []
            crop_files: dict[Path, list[Path]] = {}
            table = _table()

            def work(path: Path, image: DecodedImage) -> FacesResult:
                result = analyze_faces(
                    session, image.rgb, detector=det_recipe.id, recognizer=recognizer if embed else None,
                    min_score=min_score, embed=embed, max_faces=max_faces,
                )
                if crops is not None and result.faces:
                    index = summary.ok + len(summary.failed)
                    crop_files[path] = save_crops(crops, path, index, face_crops(session, image.rgb, result, recognizer))
                if sink is not None:
                    images[path] = image
                return result

            for outcome in process_images(paths, work, err, summary, settings.max_image_pixels, show_progress=not (as_json or as_jsonl)):
                if sink is not None:
                    _store(sink, outcome, images.pop(outcome.path, None), tweaks)
                if outcome.result is None:
                    continue
                record = face_record(outcome.path, outcome.result, crops=crop_files.pop(outcome.path, None))
                if as_jsonl:
                    typer.echo(json.dumps(record))
                elif as_json:
                    records.append(record)
                else:
                    _add_rows(table, outcome.path, outcome.result)
            if as_json:
                typer.echo(json.dumps(records, indent=1))
            elif not as_jsonl:
                Console(no_color=settings.no_color).print(table)
            if sink is not None:
                sink.close()
            report_failures(err, summary)
        raise typer.Exit(summary.exit_code)


def _open_sink(db: Path | None, paths: list[Path], session, det_recipe, rec_recipe):
    """The index database to store faces in (None without --db)."""
    if db is None:
        return None
    from hailo_immich_cli.batch.sink import DbSink
    from hailo_immich_cli.batch.store import ModelInfo

    sink = DbSink(db, "detect", paths, TASK.name)
    for recipe in (det_recipe, rec_recipe):
        if recipe is not None:
            prov = session.model(recipe.id).provenance
            sink.model(ModelInfo(prov.model_id, recipe.task, recipe.id, prov.backend, prov.device, prov.runtime,
                                 tuple(recipe.immich_names), recipe.embedding_dim))
    return sink


def _store(sink, outcome, image: DecodedImage | None, tweaks: str) -> None:
    """Faces stored under the key `index` uses; non-default thresholds get their own key (not the same result)."""
    from hailo_immich_cli.batch.store import TaskOutput

    if outcome.error:
        sink.fail(outcome.path, outcome.error)
        return
    result = outcome.result
    if result is None or image is None:
        return
    models = [result.detector] + ([result.recognizer] if result.recognizer else [])
    key = TASK.model_key([p.model_id for p in models]) + tweaks
    sink.add(outcome.path, image, [TaskOutput(TASK.name, key, result.detector.backend, result)])


def _table() -> Table:
    table = Table(title="faces")
    for col in ("file", "#", "score", "box (x1, y1, x2, y2)", "embedding", "models"):
        table.add_column(col)
    return table


def _add_rows(table: Table, path: Path, result: FacesResult) -> None:
    models = f"{result.detector.recipe_id} ({result.detector.backend})"
    if result.recognizer:
        models += f" + {result.recognizer.recipe_id} ({result.recognizer.backend})"
    if not result.faces:
        table.add_row(escape(str(path)), "0", "", "", "", models)
    for i, face in enumerate(result.faces):
        emb = f"{face.embedding.shape[0]}-d, |v|={np.linalg.norm(face.embedding):.2f}" if face.embedding is not None else "-"
        box = ", ".join(f"{v:.0f}" for v in face.box)
        table.add_row(escape(str(path)) if i == 0 else "", str(i + 1), f"{face.score:.3f}", box, emb, models if i == 0 else "")
    if result.truncated:
        table.add_row("", f"+{result.truncated}", "dropped by --max-faces", "", "", "")
