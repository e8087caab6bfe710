"""`index` without --tasks on a fresh CPU install: it indexes what the present models allow and
says loudly what it leaves out (CLIP has no offline weights); --tasks makes a missing model an error."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import pytest

REPO = Path(__file__).resolve().parent.parent


def run_index(args: list[str], models_dir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAILO_IMMICH", "MACHINE_LEARNING", "MODELS_DIR"))}
    env.update(PYTHONPATH=str(REPO), HAILO_IMMICH_BACKEND="cpu", HAILO_IMMICH_MODELS_DIR=str(models_dir), NO_COLOR="1", COLUMNS="250")
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", "index", *args, "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_index_defaults_to_the_tasks_whose_models_are_present(tmp_path, cpu_models, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    iio.imwrite(folder / "astronaut.jpg", photos["astronaut"])
    iio.imwrite(folder / "page.png", photos["page"])
    db = tmp_path / "index.db"
    proc = run_index([str(folder), "--db", str(db)], cpu_models.models_dir)
    assert proc.returncode == 0, proc.stderr
    assert "skipping clip" in proc.stderr and "fetch-models --recipe clip-vit-b32-openai-visual-cpu" in proc.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from faces").fetchone()[0] >= 1
        assert con.execute("select count(*) from ocr_lines").fetchone()[0] >= 1
        assert con.execute("select count(*) from clip").fetchone()[0] == 0

    explicit = run_index([str(folder), "--db", str(tmp_path / "other.db"), "--tasks", "clip"], cpu_models.models_dir)
    assert explicit.returncode == 4 and "clip-vit-b32-openai-visual-cpu" in explicit.stderr
