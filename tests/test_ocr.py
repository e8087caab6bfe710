"""OCR pipeline on the real PP-OCRv5 mobile ONNX models (CPU backend), on text rendered here with known truth."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.errors import BadInputError, ImageTooLargeError, UnknownModelError
from hailo_immich_cli.imaging import decode_image
from hailo_immich_cli.ocr.pipeline import OcrResult, immich_response_order, read_text
from hailo_immich_cli.ocr.detect import short_side_size
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.ocr_samples import cer, normalise, read_all, render_lines, samples

CER_BOUND = 0.03  # aggregate over all samples; measured 0.014 (one code line: 'x' read as a multiplication sign)


@pytest.mark.slow
def test_reads_rendered_text_with_low_character_error_rate(cpu_session):
    total_edits = total_chars = exact = 0
    report = []
    for sample in samples():
        result = read_text(cpu_session, sample.rgb)
        got = read_all(result.lines)
        c = cer(got, sample.text)
        total_edits += round(c * len(sample.text))
        total_chars += len(sample.text)
        exact += got == sample.text
        report.append(f"{sample.name:32s} CER {c:.3f}  {got!r}")
    aggregate = total_edits / total_chars
    print("\n" + "\n".join(report) + f"\naggregate CER {aggregate:.4f} over {total_chars} characters, {exact}/{len(report)} exact")
    assert aggregate <= CER_BOUND
    assert exact >= len(report) - 1


def test_space_class_is_kept(cpu_session):
    img = render_lines(["hello world 2024"], (520, 100), font_size=36, origin=(20, 25))
    result = read_text(cpu_session, img)
    assert [line.text for line in result.lines] == ["hello world 2024"]


def test_result_shape_order_provenance_and_pixel_boxes(cpu_session):
    lines = ["First line here", "Second line 22", "Third one!"]
    img = render_lines(lines, (640, 400), font_size=34, origin=(40, 40), spacing=2.4)
    result = read_text(cpu_session, img)
    assert isinstance(result, OcrResult)
    assert (result.width, result.height) == (640, 400)
    assert result.detector.recipe_id == "ppocrv5-mobile-det-cpu" and result.detector.backend == "cpu"
    assert result.recognizer.recipe_id == "ppocrv5-mobile-rec-cpu" and result.recognizer.backend == "cpu"
    assert [line.text for line in result.lines] == lines
    tops = [float(line.box[:, 1].min()) for line in result.lines]
    assert tops == sorted(tops)
    for line in result.lines:
        assert line.box.shape == (4, 2) and line.box.dtype == np.float32
        tl, tr, br, bl = line.box
        assert tl[0] < tr[0] and bl[0] < br[0] and tl[1] < bl[1] and tr[1] < br[1]
        assert (line.box[:, 0] >= 0).all() and (line.box[:, 0] <= 639).all()
        assert (line.box[:, 1] >= 0).all() and (line.box[:, 1] <= 399).all()
        assert 0.5 <= line.box_score <= 1 and 0.8 < line.text_score <= 1
        assert line.text_score == round(line.text_score, 5)
        # boxes are in the pixels of the array passed in: the first line starts near x=40
    assert 25 <= result.lines[0].box[0, 0] <= 45


def test_portrait_and_rotated_text(cpu_session):
    lines = ["Portrait page", "rotated slightly"]
    img = render_lines(lines, (500, 1300), font_size=34, origin=(40, 500), angle=2.5)
    result = read_text(cpu_session, img)
    assert read_all(result.lines) == normalise(" ".join(lines))


def test_recognition_min_score_is_strict(cpu_session):
    img = render_lines(["Threshold test 77"], (560, 100), font_size=34, origin=(20, 25))
    base = read_text(cpu_session, img, min_rec_score=0.0)
    assert len(base.lines) == 1
    score = base.lines[0].text_score
    assert read_text(cpu_session, img, min_rec_score=score).lines == []
    assert len(read_text(cpu_session, img, min_rec_score=score - 1e-5).lines) == 1


def test_detection_min_score_and_max_resolution_are_honoured(cpu_session):
    img = render_lines(["Detect me please", "and me too"], (700, 260), font_size=34)
    default = read_text(cpu_session, img)
    assert len(default.lines) >= 2
    strict = read_text(cpu_session, img, min_det_score=0.999)
    assert strict.lines == [] and len(strict.detections) == 0
    # Small print on a large canvas: a low maxResolution shrinks it below what the detector can see.
    small = render_lines(["tiny print 12345"], (2400, 1800), font_size=22, origin=(900, 900))
    assert read_all(read_text(cpu_session, small).lines) == "tiny print 12345"
    assert read_text(cpu_session, small, max_resolution=160).lines == []


def test_short_side_size_rounds_like_python():
    assert short_side_size(1000, 1500, 736) == (736, 1088)  # 1104 / 32 = 34.5 -> 34 (half to even)
    assert short_side_size(48, 500, 736) == (64, 512)  # no upscaling; 1.5 -> 2
    assert short_side_size(80, 300, 736) == (64, 288)  # 2.5 -> 2
    assert short_side_size(4032, 3024, 736) == (992, 736)


def test_model_choice_by_recipe_id_and_immich_name(cpu_session):
    img = render_lines(["Named model"], (400, 90), font_size=32, origin=(15, 20))
    by_name = read_text(cpu_session, img, detector="PP-OCRv5_mobile", recognizer="PP-OCRv5_mobile")
    assert by_name.detector.recipe_id == "ppocrv5-mobile-det-cpu"
    assert [line.text for line in by_name.lines] == ["Named model"]
    with pytest.raises(UnknownModelError):
        read_text(cpu_session, img, recognizer="no-such-model")


def test_immich_response_order_keeps_the_official_quirks(cpu_session):
    img = render_lines(["left words", "x"], (600, 260), font_size=34)
    result = read_text(cpu_session, img, min_rec_score=0.0)
    pairs = immich_response_order(result)
    assert sorted(line.det_index for line, _ in pairs) == sorted(line.det_index for line in result.lines)
    for position, (_, reported) in enumerate(pairs):
        assert reported == pytest.approx(float(result.detection_scores[position]))


# ---------------------------------------------------------------- edge cases
def test_empty_bytes_are_bad_input():
    with pytest.raises(BadInputError, match="empty"):
        decode_image(b"")


def test_corrupt_jpeg_is_bad_input():
    buf = io.BytesIO()
    Image.fromarray(render_lines(["x"], (200, 100))).save(buf, "JPEG")
    data = buf.getvalue()
    with pytest.raises(BadInputError):
        decode_image(data[: len(data) // 3])
    with pytest.raises(BadInputError):
        decode_image(b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20)


def test_tiny_image_reads_nothing_without_error(cpu_session):
    result = read_text(cpu_session, np.full((20, 20, 3), 255, np.uint8))
    assert result.lines == [] and (result.width, result.height) == (20, 20)
    assert result.detector.recipe_id == "ppocrv5-mobile-det-cpu"


def test_blank_image_reads_nothing(cpu_session):
    assert read_text(cpu_session, np.zeros((300, 400, 3), np.uint8)).lines == []


def test_huge_image_is_refused_before_decoding(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("1", (12000, 9000)).save(path)  # 108 Mpx, a few KB on disk
    with pytest.raises(ImageTooLargeError):
        decode_image(path, max_pixels=100_000_000)


def test_pipeline_refuses_arrays_above_the_pixel_bound(cpu_models):
    settings = Settings.load(env={}, backend="cpu", models_dir=cpu_models.models_dir, max_image_pixels=10_000)
    with SessionManager(settings) as session:
        with pytest.raises(ImageTooLargeError):
            read_text(session, np.zeros((200, 200, 3), np.uint8))


def test_wrong_array_is_bad_input(cpu_session):
    with pytest.raises(BadInputError):
        read_text(cpu_session, np.zeros((50, 50), np.uint8))
    with pytest.raises(BadInputError):
        read_text(cpu_session, np.zeros((50, 50, 3), np.float32))
