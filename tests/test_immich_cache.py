"""An existing Immich ML cache used as it is: every model in it usable by its Immich name, with the
numbers Immich's service computes (checked against independent reference code written from §5 of
research/immich-protocol.md), through the pipelines and through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from hailo_immich_cli.clip.pipeline import encode_images, encode_texts, tokenize
from hailo_immich_cli.errors import UnknownModelError
from hailo_immich_cli.faces.embed import cosine_similarity
from hailo_immich_cli.faces.pipeline import analyze_faces
from hailo_immich_cli.models.files import HASH_CACHE_NAME
from hailo_immich_cli.models.immich_cache import load_recipe_book, scan_cache, scan_folder
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.face_models import blob_image
from tests.helpers.faces import reference_immich_detect, reference_immich_embed
from hailo_immich_cli.testkit.immich_cache import CLIP_MODELS, build_cache
from tests.test_clip import clip_assets  # noqa: F401  (session fixture)

REPO = Path(__file__).resolve().parent.parent
SPECS = {s.name: s for s in CLIP_MODELS}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, clip_assets, cpu_models) -> Path:  # noqa: F811
    root = tmp_path_factory.mktemp("immich-cache") / "cache"
    return build_cache(root, clip_assets["bpe_simple_vocab_16e6.txt.gz"], Path(cpu_models.models_dir))


@pytest.fixture(scope="module")
def empty_models(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("empty-models")


def cache_settings(cache: Path, models_dir: Path, **overrides) -> Settings:
    return Settings.load(env={}, backend="cpu", models_dir=models_dir, immich_cache_folder=cache, **overrides)


@pytest.fixture()
def session(cache, empty_models):
    with SessionManager(cache_settings(cache, empty_models)) as s:
        yield s


def inside(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


# ---- what the scan finds ------------------------------------------------------------------------


def test_scan_lists_every_model_folder(cache):
    found = {(m.task_dir, m.name, m.type) for m in scan_folder(cache)}
    for spec in CLIP_MODELS:
        assert {("clip", spec.name, "visual"), ("clip", spec.name, "textual")} <= found
    for pack in ("buffalo_l", "buffalo_m", "buffalo_s", "antelopev2"):
        assert {("facial-recognition", pack, "detection"), ("facial-recognition", pack, "recognition")} <= found
    assert ("ocr", "PP-OCRv5_mobile", "detection") in found and ("ocr", "EN__PP-OCRv5_mobile", "recognition") in found
    assert ("ocr", "EN__PP-OCRv5_mobile", "detection") not in found, "Immich keeps one detector under the short name"


def test_shipped_recipes_run_from_the_cache_and_the_rest_is_synthesised(cache, empty_models):
    scan = scan_cache(RecipeBook.load(), cache_settings(cache, empty_models))
    assert scan.covered["facial-recognition/buffalo_l/detection"] == "buffalo_l-detection-cpu"
    assert scan.covered["facial-recognition/antelopev2/recognition"] == "antelopev2-recognition-cpu"
    assert scan.covered["clip/ViT-B-32__openai/visual"] == "clip-vit-b32-openai-visual-cpu"
    assert scan.covered["ocr/PP-OCRv5_mobile/detection"] == "ppocrv5-mobile-det-cpu"
    assert scan.covered["ocr/EN__PP-OCRv5_mobile/recognition"] == "ppocrv5-mobile-rec-en-cpu"
    assert scan.covered["ocr/PP-OCRv5_server/detection"] == "ppocrv5-server-det-cpu"
    assert scan.covered["ocr/PP-OCRv5_server/recognition"] == "ppocrv5-server-rec-cpu"
    ids = {r.id for r in scan.recipes}
    assert {"immich-ViT-L-14-336__openai-visual", "immich-ViT-L-14-336__openai-textual",
            "immich-ViT-B-16-SigLIP2__webli-visual", "immich-ViT-B-16-SigLIP2__webli-textual"} <= ids
    # The shipped PP-OCRv5 recogniser needs its dictionary file, which an Immich cache does not have:
    # the cache's own file (dictionary in its metadata) serves the name instead.
    assert "immich-PP-OCRv5_mobile-recognition" in ids
    assert not scan.skipped
    assert all(r.backend == "cpu" and not r.default for r in scan.recipes)


def test_synthesised_clip_recipe_takes_the_folder_facts(cache, empty_models):
    book = load_recipe_book(cache_settings(cache, empty_models))
    visual = book.get("immich-ViT-L-14-336__openai-visual")
    assert visual.immich_names == ("ViT-L-14-336__openai",) and visual.task == "clip-visual"
    assert visual.embedding_dim == 768 and visual.preprocess["size"] == 336
    assert visual.preprocess["resize"] == "shortest-crop" and visual.preprocess["interpolation"] == "bicubic"
    assert visual.raw["clip"]["pair"] == "immich-ViT-L-14-336__openai-textual"
    assert visual.file("model").immich_path == "clip/ViT-L-14-336__openai/visual/model.onnx"
    siglip_text = book.get("immich-ViT-B-16-SigLIP2__webli-textual")
    assert siglip_text.raw["tokenizer"]["context_length"] == 64 and siglip_text.raw["tokenizer"]["canonicalize"] is True
    assert book.get("immich-ViT-B-16-SigLIP2__webli-visual").preprocess["mean"] == [0.5, 0.5, 0.5]


def test_nothing_is_copied(cache, empty_models, session, photos):
    encode_images(session, [photos["astronaut"]], model="ViT-L-14-336__openai")
    # no model file is copied; only the note of the cache files' hashes (models/files.py) is kept
    assert [p.name for p in empty_models.iterdir()] in ([], [HASH_CACHE_NAME])


def test_no_cache_no_synthesised_recipes(empty_models):
    book = load_recipe_book(Settings.load(env={}, backend="cpu", models_dir=empty_models))
    assert not any(r.id.startswith("immich-") for r in book)


def test_a_broken_folder_is_skipped_with_a_reason(tmp_path, cache, empty_models):
    bad = tmp_path / "cache"
    (bad / "clip" / "Broken__model" / "visual").mkdir(parents=True)
    (bad / "clip" / "Broken__model" / "visual" / "model.onnx").write_bytes(b"x")
    (bad / "clip" / "Broken__model" / "visual" / "preprocess_cfg.json").write_text("{not json")
    (bad / "clip" / "Broken__model" / "config.json").write_text('{"embed_dim": 512}')
    scan = scan_cache(RecipeBook.load(), cache_settings(bad, empty_models))
    assert not scan.recipes and "clip/Broken__model/visual" in scan.skipped
    assert "preprocess_cfg.json" in scan.skipped["clip/Broken__model/visual"]


# ---- CLIP: Immich's numbers (§5.2, §5.3) ----------------------------------------------------------


def reference_visual(path: Path, rgb: np.ndarray, size: int, mean, std) -> np.ndarray:
    """Immich's OpenClipVisualEncoder, step by step: PIL bicubic shorter side, int() centre crop,
    /255, (x - mean) / std, NCHW; the graph's output L2-normalised."""
    img = Image.fromarray(rgb)
    w, h = img.size
    img = img.resize((size, int(h / w * size)) if w < h else (int(w / h * size), size), resample=Image.Resampling.BICUBIC)
    w, h = img.size
    left, upper = int(w / 2 - size / 2), int(h / 2 - size / 2)
    img = img.crop((left, upper, left + size, upper + size))
    x = np.asarray(img, np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x.transpose(2, 0, 1)[None]})[0][0]
    return out / np.linalg.norm(out)


def reference_text_ids(folder: Path, text: str, context: int, canonicalize: bool, with_mask: bool = False):
    """Immich's OpenClipTextualEncoder tokenisation with the `tokenizers` library directly."""
    import string

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pad = json.loads((folder / "tokenizer_config.json").read_text())["pad_token"]
    tok.enable_padding(length=context, pad_token=pad, pad_id=tok.token_to_id(pad))
    tok.enable_truncation(max_length=context)
    text = " ".join(text.split())
    if canonicalize:
        text = text.translate(str.maketrans("", "", string.punctuation)).lower()
    encoding = tok.encode(text)
    ids = np.asarray(encoding.ids, np.int32)
    return (ids, np.asarray(encoding.attention_mask, np.int32)) if with_mask else ids


@pytest.mark.parametrize("name", [s.name for s in CLIP_MODELS])
def test_clip_images_equal_immich_reference(session, cache, photos, name):
    spec = SPECS[name]
    images = [photos["astronaut"], photos["coffee"], np.ascontiguousarray(photos["chelsea"][:, :120])]  # tall strip too
    got = encode_images(session, images, model=name)
    assert got.vectors.shape == (3, spec.dim)
    assert inside(got.provenance.extra["path"], cache) and got.provenance.backend == "cpu"
    for rgb, vec in zip(images, got.vectors):
        ref = reference_visual(cache / "clip" / name / "visual" / "model.onnx", rgb, spec.size, spec.mean, spec.std)
        assert float(vec @ ref) >= 0.9999
        np.testing.assert_allclose(vec, ref, atol=1e-5)


@pytest.mark.parametrize("name", [s.name for s in CLIP_MODELS])
def test_clip_texts_equal_immich_reference(session, cache, name):
    spec = SPECS[name]
    texts = ["a photo of a cat", "Test,   Search_Query!", "Ünïcödé 2019 " + "word " * 100]
    ids = tokenize(session, texts, model=name)
    folder = cache / "clip" / name / "textual"
    sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    got = encode_texts(session, texts, model=name)
    for text, row, vec in zip(texts, ids, got.vectors):
        ref_ids, ref_mask = reference_text_ids(folder, text, spec.context, spec.canonicalize, with_mask=True)
        np.testing.assert_array_equal(row, ref_ids)
        feeds = {"input_ids": ref_ids[None], "attention_mask": ref_mask[None]} if spec.mclip else {"text": ref_ids[None]}
        out = sess.run(None, feeds)[0][0]
        assert float(vec @ (out / np.linalg.norm(out))) >= 0.9999
    assert ids.shape == (3, spec.context)
    assert ids[0, 0] == 49406 and ids[0, -1] == 49407, "SOT first, padded with the tokenizer_config pad token"
    assert ids[2, -1] == 49407, "truncation keeps EOT"
    if spec.canonicalize:
        np.testing.assert_array_equal(ids[1], reference_text_ids(folder, "test searchquery", 64, False))


# ---- faces: Immich's numbers (§5.4, §5.5) ---------------------------------------------------------


@pytest.mark.parametrize("pack", ["buffalo_l", "buffalo_m", "buffalo_s", "antelopev2"])
@pytest.mark.parametrize("height,width", [(600, 800), (1000, 700)])
def test_faces_equal_immich_reference(session, cache, pack, height, width):
    rgb = blob_image(height, width, seed=height + width)
    result = analyze_faces(session, rgb, detector=pack, recognizer=pack, min_score=0.5)
    assert result.detector.recipe_id == f"{pack}-detection-cpu" and result.recognizer.recipe_id == f"{pack}-recognition-cpu"
    folder = cache / "facial-recognition" / pack
    assert inside(result.detector.extra["path"], folder) and inside(result.recognizer.extra["path"], folder)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    det = ort.InferenceSession(str(folder / "detection" / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = reference_immich_detect(bgr, lambda blob: det.run(None, {"input.1": blob}), 0.5)
    assert len(ref) == len(result.faces) == 3
    rec = ort.InferenceSession(str(folder / "recognition" / "model.onnx"), providers=["CPUExecutionProvider"])
    ref_emb = reference_immich_embed(bgr, np.stack([np.asarray(p, np.float32) for _, _, p in ref]),
                                     lambda blob: rec.run(None, {"input.1": blob})[0])
    for face, (box, score, _), emb in zip(result.faces, ref, ref_emb):
        assert np.abs(np.round(np.asarray(face.box, np.float32)) - np.round(np.asarray(box, np.float32))).max() <= 1
        assert abs(face.score - score) <= 1e-4
        assert cosine_similarity(face.embedding, emb) >= 0.999


# ---- per-task choices are explicit -----------------------------------------------------------------


def test_task_backends_and_cache_are_in_health(cache, empty_models):
    settings = cache_settings(cache, empty_models, model_backends={"face-recognition": "cpu"})
    with SessionManager(settings) as s:
        health = s.health()
    assert health["task_backends"]["face-recognition"] == {"backend": "cpu", "source": "HAILO_IMMICH_MODEL_BACKENDS"}
    assert health["task_backends"]["clip-visual"]["source"] == "active backend"
    assert health["immich_cache"]["folder"] == str(cache)
    assert "immich-ViT-L-14-336__openai-visual" in health["immich_cache"]["recipes"]


def test_pinned_backend_without_a_recipe_for_the_name(cache, empty_models):
    settings = cache_settings(cache, empty_models, model_backends={"clip-visual": "hailo", "face-detection": "cpu"})
    with SessionManager(settings) as s:
        # Vectors must match the user's library: the recipe that reproduces the name, on the backend it has (named in provenance).
        chosen = s.resolve("clip-visual", "ViT-L-14-336__openai")
        assert (chosen.id, chosen.backend) == ("immich-ViT-L-14-336__openai-visual", "cpu")
        assert s.resolve("face-detection", "buffalo_l").backend == "cpu"
    with SessionManager(cache_settings(cache, empty_models, model_backends={"face-detection": "hailo"})) as s:
        chosen = s.resolve("face-detection", "buffalo_s")  # boxes only: the pinned backend's default detector
        assert chosen.backend == "hailo" and chosen.id == s.recipes.default("face-detection", "hailo").id
        chosen = s.resolve("face-detection", "buffalo_l")  # the HEF compiled from buffalo_l's own detector
        assert (chosen.id, chosen.backend) == ("scrfd-10g-hailo8", "hailo")


def test_configured_recipe_that_does_not_reproduce_the_name_is_an_error_for_vectors(cache, empty_models):
    settings = cache_settings(cache, empty_models, task_recipes={"face-recognition": "antelopev2-recognition-cpu",
                                                                 "face-detection": "antelopev2-detection-cpu"})
    with SessionManager(settings) as s:
        with pytest.raises(UnknownModelError, match="does not reproduce the Immich model 'buffalo_l'"):
            s.resolve("face-recognition", "buffalo_l")
        # Detection gives boxes, not stored vectors: the configured detector serves any name.
        assert s.resolve("face-detection", "buffalo_l").id == "antelopev2-detection-cpu"


# ---- the CLI, as a user runs it ------------------------------------------------------------------


def run_cli(*args: str, cache: Path, models: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "200", "HAILO_IMMICH_BACKEND": "cpu",
           "HAILO_IMMICH_MODELS_DIR": str(models), "MACHINE_LEARNING_CACHE_FOLDER": str(cache), **env_extra}
    return subprocess.run([sys.executable, "-m", "hailo_immich_cli", *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory, photos) -> Path:
    root = tmp_path_factory.mktemp("cache-photos")
    Image.fromarray(photos["astronaut"]).save(root / "astronaut.png")
    Image.fromarray(blob_image(600, 800, seed=1400)).save(root / "blobs.png")
    return root


@pytest.mark.slow
def test_cli_embed_with_a_model_we_ship_no_recipe_for(cache, empty_models, photo_dir, photos):
    proc = run_cli("embed", str(photo_dir / "astronaut.png"), "--jsonl", "--model", "ViT-L-14-336__openai", cache=cache, models=empty_models)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["model_id"].startswith("immich-ViT-L-14-336__openai-visual@") and row["backend"] == "cpu" and row["dim"] == 768
    spec = SPECS["ViT-L-14-336__openai"]
    ref = reference_visual(cache / "clip" / spec.name / "visual" / "model.onnx", photos["astronaut"], spec.size, spec.mean, spec.std)
    assert float(np.asarray(row["embedding"], np.float32) @ ref) >= 0.9999
    text = run_cli("embed", "--text", "a photo of an astronaut", "--jsonl", "--model", "ViT-L-14-336__openai", cache=cache, models=empty_models)
    assert text.returncode == 0, text.stderr
    trow = json.loads(text.stdout)
    assert trow["model_id"].startswith("immich-ViT-L-14-336__openai-textual@") and trow["dim"] == 768


@pytest.mark.slow
def test_cli_detect_with_the_cache_pack(cache, empty_models, photo_dir):
    proc = run_cli("detect", str(photo_dir / "blobs.png"), "--json", "--detector", "buffalo_l", "--recognizer", "buffalo_l",
                   "--min-score", "0.5", cache=cache, models=empty_models)
    assert proc.returncode == 0, proc.stderr
    (record,) = json.loads(proc.stdout)
    assert record["detector"]["recipe"] == "buffalo_l-detection-cpu" and record["detector"]["backend"] == "cpu"
    assert record["recognizer"]["recipe"] == "buffalo_l-recognition-cpu" and record["recognizer"]["backend"] == "cpu"
    assert len(record["faces"]) == 3 and all(len(f["embedding"]) == 512 for f in record["faces"])


@pytest.mark.slow
def test_cli_fetch_models_list_shows_cache_models(cache, empty_models):
    proc = run_cli("fetch-models", "--list", "--json", cache=cache, models=empty_models)
    rows = {r["recipe"]: r for r in json.loads(proc.stdout)}
    row = rows["immich-ViT-L-14-336__openai-visual"]
    assert row["state"] == "present" and row["immich_names"] == ["ViT-L-14-336__openai"]
    assert row["immich_cache"] == {"root": str(cache), "folder": "clip/ViT-L-14-336__openai/visual", "template": "clip-vit-b32-openai-visual-cpu"}
    assert all(inside(f["path"], cache) for f in row["files"])
    assert rows["buffalo_l-detection-cpu"]["state"] == "present", "a shipped recipe finds its file in the cache"
    table = run_cli("fetch-models", "--list", cache=cache, models=empty_models)
    assert "immich-ViT-L-14-336__openai-visual" in table.stdout


@pytest.mark.slow
def test_cli_fetch_models_from_a_cache_imports_every_model(cache, tmp_path, photos):
    models = tmp_path / "models"
    env = {"MACHINE_LEARNING_CACHE_FOLDER": ""}
    proc = run_cli("fetch-models", "--from", str(cache), "--json", cache=cache, models=models, **env)
    results = {(r["recipe_id"], r["file"]): r for r in json.loads(proc.stdout)}
    assert results[("immich-ViT-L-14-336__openai-visual", "clip/ViT-L-14-336__openai/visual/model.onnx")]["status"] == "fetched"
    assert results[("buffalo_l-detection-cpu", "model.onnx")]["status"] == "fetched"
    assert (models / "immich-cache" / "clip" / "ViT-L-14-336__openai" / "visual" / "preprocess_cfg.json").is_file()
    assert (models / "buffalo_l-detection-cpu" / "model.onnx").is_file()
    # Afterwards the cache itself is not needed: the copy serves the model by its Immich name.
    settings = Settings.load(env={}, backend="cpu", models_dir=models)
    with SessionManager(settings) as s:
        got = encode_images(s, [photos["astronaut"]], model="ViT-L-14-336__openai")
        assert inside(got.provenance.extra["path"], models / "immich-cache")
        assert s.resolve("face-detection", "buffalo_l").id == "buffalo_l-detection-cpu"
    again = run_cli("fetch-models", "--from", str(cache), "--json", cache=cache, models=models, **env)
    statuses = {r["status"] for r in json.loads(again.stdout) if r["recipe_id"].startswith("immich-")}
    assert statuses == {"present"}


# ---- per-model backend choice: detection on the (emulated) Hailo, recognition from the cache on the CPU --


def test_hailo_detection_with_the_cache_recogniser_on_cpu(hailo_double, tmp_path, cache):
    """EMULATED Hailo (test double). Existing Immich face clusters stay valid because the
    embeddings come from buffalo_l's own recogniser file; both backends are named in the result."""
    from hailo_immich_cli.testkit.face_models import planted_hailo_face, scrfd_hailo_twin
    from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session

    book = load_recipe_book(Settings.load(env={}, backend="cpu", models_dir=tmp_path / "none", immich_cache_folder=cache))
    det = book.get("scrfd-10g-hailo8")
    face = planted_hailo_face()
    detector_twin, det_calibration = scrfd_hailo_twin(det, [face])
    calibration = {det.id: det_calibration}
    with make_hailo_session([det], {det.id: detector_twin}, tmp_path, book=book, calibration=calibration,
                            immich_cache_folder=cache, model_backends={"face-detection": "hailo", "face-recognition": "cpu"},
                            task_recipes={"face-detection": det.id}) as session:
        rgb = blob_image(640, 640, seed=7)
        result = analyze_faces(session, rgb, detector="buffalo_l", recognizer="buffalo_l", min_score=0.5)
        health = session.health()
    assert result.detector.recipe_id == "scrfd-10g-hailo8" and result.detector.backend == "hailo"
    assert result.recognizer.recipe_id == "buffalo_l-recognition-cpu" and result.recognizer.backend == "cpu"
    assert inside(result.recognizer.extra["path"], cache / "facial-recognition" / "buffalo_l")
    (found,) = result.faces
    np.testing.assert_allclose(found.box, face.box, atol=1.0)
    rec = ort.InferenceSession(str(cache / "facial-recognition" / "buffalo_l" / "recognition" / "model.onnx"), providers=["CPUExecutionProvider"])
    ref = reference_immich_embed(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), found.landmarks[None], lambda blob: rec.run(None, {"input.1": blob})[0])
    assert cosine_similarity(found.embedding, ref[0]) >= 0.999
    assert health["task_backends"]["face-detection"] == {"backend": "hailo", "source": "HAILO_IMMICH_MODEL_BACKENDS", "recipe": det.id}
    assert health["models"]["scrfd-10g-hailo8"]["backend"] == "hailo" and health["models"]["buffalo_l-recognition-cpu"]["backend"] == "cpu"


def test_external_weight_file_beside_the_model_is_found(cache):
    assert (cache / "clip" / "ViT-L-14-336__openai" / "visual" / "model.onnx_data").is_file()  # the helper wrote it so


def test_clip_on_hailo_faces_from_the_cache_on_cpu(hailo_double, tmp_path, cache, photos):
    """EMULATED Hailo (test double): CLIP pinned to the Hailo, faces and OCR pinned to the CPU with the
    cache's models; a CLIP model only the CPU can reproduce runs there and says so."""
    from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session

    book = load_recipe_book(Settings.load(env={}, backend="cpu", models_dir=tmp_path / "none", immich_cache_folder=cache))
    from hailo_immich_cli.ocr.pipeline import read_text
    from hailo_immich_cli.testkit.ocr_samples import render_lines

    pins = {"clip-visual": "hailo", "face-detection": "cpu", "face-recognition": "cpu", "ocr-detection": "cpu", "ocr-recognition": "cpu"}
    with make_hailo_session(["clip-vit-b32-visual-hailo"], None, tmp_path, book=book, immich_cache_folder=cache,
                            model_backends=pins) as session:
        clip = encode_images(session, [photos["astronaut"]], model="ViT-B-32__openai")
        faces = analyze_faces(session, blob_image(600, 800, seed=9), detector="buffalo_l", recognizer="buffalo_l", min_score=0.5)
        text = read_text(session, render_lines(["Hailo for CLIP", "CPU for text"], (600, 200)),
                         detector="PP-OCRv5_mobile", recognizer="PP-OCRv5_mobile")
        large = encode_images(session, [photos["astronaut"]], model="ViT-L-14-336__openai")
    assert (large.provenance.recipe_id, large.provenance.backend) == ("immich-ViT-L-14-336__openai-visual", "cpu")
    assert clip.provenance.recipe_id == "clip-vit-b32-visual-hailo" and clip.provenance.backend == "hailo"
    assert (faces.detector.recipe_id, faces.detector.backend) == ("buffalo_l-detection-cpu", "cpu")
    assert (faces.recognizer.recipe_id, faces.recognizer.backend) == ("buffalo_l-recognition-cpu", "cpu")
    assert len(faces.faces) == 3
    assert [line.text for line in text.lines] == ["Hailo for CLIP", "CPU for text"]
    assert (text.detector.recipe_id, text.detector.backend) == ("ppocrv5-mobile-det-cpu", "cpu")
    assert (text.recognizer.recipe_id, text.recognizer.backend) == ("immich-PP-OCRv5_mobile-recognition", "cpu")
    assert inside(text.recognizer.extra["path"], cache)


def test_per_task_settings_accept_immich_task_names_and_refuse_typos():
    s = Settings.load(env={"HAILO_IMMICH_MODEL_BACKENDS": "facial-recognition=cpu, clip=hailo, ocr-recognition=cpu"})
    assert s.model_backends == {"face-detection": "cpu", "face-recognition": "cpu", "clip-visual": "hailo",
                                "clip-textual": "hailo", "ocr-recognition": "cpu"}
    from hailo_immich_cli.errors import BadInputError

    with pytest.raises(BadInputError, match="unknown task faces"):
        Settings.load(env={"HAILO_IMMICH_MODEL_BACKENDS": "faces=cpu"})
    with pytest.raises(BadInputError, match="HAILO_IMMICH_TASK_RECIPES: unknown task face-detect"):
        Settings.load(env={"HAILO_IMMICH_TASK_RECIPES": "face-detect=scrfd-10g-hailo8"})
    with pytest.raises(BadInputError, match="task=value"):
        Settings.load(env={"HAILO_IMMICH_MODEL_BACKENDS": "cpu"})
