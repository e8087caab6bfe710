"""Build a folder in the layout of Immich's ML model cache (MACHINE_LEARNING_CACHE_FOLDER).

Face and CLIP models are generated with the real exports' signatures (no pretrained weights are
reachable offline); the OCR models are the real PP-OCRv5 files, the recogniser rewritten with its
dictionary in the ONNX metadata key `character`, as the file Immich downloads carries it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hailo_immich_cli.testkit.clip_models import clip_tokenizer_json, tiny_textual_onnx, tiny_visual_onnx, write_json
from hailo_immich_cli.testkit.face_models import (
    PlantedFace, encode_scrfd, make_arcface_like_onnx, make_buffalo_like_detector_onnx,
)

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


@dataclass(frozen=True)
class ClipSpec:
    """One CLIP model folder: name, image size, embedding size, context length, text cleaning."""

    name: str
    size: int
    dim: int
    context: int = 77
    mean: tuple[float, ...] = tuple(OPENAI_MEAN)
    std: tuple[float, ...] = tuple(OPENAI_STD)
    canonicalize: bool = False
    seed: int = 0
    external_data: bool = False
    mclip: bool = False  # M-CLIP text tower: input_ids + attention_mask, no text_cfg in config.json


# ViT-B-32__openai has shipped recipes (they find its files in the cache); the other two have none.
CLIP_MODELS = (
    ClipSpec("ViT-B-32__openai", 224, 512, seed=1),
    ClipSpec("ViT-L-14-336__openai", 336, 768, seed=2, external_data=True),
    ClipSpec("ViT-B-16-SigLIP2__webli", 256, 768, context=64, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), canonicalize=True, seed=3),
    ClipSpec("XLM-Roberta-Large-Vit-B-16Plus", 240, 640, seed=4, mclip=True),
)


def mclip_textual_onnx(path: Path, context: int, dim: int, seed: int) -> Path:
    """input_ids, attention_mask [B,L] int32 -> embedding [B,dim]; depends on ids, positions and the mask."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w_ids, w_mask = (rng.standard_normal((context, dim)).astype(np.float32) for _ in range(2))
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "scale"], ["fs"]),
            helper.make_node("Mul", ["fs", "m"], ["fm"]),
            helper.make_node("MatMul", ["fm", "w_ids"], ["a"]),
            helper.make_node("MatMul", ["m", "w_mask"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["embedding"]),
        ],
        "mclip_textual",
        [helper.make_tensor_value_info(n, TensorProto.INT32, ["B", context]) for n in ("input_ids", "attention_mask")],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", dim])],
        [numpy_helper.from_array(w_ids, "w_ids"), numpy_helper.from_array(w_mask, "w_mask"),
         numpy_helper.from_array(np.asarray(1.0 / 49408.0, np.float32), "scale")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the onnxruntime Immich's service pins
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def planted_faces() -> list[PlantedFace]:
    rng = np.random.default_rng(5)
    kps = lambda size: rng.uniform(-0.3, 0.3, (5, 2)) * size  # noqa: E731
    return [
        PlantedFace(8, 22, 28, 0, 3.0, (12.0, 14.0, 12.0, 15.0), kps(24)),
        PlantedFace(16, 12, 10, 1, 4.0, (40.0, 46.0, 38.0, 47.0), kps(80)),
        PlantedFace(32, 6, 13, 0, 2.0, (90.0, 100.0, 85.0, 110.0), kps(180)),
    ]


def add_clip(cache: Path, spec: ClipSpec, vocab_gz: Path) -> Path:
    root = cache / "clip" / spec.name
    visual = tiny_visual_onnx(root / "visual" / "model.onnx", size=spec.size, dim=spec.dim, seed=spec.seed)
    if spec.external_data:  # large exports keep their weights beside the graph
        import onnx

        onnx.save(onnx.load(str(visual)), str(visual), save_as_external_data=True, location="model.onnx_data", size_threshold=0)
    write_json(root / "visual" / "preprocess_cfg.json", {
        "size": [spec.size, spec.size], "mode": "RGB", "mean": list(spec.mean), "std": list(spec.std),
        "interpolation": "bicubic", "resize_mode": "squash" if spec.canonicalize else "shortest", "fill_color": 0,
    })
    if spec.mclip:
        mclip_textual_onnx(root / "textual" / "model.onnx", spec.context, spec.dim, spec.seed + 100)
    else:
        tiny_textual_onnx(root / "textual" / "model.onnx", context=spec.context, dim=spec.dim, seed=spec.seed + 100)
    clip_tokenizer_json(vocab_gz, root / "textual" / "tokenizer.json")
    write_json(root / "textual" / "tokenizer_config.json", {"pad_token": "<|endoftext|>", "model_max_length": spec.context})
    text_cfg = {"context_length": spec.context, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}
    if spec.canonicalize:
        text_cfg["tokenizer_kwargs"] = {"clean": "canonicalize"}
    config = {"embed_dim": spec.dim, "vision_cfg": {"image_size": spec.size}}
    write_json(root / "config.json", config if spec.mclip else {**config, "text_cfg": text_cfg})
    return root


def add_face_pack(cache: Path, name: str, seed: int = 0) -> Path:
    root = cache / "facial-recognition" / name
    make_buffalo_like_detector_onnx(root / "detection" / "model.onnx", encode_scrfd(planted_faces(), background=-12.0))
    make_arcface_like_onnx(root / "recognition" / "model.onnx", seed=seed)
    return root


def immich_ocr_recogniser(source_onnx: Path, dictionary: Path, target: Path) -> Path:
    """The recogniser as Immich's cache holds it: the dictionary in the ONNX metadata key `character`."""
    import onnx

    model = onnx.load(str(source_onnx))
    del model.metadata_props[:]
    prop = model.metadata_props.add()
    prop.key, prop.value = "character", dictionary.read_text(encoding="utf-8").rstrip("\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    return target


def add_ocr(cache: Path, models_dir: Path, names: tuple[str, ...] = ("PP-OCRv5_mobile", "EN__PP-OCRv5_mobile", "PP-OCRv5_server")) -> None:
    """Detection under the short name, recognition under the full name (Immich's layout). The server
    variant's folders hold the mobile files (its real files are not reachable offline): layout only."""
    det = models_dir / "ppocrv5-mobile-det-cpu" / "PP-OCRv5_det_mobile_infer.onnx"
    rec = models_dir / "ppocrv5-mobile-rec-cpu" / "PP-OCRv5_rec_mobile_infer.onnx"
    dictionary = models_dir / "ppocrv5-mobile-rec-cpu" / "ppocrv5_dict.txt"
    made: Path | None = None
    for name in names:
        short = name.split("__")[-1]
        det_target = cache / "ocr" / short / "detection" / "model.onnx"
        if not det_target.exists():
            det_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(det, det_target)
        rec_target = cache / "ocr" / name / "recognition" / "model.onnx"
        if made is None:
            made = immich_ocr_recogniser(rec, dictionary, rec_target)
        else:
            rec_target.parent.mkdir(parents=True, exist_ok=True)
            os.link(made, rec_target)


def build_cache(cache: Path, vocab_gz: Path, models_dir: Path | None = None, *, clip=CLIP_MODELS, packs=("buffalo_l", "buffalo_m", "buffalo_s", "antelopev2")) -> Path:
    for spec in clip:
        add_clip(cache, spec, vocab_gz)
    for i, pack in enumerate(packs):
        add_face_pack(cache, pack, seed=i)
    if models_dir is not None:
        add_ocr(cache, models_dir)
    return cache
