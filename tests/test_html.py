"""`--html` pages of search, people and duplicates, loaded in a real headless Chromium at a phone's width.

Checks what a person would see: every thumbnail decoded, face boxes drawn, the model and backend
named, nothing wider than the screen, no console errors. Screenshots go to test-artifacts/
(or $HAILO_IMMICH_TEST_ARTIFACTS).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hailo_immich_cli.testkit.photos import make_library
from tests.helpers.chromium import ARTIFACTS, Browser, chromium_binary
from tests.test_batch_index import run_cli

CHECK = """JSON.stringify({
  images: [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight]),
  boxes: document.querySelectorAll('.box').length,
  cards: document.querySelectorAll('.card').length,
  width: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
  text: document.body.innerText,
})"""


@pytest.fixture(scope="module")
def env(batch_env) -> dict[str, str]:
    return batch_env


@pytest.fixture(scope="module")
def indexed(env, photos, tmp_path_factory):
    chromium_binary()  # skip before the slow part when there is no browser
    root = tmp_path_factory.mktemp("htmllib")
    manifest = make_library(root, {k: photos[k] for k in ("astronaut", "camera", "coffee")}, count=12, max_side=400)
    copy = root / "copies" / Path(manifest["images"][0]).name
    copy.parent.mkdir()
    shutil.copyfile(manifest["images"][0], copy)
    db = root.parent / "html.db"
    run_cli(["index", str(root), "--db", str(db), "--tasks", "faces,clip", "--no-progress"], env)
    return db, manifest


def _load(page: Path, shot: str) -> dict:
    import json

    with Browser() as browser:
        browser.open(page.as_uri())
        facts = json.loads(browser.evaluate(CHECK))
        facts["errors"] = browser.errors()
        browser.screenshot(ARTIFACTS / shot)
    return facts


def _assert_looks_right(facts: dict, cards: int) -> None:
    assert facts["errors"] == []
    assert facts["cards"] == cards and len(facts["images"]) == cards
    assert all(done and w > 0 and h > 0 for done, w, h in facts["images"]), facts["images"]
    assert facts["width"] <= 390, facts["width"]  # fits a 390 px phone screen: nothing scrolls sideways
    assert "backend: cpu" in facts["text"]


@pytest.mark.slow
def test_search_page_in_chromium(indexed, env, tmp_path):
    db, manifest = indexed
    page = tmp_path / "face.html"
    query = next(p for p in manifest["images"] if "astronaut_" in p)
    run_cli(["search", str(db), "--face", query, "-k", "4", "--html", str(page)], env, check=0)
    facts = _load(page, "html-search-face.png")
    _assert_looks_right(facts, 4)
    assert facts["boxes"] >= 4 and "model: test-arcface-cpu@" in facts["text"] and "score" in facts["text"]
    thumbs = sorted((db.parent / (db.name + ".thumbs")).iterdir())
    stamps = [t.stat().st_mtime_ns for t in thumbs]
    assert thumbs
    text_page = tmp_path / "text.html"
    run_cli(["search", str(db), "--like", query, "-k", "4", "--html", str(text_page)], env, check=0)
    _assert_looks_right(_load(text_page, "html-search-like.png"), 4)
    assert [t.stat().st_mtime_ns for t in thumbs] == stamps  # made once, reused


@pytest.mark.slow
def test_people_and_duplicates_pages_in_chromium(indexed, env, tmp_path):
    db, manifest = indexed
    people = tmp_path / "people.html"
    out = run_cli(["people", str(db), "--min-faces", "2", "--html", str(people)], env, check=0)
    count = int(out.stdout.split(" people")[0].split()[-1])
    assert count >= 1
    facts = _load(people, "html-people.png")
    _assert_looks_right(facts, count)
    assert facts["boxes"] == count and "faces in" in facts["text"]
    dups = tmp_path / "dups.html"
    run_cli(["duplicates", str(db), "--html", str(dups)], env, check=0)
    facts = _load(dups, "html-duplicates.png")
    assert facts["cards"] >= 2 and "keep" in facts["text"] and "model: clip-vit-b32-openai-visual-cpu@" in facts["text"]
    _assert_looks_right(facts, facts["cards"])
