"""OCR from an Immich ML cache: detection under the short model name, recognition under the full name
with the dictionary in the ONNX metadata key `character`; the same lines, boxes and scores as
Immich's pipeline (RapidOCR 3.6.0 components) on the very same files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from hailo_immich_cli.models.files import HASH_CACHE_NAME
from hailo_immich_cli.ocr.pipeline import immich_response_order, read_text
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.testkit.ocr_samples import render_lines, samples
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)
from tests.test_immich_cache import cache, cache_settings, empty_models, inside, run_cli  # noqa: F401  (fixtures)


@pytest.fixture()
def session(cache, empty_models):  # noqa: F811
    with SessionManager(cache_settings(cache, empty_models)) as s:
        yield s


def test_ocr_names_map_to_the_cache_files(session, cache):  # noqa: F811
    rec = session.resolve("ocr-recognition", "PP-OCRv5_mobile")
    assert rec.id == "immich-PP-OCRv5_mobile-recognition" and rec.postprocess["dictionary_metadata_key"] == "character"
    assert not rec.has_file("dictionary")
    en = session.resolve("ocr-recognition", "EN__PP-OCRv5_mobile")
    assert en.id == "ppocrv5-mobile-rec-en-cpu"
    assert inside(str(session.files.require(en)), cache / "ocr" / "EN__PP-OCRv5_mobile" / "recognition")
    for name in ("PP-OCRv5_mobile", "EN__PP-OCRv5_mobile"):
        det = session.resolve("ocr-detection", name)
        assert det.id == "ppocrv5-mobile-det-cpu"
        assert inside(str(session.files.require(det)), cache / "ocr" / "PP-OCRv5_mobile" / "detection")


def metadata_characters(path: Path) -> list[str]:
    """The dictionary as RapidOCR's OrtInferSession reads it (ONNX Runtime's model metadata)."""
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    return meta["character"].splitlines()


@pytest.fixture(scope="module")
def reference(cache, cpu_models):  # noqa: F811
    pytest.importorskip("rapidocr", reason="RapidOCR 3.6.0 is the parity reference (see tests/helpers/immich_ocr_reference.py)")
    pytest.importorskip("shapely")
    return immich_reference(cache, Path(cpu_models.models_dir))


def immich_reference(cache: Path, models_dir: Path):  # noqa: F811
    """Immich's OCR pipeline on the cache's files, the dictionary taken from the model's metadata as Immich does."""
    from rapidocr.ch_ppocr_rec.utils import CTCLabelDecode

    from tests.helpers.immich_ocr_reference import ImmichOcrReference

    rec_path = cache / "ocr" / "PP-OCRv5_mobile" / "recognition" / "model.onnx"
    dict_file = models_dir / "ppocrv5-mobile-rec-cpu" / "ppocrv5_dict.txt"  # replaced below
    ref = ImmichOcrReference(str(cache / "ocr" / "PP-OCRv5_mobile" / "detection" / "model.onnx"), str(rec_path), str(dict_file))
    ref.rec.postprocess_op = CTCLabelDecode(character=metadata_characters(rec_path))  # as Immich builds it
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PP-OCRv5_mobile", "EN__PP-OCRv5_mobile"])
def test_ocr_from_the_cache_equals_immich_reference(session, reference, photos, name):
    images = [(s.name, s.rgb) for s in samples()[:4]] + [("page", photos["page"])]
    checked = 0
    for label, rgb in images:
        want = reference(rgb, min_score=0.8)
        got = read_text(session, rgb, detector=name, recognizer=name, min_rec_score=0.8)
        pairs = immich_response_order(got)
        assert [line.text for line, _ in pairs] == want.text, label
        np.testing.assert_array_equal(np.array([line.box.reshape(-1) for line, _ in pairs]).reshape(-1, 8), want.box, err_msg=label)
        assert [line.text_score for line, _ in pairs] == want.text_score.tolist(), label
        assert [s for _, s in pairs] == want.box_score.tolist(), label
        checked += len(want.text)
    assert checked > 10


@pytest.mark.slow
def test_cli_ocr_with_the_cache(cache, empty_models, tmp_path):  # noqa: F811
    image = tmp_path / "note.png"
    Image.fromarray(render_lines(["Hello Immich cache", "Total 42.50"], (700, 200))).save(image)
    proc = run_cli("ocr", str(image), "--json", "--detector", "EN__PP-OCRv5_mobile", "--recognizer", "PP-OCRv5_mobile",
                   cache=cache, models=empty_models)
    assert proc.returncode == 0, proc.stderr
    (record,) = json.loads(proc.stdout)
    assert record["detector"]["recipe"] == "ppocrv5-mobile-det-cpu" and record["detector"]["backend"] == "cpu"
    assert record["recognizer"]["recipe"] == "immich-PP-OCRv5_mobile-recognition" and record["recognizer"]["backend"] == "cpu"
    assert [line["text"] for line in record["lines"]] == ["Hello Immich cache", "Total 42.50"]
    # no model file is copied; only the note of the cache files' hashes (models/files.py) is kept
    assert [p.name for p in empty_models.iterdir()] in ([], [HASH_CACHE_NAME])
