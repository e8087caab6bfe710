"""Hailo backend: HailoRT 4.23 through `hailo_platform` (imported lazily; not on PyPI).

Shape of the runtime (hailo.md §0, §2.2): ONE VDevice per process with the ROUND_ROBIN model
scheduler (the python binding defaults to no scheduler), one configured InferModel per HEF kept
for the life of the process, FLOAT32 outputs (HailoRT dequantises, per-feature scales included),
UINT8 image inputs, UINT16 or FLOAT32 text inputs as the recipe says. Frames go through
`run_async` + `AsyncInferJob.wait`, which release the GIL, so host threads overlap device time;
there is no global Python lock around the device.

Every start-up failure users hit in practice (no wheel, driver/library mismatch, device owned by
another process, HEF for another chip, HEF not matching the recipe) becomes a typed error whose
message says what to do. The HEF is read with hailo_immich_cli.models.hef before HailoRT sees it.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from hailo_immich_cli.backends.base import Backend, LoadedModel, Provenance, TensorInfo
from hailo_immich_cli.errors import (
    BackendUnavailableError,
    BadInputError,
    DeviceError,
    DeviceTimeoutError,
    ModelCorruptError,
    ModelMismatchError,
)
from hailo_immich_cli.models.hef import ARCH_LABELS, HefFormatError, HefInfo, HefLayer, read_hef
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import Recipe, TensorSpec
from hailo_immich_cli.settings import Settings

log = logging.getLogger("hailo_immich")
SUPPORTED_HAILORT = "4.23"
INSTALL_HINT = (
    "install Hailo's HailoRT Python wheel (hailort-4.23.0-cp3XX-...whl from the Hailo Developer Zone) "
    "into this environment, with the matching hailort .deb and hailo_pci driver on the host"
)
DRIVER_HINT = (
    "the HailoRT library and the hailo_pci kernel driver are different versions (HAILO_INVALID_DRIVER_VERSION). "
    "They must match exactly: install hailort {version} and hailo_pci {version} on the host (or rebuild the "
    "container with the HailoRT version the host driver has; `modinfo hailo_pci | grep ^version` shows it)"
)
BUSY_HINT = (
    "the Hailo device is already in use by another process (HAILO_OUT_OF_PHYSICAL_DEVICES). "
    "Stop the other process (e.g. Frigate or a second hailo-immich), or share the device: run Hailo's "
    "hailort_service on the host and set HAILO_IMMICH_MULTI_PROCESS_SERVICE=1 here (the other process "
    "must use multi_process_service too)"
)
SERVICE_HINT = (
    "HAILO_IMMICH_MULTI_PROCESS_SERVICE is on but HailoRT could not reach hailort_service "
    "(start it on the host: `sudo systemctl enable --now hailort.service`), or turn the setting off"
)
_FORMATS = {"uint8": "UINT8", "uint16": "UINT16", "float32": "FLOAT32"}


def _import_hailo():
    try:
        import hailo_platform
    except ImportError as exc:
        raise BackendUnavailableError(f"hailo_platform is not importable ({exc}); {INSTALL_HINT}") from exc
    return hailo_platform


def _status_in(exc: BaseException, name: str) -> bool:
    text = f"{exc} {exc.__cause__ or ''}"
    return name in text


def _is(hp, exc: BaseException, class_name: str) -> bool:
    cls = getattr(hp, class_name, None)
    return isinstance(cls, type) and isinstance(exc, cls)


def _normalise_arch(value: Any) -> str | None:
    text = str(value).split(".")[-1].upper().replace("-", "")
    if "8L" in text:
        return "HAILO8L"
    if "HAILO8" in text or text in ("8", "HAILO8R"):
        return "HAILO8"
    return text or None


def _open_vdevice(hp, multi_process_service: bool):
    """The process's VDevice: ROUND_ROBIN scheduler; typed errors for the usual failures."""
    params = hp.VDevice.create_params()
    params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
    if multi_process_service:
        params.multi_process_service = True
        params.group_id = "SHARED"
    try:
        return hp.VDevice(params)
    except Exception as exc:
        version = getattr(hp, "__version__", "?")
        if _status_in(exc, "HAILO_INVALID_DRIVER_VERSION"):
            raise BackendUnavailableError(DRIVER_HINT.format(version=version)) from exc
        if _status_in(exc, "HAILO_OUT_OF_PHYSICAL_DEVICES"):
            if multi_process_service:
                raise BackendUnavailableError(f"no free Hailo device even through hailort_service: {exc}") from exc
            raise BackendUnavailableError(BUSY_HINT) from exc
        if multi_process_service and (_status_in(exc, "HAILO_RPC_FAILED") or _is(hp, exc, "HailoCommunicationClosedException")):
            raise BackendUnavailableError(SERVICE_HINT) from exc
        raise BackendUnavailableError(f"HailoRT {version} could not open the Hailo device: {exc}") from exc


def _device_identity(vdevice) -> tuple[str, str | None]:
    """(device id, arch HAILO8 | HAILO8L | None when HailoRT cannot tell)."""
    try:
        devices = vdevice.get_physical_devices()
    except Exception:
        return "unknown", None
    if not devices:
        return "unknown", None
    device = devices[0]
    device_id = str(getattr(device, "device_id", "") or "unknown")
    try:
        arch = _normalise_arch(device.control.identify().device_architecture)
    except Exception:
        arch = None
    return device_id, arch


def probe(settings: Settings | None = None) -> tuple[bool, str]:
    """(True, description) when HailoRT imports, sees a device and can open it; (False, why) otherwise."""
    try:
        hp = _import_hailo()
    except BackendUnavailableError as exc:
        return False, str(exc)
    try:
        ids = hp.Device.scan()
    except Exception as exc:  # HailoRT raises its own exception types
        return False, f"HailoRT could not scan for devices: {exc}"
    if not ids:
        return False, "hailo_platform is installed but no Hailo device was found (is the hailo_pci driver loaded? `ls /dev/hailo*`)"
    if settings is None:
        try:
            settings = Settings.load()
        except Exception:
            settings = Settings()
    try:
        vdevice = _open_vdevice(hp, settings.hailo_multi_process_service)
    except BackendUnavailableError as exc:
        return False, str(exc)
    try:
        device_id, arch = _device_identity(vdevice)
    finally:
        vdevice.release()
    label = ARCH_LABELS.get(arch or "", "Hailo")
    emulated = " [emulated: hailo_platform test double]" if getattr(hp, "__emulated__", False) else ""
    return True, f"{label} {device_id}, HailoRT {getattr(hp, '__version__', '?')}{emulated}"


def quantize(x: np.ndarray, scale: Any, zero_point: Any, dtype: Any = "uint16") -> np.ndarray:
    """Float feed -> an integer device input: round(x / scale + zp), clipped to the type (scale and zp
    per tensor or per feature). The host never quantises anywhere else."""
    scale32, zp32 = np.asarray(scale, np.float32), np.asarray(zero_point, np.float32)
    if not np.all(scale32):
        raise ModelMismatchError("the model's input has no quantisation scale; feed float32 instead (recipe inputs dtype)")
    info = np.iinfo(np.dtype(dtype))
    return np.clip(np.rint(x / scale32 + zp32), info.min, info.max).astype(dtype)


@dataclass(frozen=True)

class _Input:
    layer: HefLayer
    fmt: str  # UINT8 | UINT16 | FLOAT32: what we hand HailoRT
    feed_name: str  # the name pipelines use (the recipe's, which is the HEF's)

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.fmt.lower())


def _shape_matches(spec: tuple[int, ...], actual: tuple[int, ...]) -> bool:
    return len(spec) == len(actual) and all(s in (-1, a) for s, a in zip(spec, actual))


def _check_recipe(recipe: Recipe, path: Path, info: HefInfo) -> tuple[list[_Input], list[HefLayer]]:
    """The recipe's inputs/outputs against the HEF's boundary layers; ModelMismatchError says which."""
    ng = info.network_groups[0]
    where = f"recipe {recipe.id} ({recipe.path.name}) and HEF {path.name}"

    def find(kind: str, spec: TensorSpec, layers: tuple[HefLayer, ...], index: int) -> HefLayer:
        if spec.name is None:
            if len(layers) == 1 or index < len(layers):
                return layers[index if len(layers) > 1 else 0]
        for layer in layers:
            if layer.name == spec.name:
                return layer
        raise ModelMismatchError(f"{where}: the recipe names {kind} '{spec.name}', the HEF has {[l.name for l in layers]}")

    def check_shape(kind: str, spec: TensorSpec, layer: HefLayer) -> None:
        if spec.shape is not None and not _shape_matches(tuple(spec.shape), layer.shape):
            raise ModelMismatchError(
                f"{where}: {kind} '{layer.name}' has shape {list(spec.shape)} in the recipe but {list(layer.shape)} in the HEF"
            )

    inputs: list[_Input] = []
    specs = recipe.inputs or tuple(TensorSpec(l.name, None, None) for l in ng.inputs)
    if len(specs) != len(ng.inputs):
        raise ModelMismatchError(f"{where}: the recipe declares {len(specs)} input(s), the HEF has {len(ng.inputs)}: {[l.name for l in ng.inputs]}")
    for i, spec in enumerate(specs):
        layer = find("input", spec, ng.inputs, i)
        check_shape("input", spec, layer)
        native = layer.dtype
        wanted = _FORMATS.get(spec.dtype or "", native)
        if wanted not in (native, "FLOAT32"):
            raise ModelMismatchError(
                f"{where}: input '{layer.name}' is {native} in the HEF; the recipe asks for {spec.dtype} "
                f"(use dtype = \"{native.lower()}\" or \"float32\")"
            )
        inputs.append(_Input(layer, wanted, layer.name))
    outputs: list[HefLayer] = []
    out_specs = recipe.outputs or tuple(TensorSpec(l.name, None, None) for l in ng.outputs)
    for i, spec in enumerate(out_specs):
        layer = find("output", spec, ng.outputs, i)
        check_shape("output", spec, layer)
        outputs.append(layer)
    return inputs, outputs


class HailoModel(LoadedModel):
    """One configured InferModel; run() is safe from many threads at once."""

    def __init__(self, backend: "HailoBackend", recipe: Recipe, configured, inputs: list[_Input], outputs: list[HefLayer],
                 provenance: Provenance, queue_size: int):
        self.recipe = recipe
        self.provenance = provenance
        self._backend = backend
        self._configured = configured
        self._inputs = inputs
        self._outputs = outputs
        self._chunk = max(1, min(recipe.batch_size, queue_size))
        self._submit = threading.Lock()  # only orders wait_for_async_ready + run_async; never held for device time
        self._pid = os.getpid()
        self.inputs = tuple(
            TensorInfo(i.feed_name, tuple(i.layer.shape), i.fmt.lower(), i.layer.host_order, i.layer.qp_scale, i.layer.qp_zp,
                       i.layer.per_feature is not None)
            for i in inputs
        )
        self.outputs = tuple(
            TensorInfo(o.name, tuple(o.shape), "float32", o.host_order, o.qp_scale, o.qp_zp, o.per_feature is not None)
            for o in outputs
        )

    @property
    def max_batch(self) -> int:
        return 0

    def _frames(self, feeds: Mapping[str, np.ndarray]) -> tuple[int, list[np.ndarray]]:
        names = {i.feed_name for i in self._inputs}
        if len(self._inputs) == 1 and len(feeds) == 1 and next(iter(feeds)) not in names:
            feeds = {self._inputs[0].feed_name: next(iter(feeds.values()))}
        missing = names - set(feeds)
        if missing:
            raise BadInputError(f"{self.recipe.id}: missing input(s) {sorted(missing)}; the HEF takes {sorted(names)}")
        arrays, n = [], None
        for inp in self._inputs:
            x = np.asarray(feeds[inp.feed_name])
            rows = x.shape[0] if x.ndim else 0
            n = rows if n is None else n
            if rows != n:
                raise BadInputError(f"{self.recipe.id}: inputs have different batch sizes")
            frame = tuple(inp.layer.shape)
            if x.shape[1:] != frame:
                if x.ndim < 1 or int(np.prod(x.shape[1:])) != int(np.prod(frame)):
                    raise BadInputError(f"{self.recipe.id}: input '{inp.feed_name}' has frames of shape {list(x.shape[1:])}, the HEF wants {list(frame)}")
                x = x.reshape((rows, *frame))  # same element count (e.g. 64x768 tokens into an 8x8x768 layer)
            arrays.append(self._to_format(inp, x))
        return int(n or 0), arrays

    def _to_format(self, inp: _Input, x: np.ndarray) -> np.ndarray:
        """Cast a feed to the format we configured; floats for an integer format are quantised here
        with the HEF's qp (what the recipe asked for: UINT16 text input quantised by the host)."""
        want = inp.np_dtype
        if x.dtype == want:
            return np.ascontiguousarray(x)
        if want.kind == "f":
            return np.ascontiguousarray(x, dtype=np.float32)
        if x.dtype.kind == "f":
            layer = inp.layer
            scale, zp = (layer.per_feature[0], layer.per_feature[1]) if layer.per_feature else (layer.qp_scale, layer.qp_zp)
            return np.ascontiguousarray(quantize(x, scale, zp, want))
        if x.dtype.kind in "ui" and np.can_cast(x.dtype, want):
            return np.ascontiguousarray(x, dtype=want)
        raise BadInputError(f"{self.recipe.id}: input '{inp.feed_name}' must be {want.name}, got {x.dtype.name}")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if os.getpid() != self._pid:
            raise DeviceError(
                f"{self.recipe.id}: the Hailo device was opened by process {self._pid}; each process must open its own "
                "(do not fork after loading models)"
            )
        n, arrays = self._frames(feeds)
        outputs = {o.name: np.empty((n, *o.shape), np.float32) for o in self._outputs}
        if n == 0:
            return outputs
        hp = self._backend.hp
        timeout = int(self._backend.settings.hailo_timeout_ms)
        jobs = []
        try:
            for start in range(0, n, self._chunk):
                stop = min(n, start + self._chunk)
                bindings = []
                for row in range(start, stop):
                    b = self._configured.create_bindings()
                    for inp, x in zip(self._inputs, arrays):
                        b.input(inp.layer.name).set_buffer(x[row])
                    for name, out in outputs.items():
                        b.output(name).set_buffer(out[row])
                    bindings.append(b)
                with self._submit:
                    self._configured.wait_for_async_ready(timeout, stop - start)
                    jobs.append(self._configured.run_async(bindings))
            for job in jobs:
                job.wait(timeout)
        except Exception as exc:
            raise self._device_error(hp, exc, timeout) from exc
        return outputs

    def _device_error(self, hp, exc: Exception, timeout: int) -> Exception:
        if _is(hp, exc, "HailoRTTimeout") or _status_in(exc, "HAILO_TIMEOUT"):
            return DeviceTimeoutError(f"{self.recipe.id}: the Hailo device did not answer within {timeout} ms "
                                      "(HAILO_IMMICH_DEVICE_TIMEOUT_MS); check `dmesg | grep hailo`")
        if isinstance(exc, (BadInputError, DeviceError)):
            return exc
        return DeviceError(f"{self.recipe.id} failed on the Hailo device: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        try:
            self._configured.shutdown()
        except Exception:
            pass


class HailoBackend(Backend):
    name = "hailo"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.hp = _import_hailo()
        self.version = str(getattr(self.hp, "__version__", "unknown"))
        self.emulated = bool(getattr(self.hp, "__emulated__", False))
        if not self.version.startswith(SUPPORTED_HAILORT):
            log.warning("hailo_platform %s is installed; hailo-immich is built and tested for HailoRT %s.x", self.version, SUPPORTED_HAILORT)
        self._vdevice = _open_vdevice(self.hp, settings.hailo_multi_process_service)
        self._pid = os.getpid()
        self.device_id, self.device_arch = _device_identity(self._vdevice)
        self._lock = threading.Lock()
        self._models: list[HailoModel] = []

    @property
    def device_label(self) -> str:
        label = ARCH_LABELS.get(self.device_arch or "", "Hailo")
        text = f"{label} {self.device_id}"
        return f"{text} (emulated: hailo_platform test double)" if self.emulated else text

    def load(self, recipe: Recipe, files: ModelFiles) -> LoadedModel:
        path = files.require(recipe, "model")
        try:
            info = read_hef(path)
        except HefFormatError as exc:
            raise ModelCorruptError(recipe.id, str(path), str(exc)) from exc
        if not info.hailort_4_23_loadable:
            raise ModelCorruptError(recipe.id, str(path), "HailoRT 4.23 cannot load it: " + "; ".join(info.hailort_4_23_reasons))
        if self.device_arch is not None and not info.runs_on(self.device_arch):
            raise ModelMismatchError(
                f"recipe {recipe.id}: {path.name} was compiled for {info.arch_label} ({info.hw_arch}), but this device is a "
                f"{ARCH_LABELS.get(self.device_arch, self.device_arch)}. Use the HEF built for "
                f"{'hailo8l' if self.device_arch == 'HAILO8L' else 'hailo8'} (Hailo Model Zoo folder of that name)"
            )
        inputs, outputs = _check_recipe(recipe, path, info)
        configured, queue_size = self._configure(recipe, path, inputs, outputs)
        extra = {
            "path": str(path),
            "hef_arch": info.hw_arch,
            "hef_sdk": info.sdk_version,
            "network_group": info.network_groups[0].name,
            "batch_size": recipe.batch_size,
            "scheduler": "ROUND_ROBIN",
            "multi_process_service": self.settings.hailo_multi_process_service,
        }
        if self.emulated:
            extra["emulated"] = True
        provenance = Provenance(
            recipe_id=recipe.id,
            backend=self.name,
            model_sha256=files.sha256(path),
            device=self.device_label,
            runtime=f"HailoRT {self.version}",
            extra=extra,
        )
        model = HailoModel(self, recipe, configured, inputs, outputs, provenance, queue_size)
        with self._lock:
            self._models.append(model)
        return model

    def _configure(self, recipe: Recipe, path: Path, inputs: list[_Input], outputs: list[HefLayer]):
        hp = self.hp
        if os.getpid() != self._pid:
            raise BackendUnavailableError("the Hailo device was opened by another process; open the backend after fork")
        try:
            infer_model = self._vdevice.create_infer_model(str(path))
            infer_model.set_batch_size(recipe.batch_size)
            for inp in inputs:
                infer_model.input(inp.layer.name).set_format_type(getattr(hp.FormatType, inp.fmt))
            for out in outputs:
                infer_model.output(out.name).set_format_type(hp.FormatType.FLOAT32)
            configured = infer_model.configure()
        except Exception as exc:
            if _is(hp, exc, "HailoRTHEFNotCompatibleWithDevice") or _status_in(exc, "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE"):
                raise ModelMismatchError(f"recipe {recipe.id}: HailoRT says {path.name} does not fit this device: {exc}") from exc
            if _is(hp, exc, "HailoRTInvalidHEFException") or _status_in(exc, "HAILO_INVALID_HEF"):
                raise ModelCorruptError(recipe.id, str(path), f"HailoRT {self.version} refuses the HEF: {exc}") from exc
            raise DeviceError(f"recipe {recipe.id}: HailoRT could not configure {path.name}: {type(exc).__name__}: {exc}") from exc
        try:
            queue_size = int(configured.get_async_queue_size())
        except Exception:
            queue_size = 1
        return configured, queue_size

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": self.device_label,
            "device_arch": self.device_arch,
            "runtime": f"HailoRT {self.version}",
            "scheduler": "ROUND_ROBIN",
            "multi_process_service": self.settings.hailo_multi_process_service,
            "emulated": self.emulated,
        }

    def close(self) -> None:
        with self._lock:
            models, self._models = self._models, []
        for model in models:
            model.close()
        if os.getpid() == self._pid:
            try:
                self._vdevice.release()
            except Exception:
                pass
