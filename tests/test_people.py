"""`hailo-immich people`: clustering quality on known identities, incremental upkeep, names, merges,
recognisers kept apart, and `search --person`, on a real database through the real CLI.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.batch.synthetic import write_faces
from hailo_immich_cli.batch.vectors import VectorIndex
from hailo_immich_cli.testkit.photos import make_library
from tests.test_batch_index import run_cli

REC_A, REC_B = "test-arcface-cpu@aaaa", "other-arcface-cpu@bbbb"


def adjusted_rand_index(truth: np.ndarray, found: np.ndarray) -> float:
    """Hubert & Arabie's ARI from the contingency table (scikit-learn is not a dependency)."""
    _, t = np.unique(truth, return_inverse=True)
    _, f = np.unique(found, return_inverse=True)
    table = np.zeros((t.max() + 1, f.max() + 1), np.int64)
    np.add.at(table, (t, f), 1)

    def pairs(x: np.ndarray) -> float:
        return float((x * (x - 1) // 2).sum())

    index, rows, cols, total = pairs(table), pairs(table.sum(1)), pairs(table.sum(0)), len(truth) * (len(truth) - 1) / 2
    expected = rows * cols / total
    return (index - expected) / (0.5 * (rows + cols) - expected)


def identities(count: int, per: int, seed: int, spread: float = 0.022) -> tuple[np.ndarray, np.ndarray]:
    """`per` faces of each of `count` people: ArcFace-like unit vectors, same person within ~0.25 cosine distance."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((count, 512))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = np.repeat(np.arange(count), per)
    rng.shuffle(labels)
    emb = centres[labels] + spread * rng.standard_normal((len(labels), 512))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), labels


def people_cli(db: Path, *args: str, check: int = 0) -> dict:
    proc = run_cli(["people", str(db), "--json", "--no-progress", *args], {}, check=check)
    return json.loads(proc.stdout) if check == 0 else proc


def assignments(db: Path, recognizer: str) -> dict[str, int]:
    """Photo path -> person id (one face per synthetic photo), as stored."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT f.path, fp.person_id FROM face_people fp JOIN faces v ON v.vkey = fp.face_key AND v.recognizer = fp.recognizer"
            " JOIN files f ON f.hash = v.hash WHERE fp.recognizer = ?", (recognizer,)).fetchall()
    finally:
        conn.close()
    return dict(rows)


def labels_of(db: Path, recognizer: str, salt: str, n: int) -> np.ndarray:
    got = assignments(db, recognizer)
    # an unassigned face is a cluster of its own
    return np.array([got.get(f"/synthetic/{salt}/{i:07d}.jpg", -1 - i) for i in range(n)])


def test_clusters_known_identities_incrementally_and_keeps_recognisers_apart(tmp_path):
    db = tmp_path / "people.db"
    emb, truth = identities(30, 12, seed=1)
    first = 240
    write_faces(db, emb[:first], recognizer=REC_A, salt="a")
    out = people_cli(db)
    assert out["recognizer"] == REC_A and out["backend"] == "cpu" and out["max_distance"] == 0.5 and out["min_faces"] == 3
    ari = adjusted_rand_index(truth[:first], labels_of(db, REC_A, "a", first))
    assert ari >= 0.95, ari
    before = assignments(db, REC_A)
    assert len({p["id"] for p in out["people"]}) == len(set(before.values()))
    assert sum(p["faces"] for p in out["people"]) == len(before)
    assert all(p["face"]["path"].startswith("/synthetic/a/") for p in out["people"])

    # new faces join the existing people; nothing assigned before moves
    write_faces(db, emb[first:], recognizer=REC_A, salt="a2")
    again = people_cli(db)
    assert again["clustered"]["faces"] == len(emb) - first
    after = assignments(db, REC_A)
    assert all(after[p] == pid for p, pid in before.items())
    later = [after.get(f"/synthetic/a2/{i:07d}.jpg", -100_000 - i) for i in range(len(emb) - first)]
    found = np.concatenate([labels_of(db, REC_A, "a", first), np.array(later)])
    assert adjusted_rand_index(truth, found) >= 0.95
    assert again["clustered"]["new_people"] <= 1  # every identity had already been seen

    # a second recogniser with the very same vectors: its own people, never A's
    write_faces(db, emb[:first], recognizer=REC_B, salt="b")
    b = people_cli(db, "--model", REC_B)
    assert b["recognizer"] == REC_B and b["people"]
    ids_a = set(assignments(db, REC_A).values())
    assert not ids_a & set(assignments(db, REC_B).values())
    assert set(assignments(db, REC_A).values()) == ids_a  # A untouched by B's run
    proc = people_cli(db, "--merge", str(next(iter(ids_a))), str(b["people"][0]["id"]), check=2)
    assert "different recognition models" in proc.stderr


def test_settings_change_what_counts_as_a_person(tmp_path):
    db = tmp_path / "strict.db"
    emb, truth = identities(5, 4, seed=2)
    write_faces(db, emb, recognizer=REC_A, salt="s")
    out = people_cli(db, "--min-faces", "5")  # 4 faces each: no face is a core face
    assert out["people"] == [] and out["clustered"]["unassigned"] == len(emb)
    tight = tmp_path / "tight.db"
    write_faces(tight, emb, recognizer=REC_A, salt="t")
    out = people_cli(tight, "--max-distance", "0.05")  # same-person faces are ~0.25 apart
    assert out["people"] == []
    bad = people_cli(tight, "--max-distance", "0", check=2)
    assert "max-distance" in bad.stderr


def test_name_and_merge(tmp_path):
    db = tmp_path / "names.db"
    emb, truth = identities(3, 6, seed=3)
    write_faces(db, emb, recognizer=REC_A, salt="n")
    people = people_cli(db)["people"]
    assert len(people) == 3
    a, b, c = (p["id"] for p in people)
    named = people_cli(db, "--name", str(a), "Alice")
    assert {p["id"]: p["name"] for p in named["people"]}[a] == "Alice"
    people_cli(db, "--name", str(b), "Bob")
    merged = people_cli(db, "--merge", "Alice", "Bob")
    by_id = {p["id"]: p for p in merged["people"]}
    assert b not in by_id and by_id[a]["faces"] == 12 and by_id[a]["name"] == "Alice"
    # the merged id still leads to the person it joined; unknown names are clear errors
    assert people_cli(db, "--name", str(b), "Alice B.")["people"][0]["name"] == "Alice B."
    assert "no person named" in people_cli(db, "--merge", "Nobody", str(c), check=2).stderr


@pytest.fixture(scope="module")
def env(batch_env) -> dict[str, str]:
    return batch_env


@pytest.mark.slow
def test_names_and_merges_survive_reindex_and_search_by_person(env, photos, tmp_path):
    root = tmp_path / "lib"
    make_library(root, {k: photos[k] for k in ("astronaut", "camera")}, count=16)
    db = tmp_path / "lib.db"
    run_cli(["index", str(root), "--db", str(db), "--tasks", "faces,clip,ocr", "--no-progress"], env)
    out = json.loads(run_cli(["people", str(db), "--json", "--min-faces", "2"], env, check=0).stdout)
    assert out["people"], out
    first = out["people"][0]
    run_cli(["people", str(db), "--name", str(first["id"]), "Alice"], env, check=0)
    if len(out["people"]) > 1:
        run_cli(["people", str(db), "--merge", "Alice", str(out["people"][1]["id"])], env, check=0)
    kept = json.loads(run_cli(["people", str(db), "--json"], env, check=0).stdout)["people"]

    # change the library: a new photo, an edited one, a deleted one; re-index
    shutil.copyfile(first["face"]["path"], root / "new-copy.jpg")
    victim = next(p for p in sorted(root.rglob("*.png")))
    victim.unlink()
    run_cli(["index", str(root), "--db", str(db), "--tasks", "faces,clip,ocr", "--no-progress"], env)
    conn = sqlite3.connect(db)  # `index` left every vector index in step with what it wrote
    models = [("clip", m) for (m,) in conn.execute("SELECT DISTINCT model_id FROM clip")]
    models += [("faces", r) for (r,) in conn.execute("SELECT DISTINCT recognizer FROM faces WHERE recognizer IS NOT NULL")]
    assert len(models) == 2 and all(VectorIndex(db, kind, m).is_fresh(conn) for kind, m in models)
    conn.close()
    now = json.loads(run_cli(["people", str(db), "--json"], env, check=0).stdout)["people"]
    alice = next(p for p in now if p["name"] == "Alice")
    assert alice["id"] == kept[0]["id"] and alice["faces"] >= kept[0]["faces"] - 2
    assert {p["id"] for p in now} >= {p["id"] for p in kept if p["faces"] > 2}

    hits = json.loads(run_cli(["search", str(db), "--person", "Alice", "--json", "-k", "100"], env, check=0).stdout)
    paths = [h["path"] for h in hits["results"]]
    assert str(root / "new-copy.jpg") in paths and str(victim) not in paths
    assert all(h["person"] == alice["id"] and h["boxes"] for h in hits["results"])
    combined = json.loads(run_cli(["search", str(db), "--person", "Alice", "--text", "a portrait", "--json", "-k", "3"],
                                  env, check=0).stdout)
    assert combined["results"] and {h["path"] for h in combined["results"]} <= set(paths)
    none = json.loads(run_cli(["search", str(db), "--person", "Alice", "--ocr", "harbour", "--json"], env, check=0).stdout)
    assert none["results"] == []  # the sign photos have no face of Alice
