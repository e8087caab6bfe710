"""Stable integer keys for stored vectors, and the schema that keeps vector indexes in step.

A vector index (usearch) names vectors by 64-bit integers. The key is derived from what the vector
is of, not from a SQLite rowid: rowids change on VACUUM and get reused, content does not, so a key
found in an index always means the same vector. `vector_state.generation` is bumped by triggers on
every write that can change which vectors are live, so an index knows in O(1) whether it is stale.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils
import xxhash

_KEY_MASK = (1 << 62) - 1


def clip_key(content_hash: str) -> int:
    """One CLIP vector per content and model (indexes are per model): the content hash's leading bits."""
    return int(content_hash[:16], 16) & _KEY_MASK


def face_key(content_hash: str, model_id: str, idx: int) -> int:
    """The idx-th face of a content under one detector+recogniser pair."""
    return xxhash.xxh3_64_intdigest(f"{content_hash}\x00{model_id}\x00{idx}".encode()) & _KEY_MASK


# Writes that change which vectors exist or which contents have a live photo.
_BUMP = "UPDATE vector_state SET generation = generation + 1 WHERE id = 1"
_TRIGGERS = {
    "clip_ins": "AFTER INSERT ON clip", "clip_del": "AFTER DELETE ON clip",
    "faces_ins": "AFTER INSERT ON faces", "faces_del": "AFTER DELETE ON faces",
    "files_ins": "AFTER INSERT ON files", "files_del": "AFTER DELETE ON files",
    "files_upd": "AFTER UPDATE OF hash, status, deleted ON files",
}


def migrate_vector_keys(db: sqlite_utils.Database) -> None:
    """Schema v2: `vkey` on clip and faces (filled for existing rows), the generation counter and its triggers."""
    conn: sqlite3.Connection = db.conn
    conn.create_function("hi_clip_key", 1, clip_key, deterministic=True)
    conn.create_function("hi_face_key", 3, face_key, deterministic=True)
    conn.execute("ALTER TABLE clip ADD COLUMN vkey INTEGER")
    conn.execute("ALTER TABLE faces ADD COLUMN vkey INTEGER")
    conn.execute("UPDATE clip SET vkey = hi_clip_key(hash)")
    conn.execute("UPDATE faces SET vkey = hi_face_key(hash, model_id, idx)")
    conn.execute("CREATE INDEX idx_clip_vkey ON clip (vkey)")
    conn.execute("CREATE INDEX idx_faces_vkey ON faces (vkey)")
    conn.execute("CREATE TABLE vector_state (id INTEGER PRIMARY KEY CHECK (id = 1), generation INTEGER NOT NULL)")
    conn.execute("INSERT INTO vector_state (id, generation) VALUES (1, 1)")
    for name, when in _TRIGGERS.items():
        conn.execute(f"CREATE TRIGGER vector_gen_{name} {when} BEGIN {_BUMP}; END")


def generation(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT generation FROM vector_state WHERE id = 1").fetchone()
    return int(row[0]) if row else 0
