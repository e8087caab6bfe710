"""The vector index beside the database: recall against the exact scan, incremental upkeep, deletions.

Synthetic clustered vectors go straight into a real index database (same schema, keys and
triggers as `index` writes); the exact chunked scan (`exact=True`) is the reference.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from hailo_immich_cli.batch.search import Index
from hailo_immich_cli.batch.store import SCHEMA_VERSION, Store, vector_blob
from hailo_immich_cli.batch.synthetic import clustered, far, near, write_clip_library, write_faces
from hailo_immich_cli.batch import vectors as vectors_module
from hailo_immich_cli.batch.vectors import Searcher, VectorIndex, index_dir, sync_all

MODEL = "clip-vit-b32-openai-visual-cpu@synthetic"


@pytest.fixture(autouse=True)
def _through_the_graph(monkeypatch):
    """These tests check the HNSW graph itself: no part is small enough to be scanned whole."""
    monkeypatch.setattr(vectors_module, "EXACT_SCAN_MAX", 0)


def _paths(hits) -> list[str]:
    return [h.path for h in hits]


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    db = tmp_path_factory.mktemp("vectors") / "lib.db"
    vectors, _ = clustered(10000, seed=5)
    write_clip_library(db, vectors, model_id=MODEL)
    VectorIndex(db, "clip", MODEL).sync(threads=1)  # one thread builds the same graph every time: reproducible answers
    return db, vectors


@pytest.mark.slow
def test_ann_matches_exact_recall_and_top1(library):
    db, vectors = library
    queries = near(vectors, 200, seed=11)
    # the truth: exact cosine over the very vectors written (checked against `--exact` on a few queries)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    path = [f"/synthetic/{i // 1000:04d}/{i:07d}.jpg" for i in range(len(vectors))]
    exact, ann = Index(db, exact=True), Index(db)
    try:
        for q, want in zip(queries[:3], truth[:3]):
            assert _paths(exact.by_vector(q, MODEL, 10)) == [path[i] for i in want]
            assert exact.method == "exact"
        recall, same_top1 = [], []
        for q, want in zip(queries, truth):
            got = ann.by_vector(q, MODEL, 10)
            assert ann.method == "usearch"
            recall.append(len({path[i] for i in want} & set(_paths(got))) / 10)
            same_top1.append(got[0].path == path[want[0]])
            # scores are the exact cosine of the stored float32 vectors, not the index's half floats
            assert np.allclose([h.score for h in got[:3]], [float(q @ vectors[i]) for i in want[:3]], atol=1e-5) or recall[-1] < 1
    finally:
        exact.close()
        ann.close()
    assert np.mean(recall) >= 0.99, np.mean(recall)
    assert all(same_top1)


def test_queries_far_from_every_photo_get_the_exact_top1(library):
    """A text query lands far from image vectors, where every photo is about as distant as the next: the
    graph search must still find the same best photo as the exact scan."""
    db, vectors = library
    queries = far(100, seed=21)
    truth = np.argmax(queries @ vectors.T, axis=1)
    ann = Index(db)
    try:
        got = [ann.by_vector(q, MODEL, 5)[0].path for q in queries]
        assert ann.method == "usearch"
    finally:
        ann.close()
    want = [f"/synthetic/{i // 1000:04d}/{i:07d}.jpg" for i in truth]
    assert sum(g != w for g, w in zip(got, want)) == 0


def test_missing_index_is_built_with_progress_then_reused(tmp_path):
    db = tmp_path / "small.db"
    vectors, _ = clustered(3000, seed=2)
    write_clip_library(db, vectors, model_id=MODEL)
    seen: list[tuple[str, int, int]] = []
    index = Index(db, progress=lambda what, done, total: seen.append((what, done, total)))
    hits = index.by_vector(vectors[42], MODEL, 3)
    index.close()
    assert hits[0].path.endswith("0000042.jpg") and hits[0].score > 0.9999
    assert seen and seen[-1][1:] == (3000, 3000) and "building clip vector index" in seen[-1][0]
    vi = VectorIndex(db, "clip", MODEL)
    meta = vi.meta()
    assert meta["count"] == 3000 and meta["library"].startswith("usearch ")
    seen.clear()
    again = Index(db, progress=lambda *a: seen.append(a))
    assert _paths(again.by_vector(vectors[42], MODEL, 3)) == _paths(hits)
    again.close()
    assert seen == []  # fresh: nothing rebuilt


def test_incremental_add_and_delete_never_returns_deleted(tmp_path):
    db = tmp_path / "inc.db"
    vectors, _ = clustered(4000, seed=3)
    hashes = write_clip_library(db, vectors[:3000], model_id=MODEL)
    assert sync_all(db)[0]["added"] == 3000
    write_clip_library(db, vectors[3000:], model_id=MODEL, start=3000)
    result = sync_all(db)
    assert result[0]["added"] == 1000 and result[0]["removed"] == 0 and not result[0]["rebuilt"]
    assert sync_all(db) == []  # nothing changed since: no work at all
    stamp = VectorIndex(db, "clip", MODEL).path.stat().st_mtime_ns
    write_faces(db, vectors[:5], recognizer="rec@1")  # a change elsewhere: the CLIP file is not rewritten
    assert [r["added"] for r in sync_all(db) if r["kind"] == "clip"] == [0]
    assert VectorIndex(db, "clip", MODEL).path.stat().st_mtime_ns == stamp

    conn = sqlite3.connect(db)
    gone = [f"/synthetic/{i // 1000:04d}/{i:07d}.jpg" for i in (7, 3500)]
    conn.executemany("UPDATE files SET deleted = 1 WHERE path = ?", [(p,) for p in gone])
    conn.commit()
    conn.close()
    result = sync_all(db)
    assert result[0]["removed"] == 2 and result[0]["count"] == 3998
    index = Index(db)
    for i, path in zip((7, 3500), gone):
        hits = index.by_vector(vectors[i], MODEL, 20)
        assert path not in _paths(hits) and len(hits) == 20
    index.close()

    # a stale index (written to behind its back) is synced by the search itself
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET deleted = 1 WHERE path = ?", ("/synthetic/0000/0000011.jpg",))
    conn.commit()
    conn.close()
    index = Index(db)
    assert "/synthetic/0000/0000011.jpg" not in _paths(index.by_vector(vectors[11], MODEL, 5))
    index.close()
    assert VectorIndex(db, "clip", MODEL).meta()["count"] == 3997
    assert hashes[11] not in ()  # keys are content-derived: the same content keeps its key


def test_damaged_index_file_is_rebuilt(tmp_path):
    db = tmp_path / "dmg.db"
    vectors, _ = clustered(1500, seed=4)
    write_clip_library(db, vectors, model_id=MODEL)
    sync_all(db)
    vi = VectorIndex(db, "clip", MODEL)
    vi.path.write_bytes(b"\x00" * 100)
    meta = json.loads(vi.meta_path.read_text())
    meta["generation"] = -1
    vi.meta_path.write_text(json.dumps(meta))
    index = Index(db)
    assert index.by_vector(vectors[9], MODEL, 1)[0].path.endswith("0000009.jpg")
    index.close()
    assert vi.meta()["count"] == 1500
    vi.path.write_bytes(b"\x00" * 100)  # damaged, but its record says it is fresh
    index = Index(db)
    assert index.by_vector(vectors[9], MODEL, 1)[0].path.endswith("0000009.jpg")
    index.close()
    assert vi.open_view() is not None and len(vi.open_view()) == 1500


def test_face_indexes_are_per_recogniser(tmp_path):
    db = tmp_path / "faces.db"
    a, _ = clustered(600, seed=6)
    b, _ = clustered(600, seed=7)
    write_faces(db, a, recognizer="rec-a@1", salt="a")
    write_faces(db, b, recognizer="rec-b@1", salt="b")
    index = Index(db)
    searcher = Searcher(db, index.conn)
    found_a = searcher.nearest("faces", "rec-a@1", b[0], 50)  # a query from b's space, against a's index
    hashes_a = {r[0] for r in index.conn.execute("SELECT hash FROM faces WHERE recognizer = 'rec-a@1'")}
    assert found_a and all(row[0] in hashes_a for _, row in found_a)
    found_b = searcher.nearest("faces", "rec-b@1", b[0], 1)
    assert found_b[0][0] > 0.9999 and found_b[0][1][0] not in hashes_a
    index.close()
    assert sorted(p.name for p in index_dir(db).glob("*.usearch")) == ["faces-rec-a_1.usearch", "faces-rec-b_1.usearch"]


def test_v1_database_gets_vector_keys_on_upgrade(tmp_path):
    import sqlite_utils

    from hailo_immich_cli.batch.store import MIGRATIONS
    from hailo_immich_cli.batch.vector_keys import clip_key

    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    MIGRATIONS[1](sqlite_utils.Database(conn))
    conn.execute("PRAGMA user_version = 1")
    h = "ab" * 16
    conn.execute("INSERT INTO files (path, size, mtime_ns, hash, status, deleted) VALUES ('/x.jpg', 1, 1, ?, 'ok', 0)", (h,))
    conn.execute("INSERT INTO clip (hash, model_id, backend, dim, embedding) VALUES (?, ?, 'cpu', 4, ?)",
                 (h, MODEL, vector_blob(np.ones(4, np.float32))))
    conn.commit()
    conn.close()
    index = Index(db)  # a search upgrades the schema, then builds the index
    assert index.by_vector(np.ones(4, np.float32), MODEL, 1)[0].path == "/x.jpg"
    index.close()
    store = Store(db)
    assert store.version == SCHEMA_VERSION
    assert store.conn.execute("SELECT vkey FROM clip").fetchone()[0] == clip_key(h)
    store.close()


def _delete(db, indices) -> list[str]:
    paths = [f"/synthetic/{i // 1000:04d}/{i:07d}.jpg" for i in indices]
    conn = sqlite3.connect(db)
    conn.executemany("UPDATE files SET deleted = 1 WHERE path = ?", [(p,) for p in paths])
    conn.commit()
    conn.close()
    return paths


def _agrees_with_exact(db, queries, k: int = 10) -> None:
    """Same top-1 as the exact scan for every query, recall@k of at least 0.97 (a graph may miss a tail neighbour)."""
    exact, ann = Index(db, exact=True), Index(db)
    recall = []
    try:
        for q in queries:
            got, want = _paths(ann.by_vector(q, MODEL, k)), _paths(exact.by_vector(q, MODEL, k))
            assert got[0] == want[0]
            recall.append(len(set(got) & set(want)) / k)
    finally:
        exact.close()
        ann.close()
    assert np.mean(recall) >= 0.97, recall


def test_small_changes_go_to_the_delta_read_from_the_change_log(tmp_path, monkeypatch):
    from hailo_immich_cli.batch import vectors

    db = tmp_path / "delta.db"
    vectors_, _ = clustered(3400, seed=8)
    write_clip_library(db, vectors_[:3000], model_id=MODEL)
    sync_all(db)
    vi = VectorIndex(db, "clip", MODEL)
    stamp = vi.path.stat().st_mtime_ns
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM vector_log").fetchone()[0] == 0  # read by every index: pruned
    conn.close()

    # a few photos added and a few deleted: only the delta and the tombstones are written, from the change log
    monkeypatch.setattr(vectors.Source, "live_keys_sql", lambda self: pytest.fail("read every live key for a small change"))
    write_clip_library(db, vectors_[3000:3040], model_id=MODEL, start=3000)
    gone = _delete(db, (5, 1234, 3001))  # two in the main file, one just added
    result = sync_all(db)[0]
    assert (result["added"], result["removed"], result["rebuilt"], result["merged"]) == (39, 2, False, False)  # 3001 never got in
    assert vi.path.stat().st_mtime_ns == stamp  # the main file is not rewritten
    assert vi.delta_path.is_file() and vi.removed_path.is_file()
    meta = vi.meta()
    assert (meta["count"], meta["delta"], meta["tombstones"]) == (3037, 39, 2)
    index = Index(db)
    for i, path in zip((5, 1234, 3001), gone):
        hits = index.by_vector(vectors_[i], MODEL, 10)
        assert path not in _paths(hits) and len(hits) == 10
    for i in (3000, 3020, 3039):  # the new photos are found through the delta
        assert index.by_vector(vectors_[i], MODEL, 1)[0].path.endswith(f"{i:07d}.jpg")
    index.close()
    _agrees_with_exact(db, near(vectors_[:3040], 20, seed=3))

    # a damaged delta or tombstone file behind a fresh record: every key is compared again, nothing is lost
    monkeypatch.undo()
    vi.delta_path.write_bytes(b"\x00" * 64)
    vi.removed_path.write_bytes(b"junk")
    index = Index(db)
    assert index.by_vector(vectors_[3020], MODEL, 1)[0].path.endswith("0003020.jpg")
    assert gone[1] not in _paths(index.by_vector(vectors_[1234], MODEL, 10))
    index.close()
    assert (vi.meta()["delta"], vi.meta()["tombstones"]) == (39, 2) and vi.open_view() is not None

    # a deleted photo that comes back is live again (its main-file vector loses its tombstone)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE files SET deleted = 0 WHERE path = ?", (gone[0],))
    conn.commit()
    conn.close()
    result = sync_all(db)[0]
    assert result["added"] == 1 and vi.meta()["tombstones"] == 1
    index = Index(db)
    assert index.by_vector(vectors_[5], MODEL, 1)[0].path == gone[0]
    index.close()

    # past a tenth of the main file the delta is merged into it: one file again, same answers
    write_clip_library(db, vectors_[3040:], model_id=MODEL, start=3040)
    result = sync_all(db)[0]
    assert result["merged"] and not result["rebuilt"]
    assert not vi.delta_path.exists() and not vi.removed_path.exists()
    assert vi.meta()["count"] == 3400 - 2 and vi.path.stat().st_mtime_ns != stamp
    _agrees_with_exact(db, near(vectors_, 20, seed=4))


@pytest.mark.parametrize("crash_at", ["record", "merge"])
def test_a_crash_between_database_and_index_loses_nothing(tmp_path, monkeypatch, crash_at):
    from hailo_immich_cli.batch import vectors

    db = tmp_path / "crash.db"
    vectors_, _ = clustered(3600, seed=9)
    write_clip_library(db, vectors_[:3000], model_id=MODEL)
    sync_all(db)
    vi = VectorIndex(db, "clip", MODEL)
    if crash_at == "merge":  # a delta exists before the merge
        write_clip_library(db, clustered(1, seed=99)[0], model_id=MODEL, start=99_000)
        sync_all(db)
        assert vi.delta_path.is_file()
    new = range(3000, 3020) if crash_at == "record" else range(3000, 3600)
    write_clip_library(db, vectors_[new.start:new.stop], model_id=MODEL, start=new.start)
    gone = _delete(db, (17, 3005))

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash

    # the database is written; the index files are written, but not the record saying which generation they hold
    # ("record"), or a merge has replaced the main file and died before dropping the old delta ("merge")
    if crash_at == "record":
        monkeypatch.setattr(vectors.VectorIndex, "_write_meta", crash)
    else:
        monkeypatch.setattr(vectors, "_drop", crash)
    with pytest.raises(Crash):
        sync_all(db)
    monkeypatch.undo()

    index = Index(db)  # a search finds the index stale and brings it up to date first
    for i, path in zip((17, 3005), gone):
        assert path not in _paths(index.by_vector(vectors_[i], MODEL, 10))
    for i in (new.start, new.stop - 1):
        assert index.by_vector(vectors_[i], MODEL, 1)[0].path.endswith(f"{i:07d}.jpg")
    hits = index.by_vector(vectors_[3010], MODEL, 20)
    assert len(set(_paths(hits))) == len(hits) == 20  # a vector in both the main file and the delta is one result
    index.close()
    assert vi.is_fresh(sqlite3.connect(db))
    _agrees_with_exact(db, near(vectors_[:new.stop], 15, seed=5))


def test_a_small_library_of_near_copies_is_scanned_whole(tmp_path, monkeypatch):
    """Many near-copies of a few photos (the same picture in several formats and sizes) can cut a photo
    off the graph; up to EXACT_SCAN_MAX vectors the index is scanned whole, so every photo finds itself."""
    monkeypatch.setattr(vectors_module, "EXACT_SCAN_MAX", 50_000)
    rng = np.random.default_rng(9)
    base = rng.normal(size=(6, 512)).astype(np.float32)
    copies = np.repeat(base, 60, axis=0) + rng.normal(scale=0.01, size=(360, 512)).astype(np.float32)
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    db = tmp_path / "copies.db"
    write_clip_library(db, copies, model_id=MODEL)
    VectorIndex(db, "clip", MODEL).sync()
    import usearch.index

    scans: list[bool] = []
    graph_search = usearch.index.Index.search

    def recording(self, *args, **kwargs):
        scans.append(bool(kwargs.get("exact")))
        return graph_search(self, *args, **kwargs)

    monkeypatch.setattr(usearch.index.Index, "search", recording)
    ann = Index(db)
    try:
        for i in range(0, len(copies), 7):
            assert ann.by_vector(copies[i], MODEL, 3)[0].path == f"/synthetic/{i // 1000:04d}/{i:07d}.jpg"
        assert ann.method == "usearch"
    finally:
        ann.close()
    assert scans and all(scans)  # the whole part was scanned, never the graph
