"""make_hailo_session: emulated HEFs written to match recipes, with ONNX, callable or default twins."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from hailo_immich_cli.models.hef import read_hef
from hailo_immich_cli.models.recipes import RecipeBook, parse_recipe
from hailo_immich_cli.testkit.hailo_emulation import make_hailo_session


def _recipe(tmp_path: Path, rid: str, task: str = "face-recognition", default: bool = True, inputs=None, outputs=None):
    data = {
        "id": rid, "task": task, "backend": "hailo", "default": default, "embedding_dim": 4, "batch_size": 8,
        "files": [{"role": "model", "name": f"{rid}.hef", "sha256": "0" * 64, "size": 123}],
        "inputs": inputs or [{"name": "net/input_layer1", "shape": [8, 8, 3], "dtype": "uint8"}],
        "outputs": outputs or [{"name": "net/fc1", "shape": [4]}],
    }
    return parse_recipe(tmp_path / f"{rid}.toml", data)


def _onnx_model(path: Path) -> Path:
    """NCHW float input -> global mean -> 3x4 matmul: small enough to check by hand."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [3, 4], np.linspace(-0.02, 0.02, 12).tolist())
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("MatMul", ["m", "w"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_onnx_twin_end_to_end(hailo_double, tmp_path: Path) -> None:
    model_path = _onnx_model(tmp_path / "twin.onnx")
    r = _recipe(tmp_path, "onnx-hailo")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    calibration = {r.id: {"net/input_layer1": frames.astype(np.float32)}}
    with make_hailo_session([r], {r.id: model_path}, tmp_path, calibration=calibration, book=RecipeBook([r])) as session:
        assert session.resolve("face-recognition").id == r.id  # the emulated Hailo recipe is the task's default
        result = session.run(r.id, {"net/input_layer1": frames})
        hef = read_hef(session.files.path(session.recipes.get(r.id)))
    reference = ort.InferenceSession(str(model_path)).run(None, {"x": frames.astype(np.float32).transpose(0, 3, 1, 2)})[0]
    layer = hef.network_groups[0].layer("net/fc1")
    assert result.provenance.backend == "hailo" and "emulated" in result.provenance.device
    assert np.abs(result.outputs["net/fc1"] - reference).max() <= layer.qp_scale / 2 + 1e-6


def test_default_twin_and_pinned_files(hailo_double, tmp_path: Path) -> None:
    r = _recipe(tmp_path, "plain-hailo")
    with make_hailo_session([r], None, tmp_path) as session:
        assert session.recipes.get(r.id).file().sha256 is None  # the real file's hash does not apply to the emulated HEF
        rng = np.random.default_rng(1)
        a, b = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8), rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
        out_a = session.run(r.id, {"net/input_layer1": a}).outputs["net/fc1"]
        assert np.array_equal(out_a, session.run(r.id, {"net/input_layer1": a}).outputs["net/fc1"])
        out_b = session.run(r.id, {"net/input_layer1": b}).outputs["net/fc1"]
        assert np.abs(out_a - out_b).max() > 0.1  # different frames, clearly different outputs
        single = session.run(r.id, {"net/input_layer1": a[:1]}).outputs["net/fc1"]
        np.testing.assert_array_equal(single[0], out_a[0])  # a frame's result does not depend on its batch


def test_recipe_without_shapes_is_refused_clearly(hailo_double, tmp_path: Path) -> None:
    r = _recipe(tmp_path, "vague-hailo", outputs=[{"name": "net/fc1"}])
    with pytest.raises(ValueError, match="needs a fully known shape"):
        make_hailo_session([r], None, tmp_path)
