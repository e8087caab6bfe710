"""`hailo-immich ocr PATH...`: read the text in image files or folders, as tables or JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hailo_immich_cli.commands._common import BackendOption, ModelsDirOption, check_arguments, handle_errors, load_settings, open_session, stderr_console
from hailo_immich_cli.commands._images import RunSummary, process_images, report_failures
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.ocr.pipeline import OcrResult, read_text
from hailo_immich_cli.ocr.task import DETECTION, RECOGNITION, TASK


def result_record(path: Path, result: OcrResult) -> dict[str, Any]:
    """One JSON record per image: the file, the models (recipe id, backend) and the lines in reading order."""
    return {
        "file": str(path),
        "width": result.width,
        "height": result.height,
        "detector": {"recipe": result.detector.recipe_id, "backend": result.detector.backend, "model_id": result.detector.model_id},
        "recognizer": {"recipe": result.recognizer.recipe_id, "backend": result.recognizer.backend, "model_id": result.recognizer.model_id},
        "lines": [
            {
                "text": line.text,
                "box": [[round(float(x), 1), round(float(y), 1)] for x, y in line.box],
                "box_score": round(line.box_score, 5),
                "text_score": line.text_score,
            }
            for line in result.lines
        ],
    }


def _table(path: Path, result: OcrResult) -> Table:
    title = f"{escape(str(path))}  ({result.width}x{result.height}, {len(result.lines)} lines, {result.detector.recipe_id} + {result.recognizer.recipe_id} on {result.detector.backend})"
    table = Table(title=title, title_justify="left", show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("text")
    table.add_column("text score", justify="right")
    table.add_column("box score", justify="right")
    table.add_column("box (TL, BR)")
    for i, line in enumerate(result.lines, 1):
        (x1, y1), (x2, y2) = line.box[0], line.box[2]
        table.add_row(str(i), escape(line.text), f"{line.text_score:.3f}", f"{line.box_score:.3f}", f"({x1:.0f},{y1:.0f}) ({x2:.0f},{y2:.0f})")
    return table


def _open_sink(db: Path | None, paths: list[Path]):
    """The index database to store text in (None without --db)."""
    if db is None:
        return None
    from hailo_immich_cli.batch.sink import DbSink

    return DbSink(db, "ocr", paths, TASK.name)


def _store(sink, session, outcome, image, options) -> None:
    """Text stored under the key `index` uses; non-default thresholds get their own key (not the same result)."""
    from hailo_immich_cli.batch.store import ModelInfo, TaskOutput

    if outcome.error:
        sink.fail(outcome.path, outcome.error)
        return
    result = outcome.result
    if result is None or image is None:
        return
    for prov, task in ((result.detector, DETECTION), (result.recognizer, RECOGNITION)):
        recipe = session.recipes.get(prov.recipe_id)
        sink.model(ModelInfo(prov.model_id, task, prov.recipe_id, prov.backend, prov.device, prov.runtime, tuple(recipe.immich_names)))
    tweaks = "".join(f"?{k}={v}" for k, v in options if v is not None)
    key = TASK.model_key([result.detector.model_id, result.recognizer.model_id]) + tweaks
    sink.add(outcome.path, image, [TaskOutput(TASK.name, key, result.detector.backend, result)])


def register(app: typer.Typer) -> None:
    @app.command("ocr")
    @handle_errors
    def ocr(
        paths: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
        min_det_score: Optional[float] = typer.Option(None, "--min-det-score", help="Detection box score threshold (recipe default 0.5)."),
        min_rec_score: Optional[float] = typer.Option(None, "--min-rec-score", help="Keep lines whose text score is above this (recipe default 0.8)."),
        max_resolution: Optional[int] = typer.Option(None, "--max-resolution", help="Detector resolution of the shorter side (recipe default 736)."),
        detector: Optional[str] = typer.Option(None, "--detector", help="Detection recipe id or Immich model name."),
        recognizer: Optional[str] = typer.Option(None, "--recognizer", help="Recognition recipe id or Immich model name."),
        as_json: bool = typer.Option(False, "--json", help="One JSON array of records on stdout."),
        as_jsonl: bool = typer.Option(False, "--jsonl", help="One JSON record per image per line on stdout, as they finish."),
        db: Optional[Path] = typer.Option(None, "--db", help="Also store the text in this index database (as `index` does)."),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Detect and read text lines; a bad file is reported and skipped (exit code 1 at the end)."""
        if as_json and as_jsonl:
            raise BadInputError("choose one of --json and --jsonl")
        check_arguments(paths, db)
        settings = load_settings(backend=backend, models_dir=models_dir)
        err = stderr_console(settings)
        out = Console(no_color=settings.no_color, highlight=False)
        summary = RunSummary()
        records: list[dict[str, Any]] = []

        with open_session(settings) as session:
            sink = _open_sink(db, paths)
            images: dict[Path, Any] = {}

            def work(path: Path, image) -> OcrResult:
                result = read_text(
                    session, image.rgb, detector=detector, recognizer=recognizer,
                    min_det_score=min_det_score, max_resolution=max_resolution, min_rec_score=min_rec_score,
                )
                if sink is not None:
                    images[path] = image
                return result

            outcomes = process_images(paths, work, err, summary, max_pixels=settings.max_image_pixels, show_progress=not (as_json or as_jsonl))
            for outcome in outcomes:
                if sink is not None:
                    _store(sink, session, outcome, images.pop(outcome.path, None),
                           (("min_det_score", min_det_score), ("min_rec_score", min_rec_score), ("max_resolution", max_resolution)))
                record = result_record(outcome.path, outcome.result) if outcome.result is not None else {"file": str(outcome.path), "error": outcome.error}
                if as_jsonl:
                    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                elif as_json:
                    records.append(record)
                elif outcome.result is not None:
                    out.print(_table(outcome.path, outcome.result))
            if sink is not None:
                sink.close()
        if as_json:
            sys.stdout.write(json.dumps(records, ensure_ascii=False, indent=2) + "\n")
        report_failures(err, summary)
        raise typer.Exit(summary.exit_code)
