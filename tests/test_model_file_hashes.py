"""Model files are named by their sha256 (provenance): read once per file version, across processes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from hailo_immich_cli.models import files as files_module
from hailo_immich_cli.models.files import HASH_CACHE_NAME, ModelFiles
from hailo_immich_cli.settings import Settings


def _files(models_dir: Path) -> ModelFiles:
    return ModelFiles(Settings.load(env={}, backend="cpu", models_dir=models_dir))


@pytest.fixture()
def reads(monkeypatch) -> list[Path]:
    """Every full read of a file for its hash."""
    seen: list[Path] = []
    real = files_module.sha256_of

    def counting(path: Path, chunk: int = 1 << 20) -> str:
        seen.append(path)
        return real(path, chunk)

    monkeypatch.setattr(files_module, "sha256_of", counting)
    return seen


def test_a_second_process_names_the_file_without_reading_it(tmp_path: Path, reads):
    model = tmp_path / "recipe" / "model.onnx"
    model.parent.mkdir()
    model.write_bytes(os.urandom(300_000))
    want = hashlib.sha256(model.read_bytes()).hexdigest()
    assert _files(tmp_path).sha256(model) == want
    assert len(reads) == 1 and (tmp_path / HASH_CACHE_NAME).is_file()
    assert _files(tmp_path).sha256(model) == want  # a new ModelFiles: as a new command would
    assert len(reads) == 1


def test_a_changed_or_replaced_file_is_read_again(tmp_path: Path, reads):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"a" * 1000)
    first = _files(tmp_path).sha256(model)
    st = model.stat()
    with model.open("r+b") as fh:  # same size, same mtime put back: only the ctime tells
        fh.write(b"b")
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    second = _files(tmp_path).sha256(model)
    assert second == hashlib.sha256(b"b" + b"a" * 999).hexdigest() != first
    replacement = tmp_path / "new.onnx"
    replacement.write_bytes(b"c" * 1000)
    os.replace(replacement, model)  # how fetch-models places a file
    assert _files(tmp_path).sha256(model) == hashlib.sha256(b"c" * 1000).hexdigest()
    assert len(reads) == 3


def test_verifying_reads_the_file_and_a_damaged_cache_is_ignored(tmp_path: Path, reads):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"x" * 5000)
    files = _files(tmp_path)
    files.sha256(model)
    files.sha256(model, reuse=False)  # fetch-models and doctor check files against recipes: they read the bytes
    assert len(reads) == 2
    (tmp_path / HASH_CACHE_NAME).write_text("{ not json")
    assert _files(tmp_path).sha256(model) == hashlib.sha256(b"x" * 5000).hexdigest()
    assert json.loads((tmp_path / HASH_CACHE_NAME).read_text())  # rewritten whole


def test_a_models_dir_that_cannot_hold_the_cache_still_names_files(tmp_path: Path):
    models_dir = tmp_path / "missing"  # cannot hold the cache
    model = tmp_path / "model.onnx"
    model.write_bytes(b"y" * 100)
    assert _files(models_dir).sha256(model) == hashlib.sha256(b"y" * 100).hexdigest()
    assert not models_dir.exists()
