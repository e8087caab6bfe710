"""`hailo-immich fetch-models`: put the selected recipes' files into the models dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from hailo_immich_cli.commands._common import BackendOption, ModelsDirOption, handle_errors, load_settings, stderr_console
from hailo_immich_cli.errors import UnknownModelError
from hailo_immich_cli.models.fetch import Fetcher, FetchResult
from hailo_immich_cli.models.immich_cache import import_models, load_recipe_book, looks_like_cache, scan_cache
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import Recipe, RecipeBook
from hailo_immich_cli.session import probe_hailo
from hailo_immich_cli.settings import Settings


class RichProgress:
    """Adapts the fetcher's progress calls to rich bars on stderr."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def start(self, label: str, total: int | None, done: int) -> object:
        return self.progress.add_task(label, total=total, completed=done)

    def advance(self, task: object, amount: int) -> None:
        self.progress.advance(task, amount)  # type: ignore[arg-type]

    def finish(self, task: object) -> None:
        self.progress.update(task, visible=False)  # type: ignore[arg-type]


def select_recipes(book: RecipeBook, settings: Settings, backend: str | None, recipe_ids: list[str], everything: bool) -> list[Recipe]:
    """--recipe wins; --all takes every recipe (of --backend if given); else the backend's defaults."""
    if recipe_ids:
        return [book.get(rid) for rid in recipe_ids]
    wanted = backend or settings.backend
    if wanted == "all":
        backends = ["cpu", "hailo"]
    elif wanted == "auto":
        backends = ["cpu"] + (["hailo"] if probe_hailo()[0] else [])
    else:
        backends = [wanted]
    if everything:
        return [r for r in book if r.backend in backends or backend is None]
    return [r for r in book if r.backend in backends and r.default]


def _only(scan, recipes):
    """The cache scan restricted to the selected recipes."""
    from dataclasses import replace

    return replace(scan, recipes=tuple(recipes))


def register(app: typer.Typer) -> None:
    @app.command("fetch-models")
    @handle_errors
    def fetch_models(
        recipe: Optional[List[str]] = typer.Option(None, "--recipe", "-r", help="Recipe id to fetch (repeatable)."),
        everything: bool = typer.Option(False, "--all", help="Every recipe (of --backend, if given)."),
        backend: Optional[str] = typer.Option(None, "--backend", "-b", help="cpu | hailo | all (default: the active backend's default recipes)."),
        source_dir: Optional[Path] = typer.Option(None, "--from", help="Local mirror (air-gapped installs): model files, wheels, or an Immich model cache."),
        list_only: bool = typer.Option(False, "--list", help="Show each recipe's state; exit 1 if a selected one is not ready."),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Download (or copy from --from) model files, verify them, and place them atomically."""
        settings = load_settings(models_dir=models_dir)
        book = load_recipe_book(settings)
        if backend not in (None, "cpu", "hailo", "all"):
            raise UnknownModelError(f"--backend must be cpu, hailo or all, not '{backend}'")
        scan = scan_cache(book, settings, source_dir) if source_dir is not None and looks_like_cache(source_dir) else None
        if scan is not None:  # an Immich cache: every model in it, by the recipes that run it
            book = RecipeBook([*book, *(r for r in scan.recipes if r.id not in {b.id for b in book})])
        selected = select_recipes(book, settings, backend, recipe or [], everything)
        imported = [r for r in (scan.recipes if scan else ()) if not recipe or r.id in recipe]
        if scan is not None and not recipe:
            selected += [book.get(rid) for rid in sorted(set(scan.covered.values())) if rid not in {s.id for s in selected}]
        selected = [r for r in selected if r not in imported]
        files = ModelFiles(settings)
        if list_only:
            raise typer.Exit(_list(book, selected + imported, files, as_json, recipe_filter=bool(recipe or everything or backend)))
        console = stderr_console(settings)
        columns = [TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=console, transient=True) as progress:
            fetcher = Fetcher(files, RichProgress(progress), mirror=source_dir)
            results = fetcher.fetch(selected)
        if scan is not None:
            results += [
                FetchResult(rid, rel, "failed" if status.startswith("failed") else status, None,
                            source=f"Immich cache {scan.root}", error=status[8:] if status.startswith("failed") else "")
                for rid, rel, status in import_models(_only(scan, imported), settings.models_dir)
            ]
        failed = [r for r in results if r.status == "failed"]
        if as_json:
            typer.echo(json.dumps([{**r.__dict__, "path": str(r.path) if r.path else None} for r in results], indent=2))
        else:
            out = Console(no_color=settings.no_color)
            for r in results:
                if r.status == "failed":
                    out.print(f"[red]FAILED[/]  {r.recipe_id}/{r.file}: {r.error}")
                elif r.status == "fetched":
                    out.print(f"[green]fetched[/] {r.recipe_id}/{r.file}  ({r.source})")
                else:
                    out.print(f"present {r.recipe_id}/{r.file}")
            out.print(f"{len(results) - len(failed)} of {len(results)} files ready in {settings.models_dir}")
        if failed:
            raise typer.Exit(5)


def _list(book: RecipeBook, selected: list[Recipe], files: ModelFiles, as_json: bool, recipe_filter: bool) -> int:
    shown = selected if recipe_filter else list(book)
    selected_ids = {r.id for r in selected}
    rows = []
    for recipe in shown:
        states = files.states(recipe)
        overall = "present" if all(s.state == "present" for s in states) else ("corrupt" if any(s.state == "corrupt" for s in states) else "missing")
        rows.append({
            "recipe": recipe.id,
            "task": recipe.task,
            "backend": recipe.backend,
            "default": recipe.default,
            "immich_names": list(recipe.immich_names),
            "immich_cache": dict(recipe.raw["immich_cache"]) if "immich_cache" in recipe.raw else None,
            "state": overall,
            "selected": recipe.id in selected_ids,
            "files": [{"name": s.spec.name, "state": s.state, "path": str(s.path) if s.path else None, "reason": s.reason} for s in states],
        })
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        table = Table(title=f"recipes ({files.models_dir})")
        # Recipe ids are what users copy into --recipe: never cut them, even in a pipe's 80 columns.
        table.add_column("recipe", no_wrap=True, min_width=1 + max((len(r["recipe"]) for r in rows), default=6))
        for col in ("task", "backend", "state"):
            table.add_column(col)
        table.add_column("immich names", overflow="fold")
        colours = {"present": "green", "missing": "yellow", "corrupt": "red"}
        for row in rows:
            mark = "*" if row["selected"] else " "
            state = f"[{colours[row['state']]}]{row['state']}[/]"
            table.add_row(f"{mark}{row['recipe']}", row["task"], row["backend"], state, ", ".join(row["immich_names"]))
        out = Console()
        if not out.is_terminal:  # a pipe has no width of its own: wider than the 80 columns rich assumes
            out = Console(width=120, no_color=True)
        out.print(table)
    not_ready = [r for r in rows if r["selected"] and r["state"] != "present"]
    return 1 if not_ready else 0
