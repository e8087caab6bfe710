"""`bench` on the hailo backend through the hailo_platform test double: EMULATED, never hardware numbers."""

from __future__ import annotations

import pytest

helpers = pytest.importorskip("tests.helpers.hailo", reason="the hailo backend and its test double have not landed on this branch")

from hailo_immich_cli.bench import BUSY_HINT, Bench, BenchOptions  # noqa: E402
from hailo_immich_cli.errors import DeviceError  # noqa: E402
from hailo_immich_cli.recipes import RecipeBook, load_recipe_file  # noqa: E402

hailo_double = helpers.hailo_double

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
