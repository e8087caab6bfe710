"""`hailo-immich index PATH... --db FILE`: index photo folders into SQLite, incrementally."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from hailo_immich_cli.batch.index import IndexOptions, Indexer, IndexStats
from hailo_immich_cli.batch.store import Store, database_errors
from hailo_immich_cli.commands._common import (
    BackendOption,
    ModelsDirOption,
    check_arguments,
    handle_errors,
    load_settings,
    stderr_console,
)
from hailo_immich_cli.errors import BadInputError, ModelMissingError
from hailo_immich_cli.tasks import by_name

DbOption = typer.Option(..., "--db", envvar="HAILO_IMMICH_DB", help="Index database file (SQLite)")


def parse_tasks(raw: str) -> tuple[str, ...]:
    tasks = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    known = by_name()
    bad = [t for t in tasks if t not in known]
    if bad or not tasks:
        raise BadInputError(f"--tasks takes a comma list of {', '.join(known)}; got '{raw}'")
    return tasks


def _describe(stats: IndexStats) -> str:
    c = stats.counts()
    return f"new {c['new']} chg {c['changed']} mv {c['renamed']} same {c['unchanged']} fail {c['failed']}"


def register(app: typer.Typer) -> None:
    @app.command("index")
    @handle_errors
    def index(
        paths: List[Path] = typer.Argument(..., help="Photo folders or files"),
        db: Path = DbOption,
        tasks: Optional[str] = typer.Option(None, "--tasks", "-t", help="Comma list of faces, clip, ocr (default: every task whose models are present)"),
        clip_model: Optional[str] = typer.Option(None, "--clip-model", help="CLIP recipe id or Immich model name"),
        face_model: Optional[str] = typer.Option(None, "--face-model", help="Immich model name (buffalo_l) or DETECTOR,RECOGNISER recipe ids"),
        ocr_model: Optional[str] = typer.Option(None, "--ocr-model", help="Immich model name (PP-OCRv5_mobile) or DETECTOR,RECOGNISER recipe ids"),
        remote: Optional[str] = typer.Option(None, "--remote", envvar="HAILO_IMMICH_REMOTE",
                                             help="Run tasks on Immich-compatible /predict services: URL[,URL...]"),
        workers: int = typer.Option(0, "--workers", "-w", help="Decoder threads (0 = by CPU count)"),
        decode_min_side: Optional[int] = typer.Option(None, "--decode-min-side",
                                                      help="Decode JPEGs down to this shorter side (0 = full size; default: what the models need)"),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="Try again files that failed before and did not change"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar"),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Index photos: faces, CLIP vectors and OCR text into one SQLite file; re-runs do only what changed."""
        # Arguments first: a typo must not load models, create a database or a folder.
        selected = parse_tasks(tasks or ",".join(by_name()))
        check_arguments(paths, db)
        settings = load_settings(backend=backend, models_dir=models_dir)
        console = stderr_console(settings)
        names = {"clip": clip_model, "faces": face_model, "ocr": ocr_model}
        options = IndexOptions(paths=paths, decode_min_side=decode_min_side, retry_failed=retry_failed,
                               max_pixels=settings.max_image_pixels)
        if workers > 0:
            options.decode_workers = workers
        with database_errors(db):
            # An existing file is checked for damage before any model loads; a new one is only
            # created once the models are known to be there.
            store = Store(db) if db.exists() else None
            session = None
            indexer = None
            try:
                if remote:
                    from hailo_immich_cli.batch.remote import RemoteEngine

                    engine = RemoteEngine([u.strip() for u in remote.split(",") if u.strip()], selected, names)
                else:
                    from hailo_immich_cli.batch.engines import LocalEngine
                    from hailo_immich_cli.session import SessionManager

                    session = SessionManager(settings)
                    if tasks is None:
                        selected = _tasks_with_models(session, selected, names, console)
                    engine = LocalEngine(session, selected, names)
                store = store or Store(db)
                indexer = Indexer(store, engine, options)
                stats = _run(indexer, console, show=not no_progress)
                _sync_vector_indexes(db, console, show=not no_progress)
                _group_people(store, console, show=not no_progress)
            except KeyboardInterrupt:
                if indexer is not None and not indexer.idle:
                    # A stage is still busy (a batch inside a model, a commit): closing under it could
                    # crash; the process exit releases both, and SQLite's journal keeps the file whole.
                    session = store = None
                raise
            finally:
                if session is not None:
                    session.close()
                if store is not None:
                    store.close()
        _report(console, stats)
        if stats.failures or stats.previous_failures:
            raise typer.Exit(1)


def _sync_vector_indexes(db: Path, console, show: bool) -> None:
    """Keep the search indexes in step with what this run wrote (incremental: only the changes)."""
    from hailo_immich_cli.batch.vectors import VectorIndexUnavailable, sync_all
    from hailo_immich_cli.commands._progress import step_progress

    try:
        with step_progress(console, show=show) as update:
            sync_all(db, update)
    except VectorIndexUnavailable as exc:
        console.print(f"[yellow]vector index not updated:[/] {escape(str(exc))} (search will build it or scan exactly)", soft_wrap=True)


def _group_people(store: Store, console, show: bool) -> None:
    """New faces join their people (or start new ones) with Immich's defaults; `people` re-runs it with other settings."""
    from hailo_immich_cli.batch.people import cluster_all
    from hailo_immich_cli.batch.vectors import VectorIndexUnavailable
    from hailo_immich_cli.commands._progress import step_progress

    try:
        with step_progress(console, show=show) as update:
            cluster_all(store, progress=update)
    except VectorIndexUnavailable as exc:
        console.print(f"[yellow]faces not grouped into people:[/] {escape(str(exc))}", soft_wrap=True)


def _tasks_with_models(session, tasks: tuple[str, ...], names: dict, console) -> tuple[str, ...]:
    """Without --tasks, index what the present models allow and say loudly what is left out."""
    from hailo_immich_cli.batch.engines import LocalEngine

    usable, missing = [], []
    for task in tasks:
        try:
            LocalEngine(session, (task,), names)
            usable.append(task)
        except ModelMissingError as exc:
            missing.append(exc)
            console.print(f"[yellow]skipping {task}:[/] {escape(str(exc))}", soft_wrap=True)
    if not usable:
        raise missing[0]
    return tuple(usable)


def _run(indexer: Indexer, console, show: bool) -> IndexStats:
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} files/s"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=False, disable=not show,
    )
    import time

    start = time.monotonic()
    with progress:
        bar = progress.add_task("scanning", total=None, rate="0.0")

        def update(stats: IndexStats) -> None:
            elapsed = max(time.monotonic() - start, 1e-6)
            progress.update(bar, completed=stats.done, total=stats.total, description=_describe(stats),
                            rate=f"{stats.done / elapsed:.1f}")

        indexer.on_progress = update
        stats = indexer.run()
        update(stats)
    return stats


def _report(console, stats: IndexStats) -> None:
    c = stats.counts()
    console.print(
        f"indexed: {c['new']} new, {c['changed']} changed, {c['renamed']} renamed/moved, {c['unchanged']} unchanged, "
        f"{c['deleted']} deleted, {c['failed']} failed" + (f", {c['skipped_failed']} skipped (failed before)" if c["skipped_failed"] else "")
    )
    if stats.failures:
        table = Table("file", "error", title=f"{len(stats.failures)} file(s) failed", title_justify="left")
        for path, error in sorted(stats.failures)[:50]:
            table.add_row(escape(path), escape(error))
        console.print(table)
        if len(stats.failures) > 50:
            console.print(f"... and {len(stats.failures) - 50} more (see the `files` table, status = 'failed')")
    if stats.previous_failures:
        console.print(f"[red]{len(stats.previous_failures)} file(s) still failed from an earlier run[/] (unchanged since, "
                      "so not tried again): `hailo-immich index --retry-failed` tries them again")
        for path, error in stats.previous_failures[:10]:
            console.print(f"  {escape(path)}: {escape(error or 'failed')}", soft_wrap=True)
        if len(stats.previous_failures) > 10:
            console.print(f"  ... and {len(stats.previous_failures) - 10} more")
