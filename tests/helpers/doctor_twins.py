"""A small SCRFD-shaped detector (real ONNX, content-dependent) as the CPU reference, and Hailo twins
of it that are faithful or reproduce one known failure each, for `doctor --compare` tests.
EMULATED: the twins stand for compiled HEFs; no hardware runs here.

The detector: redness r = R + 0.2 G - B of the normalised input, averaged over each 32x32 cell;
a cell whose mean redness is above a threshold is a "face" (anchor 0) with a 96x96 box and five
keypoints around the cell's anchor centre. Strides 8 and 16 never fire. The threshold sits halfway
between the 5th and 6th most red cells of the bundled sample photos, so a handful of faces are found
with a wide margin (quantising the outputs cannot flip them), and any change of colour order,
placement or decoding moves or changes them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from hailo_immich_cli.doctor.samples import photos
from hailo_immich_cli.faces.detect import letterbox_image, plan_letterbox
from hailo_immich_cli.models.recipes import Recipe
from hailo_immich_cli.testkit.onnx_build import save_graph

STRIDES = (8, 16, 32)
CANVAS = 640
MIX = np.array([1.0, 0.2, -1.0], np.float32)
BOX = 1.5  # distances in stride units
KPS = np.array([[-0.5, -0.4], [0.5, -0.4], [0.0, 0.1], [-0.35, 0.6], [0.35, 0.6]], np.float32)
MODES = ("faithful", "bgr", "center-letterbox", "half-stride", "swapped-outputs")


def sample_canvases(recipe: Recipe) -> np.ndarray:
    """The bundled photos letterboxed as the recipe places them: (N, 640, 640, 3) float pixels."""
    frames = []
    for sample in photos():
        h, w = sample.rgb.shape[:2]
        frames.append(letterbox_image(sample.rgb, plan_letterbox(h, w, recipe, (CANVAS, CANVAS))))
    return np.stack(frames).astype(np.float32)


def calibration_canvases(recipe: Recipe) -> np.ndarray:
    """Frames covering what every twin mode expects (RGB and BGR, top-left and centred), so the
    emulated HEF's output quantisation is calibrated on real outputs of each."""
    centred = dataclasses.replace(recipe, preprocess={**recipe.preprocess, "letterbox": "center"})
    plain = sample_canvases(recipe)
    return np.concatenate([plain, plain[..., ::-1], sample_canvases(centred)])


def _redness(canvases: np.ndarray, stride: int) -> np.ndarray:
    z = (canvases - 127.5) / 128.0
    r = z @ MIX
    n, h, w = r.shape
    return r.reshape(n, h // stride, stride, w // stride, stride).mean(axis=(2, 4))


def threshold_for(canvases: np.ndarray) -> tuple[float, float]:
    """(threshold, gain): halfway between the 5th and 6th reddest cells; +-3 logits at those cells."""
    values = np.sort(_redness(canvases, 32).reshape(-1))[::-1]
    t = float((values[4] + values[5]) / 2)
    gain = 3.0 / max(float(values[4] - values[5]) / 2, 1e-4)
    return t, gain


def make_toy_scrfd_onnx(path: Path, threshold: float, gain: float) -> Path:
    """buffalo_l's detector signature: input.1 (1,3,640,640) -> scores (N,1) x3, boxes (N,4) x3, kps (N,10) x3."""
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(MIX.reshape(1, 3, 1, 1), "mix")]
    nodes = [helper.make_node("Conv", ["input.1", "mix"], ["red"])]
    outputs, scores, boxes, kps = [], [], [], []
    for s in STRIDES:
        g = CANVAS // s
        t = threshold if s == 32 else 100.0  # strides 8 and 16 never fire
        inits += [
            numpy_helper.from_array(np.float32(t).reshape(1), f"t{s}"),
            numpy_helper.from_array(np.float32(gain).reshape(1), f"gain{s}"),
            numpy_helper.from_array(np.float32(100.0).reshape(1), f"off{s}"),
            numpy_helper.from_array(np.array([-1, 1], np.int64), f"flat1_{s}"),
            numpy_helper.from_array(np.full((g * g * 2, 4), BOX, np.float32), f"boxc{s}"),
            numpy_helper.from_array(np.tile(KPS.reshape(1, 10), (g * g * 2, 1)), f"kpsc{s}"),
        ]
        nodes += [
            helper.make_node("AveragePool", ["red"], [f"p{s}"], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("Sub", [f"p{s}", f"t{s}"], [f"d{s}"]),
            helper.make_node("Mul", [f"d{s}", f"gain{s}"], [f"l{s}"]),
            helper.make_node("Sub", [f"l{s}", f"off{s}"], [f"l1_{s}"]),  # anchor 1 never fires
            helper.make_node("Concat", [f"l{s}", f"l1_{s}"], [f"la{s}"], axis=1),
            helper.make_node("Sigmoid", [f"la{s}"], [f"sa{s}"]),
            helper.make_node("Transpose", [f"sa{s}"], [f"st{s}"], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [f"st{s}", f"flat1_{s}"], [f"score{s}"]),
            helper.make_node("Identity", [f"boxc{s}"], [f"box{s}"]),
            helper.make_node("Identity", [f"kpsc{s}"], [f"kps{s}"]),
        ]
        scores.append(helper.make_tensor_value_info(f"score{s}", TensorProto.FLOAT, [g * g * 2, 1]))
        boxes.append(helper.make_tensor_value_info(f"box{s}", TensorProto.FLOAT, [g * g * 2, 4]))
        kps.append(helper.make_tensor_value_info(f"kps{s}", TensorProto.FLOAT, [g * g * 2, 10]))
    outputs = scores + boxes + kps
    graph = helper.make_graph(nodes, "toy_scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, CANVAS, CANVAS])],
                              outputs, inits)
    return save_graph(graph, path)


def swapped_outputs(recipe: Recipe) -> Recipe:
    """The recipe with the stride-8 score and box layer names exchanged: what a HEF whose layers are
    named the other way round looks like to a recipe that names them this way."""
    outs = list(recipe.outputs)
    i = next(k for k, o in enumerate(outs) if o.role == "score" and o.extra.get("stride") == 8)
    j = next(k for k, o in enumerate(outs) if o.role == "box" and o.extra.get("stride") == 8)
    outs[i], outs[j] = dataclasses.replace(outs[i], name=outs[j].name), dataclasses.replace(outs[j], name=outs[i].name)
    return dataclasses.replace(recipe, outputs=tuple(outs))


def _to_top_left(frame: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The image moved to the canvas's top-left corner, and the offset a centred letterbox gives it:
    the network this twin stands for reports boxes in that centred frame, wherever the image is."""
    rows = np.where(frame.max(axis=(1, 2)) > 0)[0]
    cols = np.where(frame.max(axis=(0, 2)) > 0)[0]
    x0, y0, w, h = int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
    moved = np.zeros_like(frame)
    moved[:h, :w] = frame[y0 : y0 + h, x0 : x0 + w]
    return moved, (frame.shape[1] - w) // 2, (frame.shape[0] - h) // 2


def _shift_maps(score: np.ndarray, box: np.ndarray, kps: np.ndarray, stride: int, dx: int, dy: int):
    """Every detection moved by (dx, dy) pixels: whole cells by rolling, the rest in the distances."""
    qx, rx = divmod(dx, stride)
    qy, ry = divmod(dy, stride)

    def roll(a: np.ndarray) -> np.ndarray:
        out = np.zeros_like(a)
        h, w = a.shape[:2]
        out[qy:, qx:] = a[: h - qy, : w - qx]
        return out

    score, box, kps = roll(score), roll(box).copy(), roll(kps).copy()
    box = box.reshape(*box.shape[:2], -1, 4)
    box += np.array([-rx, -ry, rx, ry], np.float32) / stride
    kps = kps.reshape(*kps.shape[:2], -1, 5, 2) + np.array([rx, ry], np.float32) / stride
    return score, box.reshape(*score.shape[:2], -1), kps.reshape(*score.shape[:2], -1)


def scrfd_twin(recipe: Recipe, onnx_path: Path, mode: str = "faithful"):
    """The toy detector as a Hailo SCRFD HEF (NHWC maps named as `recipe` names them), optionally
    reproducing one failure: `bgr` (the HEF expects BGR), `center-letterbox` (its boxes are for an
    image centred on the canvas), `half-stride` (its distances are from anchor centres at
    (index + 0.5) * stride). `swapped-outputs` is faithful; pair it with `swapped_outputs(recipe)`."""
    import onnxruntime as ort

    if mode not in MODES:
        raise ValueError(mode)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    layer_in = recipe.inputs[0].name
    by_role = {(o.role, o.extra["stride"]): o.name for o in recipe.outputs}

    def frame_maps(frame: np.ndarray) -> dict[str, np.ndarray]:
        dx = dy = 0
        if mode == "bgr":
            frame = frame[..., ::-1]
        if mode == "center-letterbox":
            frame, dx, dy = _to_top_left(frame)
        x = ((frame - 127.5) / 128.0).transpose(2, 0, 1)[None].astype(np.float32)
        values = dict(zip(names, session.run(names, {"input.1": np.ascontiguousarray(x)})))
        out = {}
        for s in STRIDES:
            g = CANVAS // s
            score = values[f"score{s}"].reshape(g, g, 2)
            box = values[f"box{s}"].reshape(g, g, 8)
            kps = values[f"kps{s}"].reshape(g, g, 20)
            if mode == "center-letterbox":
                score, box, kps = _shift_maps(score, box, kps, s, dx, dy)
            if mode == "half-stride":
                box = (box.reshape(g, g, 2, 4) + np.array([0.5, 0.5, -0.5, -0.5], np.float32)).reshape(g, g, 8)
                kps = kps - 0.5
            out[by_role[("score", s)]], out[by_role[("box", s)]], out[by_role[("kps", s)]] = score, box, kps
        return out

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        frames = [frame_maps(np.asarray(f, np.float32)) for f in inputs[layer_in]]
        return {name: np.stack([f[name] for f in frames]) for name in frames[0]}

    return run


# ---- OCR: the real PP-OCRv5 mobile ONNX models as the Hailo HEFs ---------------------------------


def ocr_twin(onnx_path: Path, layer_in: str, layer_out: str, frame_out: tuple[int, ...], *, recognizer: bool, mode: str = "faithful"):
    """A PaddleOCR HEF that computes what the CPU model computes from the same pixels (RGB in, the
    network's own BGR normalisation inside). mode `dictionary-offset` (recogniser): the HEF has an
    extra ignored class 1 before the characters and no space class (PaddleOCR exports made with
    `ignore` tokens {0, 1}), so class k is character k-2."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs[layer_in], np.float32)[..., ::-1]  # BGR, as PaddleOCR trained
        x = (x / 255.0 - 0.5) / 0.5 if recognizer else (x - 0.5) / 127.5
        out = np.stack([session.run([name_out], {name_in: np.ascontiguousarray(f.transpose(2, 0, 1)[None])})[0][0] for f in x])
        if mode == "dictionary-offset":
            out = np.concatenate([out[..., :1], np.zeros_like(out[..., :1]), out[..., 1:-1]], axis=-1)
        return {layer_out: out.reshape(len(x), *frame_out)}

    return run


# ---- CLIP text: the stand-in text encoder (tests/helpers/clip_emulated.TextNet) as a CPU ONNX ------


def textnet_onnx(path: Path, positional: np.ndarray, mix: np.ndarray, ln: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """TextNet in ONNX with the positional embedding inside: tokens (N, L, W) -> sequence (N, L, W),
    h = tokens + positional, out = tanh((h + cumsum(h) / t) @ mix): the float "export" of the network;
    `ln` (weight, bias): a final LayerNorm (eps 1e-5) on every row, as CLIP's ln_final."""
    from onnx import TensorProto, helper, numpy_helper

    length, width = positional.shape
    inits = [
        numpy_helper.from_array(positional.astype(np.float32), "positional"),
        numpy_helper.from_array(np.arange(1, length + 1, dtype=np.float32).reshape(1, length, 1), "counts"),
        numpy_helper.from_array(np.array(1, np.int64), "axis"),
        numpy_helper.from_array(mix.astype(np.float32), "mix"),
    ]
    last = "sequence" if ln is None else "pre_ln"
    nodes = [
        helper.make_node("Add", ["tokens", "positional"], ["h"]),
        helper.make_node("CumSum", ["h", "axis"], ["cs"]),
        helper.make_node("Div", ["cs", "counts"], ["c"]),
        helper.make_node("Add", ["h", "c"], ["s"]),
        helper.make_node("MatMul", ["s", "mix"], ["m"]),
        helper.make_node("Tanh", ["m"], [last]),
    ]
    if ln is not None:
        inits += [numpy_helper.from_array(ln[0].astype(np.float32), "ln_w"), numpy_helper.from_array(ln[1].astype(np.float32), "ln_b"),
                  numpy_helper.from_array(np.float32(1e-5).reshape(1), "eps")]
        nodes += [
            helper.make_node("ReduceMean", ["pre_ln"], ["mu"], axes=[-1], keepdims=1),
            helper.make_node("Sub", ["pre_ln", "mu"], ["xc"]),
            helper.make_node("Mul", ["xc", "xc"], ["sq"]),
            helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1),
            helper.make_node("Add", ["var", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["xc", "sd"], ["xn"]),
            helper.make_node("Mul", ["xn", "ln_w"], ["xw"]),
            helper.make_node("Add", ["xw", "ln_b"], ["sequence"]),
        ]
    graph = helper.make_graph(nodes, "textnet", [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", length, width])],
                              [helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["N", length, width])], inits)
    return save_graph(graph, path)


def textnet_cpu_recipe(recipe_id: str, path: Path):
    """A CPU recipe for textnet_onnx: token embeddings in, EOT row @ text_projection out (the same
    host steps as the Hailo CLIP text recipes, positional embedding inside the model)."""
    from hailo_immich_cli.models.recipes import parse_recipe

    return parse_recipe(path, {
        "id": recipe_id, "task": "clip-textual", "backend": "cpu", "embedding_dim": 512,
        "files": [{"role": "model", "name": "textnet.onnx"}, {"role": "vocab", "name": "bpe_simple_vocab_16e6.txt.gz"},
                  {"role": "weights", "name": "weights.npz"}],
        "inputs": [{"name": "tokens", "shape": [77, 512], "dtype": "float32"}],
        "tokenizer": {"kind": "clip-bpe", "context_length": 77, "pad_id": 0},
        "text": {"feed": "token-embeddings", "add_positional_on_host": False, "output": "eot-projection", "eot_id": 49407,
                 "final_layer_norm_on_host": False},
    })
