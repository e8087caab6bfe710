"""Vector indexes beside the index database, so a search costs the same at 1k and at 1M photos.

One usearch HNSW file per kind (a task with vectors: `Task.vectors`) and model id, in `<db>.vectors/`. It holds only the
vectors of contents that still have a live photo, named by the stable keys of `vector_keys`. It is
brought up to date incrementally (add what is new, remove what is gone) by `index` and, when it is
missing or stale, by the first search that needs it. Queries memory-map the file (nothing is read
up front), ask for more candidates than wanted and rescore them with the exact float32 vectors from
SQLite, so scores are the exact scan's and the index only decides which rows to look at.

Why usearch: see docs/search.md (measured against faiss-cpu, hnswlib and sqlite-vec).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from hailo_immich_cli.batch.vector_keys import generation

FORMAT = 1
DTYPE = "f16"  # half precision: recall margin at 1M; i8 halves the file at equal recall at 100k (docs/search.md)
CONNECTIVITY = 16
EF_ADD = 128
EF_SEARCH = 96
CHUNK = 16384
Progress = Callable[[str, int, int], None]  # (what, done, total)

LIVE = "EXISTS (SELECT 1 FROM files f WHERE f.hash = v.hash AND f.deleted = 0 AND f.status = 'ok')"


@dataclass(frozen=True)
class Source:
    """Where one kind of vector lives in the database."""

    kind: str
    table: str
    model_column: str
    columns: str  # what a search hit needs, besides the embedding

    def live_keys_sql(self) -> str:
        return (f"SELECT v.vkey FROM {self.table} v WHERE v.{self.model_column} = ? AND v.embedding IS NOT NULL"
                f" AND v.vkey IS NOT NULL AND {LIVE}")

    def live_rows_sql(self) -> str:
        return (f"SELECT v.vkey, v.embedding FROM {self.table} v WHERE v.{self.model_column} = ?"
                f" AND v.embedding IS NOT NULL AND v.vkey IS NOT NULL AND {LIVE}")

    def rows_for_keys_sql(self, n: int, extra: str = "") -> str:
        return (f"SELECT v.vkey, {self.columns}, v.embedding FROM {self.table} v WHERE +v.{self.model_column} = ?"
                f" AND v.embedding IS NOT NULL AND v.vkey IN ({','.join('?' * n)}){extra}")

    def models_sql(self) -> str:
        # answered from the model column's index alone (no row reads: cheap at a million rows)
        return f"SELECT DISTINCT {self.model_column} FROM {self.table} WHERE {self.model_column} IS NOT NULL"


@lru_cache(maxsize=None)
def sources() -> dict[str, Source]:
    """Each task's vectors (`Task.vectors`) by kind, the task's name."""
    from hailo_immich_cli.tasks import vector_tasks

    return {name: Source(name, t.vectors.table, t.vectors.model_column, t.vectors.hit_columns) for name, t in vector_tasks().items()}


class VectorIndexUnavailable(RuntimeError):
    """No usable index (library missing, folder not writable): the caller scans exactly and says so."""


def library_version() -> str:
    try:
        import usearch
    except ImportError as exc:  # pragma: no cover - usearch is a dependency
        raise VectorIndexUnavailable(f"usearch is not installed ({exc})") from exc
    return f"usearch {usearch.__version__}"


def index_dir(db_path: Path | str) -> Path:
    db_path = Path(db_path)
    return db_path.with_name(db_path.name + ".vectors")


def _slug(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model_id)[:120]


def _read_conn(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=60)
    conn.execute("PRAGMA busy_timeout = 60000")
    return conn


def _chunks(seq: np.ndarray, size: int = 500) -> Iterator[np.ndarray]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


class VectorIndex:
    """The index file of one kind and model, and how to bring it in line with the database."""

    def __init__(self, db_path: Path | str, kind: str, model_id: str):
        self.db_path = Path(db_path)
        self.source = sources()[kind]
        self.kind, self.model_id = kind, model_id
        self.dir = index_dir(self.db_path)
        self.path = self.dir / f"{kind}-{_slug(model_id)}.usearch"
        self.meta_path = self.path.with_suffix(".json")

    # ---- state ----------------------------------------------------------------------------------
    def meta(self) -> dict | None:
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") != FORMAT or meta.get("model_id") != self.model_id or not self.path.is_file():
            return None
        return meta

    def is_fresh(self, conn: sqlite3.Connection) -> bool:
        meta = self.meta()
        return meta is not None and meta.get("generation") == generation(conn)

    # ---- bringing it up to date -----------------------------------------------------------------
    def sync(self, progress: Progress | None = None, threads: int = 0, force: bool = False) -> dict:
        """Add live vectors the file lacks, drop the ones no live photo has; rebuild if the file is unusable (or `force`)."""
        from usearch.index import Index as UIndex

        library_version()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            lock = open(self.dir / ".lock", "a+")
        except OSError as exc:
            raise VectorIndexUnavailable(f"cannot write the vector index beside the database ({exc})") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            conn = _read_conn(self.db_path)
            try:
                conn.execute("BEGIN")  # one snapshot: generation, keys and vectors agree
                gen = generation(conn)
                meta = None if force else self.meta()
                if meta is not None and meta.get("generation") == gen:
                    return {"added": 0, "removed": 0, "rebuilt": False, "count": meta.get("count", 0)}
                started = time.monotonic()
                wanted = np.fromiter((r[0] for r in conn.execute(self.source.live_keys_sql(), (self.model_id,))), dtype=np.uint64)
                have = self._keys(UIndex, meta)
                rebuilt = have is None
                have = np.empty(0, np.uint64) if have is None else have
                remove = np.setdiff1d(have, wanted, assume_unique=True)
                add = np.setdiff1d(wanted, have, assume_unique=True)
                if len(remove) > max(1000, len(have) // 5):  # many tombstones: a fresh graph is better
                    rebuilt, add, remove = True, wanted, np.empty(0, np.uint64)
                index = None
                if not rebuilt and (len(add) or len(remove)):  # only then read the whole file into memory
                    index = UIndex.restore(str(self.path), view=False)
                    if len(remove):
                        index.remove(remove)
                if rebuilt or len(add) or len(remove):
                    index = self._add(conn, index, add, rebuilt, progress, threads, UIndex)
                conn.execute("COMMIT")
            finally:
                conn.close()
            count = len(have) - len(remove) + len(add) if not rebuilt else len(add)
            dim = meta["dim"] if meta else 0
            if index is not None or rebuilt:
                if index is None:
                    index = UIndex(ndim=1, metric="cos", dtype=DTYPE)
                dim, count = int(index.ndim), int(len(index))
                tmp = self.path.with_suffix(".tmp")
                index.save(str(tmp))
                os.replace(tmp, self.path)
            self._write_meta({"format": FORMAT, "kind": self.kind, "model_id": self.model_id, "dim": dim, "dtype": DTYPE,
                              "generation": gen, "count": int(count), "library": library_version(),
                              "connectivity": CONNECTIVITY, "updated": time.time()})
            return {"added": int(len(add)), "removed": int(len(remove)), "rebuilt": bool(rebuilt),
                    "count": int(count), "seconds": round(time.monotonic() - started, 3)}

    def _keys(self, UIndex, meta: dict | None) -> np.ndarray | None:
        """The keys in the file, read through a memory map (cheap); None when there is no usable file."""
        if meta is None:
            return None
        try:
            view = UIndex.restore(str(self.path), view=True)
            return np.asarray(view.keys, dtype=np.uint64) if len(view) else np.empty(0, np.uint64)
        except Exception:  # a damaged or foreign file: rebuild it from the database
            return None

    def _write_meta(self, meta: dict) -> None:
        tmp = self.meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, self.meta_path)

    def _add(self, conn, index, keys: np.ndarray, full: bool, progress: Progress | None, threads: int, UIndex):
        total = len(keys)
        if not total:
            return index
        label = f"{'building' if full else 'updating'} {self.kind} vector index ({self.model_id})"
        done = 0
        if progress:
            progress(label, 0, total)

        def put(batch_keys: list[int], blobs: list[bytes]) -> None:
            nonlocal index, done
            mat = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
            if index is None:
                index = UIndex(ndim=mat.shape[1], metric="cos", dtype=DTYPE, connectivity=CONNECTIVITY,
                               expansion_add=EF_ADD, expansion_search=EF_SEARCH)
            index.add(np.asarray(batch_keys, dtype=np.uint64), mat, threads=threads)
            done += len(blobs)
            if progress:
                progress(label, done, total)

        if full or total > CHUNK:  # stream the whole table once instead of many IN (...) look-ups
            wanted = set(keys.tolist()) if not full else None
            cur = conn.execute(self.source.live_rows_sql(), (self.model_id,))
            while True:
                rows = cur.fetchmany(CHUNK)
                if not rows:
                    break
                if wanted is not None:
                    rows = [r for r in rows if r[0] in wanted]
                if rows:
                    put([r[0] for r in rows], [r[1] for r in rows])
        else:
            for part in _chunks(keys):
                sql = f"SELECT vkey, embedding FROM {self.source.table} WHERE +{self.source.model_column} = ? AND vkey IN ({','.join('?' * len(part))})"
                rows = conn.execute(sql, (self.model_id, *(int(k) for k in part))).fetchall()
                if rows:
                    put([r[0] for r in rows], [r[1] for r in rows])
        return index

    # ---- querying -------------------------------------------------------------------------------
    def fresh_view(self, conn: sqlite3.Connection, progress: Progress | None = None) -> tuple[object, dict | None]:
        """Synced if stale (rebuilt if unreadable) and memory-mapped; returns (view, what the sync did)."""
        synced = None if self.is_fresh(conn) else self.sync(progress)
        view = self.open_view()
        if view is None:  # damaged behind a fresh-looking record: rebuild from the database
            synced = self.sync(progress, force=True)
            view = self.open_view()
        if view is None:
            raise VectorIndexUnavailable(f"cannot read {self.path}")
        return view, synced

    def open_view(self):
        """The file memory-mapped for queries, or None if it cannot be read."""
        from usearch.index import Index as UIndex

        try:
            return UIndex.restore(str(self.path), view=True)
        except Exception:
            return None


class Searcher:
    """Nearest vectors through the index, rescored exactly; syncs a stale index first (with progress)."""

    def __init__(self, db_path: Path | str, conn: sqlite3.Connection, progress: Progress | None = None):
        self.db_path = Path(db_path)
        self.conn = conn
        self.progress = progress
        self._views: dict[tuple[str, str], object] = {}
        self.synced: dict[tuple[str, str], dict] = {}

    def _view(self, kind: str, model_id: str):
        key = (kind, model_id)
        if key not in self._views:
            view, synced = VectorIndex(self.db_path, kind, model_id).fresh_view(self.conn, self.progress)
            if synced is not None:
                self.synced[key] = synced
            self._views[key] = view
        return self._views[key]

    def prepare(self, kind: str, model_id: str) -> None:
        """Sync and open now, so the query timing is the query's alone."""
        self._view(kind, model_id)

    def nearest(self, kind: str, model_id: str, query: np.ndarray, count: int) -> list[tuple[float, tuple]]:
        """(exact cosine, row) best first for up to `count` live vectors; row = Source.columns."""
        view = self._view(kind, model_id)
        size = len(view)
        if size == 0:
            return []
        q = np.asarray(query, np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        if int(view.ndim) != q.shape[0]:
            from hailo_immich_cli.errors import BadInputError

            raise BadInputError(f"stored vectors have {int(view.ndim)} dims, the query has {q.shape[0]}")
        view.expansion_search = max(EF_SEARCH, count)
        keys = np.asarray(view.search(q, min(count, size)).keys, dtype=np.int64)
        keys = keys[keys >= 0]
        src = sources()[kind]
        rows: list[tuple] = []
        for part in _chunks(keys):
            rows += self.conn.execute(src.rows_for_keys_sql(len(part)), (model_id, *(int(k) for k in part))).fetchall()
        if not rows:
            return []
        mat = np.frombuffer(b"".join(r[-1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        scores = (mat @ q) / np.maximum(np.linalg.norm(mat, axis=1), 1e-12)
        order = np.argsort(-scores, kind="stable")
        return [(float(scores[i]), rows[i][1:-1]) for i in order]

    def close(self) -> None:
        self._views.clear()


def sync_all(db_path: Path | str, progress: Progress | None = None) -> list[dict]:
    """Bring every model's indexes in line with the database (the end of an `index` run)."""
    db_path = Path(db_path)
    conn = _read_conn(db_path)
    try:
        work = [(kind, m) for kind, src in sources().items() for (m,) in conn.execute(src.models_sql()).fetchall()]
        stale = [(k, m) for k, m in work if not VectorIndex(db_path, k, m).is_fresh(conn)]
    finally:
        conn.close()
    out = []
    for kind, model_id in stale:
        res = VectorIndex(db_path, kind, model_id).sync(progress)
        out.append({"kind": kind, "model_id": model_id, **res})
    return out
