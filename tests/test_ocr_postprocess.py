"""OCR post-processing on synthetic model outputs: DB boxes, orderings, CTC, and the Hailo layouts (tiles, 48x320)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.errors import ModelMismatchError
from hailo_immich_cli.ocr.pipeline import OcrLine, OcrResult, immich_response_order
from hailo_immich_cli.ocr.ctc import charset_from_lines, ctc_greedy, load_charset
from hailo_immich_cli.ocr.binarize import DbParams, db_boxes, order_and_filter
from hailo_immich_cli.ocr.detect import cut_tiles, plan_tiles, probability_maps, short_side_input, stitch
from hailo_immich_cli.ocr.order import immich_order, reading_order
from hailo_immich_cli.ocr.recognize import dynamic_batch, fixed_batch

PARAMS = DbParams(binary_threshold=0.3, box_threshold=0.5, unclip_ratio=1.6, min_size=3, max_candidates=1000, dilate=True)


def _map(h: int, w: int, rects: list[tuple[int, int, int, int, float]]) -> np.ndarray:
    prob = np.zeros((h, w), np.float32)
    for x0, y0, x1, y1, p in rects:
        prob[y0:y1, x0:x1] = p
    return prob


# ---------------------------------------------------------------- DB post-processing
def test_db_boxes_find_each_blob_grow_it_and_scale_to_destination():
    prob = _map(64, 128, [(10, 10, 60, 20, 0.9), (20, 40, 100, 52, 0.8)])
    boxes, scores = db_boxes(prob, PARAMS, dest_w=256, dest_h=128)  # destination is 2x the map
    boxes, scores = order_and_filter(boxes, scores, 256, 128)
    assert len(boxes) == 2
    by_y = boxes[np.argsort(boxes[:, 0, 1])]
    top, bottom = by_y
    # the unclip grows the shrunk DB kernel: the box is larger than the blob, in destination pixels
    assert top[0, 0] < 20 and top[1, 0] > 118 and top[0, 1] < 20 and top[3, 1] > 38
    assert bottom[0, 0] < 40 and bottom[1, 0] > 198
    # the fast score averages the map over the min-area rectangle, which includes the dilated rim
    top_score, bottom_score = scores[np.argsort(boxes[:, 0, 1])]
    assert 0.8 < top_score <= 0.9 and 0.5 < bottom_score <= 0.8


def test_db_box_threshold_and_min_size():
    prob = _map(64, 128, [(10, 10, 60, 20, 0.45), (80, 40, 82, 42, 0.95)])
    boxes, _ = db_boxes(prob, PARAMS, 128, 64)
    assert len(boxes) == 0  # first below box_threshold, second smaller than min_size
    boxes, _ = db_boxes(prob, DbParams(box_threshold=0.4), 128, 64)
    assert len(boxes) == 1


def test_db_max_candidates_caps_contours():
    prob = _map(40, 400, [(10 + 30 * i, 10, 30 + 30 * i, 25, 0.9) for i in range(10)])
    assert len(db_boxes(prob, PARAMS, 400, 40)[0]) == 10
    assert len(db_boxes(prob, DbParams(max_candidates=3), 400, 40)[0]) == 3


def test_order_and_filter_orders_corners_clips_and_drops_slivers():
    boxes = np.array([[[50, 30], [10, 30], [10, 10], [50, 10]], [[5, 5], [7, 5], [7, 40], [5, 40]], [[90, 0], [130, 0], [130, 20], [90, 20]]], np.int32)
    out, scores = order_and_filter(boxes, np.array([0.9, 0.8, 0.7], np.float32), 100, 100)
    assert out.tolist()[0] == [[10, 10], [50, 10], [50, 30], [10, 30]]
    assert out.tolist()[1] == [[90, 0], [99, 0], [99, 20], [90, 20]]  # clipped to width - 1
    assert scores.tolist() == pytest.approx([0.9, 0.7])  # the 2-px-wide sliver is gone, scores stay aligned


# ---------------------------------------------------------------- orderings
def _tl_boxes(points: list[tuple[int, int]]) -> np.ndarray:
    return np.array([[[x, y], [x + 20, y], [x + 20, y + 8], [x, y + 8]] for x, y in points], np.float32)


@pytest.mark.parametrize(
    "given, expected",
    [
        ([(99, 380), (468, 74), (71, 72)], [(99, 380), (468, 74), (71, 72)]),
        ([(468, 74), (99, 380), (71, 72)], [(99, 380), (468, 74), (71, 72)]),
        ([(468, 74), (71, 72), (99, 380)], [(71, 72), (468, 74), (99, 380)]),
    ],
)
def test_immich_order_reproduces_the_official_quirk(given, expected):
    boxes = _tl_boxes(given)
    assert [tuple(map(int, boxes[i, 0])) for i in immich_order(boxes)] == expected


def test_reading_order_is_lines_then_left_to_right():
    boxes = _tl_boxes([(99, 380), (468, 74), (71, 72)])
    assert [tuple(map(int, boxes[i, 0])) for i in reading_order(boxes)] == [(71, 72), (468, 74), (99, 380)]
    # a rotated line whose right end sits 14 px higher is still one line
    tilted = np.array([[[0, 40], [200, 30], [200, 70], [0, 80]], [[210, 26], [300, 20], [300, 60], [210, 66]], [[0, 140], [200, 140], [200, 180], [0, 180]]], np.float32)
    assert reading_order(tilted).tolist() == [0, 1, 2]


def test_immich_response_order_reports_unsorted_box_scores():
    dets = _tl_boxes([(468, 74), (99, 380), (71, 72)])
    scores = np.array([0.61, 0.72, 0.83], np.float32)
    lines = [OcrLine(t, dets[i], float(scores[i]), 0.95, i) for i, t in ((2, "a"), (0, "b"), (1, "c"))]
    prov = None
    result = OcrResult(lines, 500, 400, prov, prov, dets, scores)  # type: ignore[arg-type]
    pairs = immich_response_order(result)
    # Immich emits boxes as [(99,380), (468,74), (71,72)] but boxScore in detector order 0.61, 0.72, 0.83
    assert [line.text for line, _ in pairs] == ["c", "b", "a"]
    assert [round(s, 2) for _, s in pairs] == [0.61, 0.72, 0.83]


# ---------------------------------------------------------------- CTC
def test_ctc_collapses_repeats_drops_blanks_keeps_space_and_rounds():
    charset = charset_from_lines(["a", "b"], {"dictionary_offset": 1, "append_space": True})
    assert charset == ("<blank>", "a", "b", " ")
    steps = [1, 1, 0, 1, 3, 2, 2, 0]  # a a _ a ' ' b b _ -> "aa b"
    probs = np.full((1, len(steps), 4), 0.01, np.float32)
    for t, k in enumerate(steps):
        probs[0, t, k] = 0.9 if t != 4 else 0.712345
    [(text, score)] = ctc_greedy(probs, charset)
    assert text == "aa b"
    assert score == round(float(np.mean([0.9, 0.9, 0.71235, 0.9])), 5)
    [(empty, zero)] = ctc_greedy(np.eye(4, dtype=np.float32)[[0, 0, 0]][None], charset)
    assert (empty, zero) == ("", 0.0)


def test_ctc_rejects_a_dictionary_that_does_not_match_the_model():
    with pytest.raises(ModelMismatchError, match="classes"):
        ctc_greedy(np.zeros((1, 5, 10), np.float32), ("<blank>", "a", " "))


def test_shipped_dictionary_gives_18385_classes(recipe_book, cpu_models):
    from hailo_immich_cli.models.files import ModelFiles

    files = ModelFiles(cpu_models)
    for rid in ("ppocrv5-mobile-rec-cpu", "paddle-ocr-v5-mobile-rec-hailo8"):
        recipe = recipe_book.get(rid)
        if rid.endswith("hailo8"):  # same dictionary file, fetched for the CPU recipe
            files = _files_with(cpu_models, recipe, recipe_book.get("ppocrv5-mobile-rec-cpu"))
        charset = load_charset(recipe, files)
        assert len(charset) == 18385 and charset[0] == "<blank>" and charset[-1] == " "


def _files_with(settings, recipe, donor):
    from hailo_immich_cli.models.files import ModelFiles

    class Borrow(ModelFiles):
        def require(self, r, role="model"):
            return super().require(donor, role)

    return Borrow(settings)


def test_dictionary_from_onnx_metadata(tmp_path: Path, recipe_book):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    helper.set_model_props(model, {"character": "a\nb\nc"})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    recipe = recipe_book.get("ppocrv5-mobile-rec-en-cpu")

    class Files:
        def require(self, r, role="model"):
            assert role == "model"
            return path

    assert load_charset(recipe, Files()) == ("<blank>", "a", "b", "c", " ")


# ---------------------------------------------------------------- Hailo layouts
def test_tile_plan_covers_portrait_wide_and_landscape():
    portrait = plan_tiles(4032, 3024, 544, 960, 736, 0.7, 64)
    assert (portrait.height, portrait.width) == (981, 736) and portrait.count == 2  # full Immich resolution
    landscape = plan_tiles(3024, 4032, 544, 960, 736, 0.7, 64)
    assert landscape.count == 1 and landscape.height <= 544 and landscape.width <= 960
    assert landscape.scale >= 0.7 * 736 / 3024
    wide = plan_tiles(1800, 8000, 544, 960, 736, 0.7, 64)
    assert wide.height <= 544 and wide.count == len(wide.xs) >= 3
    assert wide.scale >= 0.7 * 736 / 1800
    full = plan_tiles(3024, 4032, 544, 960, 736, 1.0, 64)
    assert full.scale == pytest.approx(736 / 3024) and full.count == 4
    strip = plan_tiles(32, 100_000, 544, 960, 736, 0.85, 64, max_tiles=16)
    assert strip.count <= 16 and strip.width <= 16 * 960  # bounded, shrunk below min_scale if it must
    small = plan_tiles(300, 400, 544, 960, 736, 0.7, 64)
    assert (small.height, small.width, small.count) == (300, 400, 1)  # never upscaled
    for plan, (th, tw) in ((portrait, (544, 960)), (wide, (544, 960)), (full, (544, 960))):
        for origins, length, tile in ((plan.ys, plan.height, th), (plan.xs, plan.width, tw)):
            assert origins[0] == 0 and (len(origins) == 1 or origins[-1] + tile == length)
            assert all(b - a <= tile - 64 for a, b in zip(origins, origins[1:]))  # overlap >= 64


def test_tiles_stitch_back_and_a_line_across_a_seam_stays_one_box():
    """Synthetic HEF outputs: each tile's (544, 960, 1) map is the global map seen through that tile."""
    plan = plan_tiles(4032, 3024, 544, 960, 736, 0.7, 64)  # 2 tiles, seam inside rows ~430..550
    global_map = _map(plan.height, plan.width, [(100, 470, 600, 500, 0.9), (50, 100, 300, 120, 0.8), (60, 900, 400, 930, 0.85)])
    scaled = (global_map * 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    tiles = cut_tiles(scaled, plan, 544, 960)
    assert tiles.shape == (2, 544, 960, 3) and tiles.dtype == np.uint8
    hef_out = (tiles[..., :1].astype(np.float32) / 255)  # NHWC (n, 544, 960, 1), as the HEF returns it
    stitched = stitch(probability_maps(hef_out, plan.count, 544, 960), plan)
    np.testing.assert_allclose(stitched, scaled[..., 0] / np.float32(255), atol=1e-6)
    boxes, scores = db_boxes(stitched, PARAMS, 3024, 4032)
    boxes, scores = order_and_filter(boxes, scores, 3024, 4032)
    assert len(boxes) == 3  # the seam-crossing line is one box, not two
    seam_box = boxes[np.argmin(np.abs(boxes[:, 0, 1] - 470 / plan.scale))]
    assert seam_box[1, 0] - seam_box[0, 0] > 500 / plan.scale


@pytest.mark.parametrize("source", ["pillow", "array"])
def test_detector_input_is_immichs_arithmetic_bit_for_bit(recipe_book, source):
    """(BGR - mean) * (1 / std) in float32, NCHW: what Immich computes with whole-image NumPy steps."""
    from PIL import Image

    recipe = recipe_book.get("ppocrv5-mobile-det-cpu")
    rgb = np.random.default_rng(7).integers(0, 256, (700, 530, 3), dtype=np.uint8)
    image = Image.fromarray(rgb) if source == "pillow" else rgb
    got = short_side_input(image, recipe, 320)
    resized = np.asarray(Image.fromarray(rgb).resize((320, 416), Image.Resampling.LANCZOS), np.float32) if source == "pillow" else None
    if resized is None:
        from hailo_immich_cli.imaging import fast_resize

        resized = fast_resize(rgb, (320, 416)).astype(np.float32)
    pre = recipe.preprocess
    want = resized[..., ::-1] - np.asarray(pre["mean"], np.float32)
    want *= np.float32(1.0) / np.asarray(pre["std"], np.float32)
    want = want.transpose(2, 0, 1)[None]
    assert got.shape == (1, 3, 416, 320) and got.dtype == np.float32 and got.flags.c_contiguous
    assert np.array_equal(got.view(np.uint32), np.ascontiguousarray(want).view(np.uint32))


def test_hailo_detector_output_in_nchw_is_accepted_too():
    maps = np.random.default_rng(0).random((3, 1, 544, 960), dtype=np.float32)
    assert probability_maps(maps, 3, 544, 960).shape == (3, 544, 960)


def test_fixed_recogniser_batch_is_48x320_uint8_right_padded(recipe_book):
    recipe = recipe_book.get("paddle-ocr-v5-mobile-rec-hailo8")
    crops = [np.full((30, 90, 3), 10, np.uint8), np.full((20, 400, 3), 200, np.uint8)]
    batch = fixed_batch(crops, recipe)
    assert batch.shape == (2, 48, 320, 3) and batch.dtype == np.uint8
    assert (batch[0, :, :144] == 10).all() and (batch[0, :, 144:] == 128).all()  # ceil(48*3) = 144, then pad 128
    assert (batch[1] == 200).all()  # a wide crop is squeezed to 320


def test_dynamic_recogniser_batch_matches_immich_layout(recipe_book):
    recipe = recipe_book.get("ppocrv5-mobile-rec-cpu")
    crops = [np.full((30, 90, 3), 255, np.uint8), np.full((20, 300, 3), 0, np.uint8)]
    batch = dynamic_batch(crops, recipe)
    assert batch.shape == (2, 3, 48, 720) and batch.dtype == np.float32  # 48 * 15 (widest ratio)
    assert np.allclose(batch[0, :, :, :144], 1.0) and np.allclose(batch[0, :, :, 144:], 0.0)
    assert np.allclose(batch[1], -1.0)


def test_hailo_recogniser_output_shape_decodes(recipe_book):
    charset = charset_from_lines([chr(0x4E00 + i) for i in range(18383)], recipe_book.get("paddle-ocr-v5-mobile-rec-hailo8").postprocess)
    out = np.zeros((8, 1, 40, 18385), np.float32)  # as the HEF returns it (softmax on-chip)
    out[..., 0] = 1.0
    out[0, 0, 3, 0], out[0, 0, 3, 1] = 0.0, 0.97
    out[0, 0, 5, 0], out[0, 0, 5, 18384] = 0.0, 0.93
    out[0, 0, 7, 0], out[0, 0, 7, 2] = 0.0, 0.99
    decoded = ctc_greedy(out.reshape(8, -1, 18385), charset)
    assert decoded[0] == (charset[1] + " " + charset[2], round(float(np.mean([0.97, 0.93, 0.99])), 5))
    assert decoded[1] == ("", 0.0)
