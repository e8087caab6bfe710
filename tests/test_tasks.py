"""The task registry: every vocabulary the server, indexer and benchmarks use comes from it, consistently."""

from __future__ import annotations

import pytest

from hailo_immich_cli import tasks
from hailo_immich_cli.settings import Settings

# Immich's /predict (task, type) pairs and the recipe task each runs (research/immich-protocol.md).
IMMICH_CONTRACT = {
    ("facial-recognition", "detection"): "face-detection",
    ("facial-recognition", "recognition"): "face-recognition",
    ("clip", "visual"): "clip-visual",
    ("clip", "textual"): "clip-textual",
    ("ocr", "detection"): "ocr-detection",
    ("ocr", "recognition"): "ocr-recognition",
}
METHODS = ("serve", "choose_for_index", "run_for_index", "index_rows", "remote_entries", "parse_remote", "bench_work",
           "answer_count", "path_agreement", "cache_names", "cache_recipe", "cli_record", "cli_table")


def test_registry_covers_immich_contract_in_response_order():
    assert tasks.immich_pairs() == IMMICH_CONTRACT
    assert list(tasks.immich_pairs()) == list(IMMICH_CONTRACT)  # /health and reports list tasks in this order
    assert [t.name for t in tasks.registry()] == ["faces", "clip", "ocr"]
    assert tasks.recipe_tasks() == tuple(IMMICH_CONTRACT.values())


def test_each_task_owns_disjoint_recipe_tasks_and_implements_every_hook():
    owners = [tasks.owner(rt).name for rt in tasks.recipe_tasks()]
    assert owners == ["faces", "faces", "clip", "clip", "ocr", "ocr"]
    for task in tasks.registry():
        assert set(task.indexed) <= set(task.recipe_tasks)
        assert set(task.geometry) | set(task.embeddings) <= set(task.recipe_tasks)
        assert not set(task.geometry) & set(task.embeddings)
        assert set(task.text_types) <= set(task.steps)
        for method in METHODS:
            assert callable(getattr(task, method)), f"{task.name} lacks {method}"
        for job in task.bench_jobs:
            assert set(job.stages) <= set(task.recipe_tasks) and job.batch_stage in job.stages
            assert tasks.bench_jobs()[job.name] == (task, job)
    with pytest.raises(KeyError):
        tasks.owner("no-such-task")


def test_vocabularies_follow_the_registry():
    assert tasks.geometry_tasks() == {"face-detection", "ocr-detection"}
    assert tasks.embedding_tasks() == {"face-recognition", "clip-visual", "clip-textual"}
    assert tasks.detect_then_recognize() == ("facial-recognition", "ocr")
    assert list(tasks.bench_jobs()) == ["faces", "clip", "clip-text", "ocr"]
    # Immich's task names in HAILO_IMMICH_MODEL_BACKENDS cover both steps, from the registry
    settings = Settings.load(env={"HAILO_IMMICH_MODEL_BACKENDS": "clip=cpu,facial-recognition=hailo"})
    assert settings.model_backends == {"clip-visual": "cpu", "clip-textual": "cpu", "face-detection": "hailo", "face-recognition": "hailo"}


def test_index_keys_join_every_model_that_produced_the_result():
    faces = tasks.by_name()["faces"]
    assert faces.model_key(["det@1", "rec@2"]) == "det@1+rec@2"
    assert faces.model_key(["det@1"]) == "det@1"  # detection only
    assert faces.remote_entries("buffalo_l") == {
        "facial-recognition": {"detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}},
                               "recognition": {"modelName": "buffalo_l"}}}


def test_request_path_table_matches_the_tasks():
    steps = tasks.immich_steps()
    assert {pair: step.recipe_task for pair, step in steps.items()} == IMMICH_CONTRACT
    assert [pair for pair, step in steps.items() if step.text] == [("clip", "textual")]
    assert steps[("ocr", "detection")].int_options == (("maxResolution", 32),)  # one rule: below 32 is a 422
    assert all(not step.int_options for pair, step in steps.items() if pair != ("ocr", "detection"))


def test_storage_cache_and_recipe_keys_are_declared_by_their_task():
    from hailo_immich_cli.models.recipes import RecipeBook
    from hailo_immich_cli.models.schema import COMMON_TOP, schema_for

    assert tasks.stored_tables() == ("faces", "clip", "ocr_lines", "ocr_text")  # pruned with their photos
    assert list(tasks.vector_tasks()) == ["clip", "faces"]  # one vector index per task and model, synced in this order
    assert tasks.vectors_per("photo").name == "clip" and tasks.vectors_per("face").name == "faces"
    book = RecipeBook.load()
    for task in tasks.registry():
        assert set(task.index_tables) <= set(task.stored_tables)
        assert set(task.recipe_keys) <= set(task.recipe_tasks)
        # every Immich cache folder type has a shipped CPU template running the same recipe task
        assert set(task.cache_templates) == set(task.steps)
        for type_, template in task.cache_templates.items():
            recipe = book.get(template)
            assert recipe.task == task.steps[type_] and recipe.backend == "cpu"
    # a recipe task's schema: the shared keys plus only what its own package declares
    assert set(schema_for("clip-textual")) == set(COMMON_TOP) | {"preprocess", "postprocess", "clip", "text", "tokenizer", "weights"}
    assert set(schema_for("face-detection")) == set(COMMON_TOP) | {"preprocess", "postprocess"}
    assert "unclip_ratio" in schema_for("ocr-detection")["postprocess"].fields
    assert "unclip_ratio" not in schema_for("face-detection")["postprocess"].fields


def test_fast_path_agreement_is_measured_per_task():
    faces, clip, ocr = (tasks.by_name()[n] for n in ("faces", "clip", "ocr"))
    box = {"x1": 0.0, "y1": 0.0, "x2": 10.0, "y2": 10.0}
    shifted = {"x1": 5.0, "y1": 0.0, "x2": 15.0, "y2": 10.0}
    assert faces.path_agreement([{"boundingBox": box}], [{"boundingBox": shifted}])["min_iou"] == pytest.approx(1 / 3)
    assert faces.answer_count([{}, {}]) == 2
    assert clip.path_agreement("[1.0, 0.0]", "[1.0, 1.0]")["cosine"] == pytest.approx(2 ** -0.5)
    assert ocr.path_agreement({"text": ["a", "b"]}, {"text": ["a"]})["lines_matched"] == 0.5
    assert ocr.answer_count({"text": ["a", "b", "c"]}) == 3
