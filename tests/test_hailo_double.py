"""The hailo_platform test double refuses what HailoRT 4.23 refuses, and reads real HEFs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.hef_builder import Layer, build_hef


def _hef(tmp_path: Path, arch: str = "HAILO8P") -> str:
    path = build_hef(tmp_path / "m.hef", "m", [Layer("m/in", (2, 2, 3))], [Layer("m/out", (4,), qp_scale=0.05, qp_zp=100)], hw_arch=arch)
    return str(path)


def _twin(inputs):
    x = inputs["m/in"]
    return {"m/out": np.stack([x.mean(axis=(1, 2, 3)) / 100, -x.mean(axis=(1, 2, 3)) / 100, np.zeros(len(x)), np.ones(len(x))], 1)}


def _vdevice(hp, scheduler=True, group=None):
    params = hp.VDevice.create_params()
    if scheduler:
        params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
    if group:
        params.group_id = group
    return hp.VDevice(params)


def _configured(hp, tmp_path, vdevice, fmt="FLOAT32"):
    from hailo_platform import _emulator

    path = _hef(tmp_path)
    _emulator.register_twin(Path(path), _twin)
    model = vdevice.create_infer_model(path)
    model.output().set_format_type(getattr(hp.FormatType, fmt))
    return model.configure()


def _bindings(cim, out_dtype=np.float32):
    b = cim.create_bindings()
    b.input().set_buffer(np.full((2, 2, 3), 200, np.uint8))
    out = np.zeros(4, out_dtype)
    b.output().set_buffer(out)
    return b, out


def test_defaults_and_names(hailo_double) -> None:
    import hailo_platform as hp

    assert hp.__version__ == "4.23.0"
    assert hp.VDevice.create_params().scheduling_algorithm == hp.HailoSchedulingAlgorithm.NONE
    assert hp.VDevice.create_params().group_id == "UNIQUE"
    assert hp.Device.scan() == ["0000:01:00.0"]
    with pytest.raises(TypeError):
        hp.VDevice.create_params().scheduling_algorithm = 1


def test_real_hef_metadata(hailo_double, hef_fixtures: Path) -> None:
    import hailo_platform as hp

    manifest = {e["file"]: e for e in json.loads((hef_fixtures / "MANIFEST.json").read_text())["files"]}
    hef = hp.HEF(str(hef_fixtures / "arcface_mobilefacenet.hef"))
    expected = manifest["arcface_mobilefacenet.hef"]["summary"]["network_groups"][0]
    (inp,) = hef.get_input_vstream_infos()
    (out,) = hef.get_output_vstream_infos()
    assert (inp.name, inp.shape) == (expected["inputs"][0]["name"], (112, 112, 3))
    assert (out.name, out.shape, out.format.type) == (expected["outputs"][0]["name"], (512,), hp.FormatType.UINT8)
    assert math.isclose(out.quant_info.qp_scale, expected["outputs"][0]["qp_scale"], rel_tol=1e-6)
    assert out.quant_info.qp_zp == 144.0
    with pytest.raises(hp.HailoRTInvalidHEFException):
        hp.HEF(str(hef_fixtures / "mnist.hef"))  # outdated: no PERIPH_CALCULATION_IN_HAILORT
    with pytest.raises(ValueError):
        hp.HEF(Path(hef_fixtures / "mnist.hef"))  # str or bytes only


def test_runs_with_quantised_outputs(hailo_double, tmp_path: Path) -> None:
    import hailo_platform as hp

    with _vdevice(hp) as vd, _configured(hp, tmp_path, vd) as cim:
        b, out = _bindings(cim)
        cim.run([b], 1000)
        # the twin gives [2, -2, 0, 1]; through qp 0.05/100 and back those are exact within half a step
        np.testing.assert_allclose(out, [2.0, -2.0, 0.0, 1.0], atol=0.025)
    with _vdevice(hp) as vd, _configured(hp, tmp_path, vd, fmt="UINT8") as cim:
        b, out = _bindings(cim, np.uint8)
        cim.run([b], 1000)
        assert list(out) == [140, 60, 100, 120]  # raw device values: x / 0.05 + 100


def test_refuses_bad_buffers(hailo_double, tmp_path: Path) -> None:
    import hailo_platform as hp

    with _vdevice(hp) as vd, _configured(hp, tmp_path, vd) as cim:
        b = cim.create_bindings()
        with pytest.raises(hp.HailoRTInvalidArgumentException):
            b.input().set_buffer(np.zeros((2, 2, 3), np.float32))  # dtype: input is UINT8
        with pytest.raises(hp.HailoRTInvalidArgumentException):
            b.input().set_buffer(np.zeros((2, 3, 2), np.uint8))  # shape
        with pytest.raises(hp.HailoRTInvalidArgumentException):
            b.input().set_buffer(np.zeros((2, 2, 6), np.uint8)[:, :, ::2])  # not contiguous
        with pytest.raises(hp.HailoRTInvalidOperationException):
            cim.run_async([b])  # buffers missing
        with pytest.raises(hp.HailoRTNotFoundException):
            b.output("m/nope")


def test_no_scheduler_needs_activate(hailo_double, tmp_path: Path) -> None:
    import hailo_platform as hp

    with _vdevice(hp, scheduler=False) as vd, _configured(hp, tmp_path, vd) as cim:
        b, out = _bindings(cim)
        with pytest.raises(hp.HailoRTNetworkGroupNotActivatedException):
            cim.run_async([b])
        with pytest.raises(hp.HailoRTInvalidOperationException):
            cim.set_scheduler_priority(20)
        cim.activate()
        cim.run([b], 1000)
        assert out[3] == pytest.approx(1.0, abs=0.03)
    with _vdevice(hp) as vd, _configured(hp, tmp_path, vd) as cim:
        with pytest.raises(hp.HailoRTInvalidOperationException):
            cim.activate()  # with the scheduler, there is nothing to activate


def test_one_vdevice_per_process_unless_shared(hailo_double) -> None:
    import hailo_platform as hp

    first = _vdevice(hp)
    with pytest.raises(hp.HailoRTException, match="HAILO_OUT_OF_PHYSICAL_DEVICES"):
        _vdevice(hp)
    first.release()
    a, b = _vdevice(hp, group="SHARED"), _vdevice(hp, group="SHARED")
    a.release(), b.release()


def test_driver_mismatch_busy_device_and_service(hailo_double) -> None:
    import hailo_platform as hp

    hailo_double.driver_version = "4.20.0"
    with pytest.raises(hp.HailoRTException, match=r"76 \(HAILO_INVALID_DRIVER_VERSION\)"):
        _vdevice(hp)
    hailo_double.driver_version = "4.23.0"
    hailo_double.held_by_other_process = True
    with pytest.raises(hp.HailoRTException, match="HAILO_OUT_OF_PHYSICAL_DEVICES"):
        _vdevice(hp)
    params = hp.VDevice.create_params()
    params.multi_process_service = True
    with pytest.raises(hp.HailoRTException, match="HAILO_RPC_FAILED"):
        hp.VDevice(params)
    hailo_double.service_running = True
    hp.VDevice(params).release()


def test_arch_mismatch_and_other_process(hailo_double, tmp_path: Path, monkeypatch) -> None:
    import hailo_platform as hp
    from hailo_platform.pyhailort import pyhailort

    with _vdevice(hp) as vd:
        model = vd.create_infer_model(_hef(tmp_path, arch="HAILO15H"))
        with pytest.raises(hp.HailoRTHEFNotCompatibleWithDevice):
            model.configure()
    hailo_double.devices[0].arch = "HAILO8L"
    with _vdevice(hp) as vd:
        with pytest.raises(hp.HailoRTHEFNotCompatibleWithDevice):
            vd.create_infer_model(_hef(tmp_path, arch="HAILO8P")).configure()
        real_pid = pyhailort.os.getpid()
        monkeypatch.setattr(pyhailort.os, "getpid", lambda: real_pid + 1)
        with pytest.raises(hp.HailoRTException, match="process that created it"):
            vd.create_infer_model(_hef(tmp_path))


def test_timeouts(hailo_double, tmp_path: Path) -> None:
    import hailo_platform as hp

    hailo_double.hang = True
    with _vdevice(hp) as vd, _configured(hp, tmp_path, vd) as cim:
        b, _ = _bindings(cim)
        job = cim.run_async([b])
        with pytest.raises(hp.HailoRTTimeout):
            job.wait(50)
        with pytest.raises(hp.HailoRTTimeout):  # the queue is full of frames that never finish
            for _ in range(cim.get_async_queue_size()):
                cim.wait_for_async_ready(50)
                cim.run_async([_bindings(cim)[0]])
