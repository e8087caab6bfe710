"""Each pipeline step against the constants of Immich's service (research/immich-protocol.md §5) on
golden inputs whose answers are worked out by hand here, not by running our own code."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.clip.pipeline import prepare_images, resize_for_clip
from hailo_immich_cli.faces.align import similarity_transform
from hailo_immich_cli.faces.detect import plan_letterbox
from hailo_immich_cli.models.recipes import RecipeBook, clean_immich_name
from hailo_immich_cli.tensors import image_input
from hailo_immich_cli.clip.tokenizers import HfJsonTokenizer, clean_text
from hailo_immich_cli.testkit.clip_models import clip_tokenizer_json, write_json
from tests.helpers.faces import ARCFACE_TEMPLATE
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)


@pytest.fixture(scope="module")
def book() -> RecipeBook:
    return RecipeBook.load()


# ---- §2.3 model names ------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,clean", [
    ("immich-app/ViT-B-32::openai", "ViT-B-32__openai"),
    ("ViT-B-32__openai", "ViT-B-32__openai"),
    ("nllb-clip-base-siglip__v1", "nllb-clip-base-siglip__v1"),
    ("immich-app/ViT-SO400M-14-SigLIP2-378__webli", "ViT-SO400M-14-SigLIP2-378__webli"),
    ("a\\b:c.d", "a_b_cd"),
])
def test_model_name_cleaning(raw, clean):
    assert clean_immich_name(raw) == clean


# ---- §5.3 text: cleaning, tokenizer.json, padding -------------------------------------------------


def test_text_cleaning():
    assert clean_text("test   search\tquery\n") == "test search query"
    assert clean_text("Test,  search query!", canonicalize=True) == "test search query"
    assert clean_text("snake_case", canonicalize=True) == "snakecase", "Immich removes '_' rather than spacing it"


def test_tokenizer_json_golden_ids_and_round_trip(tmp_path, clip_assets):  # noqa: F811
    tok_json = clip_tokenizer_json(clip_assets["bpe_simple_vocab_16e6.txt.gz"], tmp_path / "tokenizer.json")
    cfg = write_json(tmp_path / "tokenizer_config.json", {"pad_token": "<|endoftext|>"})
    tok = HfJsonTokenizer(tok_json, cfg, context_length=77)
    ids = tok(["A   photo of a CAT"])[0]
    # OpenAI CLIP's ids: <|startoftext|>=49406, a=320, photo=1125, of=539, cat=2368, <|endoftext|>=49407 (also the pad).
    assert ids[:7].tolist() == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (ids[7:] == 49407).all() and ids.shape == (77,)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(tok_json))
    words = "".join(vocab.id_to_token(int(i)) for i in ids[1:6]).replace("</w>", " ").strip()
    assert words == "a photo of a cat", "ids map back to the cleaned, lower-cased text"
    long = tok(["word " * 200])[0]
    assert long[0] == 49406 and long[-1] == 49407 and len(long) == 77, "truncation keeps SOT and EOT"


# ---- §5.2 CLIP visual --------------------------------------------------------------------------------


def test_clip_shortest_side_and_int_centre_crop():
    # 301 x 200 (w x h): shorter side 200 -> 224, width int(301 / 200 * 224) = int(337.12) = 337;
    # crop left = int(337 / 2 - 112) = int(56.5) = 56. A vertical edge at x = 150 of the original lands at
    # 150 * 337 / 301 = 167.9 in the resized image, so at 111.9 in the crop.
    rgb = np.zeros((200, 301, 3), np.uint8)
    rgb[:, 150:] = 255
    out = resize_for_clip(rgb, {"size": 224, "resize": "shortest-crop", "interpolation": "bicubic"})
    assert out.shape == (224, 224, 3)
    row = out[100, :, 0].astype(int)
    assert row[:108].max() == 0 and row[116:].min() == 255
    assert 0 < row[111] < 255 or 0 < row[112] < 255, "the edge sits between columns 111 and 112"


def test_clip_normalisation(book):
    recipe = book.get("clip-vit-b32-openai-visual-cpu")
    feed = prepare_images(recipe, [np.full((50, 80, 3), (10, 128, 250), np.uint8)])
    assert feed.shape == (1, 3, 224, 224) and feed.dtype == np.float32
    mean, std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    for c, v in enumerate((10, 128, 250)):
        assert feed[0, c, 0, 0] == pytest.approx((v / 255.0 - mean[c]) / std[c], abs=1e-6)
        assert np.ptp(feed[0, c]) == 0


# ---- §5.4 face detection -----------------------------------------------------------------------------


@pytest.mark.parametrize("h,w,new_w,new_h", [
    (600, 800, 640, 480),   # landscape: new_w = 640, new_h = int(640 * 0.75)
    (333, 500, 640, 426),   # int(640 * 0.666) = int(426.24)
    (1000, 700, 448, 640),  # portrait: new_w = int(640 / (1000 / 700)) = 448
    (1000, 699, 447, 640),  # int(447.36)
    (100, 100, 640, 640),   # small images are upscaled
])
def test_face_letterbox(book, h, w, new_w, new_h):
    box = plan_letterbox(h, w, book.get("buffalo_l-detection-cpu"), None)
    assert (box.new_w, box.new_h, box.canvas_w, box.canvas_h, box.pad_x, box.pad_y) == (new_w, new_h, 640, 640, 0, 0)
    assert box.scale == new_h / h, "InsightFace's det_scale = new_h / h"


def test_face_detector_normalisation(book):
    recipe = book.get("buffalo_l-detection-cpu")
    x = image_input(np.array([[[[0, 127, 255]]]], np.uint8), recipe)
    # RGB kept (blobFromImage swapRB on BGR), (x - 127.5) / 128, NCHW.
    np.testing.assert_allclose(x[0, :, 0, 0], [-127.5 / 128, -0.5 / 128, 127.5 / 128], atol=1e-7)


# ---- §5.5 face alignment and normalisation ------------------------------------------------------------


def test_similarity_transform_known_scale_and_shift():
    src = ARCFACE_TEMPLATE * 0.5 + np.array([100.0, 50.0])
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, [[2.0, 0.0, -200.0], [0.0, 2.0, -100.0]], atol=1e-9)


def test_similarity_transform_known_rotation():
    # The template turned by +90 degrees about the origin: (x, y) -> (-y, x). The inverse rotation maps it back.
    src = np.stack([-ARCFACE_TEMPLATE[:, 1], ARCFACE_TEMPLATE[:, 0]], axis=1)
    m = similarity_transform(src, ARCFACE_TEMPLATE)
    np.testing.assert_allclose(m, [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]], atol=1e-9)


def test_face_recogniser_normalisation(book):
    recipe = book.get("buffalo_l-recognition-cpu")
    assert recipe.preprocess["crop_size"] == 112
    np.testing.assert_allclose(recipe.preprocess["align_template"], ARCFACE_TEMPLATE)
    x = image_input(np.array([[[[0, 127, 255]]]], np.uint8), recipe)
    np.testing.assert_allclose(x[0, :, 0, 0], [-1.0, -0.5 / 127.5, 1.0], atol=1e-7)


# ---- §5.6 OCR detection normalisation ---------------------------------------------------------------


def test_ocr_detector_normalisation(book):
    recipe = book.get("ppocrv5-mobile-det-cpu")
    x = image_input(np.array([[[[0, 100, 255]]]], np.uint8), recipe)
    # BGR order, then Immich's (x - 0.5) / 127.5 on 0..255 (not RapidOCR's (x/255 - 0.5) / 0.5).
    np.testing.assert_allclose(x[0, :, 0, 0], [254.5 / 127.5, 99.5 / 127.5, -0.5 / 127.5], atol=1e-6)


def test_recipes_hold_the_immich_constants(book):
    det = book.get("buffalo_l-detection-cpu")
    assert det.postprocess["nms_threshold"] == 0.4 and det.postprocess["nms_plus_one"] is True
    assert det.postprocess["score_threshold"] == 0.7 and det.preprocess["size"] == [640, 640]
    ocr = book.get("ppocrv5-mobile-det-cpu")
    assert (ocr.postprocess["binary_threshold"], ocr.postprocess["unclip_ratio"], ocr.postprocess["box_threshold"]) == (0.3, 1.6, 0.5)
    assert ocr.postprocess["dilate"] is True and ocr.preprocess["max_resolution"] == 736
