"""`hailo-immich detect PATH...`: faces (box, score, landmarks, embedding) for image files and folders."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import List, Optional

import cv2
import numpy as np
import typer
from rich.markup import escape

from hailo_immich_cli.commands._common import (
    BackendOption, DetectorOption, JsonlOption, JsonOption, ModelsDirOption, RecognizerOption, check_arguments, db_option,
    handle_errors, load_settings, open_session, open_sink, stderr_console,
)
from hailo_immich_cli.commands._images import ResultOutput, RunSummary, process_images, report_failures
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.faces.pipeline import FacesResult, analyze_faces, choose_detector, face_crops
from hailo_immich_cli.faces.task import RECOGNITION, TASK
from hailo_immich_cli.imaging import DecodedImage
from hailo_immich_cli.models.resolve import recognizer_or_none


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
        as_json: bool = JsonOption,
        as_jsonl: bool = JsonlOption,
        min_score: Optional[float] = typer.Option(None, "--min-score", help="Detection threshold (default: the recipe's, 0.7)."),
        no_embed: bool = typer.Option(False, "--no-embed", help="Detect only; skip the recogniser."),
        crops: Optional[Path] = typer.Option(None, "--crops", help="Save the aligned face crops as PNG into this folder."),
        detector: Optional[str] = DetectorOption,
        recognizer: Optional[str] = RecognizerOption,
        max_faces: Optional[int] = typer.Option(None, "--max-faces", help="Faces kept per image (default: the recipe's)."),
        db: Optional[Path] = db_option("faces"),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Find faces (box, score, 5 landmarks) and their embeddings."""
        if min_score is not None and not 0.0 <= min_score <= 1.0:
            raise BadInputError("--min-score must be between 0 and 1")
        check_arguments(paths, db)
        settings = load_settings(backend=backend, models_dir=models_dir)
        err = stderr_console(settings)
        output = ResultOutput(TASK, as_json, as_jsonl, settings.no_color)
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
            sink = open_sink(db, "detect", paths, TASK, session, [r for r in (det_recipe, rec_recipe) if r is not None])
            images: dict[Path, DecodedImage] = {}
            summary = RunSummary()
            crop_files: dict[Path, list[Path]] = {}

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

            with sink if sink is not None else nullcontext():
                for outcome in process_images(paths, work, err, summary, settings.max_image_pixels, show_progress=output.show_progress):
                    if sink is not None:
                        sink.add_outcome(session, TASK, outcome, images.pop(outcome.path, None),
                                         (("min_score", min_score), ("max_faces", max_faces)))
                    output.add(outcome.path, outcome.result, outcome.error, crops=crop_files.pop(outcome.path, None))
            output.close()
            report_failures(err, summary)
        raise typer.Exit(summary.exit_code)
