"""Near-identical photos from the CLIP vectors already in the index, the way Immich finds duplicates.

Two photos are duplicates when the cosine distance of their CLIP vectors is at most `max_distance`
(Immich's default 0.01): exact copies (one content, several files), re-encodes, resizes. Groups are
the connected components of that relation. Candidates come from the vector index (each vector asks
for its nearest neighbours), so a million photos never means a million squared comparisons; every
candidate pair is checked again with the exact float32 vectors. Nothing is ever deleted here.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hailo_immich_cli.batch.vectors import CHUNK, LIVE, Progress, VectorIndex, sources
from hailo_immich_cli.tasks import vectors_per

IMMICH_MAX_DISTANCE = 0.01
NEIGHBOURS = 16  # candidates asked per photo; a group larger than this still joins through its members
SLACK = 0.004  # the index stores half floats: ask a little wider, the exact check decides


@dataclass
class Member:
    path: str
    hash: str
    width: int | None
    height: int | None
    size: int
    distance: float = 0.0  # cosine distance to the photo suggested to keep
    keep: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "hash": self.hash, "width": self.width, "height": self.height, "size": self.size,
                "distance": round(float(self.distance), 6), "keep": self.keep}


@dataclass
class Group:
    members: list[Member] = field(default_factory=list)

    @property
    def keep(self) -> Member:
        return next(m for m in self.members if m.keep)

    def as_dict(self) -> dict[str, Any]:
        return {"keep": self.keep.path, "members": [m.as_dict() for m in self.members]}


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _keep_order(m: Member) -> tuple:
    """Suggest keeping the most pixels, then the largest file (least recompressed), then a stable path order."""
    return (-((m.width or 0) * (m.height or 0)), -m.size, m.path)


def find_duplicates(db_path: Path | str, conn: sqlite3.Connection, model_id: str, max_distance: float = IMMICH_MAX_DISTANCE,
                    exact: bool = False, progress: Progress | None = None) -> tuple[list[Group], dict[str, Any]]:
    """Groups of duplicate photos (largest first) and how they were found."""
    started = time.perf_counter()
    pairs = _exact_pairs(conn, model_id, max_distance) if exact else _indexed_pairs(db_path, conn, model_id, max_distance, progress)
    uf = _UnionFind()
    for a, b, _ in pairs:
        uf.union(a, b)
    files = _live_files(conn)
    for h, paths in files.items():  # byte-identical copies share one content (and one vector)
        if len(paths) > 1:
            uf.find(h)
    components: dict[str, list[str]] = {}
    for h in list(uf.parent):
        if h in files:
            components.setdefault(uf.find(h), []).append(h)
    vectors = _vectors(conn, model_id, [h for hs in components.values() for h in hs])
    groups = []
    for hashes in components.values():
        members = [Member(path, h, w, ht, size) for h in hashes for path, w, ht, size in files[h]]
        if len(members) < 2:
            continue
        members.sort(key=_keep_order)
        members[0].keep = True
        ref = vectors.get(members[0].hash)
        for m in members[1:]:
            v = vectors.get(m.hash)
            m.distance = 0.0 if m.hash == members[0].hash or ref is None or v is None else max(0.0, 1.0 - float(ref @ v))
        groups.append(Group(members))
    groups.sort(key=lambda g: (-len(g.members), g.keep.path))
    info = {"model_id": model_id, "max_distance": max_distance, "method": "exact" if exact else "usearch",
            "groups": len(groups), "photos": sum(len(g.members) for g in groups),
            "seconds": round(time.perf_counter() - started, 3)}
    return groups, info


def _live_files(conn: sqlite3.Connection) -> dict[str, list[tuple[str, int | None, int | None, int]]]:
    out: dict[str, list] = {}
    for h, path, w, ht, size in conn.execute(
        "SELECT hash, path, width, height, size FROM files WHERE deleted = 0 AND status = 'ok' AND hash IS NOT NULL ORDER BY path"
    ):
        out.setdefault(h, []).append((path, w, ht, size))
    return out


def _unit(blob: bytes) -> np.ndarray:
    v = np.frombuffer(blob, dtype="<f4")
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _vectors(conn: sqlite3.Connection, model_id: str, hashes: list[str]) -> dict[str, np.ndarray]:
    out = {}
    for i in range(0, len(hashes), 500):
        part = hashes[i:i + 500]
        for h, blob in conn.execute(
            f"SELECT hash, embedding FROM clip WHERE model_id = ? AND hash IN ({','.join('?' * len(part))})", (model_id, *part)
        ):
            out[h] = _unit(blob)
    return out


def _exact_pairs(conn: sqlite3.Connection, model_id: str, max_distance: float) -> list[tuple[str, str, float]]:
    """All pairs, block by block (the reference for tests; quadratic time, bounded memory)."""
    rows = conn.execute(f"SELECT v.hash, v.embedding FROM clip v WHERE v.model_id = ? AND v.embedding IS NOT NULL AND {LIVE}",
                        (model_id,)).fetchall()
    if not rows:
        return []
    hashes = [r[0] for r in rows]
    mat = np.stack([_unit(r[1]) for r in rows]).astype(np.float32)
    pairs = []
    for i in range(0, len(mat), 2048):
        sims = mat[i:i + 2048] @ mat.T
        for a, b in zip(*np.nonzero(sims >= 1.0 - max_distance)):
            a += i
            if a < b:
                pairs.append((hashes[a], hashes[b], 1.0 - float(sims[a - i, b])))
    return pairs


def _indexed_pairs(db_path, conn, model_id: str, max_distance: float, progress: Progress | None) -> list[tuple[str, str, float]]:
    kind = vectors_per("photo").name
    view, _ = VectorIndex(db_path, kind, model_id).fresh_view(conn, progress)
    size = len(view)
    if size < 2:
        return []
    count = min(NEIGHBOURS, size)
    view.expansion_search = max(64, count)
    total = conn.execute("SELECT count(*) FROM clip WHERE model_id = ?", (model_id,)).fetchone()[0]
    label = f"comparing {size} photos ({model_id})"
    candidates: list[tuple[int, int]] = []
    done = 0
    cur = conn.execute(sources()[kind].live_rows_sql(), (model_id,))
    while True:
        rows = cur.fetchmany(CHUNK)
        if not rows:
            break
        keys = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        mat = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), -1)
        found = view.search(mat, count)
        near_keys = np.asarray(found.keys, dtype=np.int64).reshape(len(rows), -1)
        dist = np.asarray(found.distances, dtype=np.float32).reshape(len(rows), -1)
        for a, b in zip(*np.nonzero(dist <= max_distance + SLACK)):
            other = int(near_keys[a, b])
            if other >= 0 and other != keys[a]:
                candidates.append((int(keys[a]), other))
        done += len(rows)
        if progress:
            progress(label, done, max(total, done))
    return _confirm(conn, model_id, candidates, max_distance)


def _confirm(conn, model_id: str, candidates: list[tuple[int, int]], max_distance: float) -> list[tuple[str, str, float]]:
    """Recheck candidate pairs with the exact vectors."""
    keys = sorted({k for pair in candidates for k in pair})
    by_key: dict[int, tuple[str, np.ndarray]] = {}
    for i in range(0, len(keys), 500):
        part = keys[i:i + 500]
        for key, h, blob in conn.execute(
            f"SELECT vkey, hash, embedding FROM clip WHERE +model_id = ? AND vkey IN ({','.join('?' * len(part))})", (model_id, *part)
        ):
            by_key[key] = (h, _unit(blob))
    out = []
    for a, b in candidates:
        if a in by_key and b in by_key:
            d = 1.0 - float(by_key[a][1] @ by_key[b][1])
            if d <= max_distance:
                out.append((by_key[a][0], by_key[b][0], d))
    return out
