"""`hailo-immich ocr PATH...`: read the text in image files or folders, as tables or JSON."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.markup import escape

from hailo_immich_cli.commands._common import (
    BackendOption, DetectorOption, JsonlOption, JsonOption, ModelsDirOption, RecognizerOption, check_arguments, db_option,
    handle_errors, load_settings, open_session, open_sink, stderr_console,
)
from hailo_immich_cli.commands._images import ResultOutput, RunSummary, process_images, report_failures
from hailo_immich_cli.ocr.pipeline import OcrResult, read_text
from hailo_immich_cli.ocr.task import TASK


def register(app: typer.Typer) -> None:
    @app.command("ocr")
    @handle_errors
    def ocr(
        paths: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
        min_det_score: Optional[float] = typer.Option(None, "--min-det-score", help="Detection box score threshold (recipe default 0.5)."),
        min_rec_score: Optional[float] = typer.Option(None, "--min-rec-score", help="Keep lines whose text score is above this (recipe default 0.8)."),
        max_resolution: Optional[int] = typer.Option(None, "--max-resolution", help="Detector resolution of the shorter side (recipe default 736)."),
        detector: Optional[str] = DetectorOption,
        recognizer: Optional[str] = RecognizerOption,
        as_json: bool = JsonOption,
        as_jsonl: bool = JsonlOption,
        db: Optional[Path] = db_option("text"),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Detect and read text lines; a bad file is reported and skipped (exit code 1 at the end)."""
        check_arguments(paths, db)
        settings = load_settings(backend=backend, models_dir=models_dir)
        err = stderr_console(settings)
        output = ResultOutput(TASK, as_json, as_jsonl, settings.no_color)
        summary = RunSummary()

        with open_session(settings) as session:
            sink = open_sink(db, "ocr", paths, TASK)
            images: dict[Path, Any] = {}

            def work(path: Path, image) -> OcrResult:
                result = read_text(
                    session, image.rgb, detector=detector, recognizer=recognizer,
                    min_det_score=min_det_score, max_resolution=max_resolution, min_rec_score=min_rec_score,
                )
                for note in result.notes:  # the detector ran at a lower resolution than asked
                    err.print(f"[yellow]note[/] {escape(str(path))}: {escape(note)}", markup=True, highlight=False, soft_wrap=True)
                if sink is not None:
                    images[path] = image
                return result

            outcomes = process_images(paths, work, err, summary, max_pixels=settings.max_image_pixels, show_progress=output.show_progress)
            with sink if sink is not None else nullcontext():
                for outcome in outcomes:
                    if sink is not None:
                        sink.add_outcome(session, TASK, outcome, images.pop(outcome.path, None),
                                         (("min_det_score", min_det_score), ("min_rec_score", min_rec_score), ("max_resolution", max_resolution)))
                    output.add(outcome.path, outcome.result, outcome.error)
        output.close()
        report_failures(err, summary)
        raise typer.Exit(summary.exit_code)
