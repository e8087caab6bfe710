"""`doctor --compare` on the emulated Hailo (hailo_platform test double): each Hailo recipe against its
CPU reference on the bundled samples. Twins reproduce one known failure each; the comparison must
name that cause and the recipe setting that fixes it, and report agreement on a faithful twin.
EMULATED: no Hailo hardware ran any of this."""

from __future__ import annotations

from pathlib import Path

import pytest

from hailo_immich_cli.doctor.compare import run_compare
from hailo_immich_cli.doctor.probes import Probes
from hailo_immich_cli.recipes import RecipeBook
from tests.helpers.doctor_twins import calibration_canvases, make_toy_scrfd_onnx, sample_canvases, scrfd_twin, swapped_outputs, threshold_for
from tests.helpers.hailo import hailo_double, make_hailo_session, write_recipe_hef  # noqa: F401  (fixture)

DETECTOR, REFERENCE = "scrfd-10g-hailo8", "buffalo_l-detection-cpu"


def _faces(tmp_path: Path, mode: str) -> dict:
    """Run the comparison for SCRFD-10GF against buffalo_l's detector (the toy network in both)."""
    book = RecipeBook.load()
    det = book.get(DETECTOR)
    canvases = sample_canvases(book.get(REFERENCE))
    onnx_path = make_toy_scrfd_onnx(tmp_path / "models" / REFERENCE / "model.onnx", *threshold_for(canvases))
    calibration = {det.id: {det.inputs[0].name: calibration_canvases(book.get(REFERENCE))}}
    hef_recipe = swapped_outputs(det) if mode == "swapped-outputs" else det
    twin = scrfd_twin(hef_recipe, onnx_path, mode)
    session = make_hailo_session([det], {det.id: twin}, tmp_path, book=book, calibration=calibration)
    if mode == "swapped-outputs":  # the HEF on disk names its layers the other way round
        write_recipe_hef(hef_recipe, twin, tmp_path / "models", calibration=calibration[det.id])
    (row,) = run_compare(session.settings, session.recipes, Probes(), [session.recipes.get(det.id)])
    session.close()
    return row


def test_faithful_detector_agrees(hailo_double, tmp_path: Path) -> None:
    row = _faces(tmp_path, "faithful")
    assert row["verdict"] == "agree", row
    assert row["reference"] == REFERENCE and row["cause"] is None
    reference, hailo = map(int, row["metrics"]["faces (reference/hailo)"].split("/"))
    assert reference == hailo >= 2  # five red cells, some merged by NMS
    assert row["metrics"]["box IoU"] >= 0.95 and row["metrics"]["landmark distance"] <= 0.01


@pytest.mark.parametrize("mode,cause,fix", [
    ("bgr", "RGB vs BGR", f'recipe {DETECTOR}: [preprocess] color = "BGR"'),
    ("center-letterbox", "letterbox", f'recipe {DETECTOR}: [preprocess] letterbox = "center"'),
    ("half-stride", "anchor centres offset by half a stride", f"recipe {DETECTOR}: [postprocess] anchor_offset = 0.5"),
    ("swapped-outputs", "output layers matched in the wrong order",
     f"recipe {DETECTOR}: outputs[0] (role 'score', stride 8) name = \"scrfd_10g/conv42\"; "
     f"outputs[1] (role 'box', stride 8) name = \"scrfd_10g/conv41\""),
])
def test_each_failure_is_named_with_its_fix(hailo_double, tmp_path: Path, mode: str, cause: str, fix: str) -> None:
    row = _faces(tmp_path, mode)
    assert row["verdict"] == "disagree", row
    assert row["cause"].startswith(cause), row
    assert row["fix"] == fix
    fitting = [t["cause"] for t in row["tried"] if t["agrees"]]
    assert fitting and all(c.startswith(cause) for c in fitting), row["tried"]
