"""Save a generated ONNX graph the one way every test model generator needs (opset 13, IR 8, checked)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import helper


def save_graph(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project supports
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
