"""`hailo-immich people DB`: group faces into people (incrementally), list, name and merge them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional, Tuple

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hailo_immich_cli.batch import people as ppl
from hailo_immich_cli.batch.store import Store
from hailo_immich_cli.commands._common import handle_errors, stderr_console
from hailo_immich_cli.commands._progress import step_progress
from hailo_immich_cli.errors import BadInputError


def register(app: typer.Typer) -> None:
    @app.command("people")
    @handle_errors
    def people(
        db: Path = typer.Argument(..., envvar="HAILO_IMMICH_DB", help="Index database made by `hailo-immich index` with faces"),
        name: Optional[Tuple[str, str]] = typer.Option(None, "--name", help="Name a person: --name ID NAME"),
        merge: Optional[Tuple[str, str]] = typer.Option(None, "--merge", help="Merge person B into A: --merge A B (ids or names)"),
        max_distance: float = typer.Option(ppl.IMMICH_MAX_DISTANCE, "--max-distance", min=0.001, max=2.0,
                                           help="Largest cosine distance between faces of one person (Immich: 0.5)"),
        min_faces: int = typer.Option(ppl.IMMICH_MIN_FACES, "--min-faces", min=1, max=10000,
                                      help="Faces (itself included) within the distance for a face to start a person (Immich: 3)"),
        model: Optional[str] = typer.Option(None, "--model", help="Recognition model id (default: the one with most faces)"),
        as_json: bool = typer.Option(False, "--json", help="JSON object on stdout"),
        html: Optional[Path] = typer.Option(None, "--html", help="Also write the people as a self-contained HTML page"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar"),
    ) -> None:
        """Group new faces into people (existing people never reshuffle), then list people with face counts."""
        console = stderr_console()
        store = Store(db, create=False)
        try:
            recognizer = _pick(store, model)
            with step_progress(console, show=not no_progress) as update:
                counts = ppl.cluster(store, recognizer, max_distance, min_faces, progress=update)
            if counts["faces"]:
                console.print(f"{counts['faces']} new face(s): {counts['assigned']} assigned, {counts['new_people']} new people,"
                              f" {counts['unassigned']} without a person")
            if name:
                pid = ppl.rename(store, name[0], name[1])
                console.print(f"person {pid} is now named {escape(name[1])}")
            if merge:
                pid = ppl.merge(store, merge[0], merge[1])
                console.print(f"merged {escape(merge[1])} into person {pid}")
            listing = ppl.list_people(store.conn, recognizer)
            backend = (store.conn.execute("SELECT backend FROM models WHERE model_id = ?", (recognizer,)).fetchone() or [None])[0]
            if html is not None:
                _page(html, store, recognizer, backend, listing, max_distance, min_faces)
                console.print(f"wrote {escape(str(html))}")
        finally:
            store.close()
        if as_json:
            sys.stdout.write(json.dumps({"recognizer": recognizer, "backend": backend,
                                         "max_distance": max_distance, "min_faces": min_faces,
                                         "clustered": counts, "people": [p.as_dict() for p in listing]}, ensure_ascii=False) + "\n")
            return
        table = Table("id", "name", "faces", "photos", "representative face", title=f"{len(listing)} people ({recognizer})",
                      title_justify="left")
        for p in listing:
            face = f"{p.face['path']} {p.face['box']}" if p.face else ""
            table.add_row(str(p.id), escape(p.name or ""), str(p.faces), str(p.photos), escape(face))
        Console(highlight=False, soft_wrap=False).print(table)


def _page(out: Path, store: Store, recognizer: str, backend: str | None, listing: list, max_distance: float,
          min_faces: int) -> None:
    from hailo_immich_cli.batch.html import Card, Section, write_page

    cards = [Card(p.face["path"], [f"{p.name or 'unnamed'} (id {p.id})", f"{p.faces} faces in {p.photos} photos"],
                  [p.face["box"]]) for p in listing if p.face]
    write_page(out, store.path, store.conn, "people", {"model": recognizer, "backend": backend, "max distance": max_distance,
                                                       "min faces": min_faces, "people": len(listing)},
               [Section(f"{len(listing)} people", cards)])


def _pick(store: Store, wanted: str | None) -> str:
    counts = ppl.recognizers(store.conn)
    if not counts:
        raise BadInputError("the index holds no face embeddings (index with --tasks faces and a recognition model)")
    if wanted is None:
        return max(counts, key=lambda r: (r[1], r[0]))[0]
    for rec, _ in counts:
        if rec == wanted or rec.split("@")[0] == wanted or rec.startswith(wanted):
            return rec
    raise BadInputError(f"no face embeddings from '{wanted}'; the index has: {', '.join(r for r, _ in counts)}")

