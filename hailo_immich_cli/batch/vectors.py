"""Vector indexes beside the index database, so a search costs the same at 1k and at 1M photos.

Per kind (a task with vectors: `Task.vectors`) and model id, in `<db>.vectors/`: a main usearch HNSW file, a small delta
HNSW file of vectors added since the main file was written, and the keys of the main file's vectors
that are no longer live (tombstones). Together they hold the vectors of contents that still have a
live photo, named by the stable keys of `vector_keys`. `index` brings them up to date from the
database's change log (so the cost follows what changed, not the library's size) by writing only
the delta and the tombstones; the delta is merged into the main file when it outgrows a tenth of
it. A missing or stale index is synced by the first search that needs it. Each file is replaced
atomically and the record (`.json`) last; whatever a crash leaves is read as it is and corrected
from the database by the next sync, so an added vector is never lost and a deleted one never kept.
Queries memory-map the files (nothing is read up front), ask for more candidates than wanted and
rescore them with the exact float32 vectors from SQLite, so scores are the exact scan's and the
index only decides which rows to look at.

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

from hailo_immich_cli.batch.vector_keys import changed_since, generation, log_position, prune_log

FORMAT = 2  # 2: main + delta + tombstones, synced from the change log; 1 (main file alone) is still read
DTYPE = "f16"  # half precision: recall margin at 1M; i8 halves the file at equal recall at 100k (docs/search.md)
CONNECTIVITY = 16
EF_ADD = 128
EF_SEARCH = 96
# Up to this many vectors a part of the index is scanned whole: 3 ms at 50k, less than a wide-beam graph
# search, and exact. The graph can lose a vector among many near-copies of one photo (formats,
# sizes), which a scan cannot.
EXACT_SCAN_MAX = 50_000
EF_QUERY = 768  # a search's beam: a query far from every photo (text vs image vectors) needs a wide one for the exact top-1
MERGE_FRACTION = 0.1  # the delta and tombstones are merged into the main file beyond this share of it
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
        # one seek in the model column's index per model (a DISTINCT would walk all of it: 1M entries)
        t, c = self.table, self.model_column
        return (f"WITH RECURSIVE m(v) AS (SELECT min({c}) FROM {t} UNION ALL"
                f" SELECT (SELECT min({c}) FROM {t} WHERE {c} > m.v) FROM m WHERE m.v IS NOT NULL) SELECT v FROM m WHERE v IS NOT NULL")


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


def _chunks(seq, size: int = 500) -> Iterator:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _keys(values) -> np.ndarray:
    return np.unique(np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.uint64))


def _contains(index, keys: np.ndarray) -> np.ndarray:
    if index is None or not len(keys) or not len(index):
        return np.zeros(len(keys), bool)
    return np.asarray(index.contains(keys), dtype=bool).reshape(-1)


def _save(index, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    index.save(str(tmp))
    os.replace(tmp, path)


def _drop(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class IndexView:
    """The main file and the delta, memory-mapped, searched as one index without the main file's tombstones."""

    def __init__(self, main, delta, removed: np.ndarray):
        self.main, self.delta, self.removed = main, delta, removed
        self.ndim = int(main.ndim if main is not None and len(main) else delta.ndim if delta is not None else 0)

    def __len__(self) -> int:
        main = len(self.main) - len(self.removed) if self.main is not None else 0
        return max(0, main) + (len(self.delta) if self.delta is not None else 0)

    @property
    def expansion_search(self) -> int:
        return int(self.main.expansion_search) if self.main is not None else EF_SEARCH

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        for part in (self.main, self.delta):
            if part is not None:
                part.expansion_search = int(value)

    def search(self, vectors: np.ndarray, count: int) -> "Found":
        """Up to `count` nearest keys per query, best first (missing: key -1, distance inf)."""
        q = np.asarray(vectors, dtype=np.float32)
        single = q.ndim == 1
        q = q.reshape(1, -1) if single else q
        keys, dists = [], []
        for part, extra in ((self.main, len(self.removed)), (self.delta, 0)):
            if part is None or not len(part):
                continue
            # room for tombstones; a part this small is scanned whole (faster than the graph, and exact)
            wanted = min(len(part), count + min(extra, count))
            k, d = _padded(part.search(q, wanted, exact=len(part) <= EXACT_SCAN_MAX), len(q))
            if extra:
                d[np.isin(k.astype(np.uint64), self.removed)] = np.inf
            keys.append(k)
            dists.append(d)
        if not keys:
            out_k, out_d = np.full((len(q), 0), -1, np.int64), np.zeros((len(q), 0), np.float32)
        else:
            k, d = np.concatenate(keys, axis=1), np.concatenate(dists, axis=1)
            order = np.argsort(d, axis=1, kind="stable")[:, :count]
            out_k, out_d = np.take_along_axis(k, order, 1), np.take_along_axis(d, order, 1)
            out_k[~np.isfinite(out_d)] = -1
        return Found(out_k[0], out_d[0]) if single else Found(out_k, out_d)


def _padded(found, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """usearch's answer as (rows, n) keys and distances, missing places at distance inf (one row comes back trimmed)."""
    keys = np.asarray(found.keys, dtype=np.int64).reshape(rows, -1)
    dists = np.asarray(found.distances, dtype=np.float32).reshape(rows, -1).copy()
    counts = getattr(found, "counts", None)
    if counts is not None:
        dists[np.arange(keys.shape[1])[None, :] >= np.asarray(counts).reshape(-1, 1)] = np.inf
    return keys, dists


@dataclass(frozen=True)
class Found:
    keys: np.ndarray
    distances: np.ndarray


@dataclass
class _Parts:
    """The files as they are on disk: the main index (memory-mapped), the delta (in memory), the tombstones."""

    main: object
    delta: object | None
    removed: np.ndarray
    complete: bool = True  # False: a delta file that could not be read (its vectors are re-added from the database)


class VectorIndex:
    """The index files of one kind and model, and how to bring them in line with the database."""

    def __init__(self, db_path: Path | str, kind: str, model_id: str):
        self.db_path = Path(db_path)
        self.source = sources()[kind]
        self.kind, self.model_id = kind, model_id
        self.dir = index_dir(self.db_path)
        stem = f"{kind}-{_slug(model_id)}"
        self.path = self.dir / f"{stem}.usearch"
        self.delta_path = self.dir / f"{stem}.delta.usearch"
        self.removed_path = self.dir / f"{stem}.removed.npy"
        self.meta_path = self.dir / f"{stem}.json"

    # ---- state ----------------------------------------------------------------------------------
    def meta(self) -> dict | None:
        try:
            meta = json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") not in (1, FORMAT) or meta.get("model_id") != self.model_id or not self.path.is_file():
            return None
        return meta

    def is_fresh(self, conn: sqlite3.Connection) -> bool:
        meta = self.meta()
        return meta is not None and meta.get("generation") == generation(conn)

    def _parts(self, UIndex, view_delta: bool) -> _Parts | None:
        """The files read as they are; None when the main file is missing or damaged (then: rebuild)."""
        try:
            main = UIndex.restore(str(self.path), view=True)
        except Exception:  # a damaged or foreign file: rebuild it from the database
            return None
        if main is None:
            return None
        delta, complete = None, True
        if self.delta_path.is_file():
            try:
                delta = UIndex.restore(str(self.delta_path), view=view_delta)
            except Exception:  # its vectors are still in the database: a sync compares every key and adds them back
                delta, complete = None, False
        complete = complete and (delta is not None or not self.delta_path.is_file())
        removed = np.empty(0, np.uint64)
        if self.removed_path.is_file():
            try:
                removed = np.sort(np.load(self.removed_path).astype(np.uint64))
            except (OSError, ValueError):  # unreadable tombstones: every key is compared again, the dead re-buried
                complete = False
        return _Parts(main, delta, removed, complete)

    # ---- bringing it up to date -----------------------------------------------------------------
    def sync(self, progress: Progress | None = None, threads: int = 0, force: bool = False) -> dict:
        """Apply what changed since the files were written (from the change log, else by comparing every key);
        rebuild if the files are unusable (or `force`)."""
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
                conn.execute("BEGIN")  # one snapshot: generation, log, keys and vectors agree
                gen, log = generation(conn), log_position(conn)
                meta = self.meta()
                if meta is not None and meta.get("generation") == gen and not force:
                    return {"added": 0, "removed": 0, "rebuilt": False, "count": meta.get("count", 0)}
                started = time.monotonic()
                parts = None if meta is None else self._parts(UIndex, view_delta=False)
                if parts is None:
                    result = self._rebuild(conn, UIndex, progress, threads)
                else:  # forced (files damaged behind a fresh record): compare every key rather than trust the log
                    result = self._update(conn, UIndex, parts, meta, None if force else log, progress, threads)
                conn.execute("COMMIT")
            finally:
                conn.close()
            self._write_meta({"format": FORMAT, "kind": self.kind, "model_id": self.model_id, "dim": result.pop("dim"),
                              "dtype": DTYPE, "generation": gen, "log_seq": log[1] if log else None,
                              "count": result["count"], "delta": result.pop("delta", 0), "tombstones": result.pop("tombstones", 0),
                              "library": library_version(), "connectivity": CONNECTIVITY, "updated": time.time()})
            return {**result, "seconds": round(time.monotonic() - started, 3)}

    def _rebuild(self, conn, UIndex, progress: Progress | None, threads: int) -> dict:
        """A fresh main file from every live vector; no delta, no tombstones."""
        wanted = np.fromiter((r[0] for r in conn.execute(self.source.live_keys_sql(), (self.model_id,))), dtype=np.uint64)
        index = self._add(conn, None, wanted, True, progress, threads, UIndex) or UIndex(ndim=1, metric="cos", dtype=DTYPE)
        _save(index, self.path)
        _drop(self.delta_path)
        _drop(self.removed_path)
        return {"added": int(len(wanted)), "removed": 0, "rebuilt": True, "merged": False, "count": int(len(index)),
                "dim": int(index.ndim)}

    def _changes(self, conn, parts: _Parts, meta: dict, log: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """(keys that must be in the index, keys that must not): from the change log when it covers the time
        since the files were written, else by comparing every live key with the files' keys."""
        since = meta.get("log_seq")
        if log is not None and since is not None and since >= log[0] and parts.complete:
            keys, hashes = changed_since(conn, since)
            touched = set(keys)
            table, col = self.source.table, self.source.model_column
            for part in _chunks(hashes):
                touched.update(r[0] for r in conn.execute(
                    f"SELECT vkey FROM {table} WHERE +{col} = ? AND vkey IS NOT NULL AND hash IN ({','.join('?' * len(part))})",
                    (self.model_id, *part)))
            touched_keys = _keys(touched)
            if len(touched_keys) <= max(CHUNK, len(parts.main) // 4):  # beyond that one scan is cheaper than look-ups
                live: list[int] = []
                for part in _chunks(touched_keys):
                    live += [r[0] for r in conn.execute(
                        f"SELECT v.vkey FROM {table} v WHERE +v.{col} = ? AND v.embedding IS NOT NULL"  # by key, not model
                        f" AND v.vkey IN ({','.join('?' * len(part))}) AND {LIVE}", (self.model_id, *(int(k) for k in part)))]
                live_keys = _keys(live)
                return live_keys, np.setdiff1d(touched_keys, live_keys, assume_unique=True)
        wanted = _keys(np.fromiter((r[0] for r in conn.execute(self.source.live_keys_sql(), (self.model_id,))), dtype=np.uint64))
        have = [np.asarray(parts.main.keys, dtype=np.uint64)] if len(parts.main) else []
        if parts.delta is not None and len(parts.delta):
            have.append(np.asarray(parts.delta.keys, dtype=np.uint64))
        have_keys = _keys(np.concatenate(have)) if have else np.empty(0, np.uint64)
        return wanted, np.setdiff1d(have_keys, wanted, assume_unique=True)

    def _update(self, conn, UIndex, parts: _Parts, meta: dict, log, progress: Progress | None, threads: int) -> dict:
        live, dead = self._changes(conn, parts, meta, log)
        in_main = _contains(parts.main, live)
        in_delta = _contains(parts.delta, live)
        revived = np.intersect1d(live[in_main], parts.removed, assume_unique=True)  # back in a live photo: untombstone
        add = live[~in_main & ~in_delta]
        drop_delta = dead[_contains(parts.delta, dead)]
        dead_main = dead[_contains(parts.main, dead)]
        removed = np.union1d(np.setdiff1d(parts.removed, revived, assume_unique=True), dead_main)
        buried = len(removed) - len(parts.removed) + len(revived)
        delta_size = (len(parts.delta) if parts.delta is not None else 0) - len(drop_delta) + len(add)
        main_size = len(parts.main)
        summary = {"added": int(len(add) + len(revived)), "removed": int(len(drop_delta) + buried), "rebuilt": False, "merged": False}
        if len(removed) > max(1000, main_size // 5) or main_size == 0:  # many tombstones (or nothing to add to): a fresh graph
            return {**self._rebuild(conn, UIndex, progress, threads), **{k: summary[k] for k in ("added", "removed")}}
        if delta_size + len(removed) > MERGE_FRACTION * main_size:
            return {**summary, **self._merge(conn, UIndex, parts, add, drop_delta, removed, progress, threads)}
        delta = parts.delta
        if len(drop_delta):
            delta.remove(drop_delta)
        delta = self._add(conn, delta, add, False, progress, threads, UIndex)
        if delta is not None and (len(add) or len(drop_delta) or not parts.complete):
            _save(delta, self.delta_path)
        elif delta is None:
            _drop(self.delta_path)  # an unreadable one
        if len(removed) != len(parts.removed) or len(revived) or not parts.complete:
            tmp = self.removed_path.with_name(self.removed_path.name + ".tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, removed)
            os.replace(tmp, self.removed_path)
        live_count = main_size - len(removed) + (len(delta) if delta is not None else 0)
        return {**summary, "count": int(live_count), "dim": int(parts.main.ndim), "delta": int(delta_size),
                "tombstones": int(len(removed))}

    def _merge(self, conn, UIndex, parts: _Parts, add: np.ndarray, drop_delta: np.ndarray, removed: np.ndarray,
               progress: Progress | None, threads: int) -> dict:
        """One new main file: the old one without its tombstones, plus the delta's vectors (read exactly from SQLite)."""
        index = UIndex.restore(str(self.path), view=False)
        if len(removed):
            index.remove(removed)
        carried = np.empty(0, np.uint64)
        if parts.delta is not None and len(parts.delta):
            carried = np.setdiff1d(np.asarray(parts.delta.keys, dtype=np.uint64), drop_delta)
        incoming = _keys(np.concatenate([carried, add]))
        incoming = incoming[~_contains(index, incoming)]
        index = self._add(conn, index, incoming, False, progress, threads, UIndex)
        _save(index, self.path)
        _drop(self.delta_path)
        _drop(self.removed_path)
        return {"merged": True, "count": int(len(index)), "dim": int(index.ndim)}

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
                rows = list({r[0]: r for r in rows}.values())  # one vector per key (faces of one content share none)
                if rows:
                    put([r[0] for r in rows], [r[1] for r in rows])
        return index

    # ---- querying -------------------------------------------------------------------------------
    def fresh_view(self, conn: sqlite3.Connection, progress: Progress | None = None) -> tuple[IndexView, dict | None]:
        """Synced if stale (rebuilt if unreadable) and memory-mapped; returns (view, what the sync did)."""
        synced = None if self.is_fresh(conn) else self.sync(progress)
        view = self.open_view()
        if view is None:  # damaged behind a fresh-looking record: rebuild from the database
            synced = self.sync(progress, force=True)
            view = self.open_view()
        if view is None:
            raise VectorIndexUnavailable(f"cannot read {self.path}")
        return view, synced

    def open_view(self) -> IndexView | None:
        """The files memory-mapped for queries, or None if they cannot be read."""
        from usearch.index import Index as UIndex

        parts = self._parts(UIndex, view_delta=True)
        if parts is None or not parts.complete:
            return None
        return IndexView(parts.main, parts.delta, parts.removed)


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
        view.expansion_search = max(EF_QUERY, count)
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
    """Bring every model's indexes in line with the database (the end of an `index` run), then drop the change
    log entries all of them have read."""
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
    read = [(VectorIndex(db_path, k, m).meta() or {}).get("log_seq") for k, m in work]
    if read and all(seq is not None for seq in read):
        _prune(db_path, min(read))
    return out


def _prune(db_path: Path, through: int) -> None:
    try:
        conn = sqlite3.connect(db_path, timeout=60)
    except sqlite3.Error:
        return
    try:
        with conn:
            prune_log(conn, through)
    except sqlite3.OperationalError:  # a read-only database keeps its log; syncs still read it correctly
        pass
    finally:
        conn.close()
