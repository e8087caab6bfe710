"""`--db FILE` for the per-image commands (detect, embed, ocr): their results go into the index too.

Rows are keyed exactly as `index` keys them (content hash, task, model), so a later `index` run
skips what these commands already stored, and `search` finds it.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from hailo_immich_cli.batch.store import FileRecord, ModelInfo, Store, TaskOutput, content_hash, database_errors


class DbSink:
    """Collects one command's per-file results and commits them in batches (one file = all or nothing)."""

    def __init__(self, db: Path, command: str, paths: Sequence[Path], task: str, commit_every: int = 64):
        self.db = Path(db)
        self.store = Store(db)
        self.task = task
        self.commit_every = commit_every
        self.run_id = self.store.start_run(command, [str(Path(p).resolve()) for p in paths], [task], {})
        self.pending: list[FileRecord] = []
        self.counts = {"new": 0, "changed": 0, "renamed": 0, "failed": 0, "unchanged": 0}
        self._models: set[str] = set()
        self._last = time.monotonic()

    def model(self, info: ModelInfo) -> None:
        if info.model_id not in self._models:
            self._models.add(info.model_id)
            self.store.record_model(info)

    def record_recipe(self, session, recipe_id: str) -> None:
        """The model row of a recipe's loaded model (once per model)."""
        prov = session.model(recipe_id).provenance
        recipe = session.recipes.get(recipe_id)
        self.model(ModelInfo(prov.model_id, recipe.task, recipe.id, prov.backend, prov.device, prov.runtime,
                             tuple(recipe.immich_names), recipe.embedding_dim))

    def add_outcome(self, session, task: Any, outcome, image, options: Iterable[tuple[str, Any]] = ()) -> None:
        """A per-file command's outcome, stored under the key `index` uses (`Task.cli_models` joined);
        non-default `options` get a key of their own (not the same result)."""
        if outcome.error:
            self.fail(outcome.path, outcome.error)
            return
        if outcome.result is None or image is None:
            return
        models = task.cli_models(outcome.result)
        for prov in models:
            self.record_recipe(session, prov.recipe_id)
        key = task.model_key([p.model_id for p in models]) + "".join(f"?{k}={v}" for k, v in options if v is not None)
        self.add(outcome.path, image, [TaskOutput(task.name, key, models[0].backend, outcome.result)])

    def add(self, path: Path, image, outputs: list[TaskOutput]) -> None:
        """A processed file: its stat, content hash, geometry and results (in decoded pixels x output.scale)."""
        path = Path(path).resolve()
        data = path.read_bytes()
        st = os.stat(path)
        self.pending.append(FileRecord(str(path), st.st_size, st.st_mtime_ns, content_hash(data), width=image.width,
                                       height=image.height, orientation=image.orientation, format=image.format, outputs=outputs))
        self._maybe_flush()

    def fail(self, path: Path, error: str) -> None:
        path = Path(path).resolve()
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            return
        self.pending.append(FileRecord(str(path), size, mtime, None, status="failed", error=error))
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self.pending) >= self.commit_every or time.monotonic() - self._last > 2.0:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        with database_errors(self.db), self.store.transaction():
            for rec in self.pending:
                kind = self.store.write_file(rec, self.run_id)
                kind = "failed" if rec.status == "failed" else ("changed" if kind == "updated" else kind)
                self.counts[kind] = self.counts.get(kind, 0) + 1
        self.pending = []
        self._last = time.monotonic()

    def __enter__(self) -> "DbSink":
        return self

    def __exit__(self, kind, exc, tb) -> None:
        """However the command ends, what it has read so far is committed and the run says how it ended
        (Ctrl-C and SIGTERM arrive as KeyboardInterrupt)."""
        self.close("completed" if kind is None else "interrupted" if issubclass(kind, KeyboardInterrupt) else "failed")

    def close(self, status: str = "completed") -> None:
        try:
            self.flush()
            self.store.finish_run(self.run_id, status, self.counts)
        finally:
            self.store.close()
