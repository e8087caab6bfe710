"""The exact host path's speed-ups change no pixel: Pillow's resize done pass by pass (its horizontal
pass on row bands in threads) equals Pillow's own call, and the one-pass host normalisation equals
the plain float32 expression, bit for bit."""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.imaging import decode_image, pil_resize
from hailo_immich_cli.tensors import image_input


def _photo(photos, size):
    import cv2

    return Image.fromarray(cv2.resize(photos["astronaut"], size, interpolation=cv2.INTER_CUBIC))


@pytest.mark.parametrize("size", [(1440, 1920), (1920, 1440), (601, 1733), (2000, 700), (300, 200)])
@pytest.mark.parametrize("target,resample", [((224, 298), Image.Resampling.BICUBIC), ((736, 992), Image.Resampling.LANCZOS),
                                             ((64, 40), Image.Resampling.BICUBIC)])
def test_pil_resize_is_pillows_resize(photos, size, target, resample):
    img = _photo(photos, size)
    np.testing.assert_array_equal(np.asarray(pil_resize(img, target, resample)), np.asarray(img.resize(target, resample)))


@pytest.mark.parametrize("size", [(1440, 1920), (601, 1733), (225, 5000), (1000, 1001), (1920, 1440), (50, 80)])
@pytest.mark.parametrize("side,resample", [(224, Image.Resampling.BICUBIC), (336, Image.Resampling.BICUBIC),
                                           (256, Image.Resampling.LANCZOS), (224, Image.Resampling.BILINEAR)])
def test_kept_rows_are_pillows_pixels(size, side, resample):
    """A horizontal pass over only the rows the kept output rows read: the crop Immich takes is
    unchanged, on noise (where any missing source row would show)."""
    w, h = size
    img = Image.fromarray(np.random.default_rng(w * h).integers(0, 256, (h, w, 3), dtype=np.uint8))
    new = (side, int(h / w * side)) if w < h else (int(w / h * side), side)
    left, upper = int(new[0] / 2 - side / 2), int(new[1] / 2 - side / 2)
    box = (left, upper, left + side, upper + side)
    want = np.asarray(img.resize(new, resample).crop(box))
    np.testing.assert_array_equal(np.asarray(pil_resize(img, new, resample, keep_rows=(upper, upper + side)).crop(box)), want)


def test_pil_resize_under_concurrent_calls(photos):
    """Concurrent calls take the single-thread route (the cores are busy): the same pixels either way."""
    img = _photo(photos, (1440, 1920))
    want = np.asarray(img.resize((224, 298), Image.Resampling.BICUBIC))
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: np.asarray(pil_resize(img, (224, 298), Image.Resampling.BICUBIC)), range(8)))
    for g in got:
        np.testing.assert_array_equal(g, want)


def _plain(batch: np.ndarray, recipe) -> np.ndarray:
    pre = recipe.preprocess
    x = batch[..., ::-1] if pre.get("color", "RGB") == "BGR" else batch
    mean = np.asarray(pre.get("mean", [0.0, 0.0, 0.0]), np.float32)
    std = np.asarray(pre.get("std", [1.0, 1.0, 1.0]), np.float32)
    x = (x.astype(np.float32) * np.float32(pre.get("scale", 1.0)) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("recipe_id", ["buffalo_l-detection-cpu", "clip-vit-b32-openai-visual-cpu", "centerface-cpu"])
@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_host_normalisation_equals_the_plain_expression(recipe_book, recipe_id, color):
    recipe = recipe_book.get(recipe_id)
    recipe = dataclasses.replace(recipe, preprocess={**recipe.preprocess, "color": color})
    batch = np.random.default_rng(3).integers(0, 256, (2, 96, 80, 3), dtype=np.uint8)
    got = image_input(batch, recipe)
    assert got.dtype == np.float32 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, _plain(batch, recipe))


def test_kept_pillow_image_and_its_array_are_one_decode(photos):
    import io

    buf = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(buf, "JPEG", quality=80)
    kept = decode_image(buf.getvalue(), keep_pil=True)
    assert kept.pil is not None and kept.size == (600, 400)
    assert kept.rgb is kept.rgb  # made once, on first use
    np.testing.assert_array_equal(kept.rgb, decode_image(buf.getvalue()).rgb)


def _jpeg_variants(photos):
    import io

    import cv2

    bgr = photos["astronaut"][..., ::-1]
    for size in [(1440, 1920), (333, 517), (17, 9)]:
        img = Image.fromarray(photos["astronaut"]).resize(size)
        for subsampling in (0, 1, 2):
            for progressive in (False, True):
                buf = io.BytesIO()
                img.save(buf, "JPEG", quality=80, subsampling=subsampling, progressive=progressive)
                yield f"{size} subsampling={subsampling} progressive={progressive}", buf.getvalue()
    for name in ("411", "440"):
        factor = getattr(cv2, f"IMWRITE_JPEG_SAMPLING_FACTOR_{name}")
        ok, enc = cv2.imencode(".jpg", cv2.resize(bgr, (333, 517)), [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, factor, cv2.IMWRITE_JPEG_RST_INTERVAL, 3])
        yield f"{name} with restart markers", enc.tobytes()
    buf = io.BytesIO()
    Image.fromarray(photos["astronaut"]).convert("L").save(buf, "JPEG")
    yield "greyscale", buf.getvalue()


def test_exact_jpeg_decode_is_pillows_decode(photos):
    """Array consumers get JPEGs decoded by libjpeg-turbo through simplejpeg: bit for bit Pillow's pixels."""
    import io

    for label, data in _jpeg_variants(photos):
        decoded = decode_image(data)
        want = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert decoded.pil is None, label  # not through Pillow
        np.testing.assert_array_equal(decoded.rgb, want, err_msg=label)


def test_a_jpeg_simplejpeg_refuses_is_decoded_by_pillow(photos):
    import io

    buf = io.BytesIO()
    Image.fromarray(photos["coffee"]).convert("CMYK").save(buf, "JPEG")
    decoded = decode_image(buf.getvalue())
    assert decoded.size == (600, 400)
    np.testing.assert_array_equal(decoded.rgb, np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))