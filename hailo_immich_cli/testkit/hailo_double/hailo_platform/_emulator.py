"""The emulated machine behind the hailo_platform test double: devices, driver, other processes,
and the "twins" that compute a HEF's outputs. Tests set these; the public API never does.

Nothing here is HailoRT: results produced through it are emulated, never hardware results.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

Twin = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


@dataclass
class EmulatedDevice:
    device_id: str = "0000:01:00.0"
    arch: str = "HAILO8"  # HAILO8 | HAILO8L


@dataclass
class Machine:
    devices: list[EmulatedDevice] = field(default_factory=lambda: [EmulatedDevice()])
    driver_version: str = "4.23.0"
    held_by_other_process: bool = False  # another process owns the device without the service
    service_running: bool = False  # hailort_service (multi-process service) is up
    frame_latency_s: float = 0.0  # emulated device time per frame (time.sleep: releases the GIL)
    hang: bool = False  # the device never completes a frame (timeouts)
    fail_frames_with: str | None = None  # a HAILO_* status name every frame fails with
    twins: dict[str, Twin] = field(default_factory=dict)  # by HEF path (resolved) or network group name
    # observations for tests
    frames_run: int = 0
    max_in_flight: int = 0
    vdevices_created: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


MACHINE = Machine()


def reset() -> Machine:
    """A fresh machine: one Hailo-8, matching driver, no twins."""
    global MACHINE
    MACHINE = Machine()
    return MACHINE


def register_twin(key: str | Path, twin: Twin) -> None:
    """Outputs for a HEF: key is the HEF path or its network group name."""
    MACHINE.twins[_key(key)] = twin


def _key(key: str | Path) -> str:
    return str(Path(key).resolve()) if isinstance(key, Path) or "/" in str(key) and Path(key).exists() else str(key)


def find_twin(path: str | None, network_group: str) -> Twin | None:
    if path is not None:
        twin = MACHINE.twins.get(str(Path(path).resolve()))
        if twin is not None:
            return twin
    return MACHINE.twins.get(network_group)


def onnx_twin(model_path: str | Path, input_names: list[str], output_names: list[str], *,
              nchw: bool = False, mean: Any = None, std: Any = None) -> Twin:
    """A twin that runs an ONNX model with ONNX Runtime: HEF input i feeds ONNX input i.

    nchw: transpose NHWC frames to NCHW first; mean/std: the normalisation a HEF does on-chip.
    HEF output j takes ONNX output j, reshaped to the HEF's frame shape.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    onnx_in = [i.name for i in session.get_inputs()]
    onnx_out = [o.name for o in session.get_outputs()]

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {}
        for hef_name, onnx_name in zip(input_names, onnx_in):
            x = np.asarray(inputs[hef_name], np.float32)
            if mean is not None:
                x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
            if nchw and x.ndim == 4:
                x = x.transpose(0, 3, 1, 2)
            feeds[onnx_name] = np.ascontiguousarray(x)
        values = session.run(onnx_out, feeds)
        return {name: np.asarray(v, np.float32) for name, v in zip(output_names, values)}

    return run
