"""Face recipes: the Hailo ones agree with real HEF headers, the CPU ones with Immich's layout,
and the shipped Hailo SCRFD/ArcFace recipes drive the pipeline correctly.

The Hailo runs here use the real Hailo backend on the hailo_platform test double, with a twin that
returns SCRFD maps encoded from known faces (keyed by the recipe's HEF layer names). That checks our
side of the contract (input tensor format, output names, quantisation, decoding, batching); it is
emulated, not a hardware result.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.faces.pipeline import analyze_faces, choose_detector, choose_recognizer
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.testkit.face_models import STRIDES, PlantedFace, blob_image, encode_scrfd
from hailo_immich_cli.testkit.face_models import as_hailo_nhwc
from tests.helpers.faces import ARCFACE_TEMPLATE
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session

PACKS = ("buffalo_l", "buffalo_m", "buffalo_s", "antelopev2")


def manifest_summary(hef_fixtures: Path, file: str) -> dict:
    data = json.loads((hef_fixtures / "MANIFEST.json").read_text())
    entry = next(e for e in data["files"] if e["file"] == file)
    return entry["summary"]["network_groups"][0]


def test_scrfd_2_5g_recipe_matches_the_real_hef(recipe_book, hef_fixtures):
    net = manifest_summary(hef_fixtures, "scrfd_2.5g_h15.hef")
    recipe = recipe_book.get("scrfd-2.5g-hailo8")
    assert recipe.inputs[0].name == net["inputs"][0]["name"]
    assert list(recipe.inputs[0].shape) == net["inputs"][0]["shape"]
    hef_outputs = {o["name"]: o["shape"] for o in net["outputs"]}
    assert {o.name: list(o.shape) for o in recipe.outputs} == hef_outputs
    channels = {"score": 2, "box": 8, "kps": 20}
    for spec in recipe.outputs:
        assert spec.shape == (640 // spec.extra["stride"], 640 // spec.extra["stride"], channels[spec.role])
    # The cls maps are the ones with a 1/255 scale (sigmoid on-chip).
    for o in net["outputs"]:
        role = next(s.role for s in recipe.outputs if s.name == o["name"])
        assert (role == "score") == (abs(o["qp_scale"] - 1 / 255) < 1e-6)


def test_arcface_mobilefacenet_recipe_matches_the_real_hef(recipe_book, hef_fixtures):
    net = manifest_summary(hef_fixtures, "arcface_mobilefacenet.hef")
    recipe = recipe_book.get("arcface-mobilefacenet-hailo8")
    assert recipe.inputs[0].name == net["inputs"][0]["name"] and list(recipe.inputs[0].shape) == net["inputs"][0]["shape"]
    assert recipe.outputs[0].name == net["outputs"][0]["name"] and list(recipe.outputs[0].shape) == net["outputs"][0]["shape"]
    assert recipe.embedding_dim == 512 and recipe.default


def test_hailo_recipes_point_at_model_zoo_2_18():
    book = RecipeBook.load()
    for rid, name in (("scrfd-2.5g-hailo8", "scrfd_2.5g"), ("scrfd-10g-hailo8", "scrfd_10g"), ("arcface-mobilefacenet-hailo8", "arcface_mobilefacenet"), ("arcface-r50-hailo8", "arcface_r50")):
        src = book.get(rid).file().sources[0]
        assert src.url == f"https://hailo-model-zoo.s3.eu-west-2.amazonaws.com/ModelZoo/Compiled/v2.18.0/hailo8/{name}.hef"
    assert book.default("face-detection", "hailo").id == "scrfd-2.5g-hailo8"
    assert book.default("face-recognition", "hailo").id == "arcface-mobilefacenet-hailo8"
    assert {s.name for s in book.get("scrfd-10g-hailo8").outputs if s.role == "score"} == {"scrfd_10g/conv41", "scrfd_10g/conv49", "scrfd_10g/conv56"}


@pytest.mark.parametrize("pack", PACKS)
def test_immich_pack_recipes(pack):
    book = RecipeBook.load()
    det, rec = book.get(f"{pack}-detection-cpu"), book.get(f"{pack}-recognition-cpu")
    for recipe, kind in ((det, "detection"), (rec, "recognition")):
        assert recipe.immich_names == (pack,) and not recipe.default
        assert recipe.file().immich_path == f"facial-recognition/{pack}/{kind}/model.onnx"
        assert recipe.file().sources[0].url == f"https://huggingface.co/immich-app/{pack}/resolve/main/{kind}/model.onnx"
    assert [(o.extra["index"], o.role, o.extra["stride"]) for o in det.outputs] == [
        (i, role, s) for i, (role, s) in enumerate((r, s) for r in ("score", "box", "kps") for s in STRIDES)
    ]
    assert det.preprocess["mean"] == [127.5] * 3 and det.preprocess["std"] == [128.0] * 3
    assert rec.preprocess["mean"] == [127.5] * 3 and rec.preprocess["std"] == [127.5] * 3
    np.testing.assert_allclose(rec.preprocess["align_template"], ARCFACE_TEMPLATE)
    assert "batch_size" not in rec.raw, "all faces in one batch unless the env var says otherwise"


# ---- the Hailo recipes through the pipeline, on the real Hailo backend + hailo_platform double ----


def hailo_planted() -> list[PlantedFace]:
    rng = np.random.default_rng(4)
    faces = []
    for i, s in enumerate(STRIDES):
        for a in (0, 1):
            size = s * (3 + a)
            faces.append(PlantedFace(s, 6 + 5 * i, 4 + 3 * a + 4 * i, a, 0.95 - 0.1 * i - 0.02 * a,
                                     tuple(float(v) for v in rng.uniform(0.3, 0.6, 4) * size), rng.uniform(-0.3, 0.3, (5, 2)) * size))
    return faces


def test_shipped_hailo_recipes_through_the_pipeline_emulated(hailo_double, tmp_path):
    """SCRFD-2.5G + MobileFaceNet Hailo recipes as the defaults of backend hailo, on the emulated
    device: six planted faces at all strides come back through the HEF's uint8 output quantisation."""
    recipe = RecipeBook.load().get("scrfd-2.5g-hailo8")
    nhwc = as_hailo_nhwc(encode_scrfd(hailo_planted(), background=0.0))
    by_name = {}
    for spec in recipe.outputs:
        by_name[spec.name] = nhwc[spec.extra["stride"]][("score", "box", "kps").index(spec.role)]
    rng = np.random.default_rng(0)
    projection = rng.normal(size=(112 * 112 * 3, 512)).astype(np.float32) / 1000
    seen: dict[str, list[np.ndarray]] = {"det": [], "rec": []}

    def detector(inputs):
        (x,) = inputs.values()
        seen["det"].append(x)
        return {name: np.repeat(value[None], len(x), axis=0) for name, value in by_name.items()}

    def recognizer(inputs):
        (x,) = inputs.values()
        seen["rec"].append(x)
        return {"arcface_mobilefacenet/fc1": x.reshape(len(x), -1) @ projection}

    twins = {"scrfd-2.5g-hailo8": detector, "arcface-mobilefacenet-hailo8": recognizer}
    with make_hailo_session(list(twins), twins, tmp_path) as session:
        seen["det"].clear(), seen["rec"].clear()  # the HEF builder ran the twins on calibration frames
        assert choose_detector(session).id == "scrfd-2.5g-hailo8"
        assert choose_recognizer(session).id == "arcface-mobilefacenet-hailo8"
        rgb = blob_image(480, 960, seed=5)  # 960x480 -> 640x320 top-left: scale 2/3
        result = analyze_faces(session, rgb, min_score=0.5)
        det_in = seen["det"][0]
        assert det_in.shape == (1, 640, 640, 3) and det_in[0, 320:].max() == 0, "top-left letterbox, zero below"
        rec_batches = session.stats()["arcface-mobilefacenet-hailo8"]["batch_sizes"]
    planted = sorted(hailo_planted(), key=lambda f: -f.score)
    assert len(result.faces) == len(planted)
    for face, plant in zip(result.faces, planted):
        assert face.score == pytest.approx(plant.score, abs=0.01)  # uint8 score maps
        np.testing.assert_allclose(face.box, plant.box * 1.5, atol=1.5)
        np.testing.assert_allclose(face.landmarks, plant.landmarks * 1.5, atol=1.5)
        assert face.embedding.shape == (512,)
    assert rec_batches == {6: 1}, "6 faces: one run of the recogniser (recipe batch_size 8)"
    assert sum(len(x) for x in seen["rec"]) == 6
    assert "emulated" in result.detector.device and "emulated" in result.recognizer.device
    assert result.detector.backend == "hailo" and result.recognizer.recipe_id == "arcface-mobilefacenet-hailo8"
