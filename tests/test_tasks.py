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
METHODS = ("serve", "choose_for_index", "run_for_index", "index_rows", "remote_entries", "parse_remote", "bench_work")


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
