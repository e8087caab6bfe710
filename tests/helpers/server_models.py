"""Model files and recipes the server tests generate: a text detector that fails at run time on demand.

`make_flaky_text_detector_onnx` has the PP-OCR detector's signature (x: N,3,H,W -> N,1,H,W) and
raises inside ONNX Runtime whenever the input is bright on average (mean of the normalised
input above 1, i.e. pixels above ~128), and returns an all-background
map for dark input. That lets a test make one request fail inside the backend and check that the
next request is answered normally.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hailo_immich_cli.testkit.onnx_build import save_graph

from hailo_immich_cli.models.recipes import shipped_recipes_dir


def make_flaky_text_detector_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", ["x"], ["prob"], axes=[1], keepdims=1),  # (N,1,H,W)
        helper.make_node("ReduceMean", ["x"], ["level"], keepdims=0),  # scalar
        helper.make_node("Greater", ["level", "threshold"], ["bright"]),
        helper.make_node("Shape", ["prob"], ["good_shape"]),
        helper.make_node("Where", ["bright", "bad_shape", "good_shape"], ["shape"]),
        helper.make_node("Reshape", ["prob", "shape"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(np.array(1.0, np.float32), "threshold"),
        numpy_helper.from_array(np.array([1, 1, 1, 2], np.int64), "bad_shape"),  # never the map's size
    ]
    graph = helper.make_graph(
        nodes,
        "flaky_text_detector",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        initializer=inits,
    )
    return save_graph(graph, path)


def derived_recipe(shipped_id: str, new_id: str, immich_names: list[str], model_file: str | None = None) -> str:
    """A shipped recipe's TOML under a new id and Immich names (optionally another model file name, no hash)."""
    text = (shipped_recipes_dir() / f"{shipped_id}.toml").read_text()
    text = re.sub(r'(?m)^id = ".*"$', f'id = "{new_id}"', text, count=1)
    text = re.sub(r"(?ms)^immich_names = \[.*?\]$", "immich_names = [" + ", ".join(f'"{n}"' for n in immich_names) + "]", text, count=1)
    text = re.sub(r"(?m)^default = true$", "default = false", text)
    if model_file is not None:
        text = re.sub(r'(?m)^name = ".*\.onnx"$', f'name = "{model_file}"', text, count=1)
        text = re.sub(r'(?m)^(sha256|size|immich_path) = .*$', "", text)
    return text


def make_slow_loading_onnx(path: Path, nodes: int = 40000) -> Path:
    """A tiny file (x: N,3,H,W -> same) whose graph of `nodes` chained Adds takes ONNX Runtime seconds to load."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph_nodes = [helper.make_node("Add", ["x" if i == 0 else f"t{i - 1}", "one"], [f"t{i}"]) for i in range(nodes)]
    graph_nodes.append(helper.make_node("Identity", [f"t{nodes - 1}"], ["y"]))
    graph = helper.make_graph(
        graph_nodes,
        "slow_loading",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        initializer=[numpy_helper.from_array(np.array(1.0, np.float32), "one")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
