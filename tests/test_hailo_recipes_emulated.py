"""Every shipped Hailo recipe on the emulated device (hailo_platform test double): its declared
inputs/outputs make a HEF the backend accepts, and a frame runs. EMULATED, not hardware results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.recipes import RecipeBook
from tests.helpers.hailo import hailo_double, make_hailo_session  # noqa: F401  (fixture)

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


def test_faces_end_to_end_on_emulated_hailo(hailo_double, tmp_path: Path) -> None:
    """SCRFD-2.5G + ArcFace MobileFaceNet Hailo recipes through analyze_faces: a face planted in the
    detector's maps comes back where it was planted, with a 512-d embedding, on backend hailo."""
    from hailo_immich_cli.faces import analyze_faces
    from tests.helpers.faces import PlantedFace, as_hailo_nhwc, encode_scrfd

    book = RecipeBook.load()
    det, rec = book.get("scrfd-2.5g-hailo8"), book.get("arcface-mobilefacenet-hailo8")
    kps = np.array([[-12, -10], [12, -10], [0, 2], [-9, 14], [9, 14]], np.float32)
    face = PlantedFace(stride=16, row=20, col=18, anchor=1, score=0.9, ltrb=(40.0, 48.0, 40.0, 48.0), kps=kps)
    maps = as_hailo_nhwc(encode_scrfd([face]))
    by_role = {}
    for spec in det.outputs:
        index = {"score": 0, "box": 1, "kps": 2}[spec.role]
        by_role[spec.name] = maps[spec.extra["stride"]][index][0]

    def detector_twin(inputs):
        n = len(next(iter(inputs.values())))
        return {name: np.repeat(value[None], n, axis=0) for name, value in by_role.items()}

    calibration = {det.id: {det.inputs[0].name: np.zeros((1, 640, 640, 3), np.float32)}}
    with make_hailo_session([det, rec], {det.id: detector_twin}, tmp_path, book=book, calibration=calibration) as session:
        rgb = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
        result = analyze_faces(session, rgb, detector=det.id, recognizer=rec.id, min_score=0.5)
    assert len(result.faces) == 1
    found = result.faces[0]
    assert found.score == pytest.approx(0.9, abs=0.01)
    np.testing.assert_allclose(found.box, face.box, atol=1.0)
    np.testing.assert_allclose(found.landmarks, face.landmarks, atol=1.0)
    assert found.embedding is not None and found.embedding.shape == (512,)
    assert result.detector.backend == "hailo" and result.recognizer.backend == "hailo"
