"""`hailo-immich bench` on this machine, with the real CPU models: complete, consistent reports."""

from __future__ import annotations

import dataclasses
import json
import sys
import types

import pytest
from PIL import Image
from typer.testing import CliRunner

from hailo_immich_cli.backends.base import Backend
from hailo_immich_cli.bench.local import (
    BUSY_HINT,
    Bench,
    BenchOptions,
    best_cell,
    hailo_emulated,
    load_images,
    synthetic_feeds,
)
from hailo_immich_cli.bench.timing import parse_int_list, timed_loop
from hailo_immich_cli.cli import app
from hailo_immich_cli.errors import BadInputError, DeviceError
from hailo_immich_cli.models.files import sha256_of
from hailo_immich_cli.models.recipes import RecipeBook
from hailo_immich_cli.session import SessionManager

runner = CliRunner()

# The keys every report has (docs/bench.md); a test failing here means the schema changed.
LOCAL_KEYS = {"schema_version", "kind", "tool", "started_at", "finished_at", "emulated", "backend", "host",
              "options", "images", "models", "tasks", "notices", "advice"}
BACKEND_KEYS = {"name", "emulated", "device", "runtime", "hailort_version", "driver_version", "fallback_reason", "info"}
HOST_KEYS = {"cpu_model", "cores_logical", "cores_physical", "cores_usable", "machine", "memory_mib", "os", "python"}
MODEL_KEYS = {"recipe_id", "task", "backend", "model_sha256", "model_id", "device", "runtime", "recipe_batch_size",
              "load_ms", "inputs", "device_only"}
CELL_KEYS = {"batch", "threads", "intra_op_threads", "calls", "items", "errors", "wall_s", "calls_per_s", "speedup_vs_first",
             "items_per_s", "latency_ms"}
LATENCY_KEYS = {"p50", "p95", "p99", "mean", "min", "max"}


class Recording:
    """Keeps every session a bench run opens, to read back what each backend really received."""

    def __init__(self):
        self.sessions: list[SessionManager] = []

    def __call__(self, settings, book):
        session = SessionManager(settings, book)
        self.sessions.append(session)
        return session


def _check_cell(cell: dict, batch: int, count: int) -> None:
    assert CELL_KEYS <= set(cell) and LATENCY_KEYS == set(cell["latency_ms"])
    assert cell["errors"] == {} and cell["calls"] == count and cell["items"] == count * batch
    assert cell["items_per_s"] > 0 and cell["wall_s"] > 0
    assert cell["items_per_s"] == pytest.approx(cell["items"] / cell["wall_s"], rel=0.01)
    lat = cell["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]


def test_device_only_batch_sweep_changes_what_the_backend_receives(cpu_models, recipe_book):
    rec = recipe_book.get("ppocrv5-mobile-rec-cpu")
    # CenterFace's dynamic input pinned small through the recipe's [bench] table, to keep this fast
    det = dataclasses.replace(recipe_book.get("centerface-cpu"), raw={**recipe_book.get("centerface-cpu").raw,
                                                                        "bench": {"input_shapes": {"input.1": [3, 96, 128]}}})
    book = RecipeBook([det if r.id == det.id else r for r in recipe_book])
    recorder = Recording()
    opts = BenchOptions(recipes=(rec.id, det.id), batches=(1, 3), threads=(1, 2), warmup=1, duration_s=None, count=3,
                        end_to_end=False)
    report = Bench(cpu_models, book, opts, session_factory=recorder).run()

    assert LOCAL_KEYS <= set(report) and report["schema_version"] == 1 and report["kind"] == "local"
    assert BACKEND_KEYS <= set(report["backend"]) and report["backend"]["name"] == "cpu"
    assert report["emulated"] is False and report["backend"]["emulated"] is False
    assert HOST_KEYS <= set(report["host"]) and report["host"]["cores_logical"] >= 1
    json.loads(json.dumps(report))  # plain JSON all the way down

    models = {m["recipe_id"]: m for m in report["models"]}
    assert set(models) == {rec.id, det.id}
    for recipe in (rec, det):
        m = models[recipe.id]
        assert MODEL_KEYS <= set(m) and m["backend"] == "cpu"
        assert m["model_sha256"] == recipe.file().sha256 == sha256_of(cpu_models.models_dir / recipe.id / recipe.file().name)
        cells = m["device_only"]
        assert [(c["batch"], c["threads"]) for c in cells] == [(1, 1), (1, 2), (3, 1), (3, 2)]
        assert cells[0]["speedup_vs_first"] == 1.0
        for c in cells:
            _check_cell(c, c["batch"], 3)
            assert c["speedup_vs_first"] == pytest.approx(c["items_per_s"] / cells[0]["items_per_s"], rel=0.01)
            assert c["batch_sizes"] == {c["batch"]: 3}  # what the session handed the backend, warm-up excluded

    # independently: each batch got its own session, whose recipe carried the batch and whose
    # backend received exactly that batch
    _probe, *cells = recorder.sessions
    assert len(cells) == 4
    for session, (rid, batch) in zip(cells, [(rec.id, 1), (rec.id, 3), (det.id, 1), (det.id, 3)]):
        assert session.recipes.get(rid).batch_size == batch
        assert set(session.stats()[rid]["batch_sizes"]) == {batch}
    assert models[det.id]["inputs"][0]["shape"] == [3, None, None]  # dynamic in the model, pinned by the recipe


def test_synthetic_feeds_follow_the_loaded_model(cpu_session):
    model = cpu_session.model("ppocrv5-mobile-rec-cpu")
    feeds = synthetic_feeds(model, 5)
    assert list(feeds) == ["x"] and feeds["x"].shape == (5, 3, 48, 320) and feeds["x"].dtype.name == "float32"
    det = cpu_session.model("centerface-cpu")
    feeds = synthetic_feeds(det, 2)
    assert feeds["input.1"].shape == (2, 3, 640, 640)
    out = cpu_session.run("centerface-cpu", feeds).outputs
    assert all(v.shape[0] == 2 for v in out.values())


def test_cli_device_json_and_table(cpu_models, tmp_path):
    args = ["bench", "--backend", "cpu", "--models-dir", str(cpu_models.models_dir), "--recipe", "ppocrv5-mobile-rec-cpu",
            "--mode", "device", "--batch", "1,2", "--count", "3", "--warmup", "1"]
    result = runner.invoke(app, args + ["--json", "--output", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads((tmp_path / "report.json").read_text()) == report
    assert [c["batch_sizes"] for c in report["models"][0]["device_only"]] == [{"1": 3}, {"2": 3}]
    assert report["advice"][0]["recipe_batch_size"] in ({"ppocrv5-mobile-rec-cpu": 1}, {"ppocrv5-mobile-rec-cpu": 2})
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for text in ("backend cpu", "Xeon" if "Xeon" in report["host"]["cpu_model"] else "host", "device-only", "advice"):
        assert text in result.stdout


def test_bad_sweep_values_are_clear_errors(cpu_models):
    with pytest.raises(BadInputError):
        parse_int_list("1,two", "--batch", [1])
    with pytest.raises(BadInputError):
        parse_int_list("0", "--threads", [1])
    assert parse_int_list("1, 2,2,8", "--batch", [1]) == [1, 2, 8]
    result = runner.invoke(app, ["bench", "--backend", "cpu", "--batch", "1,x"])
    assert result.exit_code == 2 and "not an integer" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["bench", "--backend", "cpu", "--task", "dance"])
    assert result.exit_code == 2 and "unknown task 'dance'" in result.output


def test_timed_loop_is_bounded_and_counts():
    calls = []
    result = timed_loop(lambda: calls.append(1) or 2, threads=3, duration_s=None, count=7)
    assert result.calls == 7 and result.items == 14 and len(calls) == 7
    result = timed_loop(lambda: 1, threads=2, duration_s=0.05)
    assert result.calls > 0 and 0.05 <= result.wall_s < 1.0

    def failing() -> int:
        raise ValueError("boom")

    result = timed_loop(failing, count=3, duration_s=None)
    assert result.calls == 0 and result.errors == {"ValueError": 3}
    with pytest.raises(ValueError):
        timed_loop(lambda: 1, duration_s=None, count=None)


def test_best_cell_respects_the_latency_bound():
    def cell(rate, p95, errors=None):
        return {"items_per_s": rate, "errors": errors or {}, "latency_ms": {"p95": p95}}

    cells = [cell(10, 50), cell(20, 150), cell(30, 400), cell(40, 90, {"500": 1})]
    assert best_cell(cells, None) == (cells[2], True)
    assert best_cell(cells, 200) == (cells[1], True)
    assert best_cell(cells, 10) == (cells[0], False)  # nothing meets it: the lowest latency, flagged


def test_images_folder_is_decoded_and_timed(tmp_path, photos):
    for name in ("astronaut", "page"):
        Image.fromarray(photos[name]).save(tmp_path / f"{name}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    images = load_images(tmp_path, limit=8)
    assert len(images.images) == 2 and len(images.skipped) == 1
    assert images.decode_ms["p50"] > 0
    with pytest.raises(BadInputError):
        load_images(tmp_path / "nope")


def test_emulated_hailo_platform_is_named(monkeypatch):
    assert hailo_emulated() is False
    double = types.ModuleType("hailo_platform")
    double.__emulated__ = True
    monkeypatch.setitem(sys.modules, "hailo_platform", double)
    assert hailo_emulated() is True


class BusyBackend(Backend):
    """A backend whose device is held elsewhere, as HailoRT reports it."""

    name = "cpu"

    def load(self, recipe, files):
        try:
            raise RuntimeError("Failed to create vdevice. status=HAILO_OUT_OF_PHYSICAL_DEVICES(74)")
        except RuntimeError as exc:
            raise DeviceError(f"{recipe.id}: cannot open the device") from exc

    def info(self):
        return {"backend": "cpu"}


def test_device_held_by_another_process_says_how_to_share_it(cpu_models, recipe_book):
    opts = BenchOptions(recipes=("centerface-cpu",), count=1, duration_s=None, end_to_end=False)
    bench = Bench(cpu_models, recipe_book, opts,
                  session_factory=lambda s, b: SessionManager(s, b, backends={"cpu": BusyBackend()}))
    with pytest.raises(DeviceError) as info:
        bench.run()
    assert str(info.value) == BUSY_HINT
    assert "HAILO_IMMICH_MULTI_PROCESS_SERVICE=1" in BUSY_HINT and "hailort_service" in BUSY_HINT


def _page_images(tmp_path, photos):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(photos["page"]).save(folder / "page.png")
    return load_images(folder)


def test_end_to_end_ocr_batch_sweep_reaches_the_recogniser(cpu_models, recipe_book, tmp_path, photos):
    images = _page_images(tmp_path, photos)
    opts = BenchOptions(tasks=("ocr",), batches=(1, 4), threads=(1,), warmup=1, duration_s=None, count=2, device_only=False)
    report = Bench(cpu_models, recipe_book, opts, images).run()
    cells = report["tasks"]["ocr"]["cells"]
    assert report["tasks"]["ocr"]["recipes"] == {"ocr-detection": "ppocrv5-mobile-det-cpu", "ocr-recognition": "ppocrv5-mobile-rec-cpu"}
    assert [c["batch"] for c in cells] == [1, 4]
    for cell in cells:
        _check_cell(cell, 1, 2)  # one image per call
        det, rec = cell["models"]["ppocrv5-mobile-det-cpu"], cell["models"]["ppocrv5-mobile-rec-cpu"]
        assert det["calls"] == 2 and det["batch_sizes"] == {1: 2}
        assert det["host_ms_per_item"] > 0 and rec["host_ms_per_item"] > 0 and rec["device_ms_per_item"] > 0
        assert max(rec["batch_sizes"]) == cell["batch"] and cell["batch_honoured"] is True  # the page has > 4 lines
        assert rec["items"] == sum(k * v for k, v in rec["batch_sizes"].items())
    # the same lines went through in both cells, in batches of 1 and then of up to 4
    assert cells[0]["models"]["ppocrv5-mobile-rec-cpu"]["items"] == cells[1]["models"]["ppocrv5-mobile-rec-cpu"]["items"]
    assert cells[0]["found_per_image"] == cells[1]["found_per_image"] > 4  # same lines whatever the batch
    assert report["images"]["count"] == 1 and report["advice"][0]["scope"] == "ocr"
    assert report["advice"][0]["env"]["MACHINE_LEARNING_MAX_BATCH_SIZE__OCR"] in ("1", "4")


def test_end_to_end_faces_on_real_photos(cpu_models, recipe_book, tmp_path, photos):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("astronaut", "camera"):
        Image.fromarray(photos[name]).save(folder / f"{name}.png")
    opts = BenchOptions(tasks=("faces",), batches=(1,), threads=(1, 2), warmup=1, duration_s=None, count=4, device_only=False)
    report = Bench(cpu_models, recipe_book, opts, load_images(folder)).run()
    cells = report["tasks"]["faces"]["cells"]
    assert [c["threads"] for c in cells] == [1, 2]
    detector = report["tasks"]["faces"]["recipes"]["face-detection"]
    for cell in cells:
        _check_cell(cell, 1, 4)
        assert cell["models"][detector]["calls"] == 4
        assert cell["found_per_image"] >= 1  # both photos show a face
