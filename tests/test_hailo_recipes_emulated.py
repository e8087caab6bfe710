"""Every shipped Hailo recipe on the emulated device (hailo_platform test double): its declared
inputs/outputs make a HEF the backend accepts, and a frame runs. EMULATED, not hardware results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session

HAILO_RECIPES = [r.id for r in RecipeBook.load() if r.backend == "hailo"]


@pytest.mark.parametrize("recipe_id", HAILO_RECIPES)
def test_recipe_loads_and_runs_emulated(hailo_double, tmp_path: Path, recipe_id: str) -> None:
    book = RecipeBook.load()
    recipe = book.get(recipe_id)
    with make_hailo_session([recipe], None, tmp_path, book=book) as session:
        model = session.model(recipe_id)
        assert model.provenance.backend == "hailo" and "emulated" in model.provenance.device
        feeds = {t.name: np.zeros((2, *t.shape), t.dtype) for t in model.inputs}
        outputs = session.run(recipe_id, feeds).outputs
        output_names = [spec.name or info.name for spec, info in zip(recipe.outputs, model.outputs)]
    assert len(outputs) == len(recipe.outputs)
    for spec, name in zip(recipe.outputs, output_names):  # unnamed recipe outputs match by position
        assert outputs[name].shape == (2, *spec.shape) and outputs[name].dtype == np.float32


FACE_PAIRS = [("scrfd-2.5g-hailo8", "arcface-mobilefacenet-hailo8"), ("scrfd-10g-hailo8", "arcface-r50-hailo8")]


def test_every_hailo_face_recipe_is_in_a_pair() -> None:
    book = RecipeBook.load()
    shipped = {r.id for r in book if r.backend == "hailo" and r.task in ("face-detection", "face-recognition")}
    assert shipped == {rid for pair in FACE_PAIRS for rid in pair}


@pytest.mark.parametrize("det_id,rec_id", FACE_PAIRS)
def test_faces_end_to_end_on_emulated_hailo(hailo_double, tmp_path: Path, det_id: str, rec_id: str) -> None:
    """SCRFD + ArcFace Hailo recipes through analyze_faces: a face planted in the detector's maps
    comes back where it was planted; its embedding is what the recogniser HEF output for the crop
    the chip saw (raw, dequantised by HailoRT), on backend hailo. EMULATED."""
    from hailo_immich_cli.faces.pipeline import analyze_faces
    from hailo_immich_cli.testkit.face_models import planted_hailo_face, scrfd_hailo_twin

    book = RecipeBook.load()
    det, rec = book.get(det_id), book.get(rec_id)
    face = planted_hailo_face()
    detector_twin, det_calibration = scrfd_hailo_twin(det, [face])

    projection = np.random.default_rng(3).normal(size=(112 * 112 * 3, 512)).astype(np.float32) / 1000
    crops: list[np.ndarray] = []

    def recognizer_twin(inputs):
        (x,) = inputs.values()
        crops.extend(x)
        return {rec.outputs[0].name: x.reshape(len(x), -1) @ projection}

    calibration = {det.id: det_calibration}
    twins = {det.id: detector_twin, rec.id: recognizer_twin}
    with make_hailo_session([det, rec], twins, tmp_path, book=book, calibration=calibration) as session:
        crops.clear()  # calibration frames
        rgb = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
        result = analyze_faces(session, rgb, detector=det.id, recognizer=rec.id, min_score=0.5)
        step = session.model(rec.id).outputs[0].quant_scale
    assert len(result.faces) == 1
    found = result.faces[0]
    assert found.score == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(found.box, face.box, atol=1.0)
    np.testing.assert_allclose(found.landmarks, face.landmarks, atol=1.0)
    assert found.embedding is not None and found.embedding.shape == (512,) and len(crops) == 1
    np.testing.assert_allclose(found.embedding, crops[0].reshape(-1) @ projection, atol=step / 2 + 1e-4)
    assert result.detector.recipe_id == det.id and result.recognizer.recipe_id == rec.id
    for provenance in (result.detector, result.recognizer):
        assert provenance.backend == "hailo" and "emulated" in provenance.device
    if det.default and rec.default:  # the user's path: `hailo-immich detect FILE --json --backend hailo`, in-process
        import json

        from PIL import Image
        from typer.testing import CliRunner

        from hailo_immich_cli.cli import app

        Image.fromarray(rgb).save(tmp_path / "photo.png")
        run = CliRunner().invoke(app, ["detect", str(tmp_path / "photo.png"), "--json", "--backend", "hailo", "--min-score", "0.5",
                                       "--models-dir", str(tmp_path / "models")])
        assert run.exit_code == 0, run.output
        (record,) = json.loads(run.stdout)
        assert record["detector"] == {"recipe": det.id, "backend": "hailo", "model": result.detector.model_id}
        assert record["recognizer"]["recipe"] == rec.id and len(record["faces"]) == 1
        np.testing.assert_allclose(record["faces"][0]["box"], found.box, atol=0.01)


@pytest.mark.parametrize("backend", ["hailo", "auto"])
def test_backend_choice_after_a_hailo_model_is_loaded_emulated(hailo_double, tmp_path: Path, backend: str) -> None:
    """A Hailo recipe loaded by id opens the device before anything asked which backend is active;
    deciding afterwards must not probe with a second VDevice (HailoRT refuses it: "device in use"),
    which made backend=hailo fail and backend=auto fall back to the CPU for Immich model names."""
    book = RecipeBook.load()
    with make_hailo_session(["clip-vit-b32-visual-hailo"], None, tmp_path, book=book, backend=backend) as session:
        session.model("clip-vit-b32-visual-hailo")
        assert session.active_backend == "hailo" and session.fallback_reason is None
        assert session.resolve("clip-visual", "ViT-B-32__openai").id == "clip-vit-b32-visual-hailo"


def test_every_hailo_task_has_an_end_to_end_emulated_test() -> None:
    """Faces here; CLIP in test_clip_hailo_emulated.py; OCR in test_ocr_hailo_emulated.py (each also
    asserts it covers every shipped Hailo recipe of its tasks)."""
    covered = {"face-detection", "face-recognition", "clip-visual", "clip-textual", "ocr-detection", "ocr-recognition"}
    assert {r.task for r in RecipeBook.load() if r.backend == "hailo"} <= covered
