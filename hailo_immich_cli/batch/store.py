"""The index database: the ONE module that writes it (schema, migrations, batched writes).

Results are keyed by content hash, task and model, so a renamed or copied photo keeps its results,
a model change re-processes only what that model produced, and a file's results are written in
the same transaction as its status (a kill -9 can never leave half a file behind).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np
import xxhash

from hailo_immich_cli.batch.people import migrate_people
from hailo_immich_cli.batch.vector_keys import migrate_vector_keys, migrate_vector_log
from hailo_immich_cli.errors import BadInputError, DatabaseDamagedError, HailoImmichError
from hailo_immich_cli.tasks import by_name, stored_tables

if TYPE_CHECKING:
    import sqlite_utils  # imported where a database is written: a read-only search never needs it

SCHEMA_VERSION = 4


# ---- what the indexer hands to the store -------------------------------------------------------
@dataclass
class TaskOutput:
    """One task's result for one image, in the decoded array's pixels; `scale` maps them to the file's."""

    task: str  # a registry task name
    model_id: str  # the key results are stored under (faces: detector+recognizer)
    backend: str
    payload: Any  # FacesResult | np.ndarray (clip vector) | OcrResult
    scale: float = 1.0


@dataclass
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    hash: str | None
    status: str = "ok"  # ok | failed
    error: str | None = None
    width: int | None = None
    height: int | None = None
    orientation: int | None = None
    format: str | None = None
    outputs: list[TaskOutput] = field(default_factory=list)


@dataclass(frozen=True)
class ModelInfo:
    model_id: str
    task: str
    recipe_id: str
    backend: str
    device: str = ""
    runtime: str = ""
    immich_names: tuple[str, ...] = ()
    dim: int | None = None


@dataclass(frozen=True)
class KnownFile:
    id: int
    size: int
    mtime_ns: int
    hash: str | None
    status: str
    deleted: bool


def content_hash(data: bytes) -> str:
    """What identifies a photo's content across renames: XXH3-128 of every byte (fast, no false matches in practice)."""
    return xxhash.xxh3_128_hexdigest(data)


def vector_blob(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def blob_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


# ---- schema ----------------------------------------------------------------------------------
def _migrate_1(db: sqlite_utils.Database) -> None:
    db["files"].create(
        {
            "id": int, "path": str, "size": int, "mtime_ns": int, "hash": str, "width": int, "height": int,
            "orientation": int, "format": str, "status": str, "error": str, "first_seen": float,
            "last_seen": float, "deleted": int, "deleted_at": float, "run_id": int,
        },
        pk="id", not_null={"path", "size", "mtime_ns", "status", "deleted"}, defaults={"deleted": 0},
    )
    db["files"].create_index(["path"], unique=True)
    db["files"].create_index(["hash"])
    db["processed"].create(
        {"hash": str, "task": str, "model_id": str, "backend": str, "items": int, "run_id": int, "created": float},
        pk=("hash", "task", "model_id"),
    )
    db["models"].create(
        {"model_id": str, "task": str, "recipe_id": str, "backend": str, "device": str, "runtime": str,
         "immich_names": str, "dim": int, "first_used": float},
        pk="model_id",
    )
    db["faces"].create(
        {"id": int, "hash": str, "model_id": str, "detector": str, "recognizer": str, "backend": str, "idx": int,
         "x1": float, "y1": float, "x2": float, "y2": float, "score": float, "landmarks": str, "embedding": bytes},
        pk="id",
    )
    db["faces"].create_index(["hash", "model_id"])
    db["faces"].create_index(["recognizer"])
    db["clip"].create(
        {"hash": str, "model_id": str, "backend": str, "dim": int, "embedding": bytes}, pk=("hash", "model_id"),
    )
    db["clip"].create_index(["model_id"])
    db["ocr_lines"].create(
        {"id": int, "hash": str, "model_id": str, "backend": str, "idx": int, "text": str, "box": str,
         "box_score": float, "text_score": float},
        pk="id",
    )
    db["ocr_lines"].create_index(["hash", "model_id"])
    db["ocr_text"].create({"id": int, "hash": str, "model_id": str, "backend": str, "text": str}, pk="id")
    db["ocr_text"].create_index(["hash", "model_id"], unique=True)
    db["ocr_text"].enable_fts(["text"], fts_version="FTS5", create_triggers=True, tokenize="unicode61 remove_diacritics 2")
    db["runs"].create(
        {"id": int, "started": float, "finished": float, "status": str, "command": str, "paths": str, "tasks": str,
         "models": str, "new": int, "changed": int, "unchanged": int, "renamed": int, "deleted": int,
         "failed": int, "skipped_failed": int},
        pk="id",
    )


MIGRATIONS = {1: _migrate_1, 2: migrate_vector_keys, 3: migrate_people, 4: migrate_vector_log}


# A file that is not SQLite at all (SQLITE_NOTADB) is "not an index database", not a damaged one.
_DAMAGE_CODES = {"SQLITE_CORRUPT"}
_DAMAGE_WORDS = ("malformed", "corrupt")


def is_damage(exc: BaseException) -> bool:
    """True for SQLite's "the file itself is broken" errors (not for a lock, a full disk or a missing table)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.split("_(")[0] in _DAMAGE_CODES or any(w in str(exc).lower() for w in _DAMAGE_WORDS)


def database_error(path: Path | str, exc: sqlite3.Error) -> HailoImmichError:
    """One clear error for a SQLite failure on an index database."""
    if is_damage(exc):
        return DatabaseDamagedError(str(path), str(exc))
    return HailoImmichError(f"{path}: index database error: {exc}")


@contextmanager
def database_errors(path: Path | str) -> Iterator[None]:
    """Turn SQLite errors from anywhere inside (queries, a failed indexing stage) into one clear error."""
    try:
        yield
    except sqlite3.Error as exc:
        raise database_error(path, exc) from None


def check_integrity(path: Path) -> None:
    """Refuse a damaged file before anything writes to it (`PRAGMA quick_check` reads every page once)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if is_damage(exc):
            raise DatabaseDamagedError(str(path), str(exc)) from None
        raise BadInputError(f"{path}: not a usable index database: {exc}") from None
    if problems != ["ok"]:
        raise DatabaseDamagedError(str(path), "; ".join(problems))


def check_db_path(path: Path) -> None:
    """A --db path the index can be written to, checked before anything is loaded; no folder is ever created."""
    if path.is_dir():
        raise BadInputError(f"--db {path}: is a folder; give a database file name")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"--db {path}: folder {parent} does not exist (create it first, or choose another path)")


def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=60)
    else:
        conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=60)
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


class Store:
    """Schema owner and the single writer. Call `open_reader()` for a read connection per thread."""

    def __init__(self, path: Path | str, create: bool = True):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise BadInputError(f"{self.path}: no such index database (create it with `hailo-immich index`)")
        check_db_path(self.path)
        if self.path.is_file():
            check_integrity(self.path)
        try:
            self.conn = _connect(self.path)
            import sqlite_utils

            self.db = sqlite_utils.Database(self.conn)
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise DatabaseDamagedError(str(self.path), str(exc)) from None
            raise BadInputError(f"{self.path}: not a usable index database: {exc}") from exc
        self._in_tx = False

    # ---- versioning ---------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise BadInputError(
                f"{self.path}: index schema v{current} was written by a newer hailo-immich (this one reads up to "
                f"v{SCHEMA_VERSION}); upgrade hailo-immich"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                MIGRATIONS[version](self.db)
                self.conn.execute(f"PRAGMA user_version = {version}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    def open_reader(self) -> "Reader":
        return Reader(self.path)

    def close(self) -> None:
        self.conn.close()

    # ---- transactions -------------------------------------------------------------------------
    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self._in_tx = True

    def commit(self) -> None:
        if self._in_tx:
            self.conn.execute("COMMIT")
            self._in_tx = False

    def rollback(self) -> None:
        if self._in_tx:
            self.conn.execute("ROLLBACK")
            self._in_tx = False

    def transaction(self):
        store = self

        class _Tx:
            def __enter__(self_inner):
                store.begin()

            def __exit__(self_inner, exc_type, *rest):
                if exc_type is None:
                    store.commit()
                else:
                    store.rollback()

        return _Tx()

    # ---- runs and models ----------------------------------------------------------------------
    def start_run(self, command: str, paths: Sequence[str], tasks: Sequence[str], models: dict[str, str]) -> int:
        with self.transaction():
            # A run still 'running' here was killed: it never got to say so itself.
            self.conn.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            cur = self.conn.execute(
                "INSERT INTO runs (started, status, command, paths, tasks, models) VALUES (?, 'running', ?, ?, ?, ?)",
                (time.time(), command, json.dumps(list(paths)), ",".join(tasks), json.dumps(models, sort_keys=True)),
            )
            return int(cur.lastrowid)

    def finish_run(self, run_id: int, status: str, counts: dict[str, int]) -> None:
        cols = ("new", "changed", "unchanged", "renamed", "deleted", "failed", "skipped_failed")
        with self.transaction():
            self.conn.execute(
                f"UPDATE runs SET finished = ?, status = ?, {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                (time.time(), status, *(int(counts.get(c, 0)) for c in cols), run_id),
            )

    def record_model(self, info: ModelInfo) -> None:
        with self.transaction():
            self.conn.execute(
                "INSERT OR IGNORE INTO models (model_id, task, recipe_id, backend, device, runtime, immich_names, dim, first_used)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (info.model_id, info.task, info.recipe_id, info.backend, info.device, info.runtime,
                 json.dumps(list(info.immich_names)), info.dim, time.time()),
            )

    # ---- per-file writes (call inside a transaction) ------------------------------------------
    def touch(self, file_ids: Iterable[int], run_id: int) -> None:
        now = time.time()
        self.conn.executemany("UPDATE files SET last_seen = ?, run_id = ? WHERE id = ?", ((now, run_id, i) for i in file_ids))

    def write_file(self, rec: FileRecord, run_id: int) -> str:
        """Upsert the file row and replace its results; returns new | changed | renamed | updated."""
        now = time.time()
        cols = dict(
            size=rec.size, mtime_ns=rec.mtime_ns, hash=rec.hash, width=rec.width, height=rec.height,
            orientation=rec.orientation, format=rec.format, status=rec.status, error=rec.error,
            last_seen=now, deleted=0, deleted_at=None, run_id=run_id,
        )
        row = self.conn.execute("SELECT id, hash, deleted FROM files WHERE path = ?", (rec.path,)).fetchone()
        if row is not None:
            kind = "changed" if (row[1] != rec.hash or row[2]) else "updated"
            self._update_file(row[0], cols)
        else:
            moved = self._moved_from(rec) if rec.hash else None
            if moved is not None:
                cols["path"] = rec.path
                self._update_file(moved, cols)
                kind = "renamed"
            else:
                cols.update(path=rec.path, first_seen=now)
                names = ", ".join(cols)
                self.conn.execute(f"INSERT INTO files ({names}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values()))
                kind = "new"
        for out in rec.outputs:
            self._write_output(rec.hash, out, run_id, now)
        return kind

    def _update_file(self, file_id: int, cols: dict[str, Any]) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        self.conn.execute(f"UPDATE files SET {sets} WHERE id = ?", (*cols.values(), file_id))

    def _moved_from(self, rec: FileRecord) -> int | None:
        """A row with the same content whose file is gone: the photo was renamed or moved."""
        for file_id, path in self.conn.execute(
            "SELECT id, path FROM files WHERE hash = ? AND size = ? ORDER BY deleted, id", (rec.hash, rec.size)
        ):
            if path != rec.path and not os.path.exists(path):
                return int(file_id)
        return None

    def _write_output(self, content: str | None, out: TaskOutput, run_id: int, now: float) -> None:
        """The task's rows (its package builds them), replacing what the same model stored for this content."""
        if content is None:
            return
        task = by_name().get(out.task)
        if task is None:
            raise ValueError(f"unknown task {out.task}")
        for table in task.index_tables:
            self.conn.execute(f"DELETE FROM {table} WHERE hash = ? AND model_id = ?", (content, out.model_id))
        items, writes = task.index_rows(content, out)
        for sql, rows in writes:
            self.conn.executemany(sql, rows)
        self.conn.execute(
            "INSERT OR REPLACE INTO processed (hash, task, model_id, backend, items, run_id, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (content, out.task, out.model_id, out.backend, items, run_id, now),
        )

    # ---- end of a complete scan -----------------------------------------------------------------
    def mark_deleted(self, roots: Sequence[str], run_id: int) -> int:
        """Soft-delete rows under the scanned roots that this run did not see (only after a full scan)."""
        now = time.time()
        total = 0
        with self.transaction():
            for root in roots:
                prefix = root.rstrip(os.sep) + os.sep
                cur = self.conn.execute(
                    "UPDATE files SET deleted = 1, deleted_at = ? WHERE deleted = 0 AND (run_id IS NOT ? OR run_id IS NULL)"
                    " AND (path = ? OR substr(path, 1, ?) = ?)",
                    (now, run_id, root, len(prefix), prefix),
                )
                total += cur.rowcount
        return total

    def prune_orphans(self) -> int:
        """Drop results of content no file row refers to any more (an edited photo's old version)."""
        removed = 0
        with self.transaction():
            for table in (*stored_tables(), "processed"):
                cur = self.conn.execute(f"DELETE FROM {table} WHERE hash NOT IN (SELECT hash FROM files WHERE hash IS NOT NULL)")
                if table == "processed":
                    removed = cur.rowcount
        return removed


class Reader:
    """A read-only connection for one thread (WAL lets it read while the writer writes)."""

    def __init__(self, path: Path):
        self.conn = _connect(path, readonly=True)

    def close(self) -> None:
        self.conn.close()

    def known(self, path: str) -> KnownFile | None:
        row = self.conn.execute("SELECT id, size, mtime_ns, hash, status, deleted FROM files WHERE path = ?", (path,)).fetchone()
        return KnownFile(row[0], row[1], row[2], row[3], row[4], bool(row[5])) if row else None

    def done(self, content: str) -> set[tuple[str, str]]:
        return {(t, m) for t, m in self.conn.execute("SELECT task, model_id FROM processed WHERE hash = ?", (content,))}

    def geometry(self, content: str) -> tuple[int, int, int, str] | None:
        return self.conn.execute(
            "SELECT width, height, orientation, format FROM files WHERE hash = ? AND status = 'ok' AND width IS NOT NULL LIMIT 1",
            (content,),
        ).fetchone()

    def previous_failures(self, roots: Sequence[str]) -> Iterator[tuple[str, str]]:
        for root in roots:
            prefix = root.rstrip(os.sep) + os.sep
            yield from self.conn.execute(
                "SELECT path, error FROM files WHERE status = 'failed' AND deleted = 0 AND (path = ? OR substr(path, 1, ?) = ?)"
                " ORDER BY path",
                (root, len(prefix), prefix),
            )
