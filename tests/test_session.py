"""SessionManager on real ONNX models: concurrency, counters, provenance, typed errors, backend choice."""

from __future__ import annotations

import logging
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from hailo_immich_cli.errors import BackendUnavailableError, ModelCorruptError, ModelMissingError, UnknownModelError
from hailo_immich_cli.models.files import sha256_of
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.tensors import image_input

DET = "ppocrv5-mobile-det-cpu"


def det_feed(session: SessionManager, rgb: np.ndarray) -> dict[str, np.ndarray]:
    recipe = session.recipes.get(DET)
    return {"x": image_input(rgb[None], recipe)}


def test_concurrent_runs_equal_serial_runs(cpu_models, recipe_book, photos):
    images = [photos[name][:128, :128] for name in ("astronaut", "camera", "coffee", "page")]
    images = [np.ascontiguousarray(np.pad(im, ((0, 128 - im.shape[0]), (0, 128 - im.shape[1]), (0, 0)))) for im in images]
    with SessionManager(cpu_models, recipe_book) as session:
        serial = [session.run(DET, det_feed(session, im)).outputs for im in images]
        jobs = [images[i % len(images)] for i in range(32)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(lambda im: session.run(DET, det_feed(session, im)).outputs, jobs))
        for i, out in enumerate(parallel):
            ref = serial[i % len(images)]
            for name, value in ref.items():
                np.testing.assert_allclose(out[name], value, rtol=1e-5, atol=1e-6)
        stats = session.stats()[DET]
        assert stats["calls"] == 36 and stats["items"] == 36 and stats["errors"] == 0
        assert stats["batch_sizes"] == {1: 36}
        assert stats["device_ms"] > 0 and stats["load_ms"] > 0


def test_one_load_even_when_many_threads_ask_at_once(cpu_models, recipe_book):
    with SessionManager(cpu_models, recipe_book) as session:
        barrier = threading.Barrier(6)

        def grab():
            barrier.wait()
            return session.model(DET)

        with ThreadPoolExecutor(max_workers=6) as pool:
            models = list(pool.map(lambda _: grab(), range(6)))
        assert all(m is models[0] for m in models)
        assert sum(1 for n in session.notices if n.startswith(f"loaded {DET}")) == 1


def test_provenance_names_recipe_backend_and_file_hash(cpu_models, recipe_book, photos):
    with SessionManager(cpu_models, recipe_book) as session:
        result = session.run(DET, det_feed(session, photos["page"][:64, :64].copy()))
        prov = result.provenance
        path = session.files.path(recipe_book.get(DET))
        assert prov.recipe_id == DET and prov.backend == "cpu"
        assert prov.model_sha256 == sha256_of(path) == recipe_book.get(DET).file().sha256
        assert prov.model_id == f"{DET}@{prov.model_sha256[:12]}"
        assert "onnxruntime" in prov.runtime
        assert session.health()["models"][DET]["backend"] == "cpu"


def test_batch_of_several_images_is_one_call(cpu_models, recipe_book, photos):
    batch = np.stack([photos["astronaut"][:96, :96], photos["coffee"][:96, :96]])
    with SessionManager(cpu_models, recipe_book) as session:
        recipe = recipe_book.get("centerface-cpu")
        out = session.run(recipe.id, {"input.1": image_input(batch, recipe)}).outputs
        assert out["537"].shape == (2, 1, 24, 24)
        assert session.stats()[recipe.id]["batch_sizes"] == {2: 1}


def test_missing_model_names_recipe_and_fetch_command(tmp_path, recipe_book):
    settings = Settings.load(env={}, backend="cpu", models_dir=tmp_path)
    with SessionManager(settings, recipe_book) as session:
        with pytest.raises(ModelMissingError) as info:
            session.model(DET)
    assert info.value.recipe_id == DET
    assert f"hailo-immich fetch-models --recipe {DET}" in str(info.value)


def test_corrupt_model_file_is_a_typed_error(tmp_path, cpu_models, recipe_book):
    settings = Settings.load(env={}, backend="cpu", models_dir=tmp_path)
    target = tmp_path / DET / recipe_book.get(DET).file().name
    target.parent.mkdir()
    target.write_bytes(b"\x08\x01garbage that is not an onnx model" * 10)
    with SessionManager(settings, recipe_book) as session:
        with pytest.raises(ModelCorruptError, match=DET):
            session.model(DET)


def test_truncated_model_file_is_a_typed_error(tmp_path, cpu_models, recipe_book):
    src = cpu_models.models_dir / DET / recipe_book.get(DET).file().name
    settings = Settings.load(env={}, backend="cpu", models_dir=tmp_path)
    target = tmp_path / DET / src.name
    target.parent.mkdir()
    target.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with SessionManager(settings, recipe_book) as session:
        with pytest.raises(ModelCorruptError):
            session.model(DET)


def test_auto_without_hailo_runs_on_cpu_and_says_so_loudly(cpu_models, recipe_book, caplog):
    settings = cpu_models.with_overrides(backend="auto")
    with caplog.at_level(logging.WARNING, logger="hailo_immich"):
        with SessionManager(settings, recipe_book) as session:
            assert session.active_backend == "cpu"
            assert session.fallback_reason and "hailo_platform" in session.fallback_reason
            assert session.health()["fallback_reason"] == session.fallback_reason
    assert any("NO HAILO DEVICE" in r.getMessage() for r in caplog.records)


def test_explicit_hailo_without_device_is_an_error(cpu_models, recipe_book):
    with SessionManager(cpu_models.with_overrides(backend="hailo"), recipe_book) as session:
        with pytest.raises(BackendUnavailableError, match="hailo_platform"):
            _ = session.active_backend


def test_resolve_by_recipe_id_immich_name_and_default(cpu_models, recipe_book):
    with SessionManager(cpu_models, recipe_book) as session:
        assert session.resolve("ocr-detection").id == DET
        assert session.resolve("ocr-detection", "LATIN__PP-OCRv5_mobile").id == DET
        assert session.resolve("ocr-detection", DET).id == DET
        with pytest.raises(UnknownModelError, match="reproduces the Immich model 'nope'"):
            session.resolve("ocr-detection", "nope")
        with pytest.raises(UnknownModelError, match="is for task"):
            session.resolve("face-detection", DET)


def test_per_task_backend_override_is_validated():
    with pytest.raises(Exception, match="must name hailo or cpu"):
        Settings.load(env={"HAILO_IMMICH_MODEL_BACKENDS": "face-recognition=gpu"})


def test_configured_task_recipe_wins_when_it_reproduces_the_name(cpu_models, recipe_book):
    settings = cpu_models.with_overrides(task_recipes={"ocr-detection": DET, "face-detection": DET})
    with SessionManager(settings, recipe_book) as session:
        assert session.resolve("ocr-detection").id == DET
        assert session.resolve("ocr-detection", "PP-OCRv5_mobile").id == DET
        with pytest.raises(UnknownModelError, match="HAILO_IMMICH_TASK_RECIPES"):
            session.resolve("face-detection")


def test_per_task_backend_is_read_from_env():
    settings = Settings.load(env={"HAILO_IMMICH_MODEL_BACKENDS": "face-recognition=cpu, ocr-detection=hailo"})
    assert settings.model_backends == {"face-recognition": "cpu", "ocr-detection": "hailo"}


def test_host_resources_live_on_the_loaded_model(cpu_models, recipe_book):
    """The OCR charset is built once per loaded model and goes with the session (no module-global cache)."""
    from hailo_immich_cli.ocr.pipeline import read_text
    from hailo_immich_cli.testkit.ocr_samples import render_lines

    rgb = render_lines(["Harbour Market"], (480, 120), font_size=40, origin=(20, 30))
    with SessionManager(cpu_models, recipe_book) as session:
        assert [line.text for line in read_text(session, rgb).lines] == ["Harbour Market"]
        rec = session.resolve("ocr-recognition")
        charset = session.model(rec.id).host_resource("charset", lambda: pytest.fail("built twice"))
        assert len(charset) == 18385 and charset[-1] == " "
    built: list[int] = []
    with SessionManager(cpu_models, recipe_book) as session:
        fresh = session.model(rec.id).host_resource("charset", lambda: built.append(1) or ("<blank>",))
    assert built == [1] and fresh == ("<blank>",)
