"""`bench` on the hailo backend through the hailo_platform test double: EMULATED, never hardware numbers."""

from __future__ import annotations

import pytest

import hailo_immich_cli.testkit.hailo_emulation as helpers
from hailo_immich_cli.bench.local import BUSY_HINT, Bench, BenchOptions
from hailo_immich_cli.errors import DeviceError
from hailo_immich_cli.models.recipes import RecipeBook, load_recipe_file


TINY = """
id = "bench-tiny-rec-hailo"
task = "face-recognition"
backend = "hailo"
hw_arch = ["HAILO8"]
embedding_dim = 16
batch_size = 1
[[files]]
role = "model"
name = "tiny.hef"
[[inputs]]
name = "tiny/input_layer1"
shape = [16, 16, 3]
layout = "NHWC"
dtype = "uint8"
[[outputs]]
name = "tiny/fc1"
shape = [16]
layout = "NC"
[preprocess]
normalize = "on-chip"
"""


@pytest.fixture()
def tiny_session(hailo_double, tmp_path):
    path = tmp_path / "recipes" / "tiny.toml"
    path.parent.mkdir()
    path.write_text(TINY)
    book = RecipeBook([*RecipeBook.load(), load_recipe_file(path)])
    session = helpers.make_hailo_session(["bench-tiny-rec-hailo"], None, tmp_path, book=book)
    yield hailo_double, session
    session.close()


def test_emulated_device_only_batch_sweep(tiny_session):
    machine, session = tiny_session
    opts = BenchOptions(recipes=("bench-tiny-rec-hailo",), batches=(1, 4), threads=(1, 2), warmup=1, duration_s=None,
                        count=3, end_to_end=False)
    report = Bench(session.settings, session.recipes, opts).run()
    assert report["emulated"] is True and report["backend"]["emulated"] is True
    assert report["backend"]["name"] == "hailo" and report["backend"]["hailort_version"] == "4.23.0"
    assert "emulated" in report["backend"]["device"]
    model = report["models"][0]
    assert model["backend"] == "hailo" and len(model["model_sha256"]) == 64
    cells = model["device_only"]
    assert [(c["batch"], c["threads"]) for c in cells] == [(1, 1), (1, 2), (4, 1), (4, 2)]
    for c in cells:
        assert c["errors"] == {} and c["calls"] == 3 and c["items"] == 3 * c["batch"]
        assert c["batch_sizes"] == {c["batch"]: 3}
    assert machine.frames_run >= sum(c["items"] for c in cells)  # the frames really went through the (emulated) device
    from rich.console import Console

    from hailo_immich_cli.commands.bench import render

    console = Console(record=True, width=160)
    render(console, report)
    text = console.export_text()
    assert "EMULATED" in text and "not hardware numbers" in text and "HailoRT 4.23.0" in text


def test_device_held_by_serve_names_the_multi_process_service(tiny_session):
    machine, session = tiny_session
    machine.held_by_other_process = True
    opts = BenchOptions(recipes=("bench-tiny-rec-hailo",), count=1, duration_s=None, end_to_end=False)
    with pytest.raises(DeviceError) as info:
        Bench(session.settings, session.recipes, opts).run()
    assert str(info.value) == BUSY_HINT
    auto = session.settings.with_overrides(backend="auto")
    with pytest.raises(DeviceError):  # never a silent CPU benchmark instead
        Bench(auto, session.recipes, opts).run()


def test_emulated_clip_end_to_end_batch_reaches_the_device(hailo_double, tmp_path, photos):
    from hailo_immich_cli.bench.local import ImageSet

    book = RecipeBook.load()
    rid = "clip-vit-b32-visual-hailo"
    with helpers.make_hailo_session([rid], None, tmp_path, book=book) as session:
        images = ImageSet([photos["astronaut"], photos["coffee"]], "test photos")
        opts = BenchOptions(tasks=("clip",), recipes=(rid,), batches=(1, 4), threads=(1,), warmup=1, duration_s=None,
                            count=2, device_only=False)
        report = Bench(session.settings, session.recipes, opts, images).run()
    assert report["emulated"] is True
    cells = report["tasks"]["clip"]["cells"]
    assert [c["batch"] for c in cells] == [1, 4]
    for c in cells:
        assert c["errors"] == {} and c["calls"] == 2 and c["items"] == 2 * c["batch"]  # images per call = batch
        assert c["models"][rid]["batch_sizes"] == {c["batch"]: 2} and c["batch_honoured"] is True
        assert c["models"][rid]["host_ms_per_item"] > 0
    assert report["advice"][0]["recipe_batch_size"][rid] in (1, 4)


def test_emulated_faces_recogniser_batch_sweep(hailo_double, tmp_path):
    """Three faces planted in SCRFD's maps: with batch 1 the recogniser sees 3 calls of 1 per image,
    with batch 2 a call of 2 and one of 1 (MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION)."""
    import numpy as np

    from hailo_immich_cli.bench.local import ImageSet
    from hailo_immich_cli.testkit.face_models import PlantedFace
    from hailo_immich_cli.testkit.face_models import scrfd_hailo_twin

    book = RecipeBook.load()
    det, rec = book.get("scrfd-2.5g-hailo8"), book.get("arcface-mobilefacenet-hailo8")
    kps = np.array([[-12, -10], [12, -10], [0, 2], [-9, 14], [9, 14]], np.float32)
    faces = [PlantedFace(stride=16, row=r, col=c, anchor=1, score=0.9, ltrb=(40.0, 48.0, 40.0, 48.0), kps=kps)
             for r, c in ((10, 10), (20, 24), (30, 12))]
    detector_twin, det_calibration = scrfd_hailo_twin(det, faces)
    calibration = {det.id: det_calibration}
    with helpers.make_hailo_session([det, rec], {det.id: detector_twin}, tmp_path, book=book, calibration=calibration) as session:
        rgb = np.random.default_rng(0).integers(0, 256, (640, 640, 3), dtype=np.uint8)
        opts = BenchOptions(tasks=("faces",), recipes=(det.id, rec.id), batches=(1, 2), threads=(1,), warmup=1,
                            duration_s=None, count=2, device_only=False)
        report = Bench(session.settings, session.recipes, opts, ImageSet([rgb], "planted faces")).run()
    cells = report["tasks"]["faces"]["cells"]
    assert report["emulated"] is True and report["tasks"]["faces"]["recipes"]["face-recognition"] == rec.id
    assert [c["found_per_image"] for c in cells] == [3, 3]
    assert cells[0]["models"][rec.id]["batch_sizes"] == {1: 6}
    assert cells[1]["models"][rec.id]["batch_sizes"] == {1: 2, 2: 2}
    assert all(c["batch_honoured"] for c in cells)
    assert report["advice"][0]["env"]["MACHINE_LEARNING_MAX_BATCH_SIZE__FACIAL_RECOGNITION"] in ("1", "2")
