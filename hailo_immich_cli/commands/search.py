"""`hailo-immich search DB`: find photos by text (CLIP), OCR words, a similar image, or a face."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from hailo_immich_cli.batch.search import Index
from hailo_immich_cli.batch.store import database_errors
from hailo_immich_cli.commands._common import BackendOption, ModelsDirOption, handle_errors, load_settings, stderr_console
from hailo_immich_cli.commands._progress import step_progress
from hailo_immich_cli.errors import BadInputError

if TYPE_CHECKING:
    from hailo_immich_cli.batch.search import Hit


def register(app: typer.Typer) -> None:
    @app.command("search")
    @handle_errors
    def search(
        db: Path = typer.Argument(..., envvar="HAILO_IMMICH_DB", help="Index database made by `hailo-immich index`"),
        text: Optional[str] = typer.Option(None, "--text", help="Describe the photo (CLIP text search)"),
        ocr: Optional[str] = typer.Option(None, "--ocr", help="Words written in the photo (full-text search)"),
        like: Optional[Path] = typer.Option(None, "--like", help="Photos that look like this image"),
        face: Optional[Path] = typer.Option(None, "--face", help="Photos with faces like the main face in this image"),
        person: Optional[str] = typer.Option(None, "--person", help="Photos of this person (name or id from `people`); combines with --text or --ocr"),
        top: int = typer.Option(10, "--top", "-k", min=1, help="How many results (at least 1)"),
        model: Optional[str] = typer.Option(None, "--model", help="Search vectors of this model id (default: the most used)"),
        as_json: bool = typer.Option(False, "--json", help="JSON object on stdout: results, query_ms, how the query ran"),
        paths_only: bool = typer.Option(False, "--paths", help="Paths only, one per line (for pipes)"),
        exact: bool = typer.Option(False, "--exact", help="Scan every vector instead of using the vector index (slow at scale; the reference)"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar while a vector index is built"),
        html: Optional[Path] = typer.Option(None, "--html", help="Also write the results as a self-contained HTML page (thumbnails, scores, face boxes)"),
        remote: Optional[str] = typer.Option(None, "--remote", envvar="HAILO_IMMICH_REMOTE",
                                             help="Encode the query on /predict services (for an index built with --remote)"),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """Search an index; results go to stdout (a table, --json or --paths), messages to stderr."""
        modes = [m for m in (text, ocr, like, face) if m is not None]
        if len(modes) > 1 or (not modes and person is None):
            raise BadInputError("give exactly one of --text, --ocr, --like, --face (or --person, alone or with --text or --ocr)")
        if person is not None and (like is not None or face is not None):
            raise BadInputError("--person combines with --text or --ocr only")
        if as_json and paths_only:
            raise BadInputError("--json and --paths exclude each other")
        settings = load_settings(backend=backend, models_dir=models_dir)
        console = stderr_console(settings)
        with database_errors(db), step_progress(console, show=not no_progress) as update:
            index = Index(db, exact=exact, progress=update)
            session = None
            try:
                only = None
                if person is not None:
                    _, _, boxes = index.person(person)
                    only = set(boxes)
                if person is not None and text is None and ocr is None:
                    hits, mode = index.with_person(person, top), "person"
                elif ocr is not None:
                    hits = index.ocr(ocr, top, model, only=only)
                    mode = "ocr"
                else:
                    if remote:
                        from hailo_immich_cli.batch.remote import RemoteQueryEncoder

                        encoder = RemoteQueryEncoder([u.strip() for u in remote.split(",") if u.strip()])
                    else:
                        from hailo_immich_cli.batch.search import LocalQueryEncoder
                        from hailo_immich_cli.session import SessionManager

                        session = SessionManager(settings)
                        encoder = LocalQueryEncoder(session)
                    if text is not None:
                        hits, mode = index.text(encoder, text, top, model, only=only), "text"
                    elif like is not None:
                        hits, mode = index.like(encoder, _load(like, settings.max_image_pixels), top, model), "like"
                    else:
                        hits, mode = index.face(encoder, _load(face, settings.max_image_pixels), top, model), "face"
                used = index.model(hits[0].model_id) if hits else {"model_id": None, "backend": None}
                if html is not None:
                    _page(html, db, index, hits, mode, text or ocr or like or face or "", person)
                    console.print(f"wrote {escape(str(html))}")
            finally:
                index.close()
                if session is not None:
                    session.close()
        if index.note:
            console.print(f"[yellow]{escape(index.note)}[/]", soft_wrap=True)
        summary = {"mode": mode, "method": "fts" if mode == "ocr" else index.method,
                   "query_ms": None if index.query_ms is None else round(index.query_ms, 3),
                   "model_id": used["model_id"], "backend": used["backend"]}
        _print(hits, mode, as_json, paths_only, summary)


def _page(out: Path, db: Path, index: Index, hits: list[Hit], mode: str, query: object, person: Optional[str]) -> None:
    from hailo_immich_cli.batch.html import Card, Section, write_page

    model = index.model(hits[0].model_id) if hits else {"model_id": None, "backend": None}
    cards = []
    for i, h in enumerate(hits, 1):
        lines = [f"#{i} score {h.score:.4f}"]
        if "text" in h.detail:
            lines.append(str(h.detail["text"]))
        boxes = h.detail.get("boxes") or ([h.detail["box"]] if "box" in h.detail else [])
        cards.append(Card(h.path, lines, boxes))
    title = f"search {mode}: {query}" + (f" with {person}" if person and mode != "person" else "") if query else f"photos of {person}"
    write_page(out, db, index.conn, title, {"model": model["model_id"], "backend": model["backend"], "method": index.method,
                                             "query ms": None if index.query_ms is None else f"{index.query_ms:.1f}",
                                             "results": len(hits)}, [Section(f"{len(hits)} result(s)", cards)])


def _load(path: Path, max_pixels: int):
    from hailo_immich_cli.imaging import decode_image  # OpenCV and Pillow: only --like and --face read an image

    return decode_image(path, max_pixels=max_pixels, exif_transpose=True).rgb


def _print(hits: list[Hit], mode: str, as_json: bool, paths_only: bool, summary: dict) -> None:
    if paths_only:
        for h in hits:
            sys.stdout.write(h.path + "\n")
        return
    if as_json:
        sys.stdout.write(json.dumps({**summary, "results": [h.as_dict() for h in hits]}, ensure_ascii=False) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    timing = f" ({summary['method']}, {summary['query_ms']:.1f} ms)" if summary.get("query_ms") is not None else ""
    table = Table("#", "score", "path", title=f"{len(hits)} result(s){timing}", title_justify="left")
    extra = {"ocr": "text", "face": "box", "person": "boxes"}.get(mode)
    if extra:
        table.add_column(extra)
    for i, h in enumerate(hits, 1):
        row = [str(i), f"{h.score:.4f}", escape(h.path)]
        if extra:
            row.append(escape(str(h.detail.get(extra, ""))))
        table.add_row(*row)
    Console(highlight=False, soft_wrap=False).print(table)
