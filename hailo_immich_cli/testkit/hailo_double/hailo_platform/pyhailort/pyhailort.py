"""The classes of the hailo_platform test double (see the package docstring).

Names, signatures, defaults and refusals follow HailoRT 4.23's pyhailort.py / pybind layer as
documented in the project's research notes (hailo.md §2). Device work runs on one emulated
"device" thread per physical device, so many host threads really do overlap with it.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hailo_immich_cli.models.hef import HefFormatError, HefInfo, HefLayer, read_hef
from hailo_platform import _emulator

HAILO_UNIQUE_VDEVICE_GROUP_ID = "UNIQUE"
_VERSION = "4.23.0"


# ---- exceptions (same hierarchy and messages as pyhailort.ExceptionWrapper) --------------------


class HailoRTException(Exception):
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTStreamAborted(HailoRTException):
    pass


class HailoRTStreamAbortedByUser(HailoRTException):
    pass


class HailoRTInvalidOperationException(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


class HailoRTHEFNotCompatibleWithDevice(HailoRTException):
    pass


class HailoRTNetworkGroupNotActivatedException(HailoRTException):
    pass


class HailoCommunicationClosedException(HailoRTException):
    pass


_STATUS_CODES = {
    "HAILO_TIMEOUT": 4, "HAILO_INVALID_ARGUMENT": 2, "HAILO_NOT_FOUND": 61, "HAILO_INVALID_OPERATION": 6,
    "HAILO_INVALID_HEF": 26, "HAILO_NETWORK_GROUP_NOT_ACTIVATED": 69, "HAILO_OUT_OF_PHYSICAL_DEVICES": 74,
    "HAILO_INVALID_DRIVER_VERSION": 76, "HAILO_RPC_FAILED": 77, "HAILO_QUEUE_IS_FULL": 85,
    "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE": 93, "HAILO_DRIVER_OPERATION_FAILED": 36,
}


# Statuses pyhailort turns into their own exception class, with its message; any other is a plain HailoRTException.
_STATUS_EXCEPTIONS: dict[str, tuple[type[HailoRTException], str]] = {
    "HAILO_TIMEOUT": (HailoRTTimeout, "Received a timeout - hailort has failed because a timeout had occurred"),
    "HAILO_INVALID_OPERATION": (HailoRTInvalidOperationException, "Invalid operation. See hailort.log for more information"),
    "HAILO_INVALID_ARGUMENT": (HailoRTInvalidArgumentException, "Invalid argument. See hailort.log for more information"),
    "HAILO_NOT_FOUND": (HailoRTNotFoundException, "Item not found. See hailort.log for more information"),
    "HAILO_INVALID_HEF": (HailoRTInvalidHEFException, "Invalid HEF. See hailort.log for more information"),
    "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE": (HailoRTHEFNotCompatibleWithDevice,
                                             "HEF file is not compatible with device. See hailort.log for more information"),
    "HAILO_NETWORK_GROUP_NOT_ACTIVATED": (HailoRTNetworkGroupNotActivatedException, "Network group is not activated"),
}


def _status_error(name: str) -> HailoRTException:
    """The exception pyhailort raises for a libhailort status."""
    if name in _STATUS_EXCEPTIONS:
        cls, message = _STATUS_EXCEPTIONS[name]
        return cls(message)
    return HailoRTException(f"libhailort failed with error: {_STATUS_CODES.get(name, 1)} ({name})")


# ---- enums and small value types ----------------------------------------------------------------


class HailoSchedulingAlgorithm(Enum):
    NONE = 0
    ROUND_ROBIN = 1


class FormatType(Enum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class FormatOrder(Enum):
    AUTO = 0
    NHWC = 1
    NHCW = 2
    FCR = 3
    F8CR = 4
    NHW = 5
    NC = 6
    NCHW = 7
    HAILO_NMS_BY_CLASS = 8


class HailoStreamInterface(Enum):
    PCIe = 0
    INTEGRATED = 1
    ETH = 2
    MIPI = 3


class HailoStreamDirection(Enum):
    H2D = 0
    D2H = 1


class HailoFormatFlags(Enum):
    NONE = 0
    TRANSPOSED = 1


_NP = {FormatType.UINT8: np.uint8, FormatType.UINT16: np.uint16, FormatType.FLOAT32: np.float32}
_FROM_HEF = {"UINT8": FormatType.UINT8, "UINT16": FormatType.UINT16, "FLOAT32": FormatType.FLOAT32}


class HailoFormat:
    def __init__(self, type: FormatType, order: FormatOrder, flags: HailoFormatFlags = HailoFormatFlags.NONE):
        self.type, self.order, self.flags = type, order, flags

    def __repr__(self) -> str:
        return f"HailoFormat(type={self.type.name}, order={self.order.name})"


class QuantInfo:
    def __init__(self, qp_zp: float, qp_scale: float, limvals_min: float, limvals_max: float):
        self.qp_zp, self.qp_scale, self.limvals_min, self.limvals_max = qp_zp, qp_scale, limvals_min, limvals_max


class VStreamInfo:
    """What HEF.get_*_vstream_infos() returns per stream."""

    def __init__(self, layer: HefLayer, network_name: str):
        self.name = layer.name
        self.network_name = network_name
        self.direction = HailoStreamDirection.H2D if layer.direction == "input" else HailoStreamDirection.D2H
        self.format = HailoFormat(_FROM_HEF[layer.dtype], FormatOrder[layer.host_order] if layer.host_order in FormatOrder.__members__ else FormatOrder.AUTO)
        if layer.per_feature is not None:  # HailoRT sets INVALID_QP (all zeros) for per-feature outputs
            self.quant_info = QuantInfo(0.0, 0.0, 0.0, 0.0)
        else:
            self.quant_info = QuantInfo(layer.qp_zp, layer.qp_scale, layer.limvals_min, layer.limvals_max)
        self.shape = tuple(layer.shape)


class NetworkGroupInfo:
    def __init__(self, name: str, is_multi_context: bool):
        self.name, self.is_multi_context = name, is_multi_context


# ---- HEF --------------------------------------------------------------------------------------


class HEF:
    """HEF(hef_source): a path (str) or the file's bytes."""

    def __init__(self, hef_source):
        if isinstance(hef_source, str):
            self._path: str | None = hef_source
            self._info = self._read(Path(hef_source))
        elif isinstance(hef_source, bytes):
            self._path = None
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "buffer.hef"
                path.write_bytes(hef_source)
                self._info = self._read(path)
        else:
            raise ValueError("HEF can only be created from a file path (str) or a buffer (bytes)")

    @staticmethod
    def _read(path: Path) -> HefInfo:
        if not path.is_file():
            raise _status_error("HAILO_OPEN_FILE_FAILURE")
        try:
            info = read_hef(path)
        except HefFormatError:
            raise _status_error("HAILO_INVALID_HEF") from None
        if not info.hailort_4_23_loadable:
            raise _status_error("HAILO_INVALID_HEF")
        return info

    @property
    def path(self) -> str | None:
        return self._path

    def _ng(self, name: str | None):
        groups = self._info.network_groups
        if not name:
            return groups[0]
        for ng in groups:
            if name in (ng.name, *ng.networks_names):
                return ng
        raise _status_error("HAILO_NOT_FOUND")

    def get_network_group_names(self) -> list[str]:
        return [ng.name for ng in self._info.network_groups]

    def get_network_groups_infos(self) -> list[NetworkGroupInfo]:
        return [NetworkGroupInfo(ng.name, ng.multi_context) for ng in self._info.network_groups]

    def get_networks_names(self, network_group_name=None) -> list[str]:
        return list(self._ng(network_group_name).networks_names)

    def get_input_vstream_infos(self, name=None) -> list[VStreamInfo]:
        ng = self._ng(name)
        return [VStreamInfo(layer, ng.name) for layer in ng.inputs]

    def get_output_vstream_infos(self, name=None) -> list[VStreamInfo]:
        ng = self._ng(name)
        return [VStreamInfo(layer, ng.name) for layer in ng.outputs]

    def get_all_vstream_infos(self, name=None) -> list[VStreamInfo]:
        return self.get_input_vstream_infos(name) + self.get_output_vstream_infos(name)

    def get_sorted_output_names(self, network_group_name=None) -> list[str]:
        return [layer.name for layer in self._ng(network_group_name).outputs]

    def bottleneck_fps(self, network_group_name=None) -> float:
        fps = self._ng(network_group_name).bottleneck_fps
        if fps == 0:
            raise HailoRTException("bottleneck_fps is zero")
        return fps


# ---- devices ----------------------------------------------------------------------------------


class BoardInformation:
    def __init__(self, device: "_emulator.EmulatedDevice"):
        self.device_architecture = device.arch
        self.board_name = {"HAILO8": "Hailo-8", "HAILO8L": "Hailo-8L"}.get(device.arch, device.arch)
        self.firmware_version = _VERSION
        self.serial_number = "EMULATED"
        self.product_name = f"{self.board_name} (emulated)"


class _Control:
    def __init__(self, device: "_emulator.EmulatedDevice"):
        self._device = device

    def identify(self) -> BoardInformation:
        return BoardInformation(self._device)


class Device:
    """A physical device; scan() lists the ids the driver sees."""

    @staticmethod
    def scan() -> list[str]:
        return [d.device_id for d in _emulator.MACHINE.devices]

    def __init__(self, device_id: str | None = None):
        devices = _emulator.MACHINE.devices
        match = [d for d in devices if device_id in (None, d.device_id)]
        if not match:
            raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES")
        self._device = match[0]
        self.device_id = self._device.device_id
        self.control = _Control(self._device)

    def release(self) -> None:
        pass


class _Physical:
    """Per emulated device: who holds it, and the thread that does its work, frame by frame."""

    _all: dict[str, "_Physical"] = {}
    _all_lock = threading.Lock()

    def __init__(self, device: "_emulator.EmulatedDevice"):
        self.device = device
        self.lock = threading.Lock()
        self.groups: dict[str, int] = {}
        self.jobs: "queue.Queue[tuple]" = queue.Queue()
        self.in_flight = 0
        self.worker = threading.Thread(target=self._work, name=f"emulated-hailo-{device.device_id}", daemon=True)
        self.worker.start()

    @classmethod
    def of(cls, device: "_emulator.EmulatedDevice") -> "_Physical":
        with cls._all_lock:
            key = f"{id(_emulator.MACHINE)}:{device.device_id}"
            if key not in cls._all:
                cls._all[key] = cls(device)
            return cls._all[key]

    def submit(self, model: "ConfiguredInferModel", bindings: list["Bindings"], job: "AsyncInferJob") -> None:
        machine = _emulator.MACHINE
        with machine.lock:
            self.in_flight += len(bindings)
            machine.max_in_flight = max(machine.max_in_flight, self.in_flight)
        self.jobs.put((model, bindings, job))

    def _work(self) -> None:
        while True:
            model, bindings, job = self.jobs.get()
            machine = _emulator.MACHINE
            if machine.hang:
                continue  # the frame never completes: waiters time out
            error: Exception | None = None
            try:
                if machine.frame_latency_s:
                    time.sleep(machine.frame_latency_s * len(bindings))
                if machine.fail_frames_with:
                    raise _status_error(machine.fail_frames_with)
                model._compute(bindings)
            except Exception as exc:  # delivered to the waiter, as HailoRT does
                error = exc
            with machine.lock:
                self.in_flight -= len(bindings)
                machine.frames_run += len(bindings)
            model._frames_done(len(bindings))
            job._complete(error)


class VDeviceParams:
    """The pybind VDeviceParams: typed properties; default() has NO scheduler (python binding)."""

    _types = {"device_ids": (list, type(None)), "device_count": int, "scheduling_algorithm": HailoSchedulingAlgorithm,
              "group_id": str, "multi_process_service": bool}

    def __init__(self):
        object.__setattr__(self, "device_ids", None)
        object.__setattr__(self, "device_count", 1)
        object.__setattr__(self, "scheduling_algorithm", HailoSchedulingAlgorithm.NONE)
        object.__setattr__(self, "group_id", HAILO_UNIQUE_VDEVICE_GROUP_ID)
        object.__setattr__(self, "multi_process_service", False)

    def __setattr__(self, name: str, value: Any) -> None:
        kind = self._types.get(name)
        if kind is None:
            raise AttributeError(f"'VDeviceParams' object has no attribute '{name}'")
        if not isinstance(value, kind):
            raise TypeError(f"incompatible type for VDeviceParams.{name}: {type(value).__name__}")
        object.__setattr__(self, name, value)


class VDevice:
    """VDevice(params=None, *, device_ids=None): the device(s) as one; bound to its creating process."""

    @staticmethod
    def create_params() -> VDeviceParams:
        return VDeviceParams()

    def __init__(self, params: VDeviceParams | None = None, *, device_ids: list[str] | None = None):
        params = params if params is not None else VDevice.create_params()
        machine = _emulator.MACHINE
        if machine.driver_version != _VERSION:
            raise _status_error("HAILO_INVALID_DRIVER_VERSION")
        if params.multi_process_service and not machine.service_running:
            raise _status_error("HAILO_RPC_FAILED")
        ids = device_ids or params.device_ids
        devices = [d for d in machine.devices if not ids or d.device_id in ids]
        if not devices or (machine.held_by_other_process and not params.multi_process_service):
            raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES")
        self._physical = _Physical.of(devices[0])
        group = params.group_id
        with self._physical.lock:
            if self._physical.groups and not params.multi_process_service:
                shared = group != HAILO_UNIQUE_VDEVICE_GROUP_ID and set(self._physical.groups) == {group}
                if not shared:
                    raise _status_error("HAILO_OUT_OF_PHYSICAL_DEVICES")
            self._physical.groups[group] = self._physical.groups.get(group, 0) + 1
        self._group = group
        self._params = params
        self._scheduled = params.scheduling_algorithm != HailoSchedulingAlgorithm.NONE
        self._creation_pid = os.getpid()
        self._released = False
        self._active_model: ConfiguredInferModel | None = None
        with machine.lock:
            machine.vdevices_created += 1

    def _check(self) -> None:
        if self._creation_pid != os.getpid():
            raise HailoRTException("VDevice can only be used by the process that created it")
        if self._released:
            raise _status_error("HAILO_INVALID_OPERATION")

    def create_infer_model(self, hef_source, name: str = "") -> "InferModel":
        self._check()
        hef_source = str(hef_source) if isinstance(hef_source, Path) else hef_source
        return InferModel(self, HEF(hef_source), name)

    def configure(self, hef, configure_params_by_name=None):
        self._check()
        raise NotImplementedError("the hailo_platform test double emulates the InferModel API only")

    def get_physical_devices(self) -> list[Device]:
        self._check()
        return [Device(self._physical.device.device_id)]

    def get_physical_devices_ids(self) -> list[str]:
        self._check()
        return [self._physical.device.device_id]

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        with self._physical.lock:
            count = self._physical.groups.get(self._group, 0) - 1
            if count <= 0:
                self._physical.groups.pop(self._group, None)
            else:
                self._physical.groups[self._group] = count

    def __enter__(self) -> "VDevice":
        return self

    def __exit__(self, *args: object) -> bool:
        self.release()
        return False

    def __del__(self) -> None:
        try:
            if self._creation_pid == os.getpid():
                self.release()
        except Exception:
            pass


# ---- InferModel API -----------------------------------------------------------------------------


class InferModel:
    class InferStream:
        def __init__(self, layer: HefLayer):
            self._layer = layer
            self._type = _FROM_HEF[layer.dtype]
            self.name = layer.name
            self.shape = tuple(layer.shape)
            self.is_nms = layer.host_order == "HAILO_NMS_BY_CLASS"

        @property
        def format(self) -> HailoFormat:
            order = FormatOrder[self._layer.host_order] if self._layer.host_order in FormatOrder.__members__ else FormatOrder.AUTO
            return HailoFormat(self._type, order)

        def set_format_type(self, type: FormatType) -> None:
            if not isinstance(type, FormatType):
                raise TypeError(f"set_format_type(): incompatible argument type {type.__class__.__name__}")
            self._type = _FROM_HEF[self._layer.dtype] if type == FormatType.AUTO else type

        def set_format_order(self, order: FormatOrder) -> None:
            if not isinstance(order, FormatOrder):
                raise TypeError("set_format_order(): incompatible argument type")

        @property
        def quant_infos(self) -> list[QuantInfo]:
            layer = self._layer
            if layer.per_feature is not None:
                return [QuantInfo(z, s, layer.limvals_min, layer.limvals_max) for s, z in zip(*layer.per_feature)]
            return [QuantInfo(layer.qp_zp, layer.qp_scale, layer.limvals_min, layer.limvals_max)]

    def __init__(self, vdevice: VDevice, hef: HEF, name: str = ""):
        self._vdevice = vdevice
        self._hef = hef
        self._ng = hef._ng(name or None)
        self._inputs = [InferModel.InferStream(layer) for layer in self._ng.inputs]
        self._outputs = [InferModel.InferStream(layer) for layer in self._ng.outputs]
        self._batch_size = 0

    @property
    def hef(self) -> HEF:
        return self._hef

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

    @property
    def inputs(self) -> list["InferModel.InferStream"]:
        return list(self._inputs)

    @property
    def outputs(self) -> list["InferModel.InferStream"]:
        return list(self._outputs)

    @staticmethod
    def _pick(streams: list["InferModel.InferStream"], name: str):
        if not name:
            if len(streams) != 1:
                raise _status_error("HAILO_INVALID_OPERATION")
            return streams[0]
        for stream in streams:
            if stream.name == name:
                return stream
        raise _status_error("HAILO_NOT_FOUND")

    def input(self, name: str = "") -> "InferModel.InferStream":
        return self._pick(self._inputs, name)

    def output(self, name: str = "") -> "InferModel.InferStream":
        return self._pick(self._outputs, name)

    def set_batch_size(self, batch_size: int) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 0 or batch_size > 0xFFFF:
            raise TypeError("set_batch_size(): incompatible function arguments") if not isinstance(batch_size, int) else _status_error("HAILO_INVALID_ARGUMENT")
        self._batch_size = batch_size

    def set_power_mode(self, power_mode) -> None:
        pass

    def configure(self) -> "ConfiguredInferModel":
        self._vdevice._check()
        info = self._hef._info
        arch = self._vdevice._physical.device.arch
        if not info.runs_on(arch):
            raise _status_error("HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE")
        for stream in self._inputs + self._outputs:
            native = _FROM_HEF[stream._layer.dtype]
            if stream._type not in (native, FormatType.FLOAT32):
                raise _status_error("HAILO_INVALID_ARGUMENT")  # no uint8 <-> uint16 conversion
            if stream.is_nms and stream._type != FormatType.FLOAT32:
                raise _status_error("HAILO_INVALID_ARGUMENT")
        return ConfiguredInferModel(self)


class AsyncInferCompletionInfo:
    def __init__(self, exception: Exception | None):
        self.exception = exception


class AsyncInferJob:
    def __init__(self, callback: Callable[..., None] | None):
        self._done = threading.Event()
        self._error: Exception | None = None
        self._callback = callback

    def _complete(self, error: Exception | None) -> None:
        self._error = error
        if self._callback is not None:
            try:
                self._callback(completion_info=AsyncInferCompletionInfo(error))
            except Exception:  # HailoRT logs callback errors; it never propagates them
                pass
        self._done.set()

    def wait(self, timeout_ms: int) -> None:
        if not isinstance(timeout_ms, int):
            raise TypeError("wait(): timeout_ms must be an int (milliseconds)")
        if not self._done.wait(timeout_ms / 1000.0):
            raise _status_error("HAILO_TIMEOUT")
        if self._error is not None:
            raise self._error


class Bindings:
    """One frame's buffers (ConfiguredInferModel.create_bindings())."""

    class InferStream:
        def __init__(self, stream: InferModel.InferStream, dtype: Any):
            self._stream = stream
            self._dtype = np.dtype(dtype)
            self._buffer: np.ndarray | None = None

        def set_buffer(self, buffer: np.ndarray) -> None:
            if not isinstance(buffer, np.ndarray):
                raise TypeError("set_buffer(): expected a numpy.ndarray")
            if not buffer.flags.c_contiguous:
                raise _status_error("HAILO_INVALID_ARGUMENT")
            if buffer.dtype != self._dtype or tuple(buffer.shape) != self._stream.shape:
                raise _status_error("HAILO_INVALID_ARGUMENT")
            self._buffer = buffer

        def get_buffer(self, tf_format: bool = False) -> np.ndarray | None:
            return self._buffer

    def __init__(self, model: "ConfiguredInferModel"):
        self._inputs = {s.name: Bindings.InferStream(s, _NP[s._type]) for s in model._infer_model._inputs}
        self._outputs = {s.name: Bindings.InferStream(s, _NP[s._type]) for s in model._infer_model._outputs}

    @staticmethod
    def _pick(streams: dict, name: str) -> "Bindings.InferStream":
        if not name:
            if len(streams) != 1:
                raise _status_error("HAILO_INVALID_OPERATION")
            return next(iter(streams.values()))
        if name not in streams:
            raise _status_error("HAILO_NOT_FOUND")
        return streams[name]

    def input(self, name: str = "") -> "Bindings.InferStream":
        return self._pick(self._inputs, name)

    def output(self, name: str = "") -> "Bindings.InferStream":
        return self._pick(self._outputs, name)


def _qp(layer: HefLayer) -> tuple[np.ndarray, np.ndarray]:
    if layer.per_feature is not None:
        return np.asarray(layer.per_feature[0], np.float32), np.asarray(layer.per_feature[1], np.float32)
    return np.float32(layer.qp_scale), np.float32(layer.qp_zp)


def _quantise(x: np.ndarray, layer: HefLayer) -> np.ndarray:
    scale, zp = _qp(layer)
    top = np.iinfo(layer.np_dtype).max
    return np.clip(np.rint(x / scale + zp), 0, top).astype(layer.np_dtype)


def _dequantise(q: np.ndarray, layer: HefLayer) -> np.ndarray:
    scale, zp = _qp(layer)
    return ((q.astype(np.float32) - zp) * scale).astype(np.float32)


class ConfiguredInferModel:
    """A configured model; context manager. With the scheduler there is no activate()."""

    _queue_size = 4

    def __init__(self, infer_model: InferModel):
        self._infer_model = infer_model
        self._vdevice = infer_model._vdevice
        self._scheduled = self._vdevice._scheduled
        self._active = False
        self._shut = False
        self._pending = 0
        self._cond = threading.Condition()
        self._snapshot = {s.name: s._type for s in infer_model._inputs + infer_model._outputs}

    def __enter__(self) -> "ConfiguredInferModel":
        return self

    def __exit__(self, *args: object) -> bool:
        self.shutdown()
        return False

    def create_bindings(self, input_buffers=None, output_buffers=None) -> Bindings:
        bindings = Bindings(self)
        for name, buffer in (input_buffers or {}).items():
            bindings.input(name).set_buffer(buffer)
        for name, buffer in (output_buffers or {}).items():
            bindings.output(name).set_buffer(buffer)
        return bindings

    def activate(self, network_group_params=None) -> None:
        self._vdevice._check()
        if self._scheduled:
            raise _status_error("HAILO_INVALID_OPERATION")
        if self._vdevice._active_model not in (None, self):
            raise _status_error("HAILO_INVALID_OPERATION")  # one active network group at a time
        self._vdevice._active_model = self
        self._active = True

    def deactivate(self) -> None:
        if self._active:
            self._active = False
            self._vdevice._active_model = None

    def get_async_queue_size(self) -> int:
        return self._queue_size

    def wait_for_async_ready(self, timeout_ms: int = 1000, frames_count: int = 1) -> None:
        if frames_count > self._queue_size:
            raise _status_error("HAILO_INVALID_ARGUMENT")
        with self._cond:
            ok = self._cond.wait_for(lambda: self._pending + frames_count <= self._queue_size, timeout_ms / 1000.0)
        if not ok:
            raise _status_error("HAILO_TIMEOUT")

    def run_async(self, bindings: list[Bindings], callback=None) -> AsyncInferJob:
        self._vdevice._check()
        if self._shut:
            raise _status_error("HAILO_INVALID_OPERATION")
        if not self._scheduled and not self._active:
            raise _status_error("HAILO_NETWORK_GROUP_NOT_ACTIVATED")
        if not isinstance(bindings, list) or not bindings:
            raise TypeError("run_async(): bindings must be a non-empty list of Bindings")
        for b in bindings:
            if not isinstance(b, Bindings) or any(s._buffer is None for s in (*b._inputs.values(), *b._outputs.values())):
                raise _status_error("HAILO_INVALID_OPERATION")  # every stream needs a buffer
        with self._cond:
            if self._pending + len(bindings) > self._queue_size:
                raise _status_error("HAILO_QUEUE_IS_FULL")
            self._pending += len(bindings)
        job = AsyncInferJob(callback)
        self._vdevice._physical.submit(self, list(bindings), job)
        return job

    def run(self, bindings: list[Bindings], timeout: int) -> None:
        job = self.run_async(bindings)
        job.wait(timeout)

    def _frames_done(self, count: int) -> None:
        with self._cond:
            self._pending -= count
            self._cond.notify_all()

    def _compute(self, bindings: list[Bindings]) -> None:
        """Device work: what the network sees is the HEF-quantised input; what the host gets is
        the twin's float output quantised to the layer's dtype (then dequantised if FLOAT32)."""
        ng = self._infer_model._ng
        twin = _emulator.find_twin(self._infer_model._hef.path, ng.name)
        if twin is None:
            raise HailoRTException(f"hailo_platform test double: no twin registered for network group '{ng.name}'")
        seen = {}
        for layer in ng.inputs:
            frames = np.stack([b._inputs[layer.name]._buffer for b in bindings])
            if self._snapshot[layer.name] == FormatType.FLOAT32:
                frames = _quantise(frames, layer)  # HailoRT quantises float inputs on the host
            seen[layer.name] = _dequantise(frames, layer)
        result = twin(seen)
        for layer in ng.outputs:
            if layer.name not in result:
                raise HailoRTException(f"hailo_platform test double: the twin gave no output '{layer.name}'")
            value = np.asarray(result[layer.name], np.float32)
            if value.size != len(bindings) * int(np.prod(layer.shape)):
                raise HailoRTException(f"hailo_platform test double: twin output '{layer.name}' has shape {value.shape}, "
                                       f"HEF frame shape is {layer.shape}")
            value = value.reshape((len(bindings), *layer.shape))
            if layer.host_order != "HAILO_NMS_BY_CLASS":
                device = _quantise(value, layer)
                value = _dequantise(device, layer) if self._snapshot[layer.name] == FormatType.FLOAT32 else device
            for i, b in enumerate(bindings):
                b._outputs[layer.name]._buffer[...] = value[i]

    def set_scheduler_timeout(self, timeout_ms: int) -> None:
        self._need_scheduler()

    def set_scheduler_threshold(self, threshold: int) -> None:
        self._need_scheduler()

    def set_scheduler_priority(self, priority: int) -> None:
        self._need_scheduler()
        if not 0 <= priority <= 31:
            raise _status_error("HAILO_INVALID_ARGUMENT")

    def _need_scheduler(self) -> None:
        if not self._scheduled:
            raise _status_error("HAILO_INVALID_OPERATION")

    def shutdown(self) -> None:
        self._shut = True
        self.deactivate()
