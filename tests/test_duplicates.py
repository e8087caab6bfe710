"""`hailo-immich duplicates`: real photos, real copies, re-encodes and resizes, a real index run.

CLIP vectors come from the stand-in visual encoder the batch tests use (no CLIP weights offline):
a real pipeline (decode, CLIP preprocessing, ONNX Runtime) whose vectors follow the pixels, so a
re-encoded or resized copy lands next to its original and a different photo does not.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.testkit.photos import save_image
from tests.test_batch_index import run_cli


@pytest.fixture(scope="module")
def env(batch_env) -> dict[str, str]:
    return batch_env


@pytest.fixture(scope="module")
def library(env, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("dups")
    originals = {}
    for name in ("astronaut", "camera", "chelsea", "coffee", "page"):
        img = Image.fromarray(photos[name])
        img.thumbnail((480, 480))
        originals[name] = save_image(img, root / "originals" / f"{name}.jpg", "JPEG")
    copy = root / "backup" / "astronaut-copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(originals["astronaut"], copy)  # byte for byte: one content, two files
    reencoded = root / "phone" / "camera-reencoded.jpg"
    reencoded.parent.mkdir()
    Image.open(originals["camera"]).save(reencoded, "JPEG", quality=60)
    small = Image.open(originals["chelsea"])
    resized = save_image(small.resize((small.width // 2, small.height // 2), Image.Resampling.LANCZOS),
                         root / "web" / "chelsea-small.png", "PNG")
    db = root.parent / (root.name + ".db")
    run_cli(["index", str(root), "--db", str(db), "--tasks", "clip", "--no-progress"], env, check=0)
    return db, {k: str(v) for k, v in originals.items()}, str(copy), str(reencoded), str(resized)


def _groups(out: dict) -> list[set[str]]:
    return [{m["path"] for m in g["members"]} for g in out["groups"]]


@pytest.mark.slow
def test_copies_reencodes_and_resizes_are_grouped_distinct_photos_are_not(library, env):
    db, originals, copy, reencoded, resized = library
    before = sqlite3.connect(db).execute("SELECT count(*) FROM files WHERE deleted = 0").fetchone()[0]
    out = json.loads(run_cli(["duplicates", str(db), "--json", "--no-progress"], env, check=0).stdout)
    assert out["method"] == "usearch" and out["max_distance"] == 0.01
    assert out["model_id"].startswith("clip-vit-b32-openai-visual-cpu@") and out["backend"] == "cpu"
    groups = _groups(out)
    assert sorted(groups, key=sorted) == sorted([
        {originals["astronaut"], copy}, {originals["camera"], reencoded}, {originals["chelsea"], resized},
    ], key=sorted)
    by_keep = {g["keep"]: g for g in out["groups"]}
    assert originals["camera"] in by_keep  # same pixels: the larger (less recompressed) file
    assert originals["chelsea"] in by_keep  # the most pixels
    assert min(originals["astronaut"], copy) in by_keep  # identical: a stable choice
    for g in out["groups"]:
        assert all(0 <= m["distance"] <= 0.01 for m in g["members"]) and sum(m["keep"] for m in g["members"]) == 1
    # the exact all-pairs scan agrees, and nothing was deleted or changed on disk
    exact = json.loads(run_cli(["duplicates", str(db), "--json", "--exact"], env, check=0).stdout)
    assert exact["method"] == "exact" and sorted(_groups(exact), key=sorted) == sorted(groups, key=sorted)
    assert all(Path(p).exists() for g in groups for p in g)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM files WHERE deleted = 0").fetchone()[0] == before


@pytest.mark.slow
def test_distance_is_settable_and_table_names_the_model(library, env):
    db, originals, *_ = library
    none = json.loads(run_cli(["duplicates", str(db), "--json", "--max-distance", "0"], env, check=0).stdout)
    assert _groups(none) == [{originals["astronaut"], library[2]}]  # only the byte-identical copy is at distance 0
    loose = json.loads(run_cli(["duplicates", str(db), "--json", "--max-distance", "1"], env, check=0).stdout)
    assert len(loose["groups"]) == 1 and len(loose["groups"][0]["members"]) == 8  # everything within distance 1
    table = run_cli(["duplicates", str(db)], env, check=0).stdout
    assert "3 group(s)" in table and "clip-vit-b32-openai-visual-cpu@" in table and "keep" in table
    bad = run_cli(["duplicates", str(db), "--max-distance", "-1"], env, check=2)
    assert "max-distance" in bad.stderr


def test_synthetic_near_copies_found_through_the_index_at_scale(tmp_path):
    """Many photos, few duplicates: the indexed search finds exactly the pairs the all-pairs scan finds."""
    from hailo_immich_cli.batch.duplicates import find_duplicates
    from hailo_immich_cli.batch.search import Index
    from hailo_immich_cli.batch.synthetic import clustered, write_clip_library

    vectors, _ = clustered(6000, seed=12)
    rng = np.random.default_rng(3)
    twins = rng.choice(6000, 40, replace=False)
    near = vectors[twins] + 0.002 * rng.standard_normal((40, vectors.shape[1])).astype(np.float32)
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    db = tmp_path / "syn.db"
    model = "clip-vit-b32-openai-visual-cpu@synthetic"
    write_clip_library(db, np.concatenate([vectors, near]), model_id=model)
    index = Index(db)
    fast, info = find_duplicates(db, index.conn, model, 0.01)
    slow, _ = find_duplicates(db, index.conn, model, 0.01, exact=True)
    index.close()
    assert info["method"] == "usearch"
    assert sorted(sorted(m.path for m in g.members) for g in fast) == sorted(sorted(m.path for m in g.members) for g in slow)
    assert len(fast) >= 40
