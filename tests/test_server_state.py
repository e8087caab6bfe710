"""Server state without HTTP: the inference gate, the start-up preload plan, off-backend warnings."""

from __future__ import annotations

import importlib.util
import threading
import time

import pytest

from hailo_immich_cli.server.metrics import Metrics
from hailo_immich_cli.server.state import BusyError, Gate, ServerState, preload_plan
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings


def test_gate_runs_slots_queues_then_refuses():
    metrics = Metrics()
    gate = Gate(slots=1, max_queue=1, metrics=metrics, wait_timeout=5)
    release = threading.Event()
    waited: list[float] = []

    def hold():
        with gate.slot():
            release.wait(5)

    def queued():
        with gate.slot() as w:
            waited.append(w)

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.05)
    waiter = threading.Thread(target=queued)
    waiter.start()
    time.sleep(0.05)
    assert metrics.queue_depth == 1 and metrics.in_flight == 1
    with pytest.raises(BusyError):
        with gate.slot():
            pass
    assert metrics.rejected_busy == 1
    release.set()
    holder.join(5)
    waiter.join(5)
    assert waited and waited[0] >= 0.04
    assert metrics.queue_depth == 0 and metrics.in_flight == 0


def test_gate_wait_times_out_as_busy():
    gate = Gate(slots=1, max_queue=4, metrics=Metrics(), wait_timeout=0.1)
    with gate.slot():
        box: list[BaseException] = []

        def late():
            try:
                with gate.slot():
                    pass
            except BusyError as exc:
                box.append(exc)

        t = threading.Thread(target=late)
        t.start()
        t.join(5)
    assert box and "within" in str(box[0])


def test_preload_plan_takes_defaults_with_files_and_immich_preload_names(cpu_models, recipe_book):
    with SessionManager(cpu_models, recipe_book) as session:
        planned, errors = preload_plan(
            session,
            {
                "MACHINE_LEARNING_PRELOAD__OCR__DETECTION": "PP-OCRv5_mobile",
                "MACHINE_LEARNING_PRELOAD__CLIP__VISUAL": "no-such-model",
                "MACHINE_LEARNING_PRELOAD__CLIP__NOPE": "x",
            },
        )
    assert "centerface-cpu" in planned  # a default whose file is present
    assert planned.count(recipe_book.default("ocr-detection", "cpu").id) == 1  # default and preload name: once
    assert any("no-such-model" in key for key in errors)
    assert "clip/nope" in errors


def test_preload_plan_reads_immich_deprecated_one_level_names(cpu_models, recipe_book):
    with SessionManager(cpu_models, recipe_book) as session:
        planned, errors = preload_plan(session, {"MACHINE_LEARNING_PRELOAD__FACIAL_RECOGNITION": "buffalo_l"})
    assert "buffalo_l-detection-cpu" in planned and "buffalo_l-recognition-cpu" in planned
    assert errors == {}


def test_request_landing_off_the_configured_backend_is_reported(cpu_models):
    # Face recognition configured for the NPU, but only a CPU recipe reproduces Immich's buffalo_l.
    settings = Settings.load(env={}, backend="cpu", models_dir=cpu_models.models_dir, model_backends={"face-recognition": "hailo"})
    state = ServerState(settings, env={})
    recipe_id = state.resolve_recipe("face-recognition", "buffalo_l")
    assert state.session.recipes.get(recipe_id).backend == "cpu"
    assert "NOT ON THE HAILO BACKEND" in state.off_backend[recipe_id]
    assert state.resolve_recipe("ocr-detection", "PP-OCRv5_mobile") not in state.off_backend
    state.session.close()


def test_an_unusable_backend_is_a_loader_error(cpu_models):
    if importlib.util.find_spec("hailo_platform") is not None:
        pytest.skip("hailo_platform (or its test double) is importable here")
    # backend=hailo on a machine without hailo_platform: every task fails, loudly, and the loader says so
    settings = Settings.load(env={}, backend="hailo", models_dir=cpu_models.models_dir)
    state = ServerState(settings, env={})
    state.start_loading()
    state.wait_loaded(60)
    assert state.loader.state == "partial" and state.loader.loaded == []
    assert all("backend 'hailo' was requested but cannot run" in message for message in state.loader.errors.values())
    state.session.close()
