"""CPU backend on ONNX Runtime: the embedded default where no NPU is present, and the parity reference."""

from __future__ import annotations

import platform
from functools import partial
from typing import Any, Mapping

import numpy as np

from hailo_immich_cli import cores
from hailo_immich_cli.backends.base import Backend, LoadedModel, Provenance, TensorInfo
from hailo_immich_cli.errors import BackendUnavailableError, ModelCorruptError, ModelMismatchError
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.settings import Settings

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
}


def _dim(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def _model_bytes(recipe: Recipe, path) -> bytes | str:
    """The model as ORT should see it; recipes may ask for dims to be made dynamic first.

    `[cpu] dynamic_dims = { "input.1" = ["B", 3, "H", "W"], ... }` rewrites the named inputs'
    and outputs' dims (CenterFace ships with a static 32x32 input, for example). Otherwise ORT
    gets the path, so it finds external weight files beside the model (large CLIP exports).
    """
    cpu = recipe.raw.get("cpu", {})
    dynamic = cpu.get("dynamic_dims")
    if not dynamic:
        return str(path)
    data = path.read_bytes()
    import onnx

    model = onnx.load_from_string(data)
    for value_info in list(model.graph.input) + list(model.graph.output):
        dims = dynamic.get(value_info.name)
        if dims is None:
            continue
        shape = value_info.type.tensor_type.shape
        if len(shape.dim) != len(dims):
            raise ModelMismatchError(f"recipe {recipe.id}: [cpu].dynamic_dims[{value_info.name}] has {len(dims)} dims, model has {len(shape.dim)}")
        for dim, new in zip(shape.dim, dims):
            if isinstance(new, str):
                dim.dim_param = new
            else:
                dim.dim_value = int(new)
    return model.SerializeToString()


class OnnxModel(LoadedModel):
    def __init__(self, recipe: Recipe, session, provenance: Provenance, solo_sessions: tuple = ()):
        self.recipe = recipe
        self.session = session
        self.provenance = provenance
        # `[cpu] split_batch`: single-threaded sessions of the same model, one per intra-op thread.
        # A lone run of a batch is split over them (see `run`); each row's output is the same bits.
        self._solo = tuple(solo_sessions)
        self.inputs = tuple(
            TensorInfo(i.name, tuple(_dim(d) for d in i.shape[1:]), _ORT_DTYPES.get(i.type, i.type)) for i in session.get_inputs()
        )
        self.outputs = tuple(
            TensorInfo(o.name, tuple(_dim(d) for d in o.shape[1:]), _ORT_DTYPES.get(o.type, o.type)) for o in session.get_outputs()
        )
        first = session.get_inputs()[0].shape
        self._fixed_batch = first[0] if first and isinstance(first[0], int) and first[0] > 0 else 0
        self._output_names = [o.name for o in self.outputs]

    @property
    def max_batch(self) -> int:
        return self._fixed_batch

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(value) for name, value in feeds.items()}
        n = next(iter(feeds.values())).shape[0]
        with cores.claim() as threads:
            parts = min(threads, len(self._solo), n)
            if parts >= 2 and not self._fixed_batch:
                return self._run_split(feeds, n, parts)
            return self._run(feeds, n)

    def _run_split(self, feeds: Mapping[str, np.ndarray], n: int, parts: int) -> dict[str, np.ndarray]:
        """Rows split over single-threaded sessions run side by side: ONNX Runtime's intra-op threads
        scale poorly on small operators (the OCR recogniser's batch: 192 -> 122 ms on two cores)."""
        bounds = [round(i * n / parts) for i in range(parts + 1)]
        slices = [{k: v[a:b] for k, v in feeds.items()} for a, b in zip(bounds, bounds[1:])]
        outs = cores.fan_out([partial(session.run, self._output_names, part) for session, part in zip(self._solo, slices)])
        return {name: np.concatenate([out[i] for out in outs]) for i, name in enumerate(self._output_names)}

    def _run(self, feeds: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        step = self._fixed_batch
        if not step or step == n:
            values = self.session.run(self._output_names, feeds)
            return dict(zip(self._output_names, values))
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, step):
            part = {k: v[start : start + step] for k, v in feeds.items()}
            rows = next(iter(part.values())).shape[0]
            if rows < step:  # a model with a fixed batch dim needs a full batch: repeat the last row
                part = {k: np.concatenate([v, np.repeat(v[-1:], step - rows, axis=0)]) for k, v in part.items()}
            out = self.session.run(self._output_names, part)
            chunks.append([o[:rows] for o in out])
        return {name: np.concatenate([c[i] for c in chunks]) for i, name in enumerate(self._output_names)}


class CpuBackend(Backend):
    name = "cpu"

    def __init__(self, settings: Settings):
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - onnxruntime is a hard dependency
            raise BackendUnavailableError(f"onnxruntime is not importable: {exc}") from exc
        self._ort = ort
        self.settings = settings

    def _session_options(self, intra_op_threads: int | None = None):
        opts = self._ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads or self.settings.ort_intra_op_threads
        opts.inter_op_num_threads = self.settings.ort_inter_op_threads
        opts.log_severity_level = 3
        # Idle intra-op threads sleep instead of spinning (ORT's default spin burnt ~20 ms of CPU per
        # image request on 2 cores, taken from pre/post-processing and other requests), or, with
        # HAILO_IMMICH_ORT_SPIN_US, spin that long for the next operator of the same run and stop
        # when the run ends.
        spin_us = self.settings.ort_spin_us
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_us > 0 else "0")
        if spin_us > 0:
            opts.add_session_config_entry("session.intra_op.spin_duration_us", str(spin_us))
            opts.add_session_config_entry("session.force_spinning_stop", "1")
        # ORT's arena keeps the largest tensors it ever held (in doubling chunks) for the process's
        # life; off, as in Immich's CPU image, memory after a large request is given back.
        opts.enable_cpu_mem_arena = self.settings.model_arena
        return opts

    def load(self, recipe: Recipe, files: ModelFiles) -> LoadedModel:
        path = files.require(recipe, "model")
        try:
            data = _model_bytes(recipe, path)
            session = self._ort.InferenceSession(data, sess_options=self._session_options(), providers=["CPUExecutionProvider"])
            solo = ()
            if recipe.raw.get("cpu", {}).get("split_batch") and self.settings.ort_intra_op_threads >= 2:
                solo = tuple(self._ort.InferenceSession(data, sess_options=self._session_options(1), providers=["CPUExecutionProvider"])
                             for _ in range(min(self.settings.ort_intra_op_threads, cores.MAX_THREADS)))
        except ModelMismatchError:
            raise
        except Exception as exc:  # ORT raises several unrelated types for a bad file
            raise ModelCorruptError(recipe.id, str(path), f"ONNX Runtime cannot load it: {str(exc).splitlines()[0][:300]}") from exc
        provenance = Provenance(
            recipe_id=recipe.id,
            backend=self.name,
            model_sha256=files.sha256(path),
            device=f"CPU ({platform.machine()}, {self.settings.ort_intra_op_threads} intra-op threads)",
            runtime=f"onnxruntime {self._ort.__version__}",
            extra={"path": str(path)},
        )
        model = OnnxModel(recipe, session, provenance, solo)
        _check_against_recipe(recipe, model)
        return model

    def info(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "device": f"CPU ({platform.machine()})",
            "runtime": f"onnxruntime {self._ort.__version__}",
            "intra_op_threads": self.settings.ort_intra_op_threads,
            "inter_op_threads": self.settings.ort_inter_op_threads,
            "intra_op_spin_us": self.settings.ort_spin_us,
        }


def _check_against_recipe(recipe: Recipe, model: LoadedModel) -> None:
    """A recipe that names tensors must agree with the file; say which name is wrong."""
    for kind, wanted, actual in (("input", recipe.inputs, model.inputs), ("output", recipe.outputs, model.outputs)):
        names = {t.name for t in actual}
        for spec in wanted:
            if spec.name and spec.name not in names:
                raise ModelMismatchError(
                    f"recipe {recipe.id} ({recipe.path.name}) names {kind} '{spec.name}', "
                    f"but the model file has {sorted(names)}"
                )
