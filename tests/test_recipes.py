"""Recipes: every shipped one loads; a broken one names its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hailo_immich_cli.errors import RecipeError, UnknownModelError
from hailo_immich_cli.recipes import TASKS, RecipeBook, clean_immich_name, load_recipe_file, shipped_recipes_dir

MINIMAL = """
id = "tiny"
task = "ocr-detection"
backend = "cpu"
[[files]]
role = "model"
name = "m.onnx"
[[files.sources]]
url = "https://example.invalid/m.onnx"
"""


def write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_every_shipped_recipe_loads_with_unique_ids():
    paths = sorted(shipped_recipes_dir().glob("*.toml"))
    assert paths, "no recipes shipped"
    recipes = [load_recipe_file(p) for p in paths]
    ids = [r.id for r in recipes]
    assert len(ids) == len(set(ids))
    for recipe in recipes:
        assert recipe.task in TASKS
        assert recipe.file("model").sources or recipe.file("model").immich_path, recipe.id
        assert recipe.license, f"{recipe.id} states no licence"


def test_each_task_has_a_default_cpu_or_hailo_recipe_where_shipped():
    book = RecipeBook.load()
    for backend in ("cpu", "hailo"):
        for task in {r.task for r in book if r.backend == backend}:
            assert book.default(task, backend).task == task


def test_minimal_recipe_parses(tmp_path):
    recipe = load_recipe_file(write(tmp_path, MINIMAL))
    assert recipe.id == "tiny" and recipe.batch_size == 1 and recipe.file().name == "m.onnx"
    assert recipe.file().sources[0].kind == "url"


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda t: t.replace('id = "tiny"\n', ""), "id"),
        (lambda t: t.replace('"ocr-detection"', '"ocr"'), "task"),
        (lambda t: t.replace('backend = "cpu"', 'backend = "gpu"'), "backend"),
        (lambda t: t.replace('role = "model"', 'role = "weights"'), "files"),
        (lambda t: t + '[preprocess]\nnormalize = "maybe"\n', "preprocess.normalize"),
        (lambda t: t.replace('backend = "cpu"', 'backend = "cpu"\nbatch_size = 0'), "batch_size"),
        (lambda t: t.replace('url = "https://example.invalid/m.onnx"', 'url = "ftp://x/m.onnx"'), "files[0].sources[0].url"),
        (lambda t: t.replace('url = "https://example.invalid/m.onnx"', 'pypi = "pkg==1"'), "files[0].sources[0].member"),
        (lambda t: t.replace('name = "m.onnx"', 'name = "m.onnx"\nsha256 = "abc"'), "files[0].sha256"),
        (lambda t: t.replace('task = "ocr-detection"', 'task = "clip-visual"'), "embedding_dim"),
        (lambda t: t + '[[inputs]]\nshape = [1, "x"]\n', "inputs[0].shape"),
    ],
)
def test_broken_recipe_names_file_and_key(tmp_path, change, key):
    path = write(tmp_path, change(MINIMAL))
    with pytest.raises(RecipeError) as info:
        load_recipe_file(path)
    assert info.value.key == key
    assert str(path) in str(info.value) and f"'{key}'" in str(info.value)


def test_toml_syntax_error_names_file(tmp_path):
    path = write(tmp_path, "id = \n")
    with pytest.raises(RecipeError, match=str(path)):
        load_recipe_file(path)


def test_user_recipes_dir_adds_recipes(tmp_path):
    write(tmp_path, MINIMAL)
    book = RecipeBook.load(tmp_path)
    assert book.get("tiny").path.parent == tmp_path
    with pytest.raises(UnknownModelError, match="no recipe 'nope'"):
        book.get("nope")


def test_duplicate_ids_in_one_folder_are_refused(tmp_path):
    write(tmp_path, MINIMAL, "a.toml")
    write(tmp_path, MINIMAL, "b.toml")
    with pytest.raises(RecipeError, match="also used by"):
        RecipeBook.load(tmp_path)


def test_immich_name_cleaning_matches_immich():
    assert clean_immich_name("immich-app/ViT-B-32::openai") == "ViT-B-32__openai"
    assert clean_immich_name("PP-OCRv5_mobile") == "PP-OCRv5_mobile"
    assert clean_immich_name("a.b/c:d") == "c_d"


def test_ocr_recipes_answer_to_immich_names():
    book = RecipeBook.load()
    det = book.by_immich_name("ocr-detection", "EN__PP-OCRv5_mobile", "cpu")
    assert det and det[0].id == "ppocrv5-mobile-det-cpu"
    assert not book.by_immich_name("ocr-detection", "not-a-model", "cpu")
