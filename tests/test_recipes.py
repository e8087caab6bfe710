"""Recipes: every shipped one loads; a broken one names its file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hailo_immich_cli.errors import RecipeError, UnknownModelError
from hailo_immich_cli.models.recipes import RecipeBook, clean_immich_name, load_recipe_file, shipped_recipes_dir
from hailo_immich_cli.tasks import recipe_tasks

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
        assert recipe.task in recipe_tasks()
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


# ---- task-specific keys: the schema in recipe_schema.py ---------------------------------------


def shipped_variant(tmp_path: Path, recipe: str, old: str, new: str) -> Path:
    """A shipped recipe with one edit (first occurrence), written under its own name in tmp_path."""
    text = (shipped_recipes_dir() / recipe).read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {recipe}"
    return write(tmp_path, text.replace(old, new, 1), recipe)


def refused(path: Path) -> RecipeError:
    with pytest.raises(RecipeError) as info:
        load_recipe_file(path)
    assert str(path) in str(info.value)
    return info.value


@pytest.mark.parametrize(
    "recipe, old, new, key, suggestion",
    [
        # one typo per task family, in the section its pipeline reads
        ("buffalo_l-detection-cpu.toml", "nms_threshold =", "nms_treshold =", "postprocess.nms_treshold", "nms_threshold"),
        ("scrfd-10g-hailo8.toml", "score_threshold =", "score_thresold =", "postprocess.score_thresold", "score_threshold"),
        ("buffalo_l-recognition-cpu.toml", "crop_size =", "crop_sise =", "preprocess.crop_sise", "crop_size"),
        ("clip-vit-b32-openai-visual-cpu.toml", "interpolation =", "interpolaton =", "preprocess.interpolaton", "interpolation"),
        ("clip-vit-b32-textual-hailo.toml", "\nfinal_layer_norm_on_host = false", "\nfinal_layernorm_on_host = false",
         "text.final_layernorm_on_host", "final_layer_norm_on_host"),
        ("clip-vit-b32-textual-hailo.toml", "context_length = 77", "context_lenght = 77", "tokenizer.context_lenght", "context_length"),
        ("clip-vit-b32-textual-hailo.toml", "linear_keys =", "linear_key =", "weights.tensors[2].linear_key", "linear_keys"),
        ("clip-vit-b32-textual-hailo.toml", "[clip]", "[clips]", "clips", "clip"),
        ("ppocrv5-mobile-det-cpu.toml", "unclip_ratio =", "unclip_ration =", "postprocess.unclip_ration", "unclip_ratio"),
        ("ppocrv5-mobile-det-cpu.toml", "[postprocess]", "[postproces]", "postproces", "postprocess"),
        ("ppocrv5-mobile-rec-cpu.toml", "dictionary_offset =", "dictionary_ofset =", "postprocess.dictionary_ofset", "dictionary_offset"),
        ("paddle-ocr-v5-mobile-rec-hailo8.toml", "width_mode =", "widht_mode =", "preprocess.widht_mode", "width_mode"),
        ("centerface-cpu.toml", "dynamic_dims =", "dynamic_dim =", "cpu.dynamic_dim", "dynamic_dims"),
        ("buffalo_l-detection-cpu.toml", "prefer_when_present =", "prefer_when_presnt =", "prefer_when_presnt", "prefer_when_present"),
        ("buffalo_l-detection-cpu.toml", "stride = 8", "strid = 8", "outputs[0].strid", "stride"),
        ("buffalo_l-detection-cpu.toml", "immich_path =", "imich_path =", "files[0].imich_path", "immich_path"),
    ],
)
def test_typo_in_a_task_key_is_refused_with_the_close_match(tmp_path, recipe, old, new, key, suggestion):
    error = refused(shipped_variant(tmp_path, recipe, old, new))
    assert error.key == key
    assert f"'{key}'" in str(error) and f"did you mean '{suggestion}'" in str(error)


def test_bench_table_typo_is_refused(tmp_path):
    text = (shipped_recipes_dir() / "ppocrv5-mobile-det-cpu.toml").read_text(encoding="utf-8")
    ok = write(tmp_path, text + '\n[bench]\ninput_shapes = { "x" = [3, 736, 736] }\n', "ok.toml")
    assert load_recipe_file(ok).raw["bench"]["input_shapes"]["x"] == [3, 736, 736]
    error = refused(write(tmp_path, text + '\n[bench]\ninput_shape = { "x" = [3, 736, 736] }\n', "bad.toml"))
    assert error.key == "bench.input_shape" and "did you mean 'input_shapes'" in str(error)


def test_section_of_another_task_is_refused(tmp_path):
    text = (shipped_recipes_dir() / "buffalo_l-detection-cpu.toml").read_text(encoding="utf-8")
    error = refused(write(tmp_path, text + '\n[tokenizer]\nkind = "clip-bpe"\n'))
    assert error.key == "tokenizer" and "face-detection" in str(error)


def test_key_of_another_task_is_refused(tmp_path):
    """OCR's `unclip_ratio` means nothing to a face detector."""
    error = refused(shipped_variant(tmp_path, "buffalo_l-detection-cpu.toml", "max_faces = 100", "max_faces = 100\nunclip_ratio = 1.5"))
    assert error.key == "postprocess.unclip_ratio"


@pytest.mark.parametrize(
    "recipe, old, new, key, wanted",
    [
        ("ppocrv5-mobile-det-cpu.toml", "unclip_ratio = 1.6", 'unclip_ratio = "1.6"', "postprocess.unclip_ratio", "a number"),
        ("buffalo_l-recognition-cpu.toml", "crop_size = 112", "crop_size = 112.0", "preprocess.crop_size", "an integer"),
        ("buffalo_l-detection-cpu.toml", "nms_plus_one = true", "nms_plus_one = 1", "postprocess.nms_plus_one", "true or false"),
        ("buffalo_l-detection-cpu.toml", "strides = [8, 16, 32]", "strides = 8", "postprocess.strides", "a list of integers"),
        ("buffalo_l-recognition-cpu.toml", "align_template = [[38.2946, 51.6963],", "align_template = [[38.2946],",
         "preprocess.align_template", "a list of [x, y] pairs"),
        ("clip-vit-b32-textual-hailo.toml", "\nfinal_layer_norm_on_host = false", "\nfinal_layer_norm_on_host = 0",
         "text.final_layer_norm_on_host", "true or false"),
        ("clip-vit-b32-textual-hailo.toml", 'pair = "clip-vit-b32-visual-hailo"', "pair = 3", "clip.pair", "a string"),
        ("centerface-cpu.toml", '"input.1" = ["B", 3, "H", "W"]', '"input.1" = "BCHW"', "cpu.dynamic_dims.input.1",
         "a list of integers or dimension names"),
        ("buffalo_l-detection-cpu.toml", "prefer_when_present = 1", 'prefer_when_present = "yes"', "prefer_when_present", "an integer"),
        ("buffalo_l-detection-cpu.toml", "stride = 8", 'stride = "8"', "outputs[0].stride", "an integer"),
        ("ppocrv5-mobile-det-cpu.toml", 'task = "ocr-detection"', 'task = "ocr-detection"\nbench = 3', "bench", "a table"),
    ],
)
def test_wrong_type_is_refused(tmp_path, recipe, old, new, key, wanted):
    error = refused(shipped_variant(tmp_path, recipe, old, new))
    assert error.key == key and f"must be {wanted}" in str(error)


@pytest.mark.parametrize(
    "recipe, old, new, key",
    [
        ("buffalo_l-detection-cpu.toml", 'kind = "scrfd"', 'kind = "retinaface"', "postprocess.kind"),
        ("buffalo_l-detection-cpu.toml", 'letterbox = "top-left"', 'letterbox = "centre"', "preprocess.letterbox"),
        ("buffalo_l-detection-cpu.toml", 'layout = "flat"', 'layout = "nchw"', "postprocess.layout"),
        ("buffalo_l-detection-cpu.toml", 'role = "score"', 'role = "scores"', "outputs[0].role"),
        ("clip-vit-b32-openai-visual-cpu.toml", 'interpolation = "bicubic"', 'interpolation = "cubic"', "preprocess.interpolation"),
        ("clip-vit-b32-textual-hailo.toml", 'kind = "clip-bpe"', 'kind = "bpe"', "tokenizer.kind"),
        ("ppocrv5-mobile-det-cpu.toml", 'resize = "short-side"', 'resize = "tile"', "preprocess.resize"),
        ("ppocrv5-mobile-rec-cpu.toml", 'width_mode = "dynamic"', 'width_mode = "auto"', "preprocess.width_mode"),
        ("ppocrv5-mobile-rec-cpu.toml", "blank_index = 0", "blank_index = 1", "postprocess.blank_index"),
    ],
)
def test_value_outside_its_set_is_refused(tmp_path, recipe, old, new, key):
    error = refused(shipped_variant(tmp_path, recipe, old, new))
    assert error.key == key and "must be one of" in str(error)


def test_out_of_set_value_suggests_the_close_one(tmp_path):
    error = refused(shipped_variant(tmp_path, "buffalo_l-detection-cpu.toml", 'letterbox = "top-left"', 'letterbox = "centre"'))
    assert "did you mean 'center'" in str(error)


def test_every_shipped_recipe_passes_the_key_schema():
    """Shipped recipes use only keys the schema knows (no silent defaults anywhere)."""
    from hailo_immich_cli.models.schema import check_recipe_keys

    for path in sorted(shipped_recipes_dir().glob("*.toml")):
        recipe = load_recipe_file(path)
        check_recipe_keys(path, recipe.raw, recipe.task)


def test_emulation_keys_of_a_tensor_entry_are_checked(tmp_path):
    """hef_dtype / qp_scale / qp_zp describe the emulated HEF (hailo_immich_cli/testkit/hailo_emulation.py); typos still fail."""
    base = MINIMAL + '[[outputs]]\nname = "y"\n'
    assert load_recipe_file(write(tmp_path, base + 'hef_dtype = "uint16"\nqp_scale = 0.02\nqp_zp = 30\n')).outputs[0].extra["qp_zp"] == 30
    error = refused(write(tmp_path, base + "qp_scal = 0.02\n"))
    assert error.key == "outputs[0].qp_scal" and "did you mean 'qp_scale'" in str(error)
    error = refused(write(tmp_path, base + 'hef_dtype = "int8"\n'))
    assert error.key == "outputs[0].hef_dtype" and "must be one of" in str(error)
