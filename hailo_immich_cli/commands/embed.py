"""`hailo-immich embed`: CLIP embeddings of image files/folders, or of `--text` prompts.

Every vector is printed or saved together with the model id (recipe + file hash) and backend that
made it, so vectors from different models are never mixed up.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Any, List, Optional

import numpy as np
import typer

from hailo_immich_cli.commands._common import (
    BackendOption, ModelsDirOption, check_arguments, db_option, handle_errors, load_settings, open_session, open_sink, stderr_console,
)
from hailo_immich_cli.commands._images import ResultOutput, RunSummary, process_images, report_failures
from hailo_immich_cli.clip.task import TASK
from hailo_immich_cli.errors import BadInputError


class _Npy:
    """`--npy FILE`: the (N, D) float32 vectors, and beside them FILE.json with the labels and the model."""

    def __init__(self, kind: str, path: Path):
        self.kind, self.path = kind, path
        self.labels: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.meta: dict[str, Any] = {}

    def add(self, labels: list[str], vectors: np.ndarray, provenance) -> None:
        if not self.meta:
            self.meta = {"model_id": provenance.model_id, "recipe": provenance.recipe_id, "backend": provenance.backend,
                         "device": provenance.device, "runtime": provenance.runtime, **{k: v for k, v in provenance.extra.items() if k != "path"}}
        self.labels.extend(labels)
        self.vectors.extend(vectors)

    def close(self) -> None:
        dim = self.vectors[0].shape[0] if self.vectors else 0
        np.save(self.path, np.stack(self.vectors).astype(np.float32) if self.vectors else np.zeros((0, dim), np.float32))
        side = self.path.with_suffix(".json")
        side.write_text(json.dumps({**self.meta, "kind": self.kind, "items": self.labels, "rows": len(self.labels)},
                                   indent=2, ensure_ascii=False), encoding="utf-8")
        stderr_console().print(f"wrote {len(self.labels)} vectors to {self.path} (labels and model in {side.name})")


class _Output:
    """Vectors as the task writes them on stdout (lines, or --jsonl records) and/or into --npy."""

    def __init__(self, kind: str, jsonl: bool, npy: Path | None, no_color: bool):
        self.kind = kind
        self.stdout = ResultOutput(TASK, False, jsonl, no_color) if jsonl or npy is None else None
        self.npy = _Npy(kind, npy) if npy is not None else None

    def add(self, labels: list[str], vectors: np.ndarray, provenance) -> None:
        if self.npy is not None:
            self.npy.add(labels, vectors, provenance)
        if self.stdout is not None:
            for label, vec in zip(labels, vectors):
                self.stdout.add(label, (vec, provenance), kind=self.kind)

    def close(self) -> None:
        if self.npy is not None:
            self.npy.close()
        if self.stdout is not None:
            self.stdout.close()


def register(app: typer.Typer) -> None:
    @app.command("embed")
    @handle_errors
    def embed(
        paths: Optional[List[Path]] = typer.Argument(None, help="Image files or folders (searched recursively)."),
        text: Optional[List[str]] = typer.Option(None, "--text", "-t", help="Embed this text prompt instead (repeatable)."),
        model: Optional[str] = typer.Option(None, "--model", "-m", help="Recipe id or Immich model name (default: the backend's default)."),
        npy: Optional[Path] = typer.Option(None, "--npy", help="Save the (N, D) float32 vectors to FILE.npy; labels and model id go to FILE.json."),
        jsonl: bool = typer.Option(False, "--jsonl", help="One JSON object per vector on stdout (label, model_id, backend, embedding)."),
        db: Optional[Path] = db_option("image vectors"),
        backend: Optional[str] = BackendOption,
        models_dir: Optional[Path] = ModelsDirOption,
    ) -> None:
        """CLIP embeddings (L2-normalised) for images or text, each tagged with its model id and backend."""
        from hailo_immich_cli.clip import pipeline as clip

        if bool(paths) == bool(text):
            raise BadInputError("give image PATHs or --text, not both and not neither")
        if npy is not None and npy.suffix != ".npy":
            npy = npy.with_name(npy.name + ".npy")
        check_arguments(paths, db)
        settings = load_settings(backend=backend, models_dir=models_dir)
        console = stderr_console(settings)
        out = _Output("text" if text else "path", jsonl, npy, settings.no_color)
        with open_session(settings) as session:
            if text:
                result = clip.encode_texts(session, list(text), model=clip.paired_model(session.recipes, model, clip.TEXTUAL))
                out.add(list(text), result.vectors, result.provenance)
                out.close()
                return
            recipe = session.resolve(clip.VISUAL, clip.paired_model(session.recipes, model, clip.VISUAL))
            session.model(recipe.id)  # load (and say which backend) before the first file
            sink = open_sink(db, "embed", paths or [], TASK, session, [recipe])
            summary = RunSummary()
            labels: list[str] = []
            feeds: list[np.ndarray] = []
            images: list[Any] = []

            def flush() -> None:
                if feeds:
                    done = clip.encode_prepared(session, recipe, np.concatenate(feeds))
                    if sink is not None:  # stored before printed: whatever was printed is in the database
                        from hailo_immich_cli.batch.store import TaskOutput

                        for label, image, vec in zip(labels, images, done.vectors):
                            sink.add(Path(label), image, [TaskOutput(TASK.name, done.provenance.model_id, done.provenance.backend, vec)])
                    out.add(labels[:], done.vectors, done.provenance)
                    labels.clear()
                    feeds.clear()
                    images.clear()

            def work(path: Path, image) -> bool:
                with session.host_time(recipe.id):
                    feeds.append(clip.prepare_images(recipe, [image.rgb]))
                labels.append(str(path))
                if sink is not None:
                    images.append(image)
                return True

            with sink if sink is not None else nullcontext():
                for outcome in process_images(paths or [], work, console, summary, max_pixels=settings.max_image_pixels):
                    if outcome.error and sink is not None:
                        sink.fail(outcome.path, outcome.error)
                    if len(feeds) >= max(1, recipe.batch_size):
                        flush()
                flush()
            out.close()
            report_failures(console, summary)
            if summary.ok == 0 and not summary.failed:
                raise BadInputError("no image files found under the given paths")
            raise typer.Exit(summary.exit_code)
