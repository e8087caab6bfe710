"""Search an index: CLIP text or image similarity, face similarity, OCR full text.

A query vector is only ever compared with vectors of the SAME model (model id = recipe + file
hash): mixing embedding spaces gives confident nonsense. Vector queries go through the vector index
beside the database (`vectors.py`) and are rescored exactly; `exact=True` scans every vector in
chunks instead (memory bounded, time linear in the library): the reference the index is tested against.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from hailo_immich_cli.batch.store import SCHEMA_VERSION, blob_vector, is_damage
from hailo_immich_cli.batch.vectors import Progress, Searcher, VectorIndexUnavailable, library_version, sources
from hailo_immich_cli.errors import BadInputError, DatabaseDamagedError, UnknownModelError
from hailo_immich_cli.tasks import vector_tasks, vectors_per

CHUNK = 16384


@dataclass
class Hit:
    path: str
    score: float
    model_id: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "score": round(float(self.score), 6), "model_id": self.model_id, **self.detail}


class QueryEncoder(Protocol):
    """Turns a query into a vector with the model that made the stored vectors (local or remote)."""

    def text(self, query: str, visual: dict[str, Any]) -> tuple[np.ndarray, str]: ...

    def image(self, rgb: np.ndarray, visual: dict[str, Any]) -> tuple[np.ndarray, str]: ...

    def face(self, rgb: np.ndarray, recognizer: dict[str, Any], detector: str) -> tuple[np.ndarray, str]: ...


class Index:
    """Read-only view of an index database."""

    def __init__(self, path: Path | str, exact: bool = False, progress: Progress | None = None):
        path = Path(path)
        self.path = path
        self.exact = exact
        self.progress = progress
        self.method = "exact"  # how the last vector query ran: exact | the vector index library
        self.query_ms: float | None = None
        self.note: str | None = None  # why the index was not used, when it was wanted
        self._searcher: Searcher | None = None
        if not path.is_file():
            raise BadInputError(f"{path}: no such index database (create it with `hailo-immich index`)")
        try:
            self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            version = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.DatabaseError as exc:
            if is_damage(exc):
                raise DatabaseDamagedError(str(path), str(exc)) from None
            raise BadInputError(f"{path}: not an index database: {exc}") from exc
        if version == 0:
            raise BadInputError(f"{path}: not an index database (no schema)")
        if version > SCHEMA_VERSION:
            raise BadInputError(f"{path}: index schema v{version} is newer than this hailo-immich reads (v{SCHEMA_VERSION})")
        self.version = version

    def close(self) -> None:
        if self._searcher is not None:
            self._searcher.close()
        self.conn.close()

    # ---- which model ----------------------------------------------------------------------------
    def model(self, model_id: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT model_id, task, recipe_id, backend, immich_names, dim FROM models WHERE model_id = ?", (model_id,)
        ).fetchone()
        if row is None:
            return {"model_id": model_id, "task": None, "recipe_id": model_id.split("@")[0], "backend": None,
                    "immich_names": [], "dim": None}
        return {"model_id": row[0], "task": row[1], "recipe_id": row[2], "backend": row[3],
                "immich_names": json.loads(row[4] or "[]"), "dim": row[5]}

    def pick(self, sql: str, wanted: str | None, what: str) -> str:
        """The model id to search: `wanted` (id, recipe id or prefix) or the one with most results."""
        counts = self.conn.execute(sql).fetchall()
        if not counts:
            raise BadInputError(f"the index holds no {what} (index with --tasks including it)")
        if wanted is None:  # the most results; on a tie the model first used most recently
            used = dict(self.conn.execute("SELECT model_id, first_used FROM models").fetchall())
            return max(counts, key=lambda r: (r[1], used.get(r[0]) or 0.0, r[0]))[0]
        for model_id, _ in counts:
            if model_id == wanted or model_id.split("@")[0] == wanted or model_id.startswith(wanted):
                return model_id
        raise UnknownModelError(f"no {what} from model '{wanted}' in the index; it has: {', '.join(m for m, _ in counts)}")

    def paths_for(self, hashes: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(hashes), 500):
            chunk = hashes[i:i + 500]
            rows = self.conn.execute(
                f"SELECT hash, path FROM files WHERE deleted = 0 AND status = 'ok' AND hash IN ({','.join('?' * len(chunk))}) ORDER BY path",
                chunk,
            )
            for h, p in rows:
                out.setdefault(h, []).append(p)
        return out

    # ---- vector scoring -------------------------------------------------------------------------
    def _top(self, rows: Iterator[tuple], query: np.ndarray, k: int, normalize: bool) -> list[tuple[float, tuple]]:
        """Top-k rows by cosine with `query`; rows end with a float32 BLOB."""
        q = query.astype(np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-12)
        best: list[tuple[float, int, tuple]] = []
        counter = 0
        while True:
            chunk = rows.fetchmany(CHUNK)  # type: ignore[attr-defined]
            if not chunk:
                break
            mats = [blob_vector(r[-1]) for r in chunk]
            dims = {m.shape[0] for m in mats}
            if dims != {q.shape[0]}:
                raise BadInputError(f"stored vectors have {sorted(dims)} dims, the query has {q.shape[0]}")
            m = np.stack(mats)
            if normalize:
                m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
            scores = m @ q
            take = np.argsort(-scores)[:k]
            for i in take:
                counter += 1
                item = (float(scores[i]), -counter, chunk[i][:-1])
                if len(best) < k:
                    heapq.heappush(best, item)
                else:
                    heapq.heappushpop(best, item)
        return [(s, row) for s, _, row in sorted(best, reverse=True)]

    def _expand(self, scored: list[tuple[float, str, dict]], model_id: str, k: int) -> list[Hit]:
        paths = self.paths_for(list(dict.fromkeys(h for _, h, _ in scored)))
        hits: list[Hit] = []
        for score, h, detail in scored:
            for p in paths.get(h, []):
                hits.append(Hit(p, score, model_id, dict(detail)))
        return hits[:k]

    # ---- the four searches ----------------------------------------------------------------------
    def clip_model(self, wanted: str | None) -> dict[str, Any]:
        if wanted is None:
            models = self.conn.execute(sources()[vectors_per("photo").name].models_sql() + " LIMIT 2").fetchall()
            if len(models) == 1:  # the usual library: one model, no need to count a million rows to choose it
                return self.model(models[0][0])
        model_id = self.pick("SELECT model_id, count(*) FROM clip GROUP BY model_id", wanted, "CLIP vectors")
        return self.model(model_id)

    def _searcher_for(self, kind: str, model_id: str) -> Searcher | None:
        """The vector index, synced and opened (outside the query timing), or None for an exact scan."""
        self.prepare_vectors()
        if self.exact:
            return None
        try:
            if self._searcher is None:
                self._searcher = Searcher(self.path, self.conn, self.progress)
            self._searcher.prepare(kind, model_id)
            return self._searcher
        except VectorIndexUnavailable as exc:
            self.note = f"vector index unavailable, exact scan: {exc}"
            return None

    def prepare_vectors(self) -> None:
        """Make the schema ready for the vector index, or fall back to exact scans with a note saying why."""
        if self.exact:
            return
        try:
            library_version()
            self._upgrade()
        except VectorIndexUnavailable as exc:
            self.exact, self.note = True, f"vector index unavailable, exact scan: {exc}"

    def _upgrade(self) -> None:
        """An index made by an older hailo-immich lacks vector keys: migrate it (needs write access)."""
        if self.version >= SCHEMA_VERSION:
            return
        from hailo_immich_cli.batch.store import Store

        try:
            Store(self.path, create=False).close()
        except (BadInputError, sqlite3.Error) as exc:
            raise VectorIndexUnavailable(f"schema v{self.version} needs an upgrade this process cannot write ({exc})") from exc
        self.version = SCHEMA_VERSION

    def _nearest(self, kind: str, model_id: str, query: np.ndarray, k: int, exact_rows) -> list[Hit]:
        """Top-k hits, over-fetching (one content may be several files) and widening if too few survive."""
        searcher = self._searcher_for(kind, model_id)
        fetch = k * 4 + 16
        t0 = time.perf_counter()
        while True:
            if searcher is None:
                self.method = "exact"
                top = self._top(exact_rows(), query, fetch, normalize=True)
            else:
                self.method = library_version().split()[0]
                top = searcher.nearest(kind, model_id, query, fetch)
            hits = self._expand([self._scored(kind, s, r) for s, r in top], model_id, k)
            if len(hits) >= k or len(top) < fetch:
                break
            fetch *= 4
        self.query_ms = (time.perf_counter() - t0) * 1000
        return hits

    @staticmethod
    def _scored(kind: str, score: float, row: tuple) -> tuple[float, str, dict]:
        return score, row[0], vector_tasks()[kind].search_hit(row)

    def by_vector(self, query: np.ndarray, model_id: str, k: int, only: set[str] | None = None) -> list[Hit]:
        """Top-k photos by CLIP similarity; `only` limits them to these contents (scanned exactly: a person's photos)."""
        if only is not None:
            self._restrict(only)
            rows = self.conn.execute(
                "SELECT hash, embedding FROM clip WHERE model_id = ? AND hash IN (SELECT hash FROM temp.only_hashes)", (model_id,)
            )
            t0 = time.perf_counter()
            top = self._top(rows, query, k * 4 + 16, normalize=True)
            hits = self._expand([(s, r[0], {}) for s, r in top], model_id, k)
            self.method, self.query_ms = "exact", (time.perf_counter() - t0) * 1000
            return hits

        def rows():
            return self.conn.execute("SELECT hash, embedding FROM clip WHERE model_id = ?", (model_id,))

        return self._nearest(vectors_per("photo").name, model_id, query, k, rows)

    def _restrict(self, hashes: set[str]) -> None:
        self.conn.execute("CREATE TEMP TABLE IF NOT EXISTS only_hashes (hash TEXT PRIMARY KEY)")
        self.conn.execute("DELETE FROM temp.only_hashes")
        self.conn.executemany("INSERT OR IGNORE INTO temp.only_hashes VALUES (?)", ((h,) for h in hashes))

    # ---- people ---------------------------------------------------------------------------------
    def person(self, who: str) -> tuple[int, str, dict[str, list[list[float]]]]:
        """(person id, recognizer, content hash -> that person's face boxes) for an id or a name."""
        from hailo_immich_cli.batch import people

        if self.version < 3:
            raise BadInputError("this index has no people yet: run `hailo-immich people DB` first")
        pid = people.resolve(self.conn, who)
        return pid, people.person_recognizer(self.conn, pid), people.person_photos(self.conn, pid)

    def with_person(self, who: str, k: int) -> list[Hit]:
        """Photos showing the person, most of their faces first, then by path."""
        t0 = time.perf_counter()
        pid, recognizer, boxes = self.person(who)
        paths = self.paths_for(list(boxes))
        hits = [Hit(p, float(len(b)), recognizer, {"person": pid, "boxes": b}) for h, b in boxes.items() for p in paths.get(h, [])]
        hits.sort(key=lambda h: (-h.score, h.path))
        self.method, self.query_ms = "people", (time.perf_counter() - t0) * 1000
        return hits[:k]

    def text(self, encoder: QueryEncoder, query: str, k: int, model: str | None = None, only: set[str] | None = None) -> list[Hit]:
        visual = self.clip_model(model)
        vec, text_model = encoder.text(query, visual)
        hits = self.by_vector(vec, visual["model_id"], k, only=only)
        for h in hits:
            h.detail["text_model"] = text_model
        return hits

    def like(self, encoder: QueryEncoder, rgb: np.ndarray, k: int, model: str | None = None) -> list[Hit]:
        visual = self.clip_model(model)
        vec, used = encoder.image(rgb, visual)
        if used != visual["model_id"]:
            raise UnknownModelError(f"the index's CLIP vectors come from {visual['model_id']}, but the query was encoded by {used}")
        return self.by_vector(vec, visual["model_id"], k)

    def face(self, encoder: QueryEncoder, rgb: np.ndarray, k: int, model: str | None = None) -> list[Hit]:
        recognizer_id = self.pick(
            "SELECT recognizer, count(*) FROM faces WHERE recognizer IS NOT NULL AND embedding IS NOT NULL GROUP BY recognizer",
            model, "face embeddings",
        )
        detector = self.conn.execute(
            "SELECT detector, count(*) c FROM faces WHERE recognizer = ? GROUP BY detector ORDER BY c DESC LIMIT 1", (recognizer_id,)
        ).fetchone()[0]
        vec, used = encoder.face(rgb, self.model(recognizer_id), detector)
        if used != recognizer_id:
            raise UnknownModelError(f"the index's face embeddings come from {recognizer_id}, but the query face was embedded by {used}")

        def rows():
            return self.conn.execute(
                "SELECT hash, x1, y1, x2, y2, score, embedding FROM faces WHERE recognizer = ? AND embedding IS NOT NULL",
                (recognizer_id,),
            )

        return self._nearest(vectors_per("face").name, recognizer_id, vec, k, rows)

    def ocr(self, words: str, k: int, model: str | None = None, only: set[str] | None = None) -> list[Hit]:
        terms = [w for w in words.split() if w.strip()]
        if not terms:
            raise BadInputError("--ocr needs at least one word")
        t0 = time.perf_counter()
        match = " ".join('"' + w.replace('"', '""') + '"' for w in terms)
        sql = (
            "SELECT t.hash, t.model_id, -bm25(ocr_text_fts) AS score, snippet(ocr_text_fts, 0, '[', ']', '…', 12)"
            " FROM ocr_text_fts JOIN ocr_text t ON t.id = ocr_text_fts.rowid WHERE ocr_text_fts MATCH ?"
        )
        params: list[Any] = [match]
        if only is not None:
            self._restrict(only)
            sql += " AND t.hash IN (SELECT hash FROM temp.only_hashes)"
        if model:
            sql += " AND (t.model_id = ? OR t.model_id LIKE ?)"
            params += [model, model + "%"]
        sql += " ORDER BY score DESC LIMIT ?"
        params.append(k * 4 + 16)
        rows = self.conn.execute(sql, params).fetchall()
        hits: list[Hit] = []
        paths = self.paths_for(list(dict.fromkeys(r[0] for r in rows)))
        for h, model_id, score, snippet in rows:
            for p in paths.get(h, []):
                hits.append(Hit(p, score, model_id, {"text": snippet.replace("\n", " ")}))
        self.method, self.query_ms = "fts", (time.perf_counter() - t0) * 1000
        return hits[:k]


class LocalQueryEncoder:
    """Encodes queries with this machine's recipes, refusing a model other than the stored one."""

    def __init__(self, session: Any):
        self.session = session

    def _recipe_for(self, info: dict[str, Any], task: str):
        """The local recipe that made these vectors, checked by its file's hash without loading it (a text
        query needs only the text encoder, and loading a visual encoder costs a search about a second)."""
        try:
            recipe = self.session.recipes.get(info["recipe_id"])
        except UnknownModelError:
            raise UnknownModelError(
                f"the index's vectors come from '{info['model_id']}', which no local recipe provides"
                + (" (it was made through --remote; search with --remote too)" if info["model_id"].endswith("@remote") else "")
            ) from None
        from hailo_immich_cli.backends.base import model_id_of

        model_id = model_id_of(recipe.id, self.session.files.sha256(self.session.files.require(recipe, "model")))
        if model_id != info["model_id"]:
            raise UnknownModelError(f"the index's vectors come from {info['model_id']}, the local recipe now loads {model_id}; re-index")
        return recipe

    def text(self, query: str, visual: dict[str, Any]) -> tuple[np.ndarray, str]:
        from hailo_immich_cli.clip import pipeline as clip

        recipe = clip.textual_for(self.session.recipes, self._recipe_for(visual, clip.VISUAL))
        emb = clip.encode_texts(self.session, [query], model=recipe.id)
        return emb.vectors[0], emb.provenance.model_id

    def image(self, rgb: np.ndarray, visual: dict[str, Any]) -> tuple[np.ndarray, str]:
        from hailo_immich_cli.clip import pipeline as clip

        recipe = self._recipe_for(visual, clip.VISUAL)
        emb = clip.encode_images(self.session, [rgb], model=recipe.id)
        return emb.vectors[0], emb.provenance.model_id

    def face(self, rgb: np.ndarray, recognizer: dict[str, Any], detector: str) -> tuple[np.ndarray, str]:
        from hailo_immich_cli.faces import pipeline as faces

        rec = self._recipe_for(recognizer, faces.RECOGNITION)
        det = self._recipe_for(self._model_info_fallback(detector), faces.DETECTION)
        result = faces.analyze_faces(self.session, rgb, detector=det.id, recognizer=rec.id)
        if not result.faces or result.faces[0].embedding is None:
            raise BadInputError("no face found in the query image")
        return result.faces[0].embedding, result.recognizer.model_id

    @staticmethod
    def _model_info_fallback(model_id: str) -> dict[str, Any]:
        return {"model_id": model_id, "recipe_id": model_id.split("@")[0]}
