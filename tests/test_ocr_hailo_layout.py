"""The Hailo OCR layouts (544x960 detector tiles, 48x320 recogniser crops) with the real PP-OCRv5 weights.

Emulated: the HEF layouts run the ONNX weights on the CPU (hailo_immich_cli/testkit/ocr_emulation.py). This
checks the geometry (tiling, stitching, splitting long lines), not the quantised HEFs.
"""

from __future__ import annotations

import numpy as np
import pytest

from hailo_immich_cli.ocr.pipeline import read_text
from hailo_immich_cli.ocr.recognize import split_wide
from hailo_immich_cli.testkit.ocr_samples import cer, normalise, read_all, render_lines
from hailo_immich_cli.testkit.ocr_emulation import DET_ID, LETTERBOX_DET_ID, REC_ID, REC_SQUEEZE_ID, emulation_session

LONG = "The annual general meeting of the garden society takes place on Friday 14 March at 19:30"


@pytest.fixture(scope="module")
def emulated(cpu_models, tmp_path_factory):
    with emulation_session(cpu_models, tmp_path_factory.mktemp("emulated")) as session:
        yield session


def test_split_wide_cuts_long_lines_in_gaps():
    img = render_lines([LONG], (40 + 19 * len(LONG), 60), font_size=32, origin=(20, 10))
    parts, spaces = split_wide(img, 48, 320, 1.25)
    assert len(parts) >= 4 and len(spaces) == len(parts) - 1
    assert sum(p.shape[1] for p in parts) == img.shape[1]
    assert all(np.ceil(48 * p.shape[1] / p.shape[0]) <= 320 * 1.25 for p in parts)
    ink = (np.abs(img.astype(np.float32).mean(axis=2) - np.median(img.mean(axis=2))) > 40).sum(axis=0)
    cut_columns = np.cumsum([p.shape[1] for p in parts])[:-1]
    assert all(ink[c] == 0 for c in cut_columns)  # no cut goes through a character
    short, none = split_wide(img[:, :300], 48, 320, 1.25)
    assert len(short) == 1 and none == []


@pytest.mark.slow
def test_tiles_keep_small_print_that_letterboxing_loses(emulated):
    lines = ["Receipt 0042 Market Hall", "2 coffee 7.20 EUR", "Card payment accepted"]
    portrait = render_lines(lines, (3024, 4032), font_size=32, origin=(378, 1344), spacing=2.0)
    tiled = read_text(emulated, portrait, detector=DET_ID, recognizer=REC_ID)
    boxed = read_text(emulated, portrait, detector=LETTERBOX_DET_ID, recognizer=REC_ID)
    truth = normalise(" ".join(lines))
    c_tiled, c_boxed = cer(read_all(tiled.lines), truth), cer(read_all(boxed.lines), truth)
    print(f"\nportrait 3024x4032, 32-px print: tiles ({tiled.tiles} runs) CER {c_tiled:.3f}, letterbox CER {c_boxed:.3f}")
    assert tiled.tiles == 2 and c_tiled <= 0.02 and c_boxed >= 0.3
    assert all((line.box[:, 0] < 3024).all() and (line.box[:, 1] < 4032).all() for line in tiled.lines)
    assert 1300 < tiled.lines[0].box[0, 1] < 1400  # boxes are in original pixels


@pytest.mark.slow
def test_long_lines_split_read_better_than_squeezed(emulated):
    img = render_lines([LONG], (40 + 19 * len(LONG), 110), font_size=32, origin=(20, 30))
    split = read_all(read_text(emulated, img, detector="ppocrv5-mobile-det-cpu", recognizer=REC_ID).lines)
    squeezed = read_all(read_text(emulated, img, detector="ppocrv5-mobile-det-cpu", recognizer=REC_SQUEEZE_ID).lines)
    c_split, c_squeezed = cer(split, LONG), cer(squeezed, LONG)
    print(f"\n{len(LONG)}-char line at 48x320: split CER {c_split:.3f} ({split!r}), squeezed CER {c_squeezed:.3f}")
    assert c_split <= 0.05 and c_squeezed > 2 * max(c_split, 0.02)


# ---------------------------------------------------------------- read_text through the Hailo double, stand-in twins
def test_read_text_drives_the_hailo_layout_end_to_end(hailo_double, cpu_models, tmp_path):
    """The shipped PaddleOCR Hailo recipes on the hailo_platform double, with twins that mark dark
    pixels as text (det) and read every crop as 'A' (rec). EMULATED: checks tiling, fixed-width
    crops, splitting and the mapping back to original pixels, not the chip."""
    from hailo_immich_cli.ocr.ctc import load_charset
    from hailo_immich_cli.models.recipes import RecipeBook
    from hailo_immich_cli.testkit.hailo_emulation import _layer_name, make_hailo_session

    book = RecipeBook.load()
    det, rec = book.get("paddle-ocr-v5-mobile-det-hailo8"), book.get("paddle-ocr-v5-mobile-rec-hailo8")
    dict_dir = tmp_path / "models" / rec.id
    dict_dir.mkdir(parents=True)
    (dict_dir / "ppocrv5_dict.txt").symlink_to(cpu_models.models_dir / "ppocrv5-mobile-rec-cpu" / "ppocrv5_dict.txt")
    seen: list = []
    det_in, det_out = _layer_name(det, det.inputs[0], "input", 0), _layer_name(det, det.outputs[0], "output", 0)
    rec_in, rec_out = _layer_name(rec, rec.inputs[0], "input", 0), _layer_name(rec, rec.outputs[0], "output", 0)
    a_class: list[int] = []

    def det_twin(inputs):
        (name, x), = inputs.items()
        seen.append(("ocr-detection", name, x.shape))
        return {det_out: (x.mean(axis=3, keepdims=True) < 100).astype(np.float32)}

    def rec_twin(inputs):
        (name, x), = inputs.items()
        seen.append(("ocr-recognition", name, x.shape))
        out = np.zeros((x.shape[0], 1, 40, 18385), np.float32)
        out[..., 0] = 1.0
        if a_class:
            out[:, 0, 2, 0], out[:, 0, 2, a_class[0]] = 0.0, 0.99
        return {rec_out: out}

    rgb = np.full((4032, 3024, 3), 235, np.uint8)
    rects = [(300, 600, 1500, 680), (300, 2000, 2600, 2060), (1200, 3800, 2900, 3900)]  # x0, y0, x1, y1
    for x0, y0, x1, y1 in rects:
        rgb[y0:y1, x0:x1] = 20
    with make_hailo_session([det, rec], {det.id: det_twin, rec.id: rec_twin}, tmp_path, book=book) as session:
        a_class.append(load_charset(session.resolve("ocr-recognition", rec.id), session.files).index("A"))
        seen.clear()  # the HEF builder ran the twins on calibration frames
        result = read_text(session, rgb, detector=det.id, recognizer=rec.id)
    assert result.detector.backend == "hailo" and result.recognizer.recipe_id == rec.id
    assert "emulated" in result.detector.device
    det_calls = [s for s in seen if s[0] == "ocr-detection"]
    rec_calls = [s for s in seen if s[0] == "ocr-recognition"]
    assert det_calls == [("ocr-detection", det_in, (result.tiles, 544, 960, 3))]
    assert result.tiles == 2
    assert all(name == rec_in and shape[1:] == (48, 320, 3) and shape[0] <= 8 for _, name, shape in rec_calls)
    # the 2300x60 bar is too long for 48x320: it is read in pieces (one 'A' each), joined without a space
    texts = [line.text for line in result.lines]
    assert texts[0] == texts[2] == "A" and len(texts[1]) >= 3 and set(texts[1]) == {"A"}
    assert sum(shape[0] for _, _, shape in rec_calls) == 2 + len(texts[1])
    for line, (x0, y0, x1, y1) in zip(result.lines, rects):  # reading order, original pixels
        # the twin marks the whole bar (DB marks a shrunk kernel), so the unclip grows it by ~60 px
        assert 0 <= x0 - line.box[0, 0] < 100 and 0 <= y0 - line.box[0, 1] < 100
        assert 0 <= line.box[2, 0] - x1 < 100 and 0 <= line.box[2, 1] - y1 < 100


# ---------------------------------------------------------------- the shipped Hailo recipes on the emulated device
@pytest.mark.slow
def test_shipped_hailo_recipes_read_text_on_the_emulated_device(hailo_double, cpu_models, tmp_path):
    """paddle-ocr-v5-mobile-{det,rec}-hailo8 through the hailo backend on the hailo_platform double, with
    the real PP-OCRv5 ONNX weights as the chip's twins (ImageNet / 127.5 normalisation as the HEFs do
    on-chip, uint8-quantised outputs). EMULATED: this checks our side of the HEF contract, not the chip."""
    import onnxruntime as ort

    from hailo_immich_cli.models.recipes import RecipeBook
    from hailo_immich_cli.testkit.hailo_emulation import _layer_name, make_hailo_session

    book = RecipeBook.load()
    det, rec = book.get("paddle-ocr-v5-mobile-det-hailo8"), book.get("paddle-ocr-v5-mobile-rec-hailo8")
    onnx_dir = cpu_models.models_dir
    det_onnx = ort.InferenceSession(str(onnx_dir / "ppocrv5-mobile-det-cpu" / "PP-OCRv5_det_mobile_infer.onnx"), providers=["CPUExecutionProvider"])
    rec_onnx = ort.InferenceSession(str(onnx_dir / "ppocrv5-mobile-rec-cpu" / "PP-OCRv5_rec_mobile_infer.onnx"), providers=["CPUExecutionProvider"])
    det_out, rec_out = _layer_name(det, det.outputs[0], "output", 0), _layer_name(rec, rec.outputs[0], "output", 0)
    mean, std = np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32)

    def det_twin(inputs):
        x = (np.asarray(next(iter(inputs.values())), np.float32) - mean) / std
        prob = det_onnx.run(None, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        return {det_out: prob.transpose(0, 2, 3, 1)}

    def rec_twin(inputs):
        x = (np.asarray(next(iter(inputs.values())), np.float32)[..., ::-1] - 127.5) / 127.5  # RGB in, BGR-trained weights
        out = rec_onnx.run(None, {"x": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]
        return {rec_out: out[:, None]}

    dict_dir = tmp_path / "models" / rec.id
    dict_dir.mkdir(parents=True)
    (dict_dir / "ppocrv5_dict.txt").symlink_to(onnx_dir / "ppocrv5-mobile-rec-cpu" / "ppocrv5_dict.txt")
    lines = ["Receipt 0042 Market Hall", "Card payment accepted"]
    portrait = render_lines(lines, (3024, 4032), font_size=40, origin=(378, 1344), spacing=2.0)
    long_line = render_lines([LONG], (40 + 19 * len(LONG), 110), font_size=32, origin=(20, 30))
    calibration = {
        det.id: {det.inputs[0].name: render_lines(lines, (960, 544), font_size=30)[None].astype(np.float32)},  # text: outputs reach 1
        rec.id: {rec.inputs[0].name: np.full((1, 48, 320, 3), 128, np.float32)},
    }
    with make_hailo_session([det, rec], {det.id: det_twin, rec.id: rec_twin}, tmp_path, book=book, calibration=calibration) as session:
        got = read_text(session, portrait, detector=det.id, recognizer=rec.id)
        wide = read_text(session, long_line, detector=det.id, recognizer=rec.id)
    assert got.detector.backend == "hailo" and got.recognizer.backend == "hailo" and "emulated" in got.detector.device
    c_portrait = cer(read_all(got.lines), normalise(" ".join(lines)))
    c_long = cer(read_all(wide.lines), LONG)
    print(f"\nemulated Hailo: portrait CER {c_portrait:.3f} ({got.tiles} tiles) {read_all(got.lines)!r}; long line CER {c_long:.3f} {read_all(wide.lines)!r}")
    assert got.tiles == 2 and c_portrait <= 0.05 and c_long <= 0.05
