"""`hailo-immich duplicates DB`: groups of near-identical photos from their CLIP vectors; never deletes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hailo_immich_cli.batch.duplicates import IMMICH_MAX_DISTANCE, Group, find_duplicates
from hailo_immich_cli.batch.search import Index
from hailo_immich_cli.commands._common import handle_errors, stderr_console
from hailo_immich_cli.commands._progress import step_progress


def register(app: typer.Typer) -> None:
    @app.command("duplicates")
    @handle_errors
    def duplicates(
        db: Path = typer.Argument(..., envvar="HAILO_IMMICH_DB", help="Index database made by `hailo-immich index` with CLIP"),
        max_distance: float = typer.Option(IMMICH_MAX_DISTANCE, "--max-distance", min=0.0, max=1.0,
                                           help="Largest cosine distance between duplicates (Immich's default: 0.01)"),
        model: Optional[str] = typer.Option(None, "--model", help="CLIP model id (default: the one with most vectors)"),
        as_json: bool = typer.Option(False, "--json", help="JSON object on stdout"),
        html: Optional[Path] = typer.Option(None, "--html", help="Also write the groups as a self-contained HTML page"),
        exact: bool = typer.Option(False, "--exact", help="Compare every pair instead of asking the vector index (slow at scale)"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar"),
    ) -> None:
        """Find near-identical photos (copies, re-encodes, resizes) and suggest which to keep; deletes nothing."""
        console = stderr_console()
        index = Index(db, exact=exact)
        try:
            info = index.clip_model(model)
            index.prepare_vectors()
            if index.note:
                console.print(f"[yellow]{escape(index.note)}[/]", soft_wrap=True)
            with step_progress(console, show=not no_progress) as update:
                groups, summary = find_duplicates(db, index.conn, info["model_id"], max_distance, exact=index.exact, progress=update)
            summary["backend"] = info["backend"]
            if html is not None:
                _page(html, db, index, groups, summary)
                console.print(f"wrote {escape(str(html))}")
        finally:
            index.close()
        if as_json:
            sys.stdout.write(json.dumps({**summary, "groups": [g.as_dict() for g in groups]}, ensure_ascii=False) + "\n")
            return
        _table(groups, summary)


def _page(out: Path, db: Path, index: Index, groups: list[Group], summary: dict) -> None:
    from hailo_immich_cli.batch.html import Card, Section, write_page

    sections = []
    for i, g in enumerate(groups, 1):
        cards = [Card(m.path, [f"{m.width}x{m.height} px, {m.size:,} bytes", f"distance {m.distance:.4f}"],
                      badge="keep" if m.keep else None) for m in g.members]
        sections.append(Section(f"group {i}: {len(g.members)} photos", cards))
    write_page(out, db, index.conn, "duplicates", {"model": summary["model_id"], "backend": summary["backend"],
                                                   "method": summary["method"], "max distance": summary["max_distance"],
                                                   "groups": summary["groups"], "photos": summary["photos"]}, sections)


def _table(groups: list[Group], summary: dict) -> None:
    title = (f"{summary['groups']} group(s), {summary['photos']} photo(s) within cosine distance {summary['max_distance']}"
             f" ({summary['model_id']}, {summary['method']})")
    table = Table("group", "keep", "path", "pixels", "bytes", "distance", title=title, title_justify="left")
    for i, g in enumerate(groups, 1):
        for m in g.members:
            pixels = f"{m.width}x{m.height}" if m.width else "?"
            table.add_row(str(i), "keep" if m.keep else "", escape(m.path), pixels, str(m.size), f"{m.distance:.4f}")
    Console(highlight=False, soft_wrap=False).print(table)

