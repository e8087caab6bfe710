"""Default placement on an emulated Hailo host (hailo_platform test double) with default settings:
Immich's buffalo_l / antelopev2 face detection runs on the NPU (SCRFD-10GF HEF, the same network);
recognition runs on the CPU with the requested model's own file, else is refused. /health and the
serve start-up log say so. EMULATED: no hardware."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.errors import ModelMissingError
from hailo_immich_cli.faces.pipeline import analyze_faces
from hailo_immich_cli.models.resolve import default_placement
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.server.app import health_report
from hailo_immich_cli.server.state import ServerState
from tests.helpers.doctor_twins import calibration_canvases, make_toy_scrfd_onnx, sample_canvases, scrfd_twin, threshold_for
from hailo_immich_cli.testkit.face_models import make_arcface_like_onnx
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session


def _host(tmp_path: Path):
    """Default settings (backend auto) on a host with one emulated Hailo-8 and the SCRFD-10GF HEF."""
    book = RecipeBook.load()
    det, reference = book.get("scrfd-10g-hailo8"), book.get("buffalo_l-detection-cpu")
    onnx_path = make_toy_scrfd_onnx(tmp_path / "toy" / "model.onnx", *threshold_for(sample_canvases(reference)))
    twin = scrfd_twin(det, onnx_path)
    return make_hailo_session([det], {det.id: twin}, tmp_path, book=book, backend="auto",
                              calibration={det.id: {det.inputs[0].name: calibration_canvases(reference)}})


def _rows(session) -> dict[tuple[str, str], object]:
    return {(p.task, p.model): p for p in default_placement(session)}


def test_buffalo_l_detection_on_the_npu_recognition_on_the_cpu_or_refused(hailo_double, tmp_path: Path) -> None:
    from hailo_immich_cli.doctor.samples import photos

    with _host(tmp_path) as session:
        assert session.active_backend == "hailo"
        for name in ("buffalo_l", "antelopev2"):
            detection = session.resolve("face-detection", name)
            assert (detection.id, detection.backend) == ("scrfd-10g-hailo8", "hailo")
        results = [analyze_faces(session, p.rgb, detector="buffalo_l", embed=False, min_score=0.5) for p in photos()]
        result = max(results, key=lambda r: len(r.faces))  # the toy detector finds red patches in some photo
        assert result.detector.recipe_id == "scrfd-10g-hailo8" and result.detector.backend == "hailo"
        assert "emulated" in result.detector.device and result.faces
        photo = photos()[results.index(result)].rgb
        # recognition: no Hailo recipe reproduces buffalo_l's recogniser; its own file is not here: refused
        recognition = session.resolve("face-recognition", "buffalo_l")
        assert (recognition.id, recognition.backend) == ("buffalo_l-recognition-cpu", "cpu")
        with pytest.raises(ModelMissingError):
            session.model(recognition.id)
        rows = _rows(session)
        row = rows[("face-recognition", "buffalo_l")]
        assert row.backend == "cpu" and row.note.startswith("refused until fetched")
        assert rows[("face-detection", "buffalo_l")].backend == "hailo" and rows[("face-detection", "buffalo_l")].note == ""
        assert rows[("clip-visual", "ViT-B-32__openai")].recipe == "clip-vit-b32-visual-hailo"
        # with buffalo_l's own recogniser file present it runs on the CPU
        make_arcface_like_onnx(session.files.target(recognition, recognition.file("model")))
        assert _rows(session)[("face-recognition", "buffalo_l")].note == ""
        faces = analyze_faces(session, photo, detector="buffalo_l", recognizer="buffalo_l", min_score=0.5)
        assert faces.detector.backend == "hailo" and faces.recognizer.recipe_id == "buffalo_l-recognition-cpu"
        assert faces.recognizer.backend == "cpu" and faces.faces[0].embedding.shape == (512,)


def test_health_and_start_up_log_state_the_placement(hailo_double, tmp_path: Path, caplog) -> None:
    with _host(tmp_path) as session:
        state = ServerState(session.settings, session, env={})
        with caplog.at_level(logging.INFO, logger="hailo_immich"):
            state.start_loading()
            state.wait_loaded(60)
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("placement: ")]
        assert "placement: facial-recognition/detection buffalo_l: hailo (scrfd-10g-hailo8)" in lines
        assert any(line.startswith("placement: facial-recognition/recognition buffalo_l: cpu (buffalo_l-recognition-cpu); refused until fetched")
                   for line in lines)
        health = health_report(state)
        placement = {(p["immich"], p["model"]): p for p in health["placement"]}
        assert placement[("facial-recognition/detection", "antelopev2")]["backend"] == "hailo"
        assert placement[("facial-recognition/recognition", "antelopev2")]["recipe"] == "antelopev2-recognition-cpu"
        assert np.all([p["task"] for p in health["placement"]])
