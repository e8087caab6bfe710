"""The fast host path (HAILO_IMMICH_HOST_PATH=fast): JPEGs decoded DCT-scaled to a size that still
covers every model input of the request twice, boxes answered in full-resolution pixels, and
answers close to the exact path's on real photos with the CPU models (generous bounds; the
measured agreement is in docs/bench.md). Speed is measured by scripts/bench_host_path.py, not here."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hailo_immich_cli import host_path
from hailo_immich_cli.bench import host_paths as host_bench
from hailo_immich_cli.errors import BadInputError
from hailo_immich_cli.faces.pipeline import analyze_faces, full_size
from hailo_immich_cli.faces.task import box_iou
from hailo_immich_cli.imaging import decode_image
from hailo_immich_cli.server.predict import run_plan
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.immich_cache import CLIP_MODELS, build_cache
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)

CACHE_STAGES = {"clip": {"clip-visual": "ViT-B-32__openai"},
                "faces": {"face-detection": "buffalo_l", "face-recognition": "buffalo_l"},
                "ocr": {"ocr-detection": "PP-OCRv5_mobile", "ocr-recognition": "PP-OCRv5_mobile"}}


def preview(rgb: np.ndarray, size: tuple[int, int], quality: int = 80) -> bytes:
    """A photo scaled to (w, h) and saved as JPEG, like an Immich preview."""
    import cv2

    buf = io.BytesIO()
    Image.fromarray(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="module")
def cache(tmp_path_factory, clip_assets, cpu_models) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("host-path-cache") / "cache"
    return build_cache(root, clip_assets["bpe_simple_vocab_16e6.txt.gz"], Path(cpu_models.models_dir),
                       clip=CLIP_MODELS[:1], packs=("buffalo_l",))


@pytest.fixture(scope="module")
def cache_session(cache, tmp_path_factory):
    settings = Settings.load(env={}, backend="cpu", models_dir=tmp_path_factory.mktemp("no-models"), immich_cache_folder=cache)
    with SessionManager(settings) as session:
        yield session


def stages_of(session, task: str):
    return {t: session.resolve(t, name) for t, name in CACHE_STAGES[task].items()}


# ---- the setting ---------------------------------------------------------------------------------


def test_setting_default_is_fast_on_hailo_and_exact_on_cpu():
    assert Settings.load(env={}).host_path == "auto"
    assert host_path.resolve("auto", "hailo") == "fast" and host_path.resolve("auto", "cpu") == "exact"
    assert Settings.load(env={"HAILO_IMMICH_HOST_PATH": "fast"}).host_path == "fast"
    assert host_path.resolve("exact", "hailo") == "exact" and host_path.resolve("fast", "cpu") == "fast"
    with pytest.raises(BadInputError, match="HAILO_IMMICH_HOST_PATH"):
        Settings.load(env={"HAILO_IMMICH_HOST_PATH": "quick"})


def test_health_names_the_host_path(cache, tmp_path):
    from hailo_immich_cli.server.app import health_report
    from hailo_immich_cli.server.state import ServerState

    for setting, path in (("auto", "exact"), ("fast", "fast")):
        settings = Settings.load(env={}, backend="cpu", models_dir=tmp_path, immich_cache_folder=cache, host_path=setting)
        state = ServerState(settings)
        try:
            assert health_report(state)["host_path"] == {"setting": setting, "path": path}
        finally:
            state.session.close()


# ---- decoded size ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1440, 1920), (1920, 1440), (3024, 4032), (600, 800), (4000, 1000)])
@pytest.mark.parametrize("task", ["clip", "faces", "ocr"])
def test_decoded_size_covers_every_model_input_twice(cache_session, photos, size, task):
    data = preview(photos["astronaut"], size)
    stages = [(r, {}) for r in stages_of(cache_session, task).values()]
    decoded = host_path.decode(data, stages, "fast", cache_session.settings.max_image_pixels)
    w, h = decoded.size
    assert (decoded.width, decoded.height) == size and decoded.pil is None
    scale = max(host_path.model_scale(r, *size) for r, _ in stages)
    # every model input pixel has at least two decoded pixels behind it (or the image is decoded whole)
    assert (w, h) == size or min(w, h) >= host_path.MARGIN * scale * min(size) - 1
    # ...and the decode is as small as the JPEG's DCT scales allow: half of it would not cover the model twice
    assert min(w, h) // 2 < host_path.MARGIN * scale * min(size)
    assert abs(decoded.reduction - size[0] / w) < 1e-9 and w * decoded.reduction == size[0]


def test_clip_preview_decodes_at_half_size_and_exact_decodes_whole(cache_session, photos):
    data = preview(photos["astronaut"], (1440, 1920))
    stages = [(r, {}) for r in stages_of(cache_session, "clip").values()]
    fast = host_path.decode(data, stages, "fast", cache_session.settings.max_image_pixels)
    exact = host_path.decode(data, stages, "exact", cache_session.settings.max_image_pixels)
    assert fast.size == (720, 960) and fast.reduction == 2.0
    assert exact.size == (1440, 1920) and exact.reduction == 1.0
    assert exact.pil is not None  # Immich's CLIP resize is Pillow's: the decoder's own image is kept
    np.testing.assert_array_equal(exact.rgb, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def test_non_jpeg_and_bad_bytes_on_the_fast_path(cache_session, photos):
    buf = io.BytesIO()
    Image.fromarray(photos["coffee"]).save(buf, "PNG")
    stages = [(r, {}) for r in stages_of(cache_session, "clip").values()]
    png = host_path.decode(buf.getvalue(), stages, "fast", cache_session.settings.max_image_pixels)
    assert png.size == (600, 400) and png.format == "PNG"  # only JPEGs are DCT-scaled
    with pytest.raises(BadInputError):
        host_path.decode(preview(photos["coffee"], (800, 600))[:2000], stages, "fast", cache_session.settings.max_image_pixels)


# ---- boxes in full-resolution pixels -----------------------------------------------------------------


def _answer(session, task, data, path):
    stages = stages_of(session, task)
    decoded = host_path.decode(data, [(r, {}) for r in stages.values()], path, session.settings.max_image_pixels)
    return decoded, json.loads(run_plan(session, host_bench.request_plan(task, stages), decoded, None, path).body)


def test_face_boxes_come_back_in_full_resolution_pixels(cache_session, photos):
    """The buffalo_l stand-in finds its planted faces at fixed detector-canvas positions, whatever the
    pixels, so the exact answer is the reference for where they are in the full-size image."""
    data = preview(photos["astronaut"], (3024, 4032))
    fast_image, fast = _answer(cache_session, "faces", data, "fast")
    _, exact = _answer(cache_session, "faces", data, "exact")
    assert fast_image.reduction == 2.0  # really decoded smaller
    assert (fast["imageWidth"], fast["imageHeight"]) == (3024, 4032)
    assert len(fast["facial-recognition"]) == len(exact["facial-recognition"]) == 3
    for f, e in zip(fast["facial-recognition"], exact["facial-recognition"]):
        for key in ("x1", "y1", "x2", "y2"):
            assert abs(f["boundingBox"][key] - e["boundingBox"][key]) <= 2 * fast_image.reduction


def test_real_faces_on_a_reduced_decode_map_back(cpu_session, photos):
    """CenterFace (real weights) on a DCT-scaled decode: mapped boxes and landmarks land on the
    full-resolution detection of the same photo."""
    data = preview(photos["astronaut"], (3072, 3072))
    reduced = decode_image(data, decoder="fast", draft_min_side=1000)
    full = decode_image(data)
    assert reduced.reduction == 2.0
    small = analyze_faces(cpu_session, reduced.rgb, detector="centerface-cpu", embed=False)
    big = analyze_faces(cpu_session, full.rgb, detector="centerface-cpu", embed=False)
    mapped = full_size(small.faces, reduced.reduction)
    assert len(big.faces) >= 1 and len(mapped) == len(big.faces)
    for m, b in zip(mapped, big.faces):
        assert box_iou(dict(zip(("x1", "y1", "x2", "y2"), m.box)), dict(zip(("x1", "y1", "x2", "y2"), b.box))) > 0.8
        assert np.abs(m.landmarks - b.landmarks).max() < 0.05 * (b.box[2] - b.box[0])


# ---- fast vs exact on real photos (generous bounds) --------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "camera"])
def test_fast_clip_and_faces_agree_with_exact(cache_session, photos, name):
    for size in ((1440, 1920), (1920, 1440)):
        data = preview(photos[name], size)
        clip = host_bench.agreement(cache_session, "clip", stages_of(cache_session, "clip"), data)
        assert clip["cosine"] >= 0.995, (name, size, clip)
        faces = host_bench.agreement(cache_session, "faces", stages_of(cache_session, "faces"), data)
        assert faces["fast_faces"] == faces["exact_faces"] and faces["min_iou"] >= 0.9, (name, size, faces)


@pytest.mark.slow
def test_fast_ocr_reads_what_exact_reads(cache_session):
    from hailo_immich_cli.testkit.ocr_samples import render_lines

    lines = ["Receipt 0042 Market Hall", "2 coffee 7.20 EUR", "Card payment accepted", "Thank you and goodbye"]
    for size in ((1440, 1920), (1920, 1440)):
        rgb = render_lines(lines, size, font_size=44, origin=(size[0] // 8, size[1] // 3), spacing=2.0)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=80)
        ocr = host_bench.agreement(cache_session, "ocr", stages_of(cache_session, "ocr"), buf.getvalue())
        assert ocr["exact_lines"] >= 3 and ocr["lines_matched"] >= 0.75, (size, ocr)


# ---- a real server on the fast path -------------------------------------------------------------------


@pytest.mark.slow
def test_server_on_the_fast_path_says_so_and_answers_full_size_boxes(cache, cache_session, photos, tmp_path):
    from tests.helpers.immich_server import start_server, stop_server

    srv = start_server(tmp_path, {"HAILO_IMMICH_MODELS_DIR": str(tmp_path / "no-models"), "MACHINE_LEARNING_CACHE_FOLDER": str(cache),
                                  "HAILO_IMMICH_HOST_PATH": "fast"})
    try:
        assert srv.get("/health").json()["host_path"] == {"setting": "fast", "path": "fast"}
        data = preview(photos["astronaut"], (3024, 4032))
        r = srv.predict({"facial-recognition": {"detection": {"modelName": "buffalo_l", "options": {"minScore": 0.7}},
                                                "recognition": {"modelName": "buffalo_l"}}}, image=data)
        assert r.status_code == 200, r.text
        body = r.json()
        _, exact = _answer(cache_session, "faces", data, "exact")
        assert (body["imageWidth"], body["imageHeight"]) == (3024, 4032)
        assert len(body["facial-recognition"]) == len(exact["facial-recognition"]) == 3
        for f, e in zip(body["facial-recognition"], exact["facial-recognition"]):
            assert all(abs(f["boundingBox"][k] - e["boundingBox"][k]) <= 4 for k in ("x1", "y1", "x2", "y2"))
        assert any("POST /predict 200 tasks=facial-recognition path=fast " in line for line in srv.log().splitlines())
    finally:
        stop_server(srv)
