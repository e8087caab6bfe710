"""`hailo-immich index`: a real folder of real image files, real models, a real SQLite file, the real CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.testkit.photos import make_library, sign
from tests.helpers.batch import dump, model_env, processed_count, rows

REPO = Path(__file__).resolve().parent.parent
TASKS = "faces,clip,ocr"


def run_cli(args: list[str], env: dict[str, str], check: int | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "hailo_immich_cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def env(cpu_models, tmp_path_factory) -> dict[str, str]:
    return model_env(tmp_path_factory.mktemp("models"), Path(cpu_models.models_dir))


@pytest.fixture(scope="module")
def indexed(env, photos, tmp_path_factory):
    """A 300-photo library indexed once by the CLI (shared by the read-only tests below)."""
    root = tmp_path_factory.mktemp("library")
    manifest = make_library(root, photos, count=240)
    db = root.parent / (root.name + ".db")
    proc = run_cli(["index", str(root), "--db", str(db), "--tasks", TASKS], env)
    return root, db, manifest, proc


@pytest.mark.slow
def test_index_library_records_every_file_and_failure(indexed):
    root, db, manifest, proc = indexed
    assert proc.returncode == 1, proc.stderr  # two corrupt files
    for bad in manifest["corrupt"]:
        assert bad in proc.stderr
    files = {r[0]: r[1:] for r in rows(db, "SELECT path, status, error, width, height, orientation, format, deleted FROM files")}
    expected = manifest["images"] + list(manifest["signs"].values())
    assert set(files) == set(expected) | set(manifest["corrupt"])  # the .txt file is not an image: never listed
    assert manifest["non_image"] not in files
    assert all(files[p][0] == "ok" and files[p][1] is None for p in expected)
    assert all(files[p][0] == "failed" and files[p][1] for p in manifest["corrupt"])
    assert {files[p][5] for p in expected} >= {"JPEG", "PNG", "WEBP", "TIFF", "HEIF"}
    # Width and height are the upright size: EXIF orientation was applied before any model ran.
    for path, size in manifest["sizes"].items():
        assert tuple(files[path][2:4]) == tuple(size), path
    for path, orientation in manifest["rotated"]:
        assert files[path][4] == orientation
    # Every image was processed by both tasks, once, under one model key per task.
    processed = rows(db, "SELECT task, model_id, count(*) FROM processed GROUP BY task, model_id")
    n_contents = rows(db, "SELECT count(DISTINCT hash) FROM files WHERE status = 'ok'")[0][0]
    assert sorted((t, c) for t, _, c in processed) == [("clip", n_contents), ("faces", n_contents), ("ocr", n_contents)]
    face_key = next(m for t, m, _ in processed if t == "faces")
    assert face_key.startswith("centerface-cpu@") and "+test-arcface-cpu@" in face_key
    run = rows(db, "SELECT status, new, failed FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert run == ("completed", len(expected), 2)


@pytest.mark.slow
def test_faces_found_upright_with_landmarks_embeddings_and_provenance(indexed):
    root, db, manifest, _ = indexed
    found = {r[0]: r[1:] for r in rows(
        db, "SELECT f.path, count(x.id), min(length(x.embedding)), min(x.landmarks IS NOT NULL), min(x.backend) "
            "FROM files f LEFT JOIN faces x ON x.hash = f.hash GROUP BY f.path")}
    astronauts = [p for p in manifest["images"] if "astronaut_" in p]
    rotated = {p for p, _ in manifest["rotated"]}
    # The astronaut's face is found in every copy, including the ones stored sideways with an EXIF tag.
    assert any(p in rotated for p in astronauts)
    missing = [p for p in astronauts if found[p][0] < 1]
    assert not missing, missing
    assert all(found[p][1] == 512 * 4 and found[p][2] == 1 and found[p][3] == "cpu" for p in astronauts)
    # Boxes are in the file's (upright, full-size) pixels.
    for path, x1, y1, x2, y2 in rows(db, "SELECT f.path, x1, y1, x2, y2 FROM faces x JOIN files f ON f.hash = x.hash"):
        w, h = manifest["sizes"].get(path, (10**6, 10**6))
        assert -0.2 * w < x1 < x2 < 1.2 * w and -0.2 * h < y1 < y2 < 1.2 * h


@pytest.mark.slow
def test_ocr_text_lands_in_fts(indexed):
    root, db, manifest, _ = indexed
    for words, path in manifest["signs"].items():
        text = rows(db, "SELECT t.text FROM ocr_text t JOIN files f ON f.hash = t.hash WHERE f.path = ?", path)[0][0]
        assert words.split()[0].lower() in text.lower(), (words, text)
        hits = rows(db, "SELECT t.hash FROM ocr_text_fts JOIN ocr_text t ON t.id = ocr_text_fts.rowid WHERE ocr_text_fts MATCH ?",
                    '"' + words.split()[0] + '"')
        assert hits
    line = rows(db, "SELECT box, box_score, text_score, model_id, backend FROM ocr_lines LIMIT 1")[0]
    assert len(json.loads(line[0])) == 8 and 0 < line[1] <= 1 and 0 < line[2] <= 1
    assert line[3].startswith("ppocrv5-mobile-det-cpu@") and line[4] == "cpu"


@pytest.mark.slow
def test_rerun_is_a_no_op(indexed, env):
    root, db, manifest, _ = indexed
    before = dump(db)
    proc = run_cli(["index", str(root), "--db", str(db), "--tasks", TASKS], env, check=1)  # the corrupt files are still failed
    assert "skipped (failed before)" in proc.stderr and "--retry-failed" in proc.stderr
    assert dump(db) == before
    run = rows(db, "SELECT status, new, changed, renamed, deleted, failed, unchanged, skipped_failed FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert run == ("completed", 0, 0, 0, 0, 0, len(manifest["images"]) + len(manifest["signs"]), 2)


def test_schema_is_versioned_wal_and_refuses_newer(tmp_path):
    from hailo_immich_cli.batch.store import SCHEMA_VERSION, Store
    from hailo_immich_cli.errors import BadInputError

    db = tmp_path / "x.db"
    Store(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"files", "processed", "faces", "clip", "ocr_lines", "ocr_text", "ocr_text_fts", "runs", "models"} <= tables
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(BadInputError, match="newer"):
        Store(db)


def test_bad_db_and_bad_tasks_are_clear_errors(tmp_path, env):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    proc = run_cli(["index", str(tmp_path), "--db", str(junk), "--tasks", "ocr"], env)
    assert proc.returncode == 2 and "not a usable index database" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli(["index", str(tmp_path), "--db", str(tmp_path / "a.db"), "--tasks", "faces,colour"], env)
    assert proc.returncode == 2 and "--tasks" in proc.stderr
    proc = run_cli(["index", str(tmp_path / "nope"), "--db", str(tmp_path / "a.db"), "--tasks", "ocr"], env)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr


@pytest.mark.slow
def test_rename_move_copy_delete_modify_and_model_change(env, photos, tmp_path):
    root = tmp_path / "lib"
    manifest = make_library(root, photos, count=20)
    db = tmp_path / "i.db"
    run_cli(["index", str(root), "--db", str(db), "--tasks", TASKS], env, check=1)
    imgs = manifest["images"]
    renamed_src, moved_src, deleted, modified, copied, touched = imgs[0], imgs[5], imgs[6], imgs[7], imgs[8], imgs[9]
    faces_before = rows(db, "SELECT x.id, x.hash FROM faces x JOIN files f ON f.hash = x.hash WHERE f.path = ?", renamed_src)
    row_before = rows(db, "SELECT id, first_seen, hash FROM files WHERE path = ?", renamed_src)[0]

    renamed_dst = str(Path(renamed_src).with_name("renamed_" + Path(renamed_src).name))
    os.rename(renamed_src, renamed_dst)
    (root / "moved" / "deeper").mkdir(parents=True)
    moved_dst = str(root / "moved" / "deeper" / Path(moved_src).name)
    shutil.move(moved_src, moved_dst)
    os.remove(deleted)
    copy_dst = str(root / "copy_of_" / Path(copied).name)
    Path(copy_dst).parent.mkdir()
    shutil.copy2(copied, copy_dst)
    old_hash = rows(db, "SELECT hash FROM files WHERE path = ?", modified)[0][0]
    sign("EDITED PHOTO").save(modified, format=Image.open(modified).format)
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    run_cli(["index", str(root), "--db", str(db), "--tasks", TASKS], env, check=1)  # the corrupt files are still failed
    run = rows(db, "SELECT new, changed, renamed, deleted, failed FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert run == (1, 2, 2, 1, 0)  # copy new; modified + touched changed; renamed + moved; deleted
    row_after = rows(db, "SELECT id, first_seen, hash, deleted FROM files WHERE path = ?", renamed_dst)[0]
    assert row_after[:3] == row_before  # the same row, now under its new name
    assert rows(db, "SELECT x.id, x.hash FROM faces x WHERE x.hash = ?", row_before[2]) == faces_before  # results kept, not redone
    assert rows(db, "SELECT count(*) FROM files WHERE path IN (?, ?)", renamed_src, moved_src)[0][0] == 0
    assert rows(db, "SELECT deleted FROM files WHERE path = ?", deleted) == [(1,)]
    new_hash = rows(db, "SELECT hash FROM files WHERE path = ?", modified)[0][0]
    assert new_hash != old_hash
    assert rows(db, "SELECT count(*) FROM processed WHERE hash = ?", old_hash) == [(0,)]  # the old version's results are gone
    assert sorted(r[0] for r in rows(db, "SELECT task FROM processed WHERE hash = ?", new_hash)) == ["clip", "faces", "ocr"]
    assert "edited" in rows(db, "SELECT text FROM ocr_text WHERE hash = ?", new_hash)[0][0].lower()
    assert rows(db, "SELECT count(*) FROM files WHERE hash = (SELECT hash FROM files WHERE path = ?) AND deleted = 0", copy_dst) == [(2,)]

    # A new face recogniser (same recipe id, new weights) redoes faces only; OCR results stay untouched.
    ocr_before = rows(db, "SELECT hash, model_id, run_id, created FROM processed WHERE task = 'ocr' ORDER BY hash")
    model_env(Path(env["HAILO_IMMICH_RECIPES_DIR"]).parent, Path(env["HAILO_IMMICH_MODELS_DIR"]), recognizer_seed=7)
    try:
        run_cli(["index", str(root), "--db", str(db), "--tasks", TASKS], env, check=1)
    finally:
        model_env(Path(env["HAILO_IMMICH_RECIPES_DIR"]).parent, Path(env["HAILO_IMMICH_MODELS_DIR"]), recognizer_seed=0)
    assert rows(db, "SELECT hash, model_id, run_id, created FROM processed WHERE task = 'ocr' ORDER BY hash") == ocr_before
    keys = rows(db, "SELECT model_id, count(*) FROM processed WHERE task = 'faces' GROUP BY model_id ORDER BY max(run_id)")
    live = rows(db, "SELECT count(DISTINCT hash) FROM files WHERE status = 'ok' AND deleted = 0")[0][0]
    assert len(keys) == 2 and keys[1][1] == live  # every present photo re-embedded under the new key
    assert keys[0][1] == live + 1  # the old key also still covers the deleted photo (kept, soft-deleted)
    assert keys[0][0].split("+")[1] != keys[1][0].split("+")[1]


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(env, photos, tmp_path):
    root = tmp_path / "lib"
    manifest = make_library(root, photos, count=80)
    reference = tmp_path / "reference.db"
    run_cli(["index", str(root), "--db", str(reference), "--tasks", TASKS], env, check=1)
    total = rows(reference, "SELECT count(*) FROM processed")[0][0]

    killed = tmp_path / "killed.db"
    full_env = {**os.environ, **env, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "hailo_immich_cli", "index", str(root), "--db", str(killed), "--tasks", TASKS,
                             "--no-progress"], cwd=REPO, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while processed_count(killed) < total // 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = processed_count(killed)
    assert 0 < done_at_kill < total, "the kill must land mid-run"
    assert rows(killed, "SELECT status FROM runs") == [("running",)]

    run_cli(["index", str(root), "--db", str(killed), "--tasks", TASKS], env, check=1)  # the corrupt files failed before: skipped, still failed
    assert dump(killed) == dump(reference)
    resumed = rows(killed, "SELECT new, unchanged FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert resumed[1] > 0 and resumed[0] + resumed[1] == len(manifest["images"]) + len(manifest["signs"])


# ---- search ------------------------------------------------------------------------------------
def _search(db: Path, env: dict[str, str], *args: str, check: int = 0) -> subprocess.CompletedProcess:
    return run_cli(["search", str(db), *args], env, check=check)


@pytest.mark.slow
def test_search_like_finds_the_same_photo_first(indexed, env):
    root, db, manifest, _ = indexed
    query = manifest["images"][3]
    out = json.loads(_search(db, env, "--like", query, "--json", "-k", "5").stdout)
    hits = out["results"]
    assert out["method"] == "usearch" and out["mode"] == "like" and 0 <= out["query_ms"] < 5000 and out["backend"] == "cpu"
    exact = json.loads(_search(db, env, "--like", query, "--json", "-k", "5", "--exact").stdout)
    assert exact["method"] == "exact" and exact["results"] == hits
    assert len(hits) == 5 and hits[0]["path"] == query and hits[0]["score"] > 0.999
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert all(h["model_id"].startswith("clip-vit-b32-openai-visual-cpu@") for h in hits)
    paths = _search(db, env, "--like", query, "--paths", "-k", "5").stdout.splitlines()
    assert paths == [h["path"] for h in hits]


@pytest.mark.slow
def test_search_text_scores_equal_a_direct_computation(indexed, env, cpu_models):
    """CLIP text search = cosine of the text vector with the stored vectors of the same model, top-k."""
    from hailo_immich_cli.clip import pipeline as clip
    from hailo_immich_cli.batch.store import blob_vector
    from hailo_immich_cli.models.recipes import RecipeBook
    from hailo_immich_cli.session import SessionManager
    from hailo_immich_cli.settings import Settings

    root, db, manifest, _ = indexed
    hits = json.loads(_search(db, env, "--text", "a cat on a sofa", "--json", "-k", "4").stdout)["results"]
    settings = Settings.load(env=env)
    with SessionManager(settings, RecipeBook.load(settings.recipes_dir)) as session:
        q = clip.encode_texts(session, ["a cat on a sofa"], model="clip-vit-b32-openai-textual-cpu").vectors[0]
    stored = rows(db, "SELECT f.path, c.embedding FROM clip c JOIN files f ON f.hash = c.hash WHERE f.deleted = 0")
    scores = sorted(((float(blob_vector(e) @ q), p) for p, e in stored), reverse=True)[:4]
    assert [h["path"] for h in hits] == [p for _, p in scores]
    assert np.allclose([h["score"] for h in hits], [s for s, _ in scores], atol=1e-5)


@pytest.mark.slow
def test_search_face_finds_the_same_face_first(indexed, env):
    root, db, manifest, _ = indexed
    query = next(p for p in manifest["images"] if "astronaut_" in p)
    hits = json.loads(_search(db, env, "--face", query, "--json", "-k", "3").stdout)["results"]
    assert hits[0]["path"] == query and hits[0]["score"] > 0.999 and len(hits[0]["box"]) == 4
    assert hits[0]["model_id"].startswith("test-arcface-cpu@")
    proc = _search(db, env, "--face", manifest["signs"]["OPEN SUNDAY"], check=2)
    assert "no face" in proc.stderr


@pytest.mark.slow
def test_search_ocr_full_text(indexed, env):
    root, db, manifest, _ = indexed
    hits = json.loads(_search(db, env, "--ocr", "harbour", "--json").stdout)["results"]
    assert [h["path"] for h in hits] == [manifest["signs"]["HARBOUR MARKET"]]
    assert "harbour" in hits[0]["text"].lower()
    table = _search(db, env, "--ocr", "platform").stdout
    assert "sign_2" in table and "1 result(s)" in table
    assert _search(db, env, "--ocr", "xylophone", "--paths").stdout == ""


def test_search_usage_errors(tmp_path, env):
    proc = _search(tmp_path / "none.db", env, "--ocr", "x", check=2)
    assert "no such index database" in proc.stderr
    from hailo_immich_cli.batch.store import Store

    Store(tmp_path / "empty.db").close()
    assert "exactly one" in _search(tmp_path / "empty.db", env, "--ocr", "x", "--text", "y", check=2).stderr
    assert "holds no CLIP vectors" in _search(tmp_path / "empty.db", env, "--text", "y", check=2).stderr


@pytest.mark.slow
def test_detect_embed_ocr_db_results_are_reused_by_index(env, photos, tmp_path):
    root = tmp_path / "lib"
    manifest = make_library(root, photos, count=10)
    db = tmp_path / "d.db"
    run_cli(["detect", str(root), "--db", str(db), "--json"], env, check=1)
    run_cli(["embed", str(root), "--db", str(db), "--jsonl"], env, check=1)
    run_cli(["ocr", str(root), "--db", str(db), "--jsonl"], env, check=1)
    stored = rows(db, "SELECT task, count(*) FROM processed GROUP BY task")
    n = len(manifest["images"]) + len(manifest["signs"])
    assert stored == [("clip", n), ("faces", n), ("ocr", n)]
    faces_before = rows(db, "SELECT id, hash, x1, y1, x2, y2, embedding FROM faces ORDER BY id")
    assert rows(db, "SELECT command, status FROM runs ORDER BY id") == [("detect", "completed"), ("embed", "completed"),
                                                                        ("ocr", "completed")]
    assert json.loads(_search(db, env, "--ocr", "sunday", "--json").stdout)["results"][0]["path"] == manifest["signs"]["OPEN SUNDAY"]
    run_cli(["index", str(root), "--db", str(db), "--tasks", TASKS], env, check=1)  # the corrupt files stay failed
    run = rows(db, "SELECT new, changed, unchanged FROM runs ORDER BY id DESC LIMIT 1")[0]
    assert run == (0, 0, n)  # nothing redone: detect and embed stored exactly what index would
    assert rows(db, "SELECT id, hash, x1, y1, x2, y2, embedding FROM faces ORDER BY id") == faces_before


def test_empty_scan_marks_nothing_deleted(env, photos, tmp_path):
    """An unmounted share looks like an empty folder: its photos must not all be marked deleted."""
    root = tmp_path / "share"
    root.mkdir()
    Image.fromarray(photos["coffee"]).resize((64, 48)).save(root / "a.jpg")
    db = tmp_path / "s.db"
    run_cli(["index", str(root), "--db", str(db), "--tasks", "clip"], env, check=0)
    (root / "a.jpg").rename(tmp_path / "away.jpg")
    proc = run_cli(["index", str(root), "--db", str(db), "--tasks", "clip"], env, check=0)
    assert "nothing is marked deleted" in proc.stderr
    assert rows(db, "SELECT deleted FROM files") == [(0,)]
