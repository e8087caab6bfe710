"""People: face embeddings grouped into persons, incrementally, the way Immich's recognition job does it.

Density-based, one face at a time, never reshuffling: a face looks at its neighbours within the
maximum recognition distance (cosine, Immich's default 0.5). If one of them already belongs to a
person, the face joins the nearest such person. If none does and the face has at least
`min_faces` neighbours (itself included: a core face, Immich's default 3), it starts a new person.
Otherwise it waits for a second pass, after the other new faces have had their turn, and stays
unassigned if it still finds nobody. Faces already assigned never move, so names and merges stand.

Assignments are keyed by the face's content-derived vector key (`vector_keys.face_key`) and the
recognition model, so a re-index that rewrites face rows keeps them, and embeddings of two
recognisers are never compared, clustered or merged together.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hailo_immich_cli.batch.vectors import LIVE, Progress, VectorIndex
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.tasks import vectors_per

if TYPE_CHECKING:
    import sqlite_utils

IMMICH_MAX_DISTANCE = 0.5
IMMICH_MIN_FACES = 3
NEIGHBOURS = 64  # how many nearest faces a face looks at (within the distance)


def migrate_people(db: sqlite_utils.Database) -> None:
    """Schema v3: persons per recognition model, and which face (by stable key) belongs to whom."""
    conn = db.conn
    conn.execute(
        "CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, recognizer TEXT NOT NULL, name TEXT, created REAL,"
        " merged_into INTEGER)"
    )
    conn.execute("CREATE INDEX idx_people_recognizer ON people (recognizer)")
    conn.execute(
        "CREATE TABLE face_people (recognizer TEXT NOT NULL, face_key INTEGER NOT NULL, person_id INTEGER NOT NULL,"
        " how TEXT NOT NULL, assigned REAL, PRIMARY KEY (recognizer, face_key))"
    )
    conn.execute("CREATE INDEX idx_face_people_person ON face_people (person_id)")


@dataclass
class Person:
    id: int
    recognizer: str
    name: str | None
    faces: int
    photos: int
    face: dict[str, Any] | None  # the representative face: path, box, score

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "recognizer": self.recognizer, "faces": self.faces, "photos": self.photos,
                "face": self.face}


def _unit(blob: bytes) -> np.ndarray:
    v = np.frombuffer(blob, dtype="<f4")
    return v / max(float(np.linalg.norm(v)), 1e-12)


def recognizers(conn: sqlite3.Connection) -> list[tuple[str, int]]:
    return conn.execute(
        "SELECT recognizer, count(*) FROM faces WHERE recognizer IS NOT NULL GROUP BY recognizer"
    ).fetchall()


def cluster(store, recognizer: str, max_distance: float = IMMICH_MAX_DISTANCE, min_faces: int = IMMICH_MIN_FACES,
            progress: Progress | None = None) -> dict[str, int]:
    """Assign the recogniser's unassigned live faces (store: a `Store`, the one writer); returns counts."""
    if not 0 < max_distance <= 2:
        raise BadInputError(f"max distance must be in (0, 2]; got {max_distance}")
    if min_faces < 1:
        raise BadInputError(f"min faces must be at least 1; got {min_faces}")
    conn: sqlite3.Connection = store.conn
    pending = [(k, b) for k, b in conn.execute(
        f"SELECT v.vkey, v.embedding FROM faces v WHERE v.recognizer = ? AND v.embedding IS NOT NULL AND v.vkey IS NOT NULL"
        f" AND {LIVE} AND NOT EXISTS (SELECT 1 FROM face_people p WHERE p.recognizer = v.recognizer AND p.face_key = v.vkey)"
        f" GROUP BY v.vkey ORDER BY min(v.id)", (recognizer,))]
    counts = {"faces": len(pending), "assigned": 0, "new_people": 0, "unassigned": 0}
    if not pending:
        return counts
    view, _ = VectorIndex(store.path, vectors_per("face").name, recognizer).fresh_view(conn, progress)
    view.expansion_search = max(96, NEIGHBOURS)
    label = f"grouping {len(pending)} new face(s) into people ({recognizer})"
    deferred: list[tuple[int, bytes]] = []
    with store.transaction():
        for final in (False, True):
            todo, deferred = (deferred, []) if final else (pending, [])
            for i, (key, blob) in enumerate(todo):
                person = _place(conn, view, recognizer, key, _unit(blob), max_distance, min_faces, counts)
                if person is None and not final:
                    deferred.append((key, blob))
                elif person is None:
                    counts["unassigned"] += 1
                if progress and (i % 256 == 0 or i == len(todo) - 1):
                    progress(label + (" (second pass)" if final else ""), i + 1, len(todo))
    return counts


def _place(conn, view, recognizer: str, key: int, vec: np.ndarray, max_distance: float, min_faces: int,
           counts: dict[str, int]) -> int | None:
    """Join the nearest assigned neighbour's person, or found a person if this face is a core face."""
    found = view.search(vec, min(NEIGHBOURS, len(view)))
    keys = [int(k) for k in np.asarray(found.keys, dtype=np.int64) if k >= 0]
    if not keys:
        return None
    rows = conn.execute(
        f"SELECT vkey, embedding FROM faces WHERE +recognizer = ? AND vkey IN ({','.join('?' * len(keys))})", (recognizer, *keys)
    ).fetchall()
    near = {}
    for k, b in rows:
        d = 1.0 - float(_unit(b) @ vec)
        if d <= max_distance:
            near[k] = min(d, near.get(k, 2.0))
    near[key] = 0.0
    ordered = sorted(near, key=lambda k: (near[k], k))
    owners = dict(conn.execute(
        f"SELECT face_key, person_id FROM face_people WHERE recognizer = ? AND face_key IN ({','.join('?' * len(ordered))})",
        (recognizer, *ordered),
    ).fetchall())
    person = next((owners[k] for k in ordered if k in owners), None)
    now = time.time()
    if person is None:
        if len(near) < min_faces:
            return None
        person = int(conn.execute("INSERT INTO people (recognizer, created) VALUES (?, ?)", (recognizer, now)).lastrowid)
        counts["new_people"] += 1
    conn.execute("INSERT INTO face_people (recognizer, face_key, person_id, how, assigned) VALUES (?, ?, ?, 'auto', ?)",
                 (recognizer, key, person, now))
    counts["assigned"] += 1
    return person


def cluster_all(store, progress: Progress | None = None, **kw) -> dict[str, dict[str, int]]:
    return {rec: cluster(store, rec, progress=progress, **kw) for rec, _ in recognizers(store.conn)}


# ---- reading and editing ------------------------------------------------------------------------
def resolve(conn: sqlite3.Connection, who: str, recognizer: str | None = None) -> int:
    """A person id from an id or a name (case-insensitive); a merged id leads to the person it joined."""
    if who.strip().isdigit():
        pid = int(who)
        for _ in range(64):
            row = conn.execute("SELECT merged_into FROM people WHERE id = ?", (pid,)).fetchone()
            if row is None:
                raise BadInputError(f"no person with id {who}")
            if row[0] is None:
                return pid
            pid = int(row[0])
        raise BadInputError(f"person {who}: merge chain too long")
    sql = "SELECT id, recognizer FROM people WHERE merged_into IS NULL AND lower(name) = lower(?)"
    rows = conn.execute(sql, (who.strip(),)).fetchall()
    if recognizer:
        rows = [r for r in rows if r[1] == recognizer]
    if not rows:
        raise BadInputError(f"no person named '{who}' (name one with `people DB --name ID NAME`)")
    if len(rows) > 1:
        raise BadInputError(f"several people are named '{who}' (ids {', '.join(str(r[0]) for r in rows)}); use an id")
    return int(rows[0][0])


def rename(store, who: str, name: str) -> int:
    name = name.strip()
    if not name:
        raise BadInputError("a name cannot be empty")
    with store.transaction():
        pid = resolve(store.conn, who)
        store.conn.execute("UPDATE people SET name = ? WHERE id = ?", (name, pid))
    return pid


def merge(store, into: str, other: str) -> int:
    """Move every face of `other` to `into` (same recognition model only); `other`'s id then leads to `into`."""
    with store.transaction():
        a, b = resolve(store.conn, into), resolve(store.conn, other)
        if a == b:
            raise BadInputError(f"{into} and {other} are the same person")
        (ra, na), (rb, nb) = (store.conn.execute("SELECT recognizer, name FROM people WHERE id = ?", (p,)).fetchone() for p in (a, b))
        if ra != rb:
            raise BadInputError(f"person {a} ({ra}) and person {b} ({rb}) come from different recognition models; they cannot be merged")
        store.conn.execute("UPDATE face_people SET person_id = ?, how = 'merged' WHERE person_id = ?", (a, b))
        store.conn.execute("UPDATE people SET merged_into = ? WHERE id = ?", (a, b))
        if na is None and nb is not None:
            store.conn.execute("UPDATE people SET name = ? WHERE id = ?", (nb, a))
    return a


def list_people(conn: sqlite3.Connection, recognizer: str) -> list[Person]:
    """Persons with their live faces and photos, most faces first; the representative face is the best-scored one."""
    rows = conn.execute(
        "SELECT p.id, p.name, count(DISTINCT v.vkey), count(DISTINCT v.hash) FROM people p"
        " JOIN face_people fp ON fp.person_id = p.id AND fp.recognizer = p.recognizer"
        f" JOIN faces v ON v.vkey = fp.face_key AND v.recognizer = fp.recognizer"
        f" WHERE p.recognizer = ? AND p.merged_into IS NULL AND {LIVE}"
        " GROUP BY p.id ORDER BY count(DISTINCT v.vkey) DESC, p.id",
        (recognizer,),
    ).fetchall()
    out = []
    for pid, name, faces, photos in rows:
        best = conn.execute(
            "SELECT f.path, v.x1, v.y1, v.x2, v.y2, v.score, f.width, f.height FROM face_people fp"
            " JOIN faces v ON v.vkey = fp.face_key AND v.recognizer = fp.recognizer"
            " JOIN files f ON f.hash = v.hash AND f.deleted = 0 AND f.status = 'ok'"
            " WHERE fp.person_id = ? ORDER BY v.score DESC, f.path LIMIT 1",
            (pid,),
        ).fetchone()
        face = None
        if best:
            face = {"path": best[0], "box": [round(x, 1) for x in best[1:5]], "score": round(best[5], 4),
                    "width": best[6], "height": best[7]}
        out.append(Person(pid, recognizer, name, faces, photos, face))
    return out


def person_photos(conn: sqlite3.Connection, person_id: int) -> dict[str, list[list[float]]]:
    """Content hash -> the person's face boxes in it (live photos only)."""
    out: dict[str, list[list[float]]] = {}
    for h, *box in conn.execute(
        "SELECT v.hash, v.x1, v.y1, v.x2, v.y2 FROM face_people fp JOIN people p ON p.id = fp.person_id"
        " JOIN faces v ON v.vkey = fp.face_key AND v.recognizer = fp.recognizer"
        f" WHERE fp.person_id = ? AND {LIVE}", (person_id,),
    ):
        out.setdefault(h, []).append([round(x, 1) for x in box])
    return out


def person_recognizer(conn: sqlite3.Connection, person_id: int) -> str:
    return conn.execute("SELECT recognizer FROM people WHERE id = ?", (person_id,)).fetchone()[0]

