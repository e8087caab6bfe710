"""Put the hailo_platform test double on sys.path (and take it off again), and build a
SessionManager whose Hailo recipes run on it with HEFs written to match the recipes.

Everything that runs through here is EMULATED: the double computes outputs with a twin.
"""

from __future__ import annotations

import dataclasses
import sys
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from hailo_immich_cli.models.recipes import Recipe, RecipeBook, TensorSpec
from hailo_immich_cli.session import SessionManager
from hailo_immich_cli.settings import Settings
from hailo_immich_cli.testkit.hef_builder import Layer, build_hef

# The double's parent directory: put on sys.path only by install_double, so it never shadows a real
# hailo_platform by accident (install_double refuses to run when a real one is already imported).
DOUBLE_DIR = Path(__file__).resolve().parent / "hailo_double"
REPO_MODELS = Path(__file__).resolve().parents[2] / "models"  # a checkout's fetched models, if any


def install_double():
    """Make `import hailo_platform` find the double; returns its emulator (reset to one Hailo-8)."""
    if str(DOUBLE_DIR) not in sys.path:
        sys.path.insert(0, str(DOUBLE_DIR))
    import hailo_platform
    from hailo_platform import _emulator

    if not getattr(hailo_platform, "__emulated__", False):
        raise RuntimeError(f"a real hailo_platform shadows the test double: {hailo_platform.__file__}")
    return _emulator.reset()


def uninstall_double() -> None:
    while str(DOUBLE_DIR) in sys.path:
        sys.path.remove(str(DOUBLE_DIR))
    for name in [m for m in sys.modules if m == "hailo_platform" or m.startswith("hailo_platform.")]:
        del sys.modules[name]


def emulator():
    from hailo_platform import _emulator

    return _emulator


# ---- HEFs that match a recipe -------------------------------------------------------------------


def _hef_arch(recipe: Recipe) -> str:
    archs = {a.lower().replace("-", "").replace("_", "") for a in recipe.hw_arch}
    return "HAILO8L" if archs == {"hailo8l"} else "HAILO8P"


def _layer_name(recipe: Recipe, spec: TensorSpec, kind: str, index: int) -> str:
    return spec.name or f"{recipe.id}/{kind}_layer{index + 1}"


def _frame_shape(recipe: Recipe, spec: TensorSpec, kind: str) -> tuple[int, ...]:
    if spec.shape is None or any(d < 1 for d in spec.shape):
        raise ValueError(f"recipe {recipe.id}: {kind} '{spec.name}' needs a fully known shape to emulate its HEF, got {spec.shape}")
    return tuple(spec.shape)


def _input_layer(recipe: Recipe, spec: TensorSpec, index: int) -> Layer:
    name = _layer_name(recipe, spec, "input", index)
    shape = _frame_shape(recipe, spec, "input")
    hef_dtype = spec.extra.get("hef_dtype") or ("uint8" if (spec.dtype or "uint8") == "uint8" else "uint16")
    if hef_dtype == "uint8":
        scale, zp = spec.extra.get("qp_scale", 1.0), spec.extra.get("qp_zp", 0.0)  # raw pixels, normalised on-chip
    else:  # a16 text input: +-8 in 65535 steps unless the recipe says otherwise
        scale, zp = spec.extra.get("qp_scale", 16.0 / 65535.0), spec.extra.get("qp_zp", 32768.0)
    return Layer(name, shape, hef_dtype, float(scale), float(zp))


def _calibration_inputs(layers: list[Layer], rng: np.random.Generator, frames: int = 4) -> dict[str, np.ndarray]:
    feeds = {}
    for layer in layers:
        top = 255 if layer.dtype == "uint8" else 65535
        q = rng.integers(0, top + 1, (frames, *layer.shape)).astype(np.float32)
        if layer.dtype == "uint16":  # text embeddings live near zero, not over the whole range
            q = np.clip(layer.qp_zp + rng.normal(0, 0.05 * top, q.shape), 0, top)
        feeds[layer.name] = ((q - layer.qp_zp) * layer.qp_scale).astype(np.float32)
    return feeds


def _output_layers(recipe: Recipe, twin: Callable, inputs: list[Layer], output_dtype: str, calibration: Mapping[str, np.ndarray] | None,
                   margin: float) -> list[Layer]:
    """Quantisation of each output chosen like a compiler would: from the twin's range on calibration data."""
    feeds = dict(calibration) if calibration is not None else _calibration_inputs(inputs, np.random.default_rng(0))
    result = twin(feeds)
    layers = []
    for i, spec in enumerate(recipe.outputs):
        name = _layer_name(recipe, spec, "output", i)
        dtype = spec.extra.get("hef_dtype") or output_dtype
        if "qp_scale" in spec.extra:
            scale, zp = float(spec.extra["qp_scale"]), float(spec.extra.get("qp_zp", 0.0))
        else:
            values = np.asarray(result[name], np.float32)
            lo, hi = float(min(values.min(), 0.0)), float(max(values.max(), 0.0))
            span = max(hi - lo, 1e-6) * margin
            top = 255 if dtype == "uint8" else 65535
            scale = span / top
            zp = float(np.clip(np.round(-lo * margin / scale), 0, top))
        layers.append(Layer(name, _frame_shape(recipe, spec, "output"), dtype, scale, zp))
    return layers


def default_twin(recipe: Recipe) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]:
    """A deterministic stand-in network: each output is a fixed random projection of 16 sampled
    input values (standardised per frame), squashed to [-1, 1]. Different frames give clearly
    different outputs; the same frame always the same, whatever the batch around it."""
    rng = np.random.default_rng(zlib.crc32(recipe.id.encode()))
    outs = [(_layer_name(recipe, s, "output", i), _frame_shape(recipe, s, "output")) for i, s in enumerate(recipe.outputs)]
    weights = {name: rng.normal(size=(16, int(np.prod(shape)))).astype(np.float32) for name, shape in outs}
    picks: dict[int, np.ndarray] = {}

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        first = np.asarray(next(iter(inputs.values())), np.float32)
        n = first.shape[0]
        flat = first.reshape(n, -1)
        idx = picks.setdefault(flat.shape[1], np.random.default_rng(flat.shape[1]).integers(0, flat.shape[1], 16))
        sample = flat[:, idx]
        sample = (sample - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-6)
        return {name: np.tanh(sample @ weights[name] / 4.0).reshape((n, *shape)) for name, shape in outs}

    return run


def _as_twin(recipe: Recipe, twin: Any, input_names: list[str], output_names: list[str]):
    if twin is None:
        return default_twin(recipe)
    if isinstance(twin, (str, Path)):
        import onnx

        model = onnx.load(str(twin))
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        nchw = len(dims) == 4 and dims[1] in (1, 3)
        return emulator().onnx_twin(twin, input_names, output_names, nchw=nchw)
    return twin


def write_recipe_hef(recipe: Recipe, twin: Any, models_dir: Path, *, output_dtype: str = "uint8",
                     calibration: Mapping[str, np.ndarray] | None = None, margin: float = 2.0,
                     hw_arch: str | None = None, contexts: int = 1) -> tuple[Path, Callable]:
    """Write <models_dir>/<recipe id>/<model file> with layers matching the recipe; register its twin."""
    if recipe.backend != "hailo":
        raise ValueError(f"recipe {recipe.id} is for backend {recipe.backend}, not hailo")
    if not recipe.inputs or not recipe.outputs:
        raise ValueError(f"recipe {recipe.id}: declare [[inputs]] and [[outputs]] (names, shapes) to emulate its HEF")
    inputs = [_input_layer(recipe, spec, i) for i, spec in enumerate(recipe.inputs)]
    output_names = [_layer_name(recipe, s, "output", i) for i, s in enumerate(recipe.outputs)]
    fn = _as_twin(recipe, twin, [l.name for l in inputs], output_names)
    outputs = _output_layers(recipe, fn, inputs, output_dtype, calibration, margin)
    network = inputs[0].name.split("/")[0] if "/" in inputs[0].name else recipe.id
    path = models_dir / recipe.id / recipe.file("model").name
    build_hef(path, network, inputs, outputs, hw_arch=hw_arch or _hef_arch(recipe), contexts=contexts)
    emulator().register_twin(path, fn)
    return path, fn


def _unpinned(recipe: Recipe, models_dir: Path) -> Recipe:
    """The recipe with its model file's size/sha256 cleared (ours is emulated) and its other files
    linked from the repo's models dir when they were fetched there."""
    files = []
    for spec in recipe.files:
        if spec.role == "model":
            files.append(dataclasses.replace(spec, sha256=None, size=None))
            continue
        files.append(spec)
        source = REPO_MODELS / recipe.id / spec.name
        target = models_dir / recipe.id / spec.name
        if source.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
    return dataclasses.replace(recipe, files=tuple(files))


def make_hailo_session(recipes: Iterable[Recipe | str], twins: Mapping[str, Any] | None, tmp_path: Path, *,
                       device_arch: str = "HAILO8", output_dtype: str = "uint8",
                       calibration: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                       book: RecipeBook | None = None, **settings: Any) -> SessionManager:
    """A SessionManager on backend "hailo" (the double) where every given Hailo recipe has an
    emulated HEF matching its declared inputs/outputs.

    twins: recipe id -> callable({input name: float (N, *shape)}) -> {output name: float array},
    or a path to an ONNX model (HEF input/output i <-> ONNX input/output i, NHWC->NCHW when the
    ONNX input looks NCHW); missing -> default_twin. The twin sees what the chip sees: raw
    dequantised inputs (0..255 pixels when normalisation is on-chip), so for a CPU ONNX model with
    host normalisation build the twin with
    `emulator().onnx_twin(path, hef_inputs, hef_outputs_in_onnx_order, nchw=True, mean=..., std=...)`.
    Output quantisation is calibrated on `calibration[recipe id]` (input name -> float frames) or
    on random frames; pass real frames when outputs must not saturate.
    Use together with the `hailo_double` fixture, which removes the double afterwards (it is
    installed here if it is not yet). Results are EMULATED, never hardware results.
    """
    install_double() if "hailo_platform" not in sys.modules else None
    machine = emulator().MACHINE
    machine.devices[0].arch = device_arch
    book = book or RecipeBook.load()
    models_dir = Path(tmp_path) / "models"
    models_dir.mkdir(parents=True, exist_ok=True)
    replaced = {}
    for item in recipes:
        recipe = book.get(item) if isinstance(item, str) else item
        write_recipe_hef(recipe, (twins or {}).get(recipe.id), models_dir, output_dtype=output_dtype,
                         calibration=(calibration or {}).get(recipe.id))
        replaced[recipe.id] = _unpinned(recipe, models_dir)
    others = [r for r in book if r.id not in replaced]
    options = {"backend": "hailo", "models_dir": models_dir, **settings}
    return SessionManager(Settings.load(env={}, **options), RecipeBook([*others, *replaced.values()]))
