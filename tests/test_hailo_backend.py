"""The Hailo backend on the hailo_platform test double (EMULATED: no Hailo device is involved)."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from hailo_immich_cli.backends import hailo as hailo_backend
from hailo_immich_cli.errors import (
    BackendUnavailableError,
    BadInputError,
    DeviceTimeoutError,
    ModelCorruptError,
    ModelMismatchError,
)
from hailo_immich_cli.models.hef import read_hef
from hailo_immich_cli.models.files import sha256_of
from hailo_immich_cli.models.recipes import RecipeBook, parse_recipe
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session, uninstall_double

EMB_IN, EMB_OUT = "emb/input_layer1", "emb/fc1"
PROJECTION = np.random.default_rng(7).normal(size=(3, 8)).astype(np.float32)


def emb_twin(inputs):
    """A tiny 'recogniser': per-channel means of the raw pixels, projected to 8 dims."""
    x = inputs[EMB_IN]
    return {EMB_OUT: (x.mean(axis=(1, 2)) / 255.0 - 0.5) @ PROJECTION}


def recipe(tmp_path: Path, rid: str = "emb-hailo", *, inputs=None, outputs=None, batch_size: int = 4, hw_arch=("hailo8",)):
    data = {
        "id": rid,
        "task": "face-recognition",
        "backend": "hailo",
        "embedding_dim": 8,
        "batch_size": batch_size,
        "hw_arch": list(hw_arch),
        "files": [{"role": "model", "name": f"{rid}.hef"}],
        "inputs": inputs or [{"name": EMB_IN, "shape": [16, 16, 3], "dtype": "uint8", "layout": "NHWC"}],
        "outputs": outputs or [{"name": EMB_OUT, "shape": [8], "dtype": "float32"}],
        "preprocess": {"normalize": "on-chip"},
    }
    return parse_recipe(tmp_path / f"{rid}.toml", data)


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)


def _hef_layer(session: SessionManager, rid: str, name: str):
    info = read_hef(session.files.path(session.recipes.get(rid)))
    return info.network_groups[0].layer(name)


# ---- running ---------------------------------------------------------------------------------


def test_load_and_run_matches_twin_within_quantisation_error(hailo_double, tmp_path: Path) -> None:
    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path) as session:
        x = images(5)
        result = session.run(r.id, {EMB_IN: x})
        out = result.outputs[EMB_OUT]
        assert out.shape == (5, 8) and out.dtype == np.float32
        layer = _hef_layer(session, r.id, EMB_OUT)
        expected = np.clip(emb_twin({EMB_IN: x.astype(np.float32)})[EMB_OUT], layer.limvals_min, layer.limvals_max)
        assert np.abs(out - expected).max() <= layer.qp_scale / 2 + 1e-6  # half a step of the HEF's uint8 output
        grid = out / layer.qp_scale + layer.qp_zp  # dequantised values sit on the HEF's quantisation grid
        np.testing.assert_allclose(grid, np.rint(grid), atol=1e-3)
        prov = result.provenance
        assert (prov.backend, prov.runtime) == ("hailo", "HailoRT 4.23.0")
        assert "emulated" in prov.device and prov.extra["emulated"] is True
        assert prov.model_sha256 == sha256_of(session.files.path(r))
        assert prov.extra["scheduler"] == "ROUND_ROBIN" and prov.extra["batch_size"] == 4
        model = session.model(r.id)
        assert model.inputs[0].dtype == "uint8" and model.outputs[0].dtype == "float32"
        assert hailo_double.frames_run == 5


def test_uint16_and_float32_text_inputs(hailo_double, tmp_path: Path) -> None:
    """A uint16 recipe input is quantised by the backend with the HEF's qp; float32 lets HailoRT do it."""
    w = np.random.default_rng(3).normal(size=(6, 5)).astype(np.float32)

    def twin(inputs):
        return {"txt/out": inputs["txt/in"].reshape(len(inputs["txt/in"]), -1) @ w}

    recipes = [
        recipe(tmp_path, f"txt-{dtype}", inputs=[{"name": "txt/in", "shape": [2, 3], "dtype": dtype}],
               outputs=[{"name": "txt/out", "shape": [5]}])
        for dtype in ("uint16", "float32")
    ]
    feeds = np.random.default_rng(4).normal(0, 1.5, (3, 2, 3)).astype(np.float32)
    calibration = {r.id: {"txt/in": feeds} for r in recipes}  # output qp chosen from this data, as a compiler would
    with make_hailo_session(recipes, {r.id: twin for r in recipes}, tmp_path, output_dtype="uint16", calibration=calibration) as session:
        results = {r.id: session.run(r.id, {"txt/in": feeds}).outputs["txt/out"] for r in recipes}
        assert session.model("txt-uint16").inputs[0].dtype == "uint16"
        assert session.model("txt-float32").inputs[0].dtype == "float32"
        in_layer = _hef_layer(session, "txt-uint16", "txt/in")
        assert in_layer.dtype == "UINT16"
    expected = twin({"txt/in": feeds})["txt/out"]
    for rid, out in results.items():
        np.testing.assert_allclose(out, expected, atol=0.01, err_msg=rid)
    np.testing.assert_array_equal(results["txt-uint16"], results["txt-float32"])


def test_output_dequantisation_uses_the_hef_qp(hailo_double, tmp_path: Path) -> None:
    """Outputs far from the zero point: raw uint8 values or a wrong zp would be visibly off."""
    r = recipe(tmp_path, outputs=[{"name": EMB_OUT, "shape": [8], "qp_scale": 0.02, "qp_zp": 30}])
    with make_hailo_session([r], {r.id: lambda d: {EMB_OUT: np.tile(np.linspace(-0.5, 4.5, 8, dtype=np.float32), (len(d[EMB_IN]), 1))}},
                            tmp_path) as session:
        out = session.run(r.id, {EMB_IN: images(2)}).outputs[EMB_OUT]
    np.testing.assert_allclose(out[0], np.linspace(-0.5, 4.5, 8), atol=0.0101)


def _in_threads(fn, count: int) -> None:
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_threads_give_the_same_results_as_serial(hailo_double, tmp_path: Path) -> None:
    r = recipe(tmp_path, batch_size=2)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path) as session:
        batches = [images(3, seed) for seed in range(12)]
        serial = [session.run(r.id, {EMB_IN: b}).outputs[EMB_OUT] for b in batches]
        hailo_double.frame_latency_s = 0.002
        results: dict[int, np.ndarray] = {}
        _in_threads(lambda i: results.__setitem__(i, session.run(r.id, {EMB_IN: batches[i]}).outputs[EMB_OUT]), len(batches))
        for i, expected in enumerate(serial):
            np.testing.assert_array_equal(results[i], expected)


def test_threads_overlap_on_the_device(hailo_double, tmp_path: Path) -> None:
    """One-frame calls: serially the device never holds more than one frame; from several threads
    it does, which a global Python lock around the device would prevent."""
    r = recipe(tmp_path, batch_size=1)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path) as session:
        hailo_double.frame_latency_s = 0.01
        for seed in range(4):
            session.run(r.id, {EMB_IN: images(1, seed)})
        assert hailo_double.max_in_flight == 1
        _in_threads(lambda i: session.run(r.id, {EMB_IN: images(1, i)}), 8)
        assert hailo_double.max_in_flight >= 2


def test_reshapes_same_size_feeds_and_refuses_wrong_ones(hailo_double, tmp_path: Path) -> None:
    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path) as session:
        flat = images(2).reshape(2, 16 * 16 * 3)
        np.testing.assert_array_equal(session.run(r.id, {EMB_IN: flat}).outputs[EMB_OUT],
                                      session.run(r.id, {EMB_IN: images(2)}).outputs[EMB_OUT])
        with pytest.raises(BadInputError, match="16, 16, 3"):
            session.run(r.id, {EMB_IN: np.zeros((1, 8, 8, 3), np.uint8)})
        with pytest.raises(BadInputError, match="uint8"):
            session.run(r.id, {EMB_IN: np.zeros((1, 16, 16, 3), np.int64) - 1})
        assert session.run(r.id, {EMB_IN: np.zeros((0, 16, 16, 3), np.uint8)}).outputs[EMB_OUT].shape == (0, 8)


def test_timeouts_are_device_timeout_errors(hailo_double, tmp_path: Path) -> None:
    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path, hailo_timeout_ms=100) as session:
        session.model(r.id)
        hailo_double.hang = True
        with pytest.raises(DeviceTimeoutError, match="did not answer within 100 ms"):
            session.run(r.id, {EMB_IN: images(1)})
        assert session.stats()[r.id]["errors"] == 1


def test_device_failures_are_device_errors(hailo_double, tmp_path: Path) -> None:
    from hailo_immich_cli.errors import DeviceError

    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path) as session:
        session.model(r.id)
        hailo_double.fail_frames_with = "HAILO_DRIVER_OPERATION_FAILED"
        with pytest.raises(DeviceError, match="HAILO_DRIVER_OPERATION_FAILED"):
            session.run(r.id, {EMB_IN: images(1)})
        hailo_double.fail_frames_with = None
        assert session.run(r.id, {EMB_IN: images(1)}).outputs[EMB_OUT].shape == (1, 8)  # the next request works


# ---- start-up checks -------------------------------------------------------------------------


def _settings(tmp_path: Path, **kw) -> Settings:
    return Settings.load(env={}, backend="hailo", models_dir=tmp_path / "models", **kw)


def test_missing_hailo_platform(tmp_path: Path, monkeypatch) -> None:
    uninstall_double()
    monkeypatch.setitem(sys.modules, "hailo_platform", None)  # import fails as on a machine without the wheel
    with pytest.raises(BackendUnavailableError, match="HailoRT Python wheel"):
        hailo_backend.HailoBackend(_settings(tmp_path))
    ok, why = hailo_backend.probe()
    assert not ok and "hailo_platform is not importable" in why
    session = SessionManager(Settings.load(env={}, backend="hailo"), RecipeBook([]))
    with pytest.raises(BackendUnavailableError, match="hailo_platform is not importable"):
        _ = session.active_backend


def test_driver_mismatch(hailo_double, tmp_path: Path) -> None:
    hailo_double.driver_version = "4.21.0"
    with pytest.raises(BackendUnavailableError, match="hailo_pci") as err:
        hailo_backend.HailoBackend(_settings(tmp_path))
    assert "HAILO_INVALID_DRIVER_VERSION" in str(err.value) and "4.23.0" in str(err.value)


def test_device_owned_by_another_process(hailo_double, tmp_path: Path) -> None:
    hailo_double.held_by_other_process = True
    with pytest.raises(BackendUnavailableError, match="HAILO_IMMICH_MULTI_PROCESS_SERVICE") as err:
        hailo_backend.HailoBackend(_settings(tmp_path))
    assert "HAILO_OUT_OF_PHYSICAL_DEVICES" in str(err.value) and "hailort_service" in str(err.value)
    with pytest.raises(BackendUnavailableError, match="could not reach hailort_service"):
        hailo_backend.HailoBackend(_settings(tmp_path, hailo_multi_process_service=True))
    hailo_double.service_running = True
    backend = hailo_backend.HailoBackend(_settings(tmp_path, hailo_multi_process_service=True))
    assert backend.info()["multi_process_service"] is True
    backend.close()


def test_second_backend_in_one_process_is_refused(hailo_double, tmp_path: Path) -> None:
    first = hailo_backend.HailoBackend(_settings(tmp_path))
    try:
        with pytest.raises(BackendUnavailableError, match="already in use"):
            hailo_backend.HailoBackend(_settings(tmp_path))
    finally:
        first.close()
    hailo_backend.HailoBackend(_settings(tmp_path)).close()  # released: a new one opens


def test_hailo8_hef_on_hailo8l_is_refused(hailo_double, tmp_path: Path) -> None:
    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path, device_arch="HAILO8L") as session:
        with pytest.raises(ModelMismatchError, match="compiled for Hailo-8 .*this device is a Hailo-8L.*hailo8l"):
            session.model(r.id)


def test_real_hailo15_hef_is_refused_on_hailo8(hailo_double, tmp_path: Path, hef_fixtures: Path) -> None:
    r = recipe(tmp_path, "scrfd-h15", inputs=[{"name": "scrfd_2_5g/input_layer1", "shape": [640, 640, 3], "dtype": "uint8"}],
               outputs=[{"name": "scrfd_2_5g/conv42", "shape": [80, 80, 2]}])
    target = tmp_path / "models" / r.id / r.file().name
    target.parent.mkdir(parents=True)
    shutil.copy(hef_fixtures / "scrfd_2.5g_h15.hef", target)
    with SessionManager(_settings(tmp_path), RecipeBook([r])) as session:
        with pytest.raises(ModelMismatchError, match=r"compiled for Hailo-15H/10H \(HAILO15H\).*Hailo-8"):
            session.model(r.id)


def test_real_arcface_hef_runs_with_its_own_quantisation(hailo_double, tmp_path: Path, hef_fixtures: Path) -> None:
    from hailo_platform import _emulator

    name_in, name_out = "arcface_mobilefacenet/input_layer1", "arcface_mobilefacenet/fc1"
    r = recipe(tmp_path, "arcface-mbf-hailo", inputs=[{"name": name_in, "shape": [112, 112, 3], "dtype": "uint8"}],
               outputs=[{"name": name_out, "shape": [512]}])
    target = tmp_path / "models" / r.id / r.file().name
    target.parent.mkdir(parents=True)
    shutil.copy(hef_fixtures / "arcface_mobilefacenet.hef", target)
    proj = np.random.default_rng(1).normal(0, 0.3, (3, 512)).astype(np.float32)
    twin = lambda d: {name_out: ((d[name_in].mean(axis=(1, 2)) - 127.5) / 127.5) @ proj}  # noqa: E731
    _emulator.register_twin("arcface_mobilefacenet", twin)
    faces = np.random.default_rng(2).integers(0, 256, (3, 112, 112, 3), dtype=np.uint8)
    with SessionManager(_settings(tmp_path), RecipeBook([r])) as session:
        out = session.run(r.id, {name_in: faces}).outputs[name_out]
    scale, zp = 0.01673891767859459, 144.0  # the file's qp for fc1 (MANIFEST.json)
    expected = np.clip(twin({name_in: faces.astype(np.float32)})[name_out], (0 - zp) * scale, (255 - zp) * scale)
    assert np.abs(out - expected).max() <= scale / 2 + 1e-5
    grid = out / scale + zp
    np.testing.assert_allclose(grid, np.rint(grid), atol=1e-3)


def test_layer_names_and_shapes_must_match_the_recipe(hailo_double, tmp_path: Path) -> None:
    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path):
        pass
    cases = [
        (recipe(tmp_path, outputs=[{"name": "emb/fc2", "shape": [8]}]), r"names output 'emb/fc2'.*emb/fc1"),
        (recipe(tmp_path, outputs=[{"name": EMB_OUT, "shape": [16]}]), r"'emb/fc1' has shape \[16\] in the recipe but \[8\] in the HEF"),
        (recipe(tmp_path, inputs=[{"name": EMB_IN, "shape": [16, 16, 3], "dtype": "uint16"}]), "is UINT8 in the HEF"),
        (recipe(tmp_path, inputs=[{"name": EMB_IN, "shape": [16, 16, 3]}, {"name": "emb/x", "shape": [2]}]), "declares 2 input"),
    ]
    for bad, words in cases:
        with SessionManager(_settings(tmp_path), RecipeBook([bad])) as session:
            with pytest.raises(ModelMismatchError, match=words):
                session.model(bad.id)


def test_corrupt_and_outdated_hefs(hailo_double, tmp_path: Path, hef_fixtures: Path) -> None:
    r = recipe(tmp_path)
    target = tmp_path / "models" / r.id / r.file().name
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x01HEF" + bytes(60))
    with SessionManager(_settings(tmp_path), RecipeBook([r])) as session:
        with pytest.raises(ModelCorruptError):
            session.model(r.id)
    shutil.copy(hef_fixtures / "mnist.hef", target)
    with SessionManager(_settings(tmp_path), RecipeBook([r])) as session:
        with pytest.raises(ModelCorruptError, match="outdated"):
            session.model(r.id)


# ---- backend choice --------------------------------------------------------------------------


def test_auto_picks_hailo_when_a_device_is_present(hailo_double, tmp_path: Path) -> None:
    with SessionManager(Settings.load(env={}, backend="auto"), RecipeBook([])) as session:
        assert session.active_backend == "hailo"
        assert session.fallback_reason is None
        assert any("backend: hailo" in n and "emulated" in n for n in session.notices)
    assert hailo_double.vdevices_created == 1  # the probe opened and released it


def test_auto_falls_back_to_cpu_loudly(hailo_double, tmp_path: Path, caplog) -> None:
    hailo_double.devices.clear()
    with SessionManager(Settings.load(env={}, backend="auto"), RecipeBook([])) as session:
        assert session.active_backend == "cpu"
        assert "no Hailo device was found" in session.fallback_reason
        assert any(n.startswith("NO HAILO DEVICE") for n in session.notices)
    hailo_double.devices.append(type(hailo_double).__dataclass_fields__["devices"].default_factory()[0])
    hailo_double.driver_version = "4.22.0"
    with SessionManager(Settings.load(env={}, backend="auto"), RecipeBook([])) as session:
        assert session.active_backend == "cpu" and "HAILO_INVALID_DRIVER_VERSION" in session.fallback_reason
    with SessionManager(Settings.load(env={}, backend="hailo"), RecipeBook([])) as session:
        with pytest.raises(BackendUnavailableError, match="HAILO_INVALID_DRIVER_VERSION"):
            _ = session.active_backend


def test_per_feature_output_scales_are_applied(hailo_double, tmp_path: Path) -> None:
    """FLOAT32 outputs let HailoRT dequantise per feature; the double does the same, so a backend
    reading the (zeroed) scalar quant_info would give zeros here."""
    from hailo_platform import _emulator
    from hailo_immich_cli.testkit.hef_builder import Layer, build_hef

    r = recipe(tmp_path, "pf-hailo", outputs=[{"name": EMB_OUT, "shape": [8]}])
    scales = [0.01 * (i + 1) for i in range(8)]
    zps = [float(10 * i) for i in range(8)]
    path = build_hef(tmp_path / "models" / r.id / r.file().name, "emb", [Layer(EMB_IN, (16, 16, 3))],
                     [Layer(EMB_OUT, (8,), per_feature=(scales, zps))], extensions=(0, 3, 26, 12, 25))
    target = np.linspace(-0.3, 0.5, 8, dtype=np.float32)
    _emulator.register_twin(path, lambda d: {EMB_OUT: np.tile(target, (len(d[EMB_IN]), 1))})
    with SessionManager(_settings(tmp_path), RecipeBook([r])) as session:
        out = session.run(r.id, {EMB_IN: images(2)}).outputs[EMB_OUT]
        assert session.model(r.id).outputs[0].quant_per_feature is True
    expected = np.clip(target, (0 - np.array(zps)) * scales, (255 - np.array(zps)) * scales)
    assert np.all(np.abs(out - expected) <= np.array(scales) / 2 + 1e-6)


def test_use_after_fork_is_a_clear_device_error(hailo_double, tmp_path: Path, monkeypatch) -> None:
    from hailo_immich_cli.errors import DeviceError

    r = recipe(tmp_path)
    with make_hailo_session([r], {r.id: emb_twin}, tmp_path) as session:
        session.model(r.id)
        real = hailo_backend.os.getpid()
        monkeypatch.setattr(hailo_backend.os, "getpid", lambda: real + 1)
        with pytest.raises(DeviceError, match="opened by process"):
            session.run(r.id, {EMB_IN: images(1)})
