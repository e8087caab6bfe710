"""Parity with Immich's official OCR pipeline (RapidOCR 3.6.0 components, same ONNX files, same images).

Skips when RapidOCR is not installed (see tests/helpers/immich_ocr_reference.py for the install line).
"""

from __future__ import annotations

import numpy as np
import pytest

from hailo_immich_cli.ocr.pipeline import immich_response_order, read_text
from hailo_immich_cli.testkit.ocr_samples import render_lines, samples

pytest.importorskip("rapidocr", reason="RapidOCR 3.6.0 is the parity reference; install it to run these tests")
pytest.importorskip("shapely")


@pytest.fixture(scope="module")
def reference(cpu_session):
    from tests.helpers.immich_ocr_reference import ImmichOcrReference

    files = cpu_session.files
    det = cpu_session.recipes.get("ppocrv5-mobile-det-cpu")
    rec = cpu_session.recipes.get("ppocrv5-mobile-rec-cpu")
    return ImmichOcrReference(str(files.require(det)), str(files.require(rec)), str(files.require(rec, "dictionary")))


def _images(photos):
    out = [(s.name, s.rgb) for s in samples()]
    out.append(("page", photos["page"]))
    out.append(("coffee", photos["coffee"]))  # a photo without text
    out.append(("astronaut", photos["astronaut"]))
    lines = [f"Row {i}: item {i * 7} costs {i * 1.5:.2f}" for i in range(1, 13)]
    out.append(("dense-12-lines", render_lines(lines, (900, 1000), font_size=26, origin=(30, 20), spacing=2.6, angle=1.0)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("min_rec", [0.8, 0.0])
def test_same_boxes_texts_and_scores_as_immich(cpu_session, reference, photos, min_rec):
    checked = 0
    for name, rgb in _images(photos):
        want = reference(rgb, min_score=min_rec)
        got = read_text(cpu_session, rgb, min_rec_score=min_rec)
        pairs = immich_response_order(got)
        assert [line.text for line, _ in pairs] == want.text, name
        np.testing.assert_array_equal(np.array([line.box.reshape(-1) for line, _ in pairs]).reshape(-1, 8), want.box, err_msg=name)
        assert [line.text_score for line, _ in pairs] == want.text_score.tolist(), name
        np.testing.assert_array_equal(np.array([s for _, s in pairs], np.float32), want.box_score.astype(np.float32), err_msg=name)
        checked += len(want.text)
    assert checked > 30


def test_max_resolution_and_min_det_score_parity(cpu_session, reference):
    img = render_lines(["Resolution check 9876", "second row"], (1600, 1200), font_size=30, origin=(400, 500))
    for max_res, min_det in ((160, 0.5), (320, 0.5), (1024, 0.5), (736, 0.3), (736, 0.7)):
        want = reference(img, max_res=max_res, box_thresh=min_det)
        got = immich_response_order(read_text(cpu_session, img, max_resolution=max_res, min_det_score=min_det))
        assert [line.text for line, _ in got] == want.text, (max_res, min_det)
        assert [s for _, s in got] == pytest.approx(want.box_score.tolist(), abs=0), (max_res, min_det)
