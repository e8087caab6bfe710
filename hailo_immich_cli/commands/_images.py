"""The per-image loop shared by `detect`, `embed` and `ocr`: decode, run, report, never stop on one bad file;
and their stdout, written by each task's own table and JSON record."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hailo_immich_cli.batch.scan import iter_image_files
from hailo_immich_cli.errors import BadInputError, HailoImmichError
from hailo_immich_cli.imaging import DecodedImage, decode_image

T = TypeVar("T")


@dataclass
class ImageOutcome(Generic[T]):
    path: Path
    result: T | None = None
    error: str | None = None


@dataclass
class RunSummary:
    ok: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def process_images(
    paths: Iterable[Path],
    work: Callable[[Path, DecodedImage], T],
    console: Console,
    summary: RunSummary,
    max_pixels: int = 100_000_000,
    show_progress: bool = True,
) -> Iterator[ImageOutcome[T]]:
    """Yield one outcome per file; decode errors and bad input are outcomes, device errors propagate."""
    files = list(iter_image_files(paths))
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not show_progress or len(files) < 2,
    )
    with progress:
        task = progress.add_task("images", total=len(files))
        for path in files:
            outcome: ImageOutcome[T] = ImageOutcome(path)
            try:
                if not path.is_file():  # gone since the scan, or a folder named like an image
                    raise BadInputError(f"{path}: no such file")
                image = decode_image(path, max_pixels=max_pixels, exif_transpose=True)
                outcome.result = work(path, image)
                summary.ok += 1
            except BadInputError as exc:
                outcome.error = str(exc)
            except HailoImmichError:
                raise
            except OSError as exc:
                outcome.error = f"{path}: {exc.strerror or exc}"
            if outcome.error:
                summary.failed.append((path, outcome.error))
                console.print(f"[yellow]skipped[/] {outcome.error}", markup=True, highlight=False)
            progress.advance(task)
            yield outcome


def report_failures(console: Console, summary: RunSummary) -> None:
    if summary.failed:
        console.print(f"[red]{len(summary.failed)} file(s) failed[/], {summary.ok} processed", markup=True)


class ResultOutput:
    """A per-file command's stdout: the task's table (`Task.cli_table`), or its records (`Task.cli_record`)
    one JSON line per file as files finish (--jsonl) or one JSON array at the end (--json)."""

    def __init__(self, task: Any, as_json: bool, as_jsonl: bool, no_color: bool):
        if as_json and as_jsonl:
            raise BadInputError("choose one of --json and --jsonl")
        self.task, self.as_json, self.as_jsonl = task, as_json, as_jsonl
        self.records: list[dict[str, Any]] = []
        self.table = None if as_json or as_jsonl else task.cli_table(no_color)

    @property
    def show_progress(self) -> bool:
        return self.table is not None

    def add(self, label: Any, result: Any, error: str | None = None, **extra: Any) -> None:
        """One file's (or text's) result; a failed file (`result` None) is listed only by tasks that say so."""
        if result is None:
            if self.table is not None or not self.task.cli_lists_failures:
                return
            record = {"file": str(label), "error": error}
        elif self.table is not None:
            self.table.add(label, result)
            return
        else:
            record = self.task.cli_record(label, result, **extra)
        if self.as_jsonl:
            sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
            sys.stdout.flush()
        else:
            self.records.append(record)

    def close(self) -> None:
        if self.table is not None:
            self.table.close()
        elif self.as_json:
            sys.stdout.write(json.dumps(self.records, ensure_ascii=False, indent=2) + "\n")
