"""The exact host path's speed-ups change no pixel: Pillow's resize done pass by pass (on row and
column bands in threads) equals Pillow's own call, OCR line crops spread over threads are Pillow's
own transforms, and the one-pass host normalisation equals the plain float32 expression, bit for bit."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli.imaging import decode_image, pil_map, pil_resize
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


@pytest.mark.parametrize("size,target,resample", [((1440, 1920), (736, 992), Image.Resampling.LANCZOS),
                                                  ((2001, 1501), (1001, 751), Image.Resampling.BICUBIC),
                                                  ((1500, 3000), (999, 1400), Image.Resampling.LANCZOS)])
def test_row_and_column_bands_are_pillows_pixels_on_noise(size, target, resample):
    """Large enough that both passes run on bands in parallel (odd widths put band edges mid-filter):
    on noise, any pixel taken from the wrong row or column would show."""
    w, h = size
    img = Image.fromarray(np.random.default_rng(w + h).integers(0, 256, (h, w, 3), dtype=np.uint8))
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


def test_pil_map_keeps_order_and_shares_the_work():
    import threading

    threads: set[str] = set()

    def work(side: int) -> np.ndarray:
        threads.add(threading.current_thread().name)
        return np.asarray(Image.new("L", (side, side), side % 256).resize((side // 2, side // 2), Image.Resampling.LANCZOS))

    sides = [600, 40, 900, 300, 700, 20]
    got = pil_map(work, sides, sum(s * s for s in sides))
    assert [g.shape[0] for g in got] == [s // 2 for s in sides] and [int(g[0, 0]) for g in got] == [s % 256 for s in sides]
    if (os.cpu_count() or 1) >= 2:
        assert len(threads) >= 2  # a lone caller hands items to the pool's thread too


def test_pil_map_raises_the_failure_and_stops_handing_out_work():
    import time

    done: list[int] = []

    def work(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        time.sleep(0.01)
        done.append(i)
        return i

    with pytest.raises(ValueError, match="item 3"):
        pil_map(work, list(range(40)), 10**6)
    settled = len(done)
    time.sleep(0.1)
    assert len(done) == settled < 39  # nothing still running after the call, the rest never started


def test_ocr_line_crops_are_pillows_transforms_under_concurrent_requests():
    """Crops spread over threads are each Pillow's own transform, alone or with other requests running."""
    from hailo_immich_cli.ocr.recognize import _quad_warps, crop_lines

    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (1200, 900, 3), dtype=np.uint8))
    boxes = np.array([[[50, 100], [850, 130], [845, 210], [45, 180]], [[60, 300], [700, 300], [700, 360], [60, 360]],
                      [[400, 400], [460, 400], [460, 700], [400, 700]], [[100, 800], [880, 760], [885, 840], [105, 880]]], np.float32)
    want = []
    for c, w, h in _quad_warps(boxes):
        crop = np.asarray(img.transform((w, h), Image.Transform.PERSPECTIVE, tuple(c.tolist()), Image.Resampling.BICUBIC))
        want.append(np.rot90(crop) if h / w >= 1.5 else crop)
    with ThreadPoolExecutor(3) as pool:
        runs = [crop_lines(img, boxes)] + list(pool.map(lambda _: crop_lines(img, boxes), range(3)))
    for got in runs:
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


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