"""Face-model stand-ins with the real exports' signatures (buffalo-style SCRFD detector, ArcFace-style
recogniser), holding faces planted at known anchors, and a smooth image to run them on.

No pretrained face weights are reachable offline, so these are fixed random or constant graphs:
real ONNX Runtime execution, real shapes and batching, known outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hailo_immich_cli.testkit.onnx_build import save_graph

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class PlantedFace:
    """A face placed at one anchor of the SCRFD grid, in detector-canvas pixels."""

    stride: int
    row: int
    col: int
    anchor: int
    score: float
    ltrb: tuple[float, float, float, float]  # distances from the anchor centre, in pixels
    kps: np.ndarray  # (5, 2) offsets from the anchor centre, in pixels

    @property
    def center(self) -> tuple[float, float]:
        return self.col * self.stride, self.row * self.stride  # InsightFace: no half-cell shift

    @property
    def box(self) -> np.ndarray:
        cx, cy = self.center
        l, t, r, b = self.ltrb
        return np.array([cx - l, cy - t, cx + r, cy + b])

    @property
    def landmarks(self) -> np.ndarray:
        cx, cy = self.center
        return np.asarray(self.kps) + np.array([cx, cy])


def encode_scrfd(faces: list[PlantedFace], canvas: int = 640, num_anchors: int = 2, background: float = 0.0):
    """Raw SCRFD maps holding the planted faces: {stride: (scores (H,W,A), boxes (H,W,A,4), kps (H,W,A,10))}."""
    maps = {}
    for s in STRIDES:
        g = canvas // s
        maps[s] = (
            np.full((g, g, num_anchors), background, np.float32),
            np.zeros((g, g, num_anchors, 4), np.float32),
            np.zeros((g, g, num_anchors, 10), np.float32),
        )
    for f in faces:
        scores, boxes, kps = maps[f.stride]
        scores[f.row, f.col, f.anchor] = f.score
        boxes[f.row, f.col, f.anchor] = np.asarray(f.ltrb) / f.stride
        kps[f.row, f.col, f.anchor] = (np.asarray(f.kps) / f.stride).reshape(10)
    return maps


def as_insightface_flat(maps) -> list[np.ndarray]:
    """The 9-output ONNX layout: scores (N,1) x3, boxes (N,4) x3, kps (N,10) x3, strides 8/16/32."""
    scores = [maps[s][0].reshape(-1, 1) for s in STRIDES]
    boxes = [maps[s][1].reshape(-1, 4) for s in STRIDES]
    kps = [maps[s][2].reshape(-1, 10) for s in STRIDES]
    return scores + boxes + kps


def make_arcface_like_onnx(path: Path, seed: int = 0, fixed_batch: int | None = None, self_normalising: bool = False) -> Path:
    """An ONNX model with ArcFace's signature: input.1 (N,3,112,112) float -> (N,512).

    No pretrained face-recognition weights are reachable offline (models.md §2), so this is a
    fixed random net (conv stride 2 + ReLU + 4x4 average pool + linear): real ONNX Runtime
    execution, real shapes and batching, but no identity knowledge. `self_normalising` puts
    (x - 127.5) * (1/127.5) inside the graph as nodes named Sub_0 / Mul_1, as MXNet-style exports do.
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    conv_w = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    conv_b = rng.normal(0, 0.1, (8,)).astype(np.float32)
    fc_w = rng.normal(0, 0.05, (8 * 14 * 14, 512)).astype(np.float32)
    fc_b = rng.normal(0, 0.1, (512,)).astype(np.float32)
    batch = fixed_batch if fixed_batch else "None"
    first = "input.1"
    nodes = []
    extra = []
    if self_normalising:
        extra = [numpy_helper.from_array(np.float32(127.5).reshape(1), "mean"), numpy_helper.from_array(np.float32(1 / 127.5).reshape(1), "inv_std")]
        nodes = [
            helper.make_node("Sub", ["input.1", "mean"], ["centred"], name="Sub_0"),
            helper.make_node("Mul", ["centred", "inv_std"], ["normed"], name="Mul_1"),
        ]
        first = "normed"
    nodes += [
        helper.make_node("Conv", [first, "conv_w", "conv_b"], ["c"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 512])],
        [numpy_helper.from_array(a, n) for a, n in ((conv_w, "conv_w"), (conv_b, "conv_b"), (fc_w, "fc_w"), (fc_b, "fc_b"))] + extra,
    )
    return save_graph(graph, path)


def make_buffalo_like_detector_onnx(path: Path, maps, input_gain: float = 3.0, input_hw: tuple[int, int] | None = None) -> Path:
    """An ONNX detector with buffalo_l's 9-output signature whose outputs hold the planted faces.

    Boxes and keypoints are constants; each score is sigmoid(logit + gain * mean(R + 0.2 G - B)) of
    the preprocessed input, so a wrong normalisation, resize or channel order changes the scores. `maps` holds logits
    (from encode_scrfd with logit scores). Input input.1 (1,3,?,?) or a static `input_hw`,
    outputs (N,1)/(N,4)/(N,10).
    """
    from onnx import TensorProto, helper, numpy_helper

    flat = as_insightface_flat(maps)
    # Channel weights (1, 0.2, -1): a red/blue swap or a wrong mean/std changes every score.
    mix = np.array([1.0, 0.2, -1.0], np.float32).reshape(1, 3, 1, 1)
    inits = [
        numpy_helper.from_array(mix, "mix"),
        numpy_helper.from_array(np.array([1, 1], np.int64), "shape11"),
        numpy_helper.from_array(np.float32(input_gain).reshape(1), "gain"),
        numpy_helper.from_array(np.zeros(1, np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "mix"], ["mixed"]),
        helper.make_node("ReduceMean", ["mixed"], ["m4"], keepdims=1),
        helper.make_node("Reshape", ["m4", "shape11"], ["m"]),
        helper.make_node("Mul", ["m", "gain"], ["gm"]),
        helper.make_node("Mul", ["m", "zero"], ["zm"]),
    ]
    names = ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    outputs = []
    for i, (name, value) in enumerate(zip(names, flat)):
        const = f"const{i}"
        inits.append(numpy_helper.from_array(value.astype(np.float32), const))
        if i < 3:
            nodes.append(helper.make_node("Add", [const, "gm"], [f"logit{i}"]))
            nodes.append(helper.make_node("Sigmoid", [f"logit{i}"], [name]))
        else:
            nodes.append(helper.make_node("Add", [const, "zm"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes, "buffalo_like_det",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, *(input_hw or ("?", "?"))])],
        outputs, inits,
    )
    return save_graph(graph, path)


def blob_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (so resizes and warps have something to interpolate)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    return np.ascontiguousarray(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC))

