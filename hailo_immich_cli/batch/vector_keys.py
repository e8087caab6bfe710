"""Stable integer keys for stored vectors, and the schema that keeps vector indexes in step.

A vector index (usearch) names vectors by 64-bit integers. The key is derived from what the vector
is of, not from a SQLite rowid: rowids change on VACUUM and get reused, content does not, so a key
found in an index always means the same vector. `vector_state.generation` is bumped by triggers on
every write that can change which vectors are live, so an index knows in O(1) whether it is stale.
`vector_log` (schema v4), filled by the same writes, says which keys and contents changed, so bringing
an index up to date costs what changed, not a read of every key of a million-photo library.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

import xxhash

if TYPE_CHECKING:
    import sqlite_utils

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


# What each write logs: the vector's key (clip, faces) or the content whose photos changed (files).
_LOG = "INSERT INTO vector_log (vkey, hash) VALUES"
_LOG_TRIGGERS = {
    "clip_ins": ("AFTER INSERT ON clip", f"{_LOG} (NEW.vkey, NULL);"),
    "clip_del": ("AFTER DELETE ON clip", f"{_LOG} (OLD.vkey, NULL);"),
    "faces_ins": ("AFTER INSERT ON faces", f"{_LOG} (NEW.vkey, NULL);"),
    "faces_del": ("AFTER DELETE ON faces", f"{_LOG} (OLD.vkey, NULL);"),
    "files_ins": ("AFTER INSERT ON files WHEN NEW.hash IS NOT NULL", f"{_LOG} (NULL, NEW.hash);"),
    "files_del": ("AFTER DELETE ON files WHEN OLD.hash IS NOT NULL", f"{_LOG} (NULL, OLD.hash);"),
    "files_upd": ("AFTER UPDATE OF hash, status, deleted ON files WHEN OLD.hash IS NOT NEW.hash"
                  " OR OLD.status IS NOT NEW.status OR OLD.deleted IS NOT NEW.deleted",
                  f"{_LOG} (NULL, OLD.hash); {_LOG} (NULL, NEW.hash);"),
}


def migrate_vector_log(db: sqlite_utils.Database) -> None:
    """Schema v4: the change log the triggers fill and `prune_log` empties once every index has read it."""
    conn: sqlite3.Connection = db.conn
    conn.execute("CREATE TABLE vector_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, vkey INTEGER, hash TEXT)")
    conn.execute("ALTER TABLE vector_state ADD COLUMN pruned_through INTEGER NOT NULL DEFAULT 0")
    for name, (when, body) in _LOG_TRIGGERS.items():
        conn.execute(f"CREATE TRIGGER vector_log_{name} {when} BEGIN {body} END")


def log_position(conn: sqlite3.Connection) -> tuple[int, int] | None:
    """(pruned through, last entry) of the change log, or None for a database without one (older schema)."""
    try:
        pruned = conn.execute("SELECT pruned_through FROM vector_state WHERE id = 1").fetchone()
        last = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'").fetchone()
    except sqlite3.OperationalError:
        return None
    if pruned is None:
        return None
    return int(pruned[0]), int(last[0]) if last else 0


def changed_since(conn: sqlite3.Connection, seq: int) -> tuple[list[int], list[str]]:
    """Keys and content hashes logged after `seq`."""
    keys = [r[0] for r in conn.execute("SELECT DISTINCT vkey FROM vector_log WHERE seq > ? AND vkey IS NOT NULL", (seq,))]
    hashes = [r[0] for r in conn.execute("SELECT DISTINCT hash FROM vector_log WHERE seq > ? AND hash IS NOT NULL", (seq,))]
    return keys, hashes


def prune_log(conn: sqlite3.Connection, through: int) -> None:
    """Forget entries every index has read (a writer's connection; the generation does not change)."""
    conn.execute("DELETE FROM vector_log WHERE seq <= ?", (through,))
    conn.execute("UPDATE vector_state SET pruned_through = max(pruned_through, ?) WHERE id = 1", (through,))
