"""What a clumsy user or a damaged file meets first: the real CLI, real SQLite files, real images.

A damaged index gives one line (path, what to do) and is never written to; arguments are checked
before any model loads or any file or folder is created; a re-run says which failures remain;
help, warnings and listings read cleanly.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hailo_immich_cli.testkit.photos import make_library
from tests.helpers.batch import model_env, rows

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def run_cli(args: list[str], env: dict[str, str | None], timeout: float = 600) -> subprocess.CompletedProcess:
    """The CLI in a subprocess; an `env` value of None removes that variable."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **env, "PYTHONPATH": str(REPO)}
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", *args], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), proc.stderr
    return lines[0]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def env(cpu_models, tmp_path_factory) -> dict[str, str]:
    return model_env(tmp_path_factory.mktemp("models"), Path(cpu_models.models_dir))


# ---- a damaged database ------------------------------------------------------------------------
def damage(db: Path, every: int = 2) -> None:
    """Overwrite whole pages (not page 1, the header and schema) with random bytes, as a failing disk would."""
    page = int.from_bytes(db.read_bytes()[16:18], "big") or 65536
    pages = db.stat().st_size // page
    assert pages > 8, "the test index must span several pages"
    rng = np.random.default_rng(0)
    with db.open("r+b") as fh:
        for n in range(2, pages, every):
            fh.seek(n * page)
            fh.write(rng.integers(0, 256, page, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def damaged_db(env, photos, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("library")
    make_library(root, photos, count=12)
    db = root.parent / "damaged.db"
    run_cli(["index", str(root), "--db", str(db), "--tasks", "faces,clip,ocr"], env)
    assert rows(db, "SELECT count(*) FROM processed")[0][0] > 0
    for leftover in (Path(f"{db}-wal"), Path(f"{db}-shm")):
        assert not leftover.exists() or leftover.stat().st_size == 0 or leftover.name.endswith("-shm")
    damage(db)
    return root, db


@pytest.mark.slow
@pytest.mark.parametrize("mode", [["--ocr", "sunday"], ["--text", "a cat"], ["--like", "IMAGE"], ["--face", "IMAGE"]])
def test_search_on_a_damaged_database_is_one_clear_line(env, damaged_db, photos, tmp_path, mode):
    _, db = damaged_db
    if mode[1] == "IMAGE":
        query = tmp_path / "query.jpg"
        Image.fromarray(photos["astronaut"]).save(query)
        mode = [mode[0], str(query)]
    before = sha(db)
    proc = run_cli(["search", str(db), *mode], env)
    assert proc.returncode == 8, proc.stderr
    line = one_error_line(proc)
    assert str(db) in line and "damaged" in line and "PRAGMA integrity_check" in line and "--db NEW.db" in line
    assert sha(db) == before


@pytest.mark.slow
def test_index_on_a_damaged_database_stops_before_writing(env, damaged_db):
    root, db = damaged_db
    before = sha(db)
    proc = run_cli(["index", str(root), "--db", str(db), "--tasks", "ocr"], env)
    assert proc.returncode == 8, proc.stderr
    line = one_error_line(proc)
    assert str(db) in line and "nothing was written" in line and "PRAGMA integrity_check" in line
    assert sha(db) == before


def test_ocr_db_sink_on_a_damaged_database_is_one_clear_line(env, damaged_db, tmp_path):
    _, db = damaged_db
    image = tmp_path / "white.png"
    Image.new("RGB", (64, 64), "white").save(image)
    before = sha(db)
    proc = run_cli(["ocr", str(image), "--db", str(db)], env)
    assert proc.returncode == 8 and "damaged" in one_error_line(proc)
    assert sha(db) == before


# ---- arguments are checked first -----------------------------------------------------------------
def test_index_bad_paths_load_nothing_and_create_nothing(env, tmp_path):
    db = tmp_path / "x.db"
    proc = run_cli(["index", str(tmp_path / "nonexistent"), "--db", str(db)], env)
    assert proc.returncode == 2
    assert one_error_line(proc) == f"error: {tmp_path / 'nonexistent'}: no such file or folder"
    assert not db.exists() and list(tmp_path.iterdir()) == []

    folder = tmp_path / "photos"
    folder.mkdir()
    missing_dir = tmp_path / "nonexistent_dir"
    proc = run_cli(["index", str(folder), "--db", str(missing_dir / "x.db")], env)
    assert proc.returncode == 2
    assert f"folder {missing_dir} does not exist" in one_error_line(proc)
    assert not missing_dir.exists()


def test_missing_model_creates_no_database(env, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (64, 64), "white").save(folder / "a.jpg")
    db = tmp_path / "x.db"
    proc = run_cli(["index", str(folder), "--db", str(db), "--tasks", "clip", "--clip-model", "ViT-L-14__openai"], env)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert not db.exists()


@pytest.mark.parametrize("command", ["ocr", "detect", "embed"])
def test_a_missing_image_says_it_does_not_exist(env, tmp_path, command):
    proc = run_cli([command, str(tmp_path / "nonexistent.jpg")], env)
    assert proc.returncode == 2
    assert one_error_line(proc) == f"error: {tmp_path / 'nonexistent.jpg'}: no such file or folder"


# ---- a re-run says which failures remain ---------------------------------------------------------
@pytest.mark.slow
def test_rerun_with_earlier_failures_exits_nonzero_and_retry_failed_retries(env, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.new("RGB", (96, 64), "white").save(folder / "good.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    db = tmp_path / "i.db"
    first = run_cli(["index", str(folder), "--db", str(db), "--tasks", "ocr"], env)
    assert first.returncode == 1 and "broken.jpg" in first.stderr

    again = run_cli(["index", str(folder), "--db", str(db), "--tasks", "ocr"], env)
    assert again.returncode == 1, again.stderr
    assert re.search(r"1 file\(s\) still failed from an earlier run.*--retry-failed", again.stderr)
    assert "broken.jpg" in again.stderr
    assert rows(db, "SELECT failed, skipped_failed FROM runs ORDER BY id DESC LIMIT 1") == [(0, 1)]

    retried = run_cli(["index", str(folder), "--db", str(db), "--tasks", "ocr", "--retry-failed"], env)
    assert retried.returncode == 1 and "1 file(s) failed" in retried.stderr
    assert rows(db, "SELECT failed, skipped_failed FROM runs ORDER BY id DESC LIMIT 1") == [(1, 0)]

    (folder / "broken.jpg").unlink()
    clean = run_cli(["index", str(folder), "--db", str(db), "--tasks", "ocr"], env)
    assert clean.returncode == 0, clean.stderr
    assert "still failed" not in clean.stderr


# ---- help, warnings, listings --------------------------------------------------------------------
def _commands() -> list[str]:
    result = runner.invoke(__import__("hailo_immich_cli.cli", fromlist=["app"]).app, ["--help"])
    return re.findall(r"^│ ([a-z][a-z-]+) ", result.output, flags=re.M)


@pytest.mark.parametrize("command", [[]] + [[c] for c in ("bench", "detect", "embed", "extract-weights", "fetch-models",
                                                          "index", "inspect-hef", "ocr", "search", "serve")])
def test_help_reads_like_a_click_cli(command):
    from hailo_immich_cli.cli import app

    result = runner.invoke(app, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0
    text = result.output
    for noise in ("<bool>", "<str>", "<int", "<path>", "<list[", "[x>=", "{"):
        assert noise not in text, f"{noise!r} in help of {command}:\n{text}"
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert re.fullmatch(r"\s*Usage: hailo-immich( [a-z-]+)? \[OPTIONS\]( COMMAND \[ARGS\]\.\.\.| \[?[A-Z_]+(\.\.\.)?\]?)*\s*", usage), usage


def test_help_details():
    from hailo_immich_cli.cli import app

    assert sorted(_commands()) == sorted(["bench", "detect", "doctor", "duplicates", "embed", "extract-weights", "fetch-models",
                                          "index", "inspect-hef", "ocr", "people", "search", "serve"])
    index = runner.invoke(app, ["index", "--help"], env={"COLUMNS": "200"}).output
    assert "Usage: hailo-immich index [OPTIONS] PATHS..." in index
    assert index.count("HAILO_IMMICH_DB") == 1
    assert re.search(r"--retry-failed\s+Try again", index)  # a flag shows no value
    weights = runner.invoke(app, ["extract-weights", "--help"], env={"COLUMNS": "200"}).output
    assert "recipe whose weights to extract" in weights
    search = runner.invoke(app, ["search", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--top\s+-k\s+INTEGER\s+How many results \(at least 1\)", search)


def test_the_cpu_fallback_notice_is_one_line_on_one_off_commands(cpu_models, tmp_path):
    image = tmp_path / "white.png"
    Image.new("RGB", (64, 64), "white").save(image)
    env = {"HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir), "HAILO_IMMICH_BACKEND": "auto"}
    proc = run_cli(["ocr", str(image)], env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    hailo = [ln for ln in lines if "hailo" in ln.lower()]
    assert len(hailo) == 1 and hailo[0].startswith("warning: no Hailo device ("), proc.stderr
    assert "running on the CPU" in hailo[0]
    assert len(lines) <= 4, proc.stderr  # the notice and one line per loaded model


def test_fetch_models_list_keeps_recipe_ids_whole_in_a_pipe(cpu_models):
    from hailo_immich_cli.models.recipes import RecipeBook

    proc = run_cli(["fetch-models", "--list"], {"HAILO_IMMICH_MODELS_DIR": str(cpu_models.models_dir), "COLUMNS": None})
    ids = set(re.findall(r"^│ [ *]([A-Za-z0-9_.-]+)\s", proc.stdout, flags=re.M))
    assert {r.id for r in RecipeBook.load()} <= ids, proc.stdout
